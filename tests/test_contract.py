"""The command line's contract (issue 15), as an adversarial user tests it: an output that is one of the
inputs (by name, symlink or hard link) or that two outputs share is refused before any work; a failure
leaves no file behind; a killed batch leaves no process behind; a file named `-x.mp4` is a file.

Every bad input must give exit 2, exactly one line on stderr starting `error:`, no traceback, no file
other than the inputs afterwards, and the inputs byte for byte unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool.arkit import NUM_CHANNELS, Animation
from dubtool.audio import Audio, load_audio
from dubtool.livelink import write_csv

DUBTOOL = Path(sys.executable).with_name("dubtool")
REPO = Path(__file__).resolve().parent.parent
DUB_TEXT = "Bonjour, je suis content de vous voir."

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("ffmpeg"),
                                reason="needs espeak-ng and ffmpeg")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DUBTOOL_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def dubtool(*args, cwd: Path, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(DUBTOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env(), **kw)


def dubtool_in_process(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI's main() in this process (a refusal happens before any heavy import: 10x faster than a
    subprocess). Same exit status and stderr as the executable."""
    import signal as _signal
    import warnings

    from dubtool import cli

    old = (sys.argv, os.getcwd(), _signal.getsignal(_signal.SIGTERM), warnings.showwarning)
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["dubtool", *map(str, args)]
    os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old[0]
        os.chdir(old[1])
        _signal.signal(_signal.SIGTERM, old[2])
        warnings.showwarning = old[3]
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (names, links included) -> sha256 of its bytes ('link'/'dir' otherwise)."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            snap[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            snap[rel] = "dir"
        else:
            snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def assert_refused(r: subprocess.CompletedProcess, folder: Path, before: dict, *phrases: str, code: int = 2) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    after = snapshot(folder)
    assert sorted(after) == sorted(before), sorted(set(after) ^ set(before))  # no file left, none removed
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"inputs changed: {changed}"
    return lines[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A 1.6 s face video and its .perf, an espeak-ng French dub, a Live Link CSV, a script, a keyframes
    file, a training config; a symlink and a hard link to the dub."""
    from dubtool import testmedia as tm
    from dubtool.assets import face_landmarker_path
    from dubtool.errors import DubtoolError

    try:
        face_landmarker_path()
    except DubtoolError as e:
        pytest.skip(f"face tracker model not installed ({e}); run `dubtool setup-models`")
    d = tmp_path_factory.mktemp("contract")
    subprocess.run(["espeak-ng", "-v", "fr", "-w", str(d / "dub.wav"), DUB_TEXT], check=True)
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(d / "src.wav"), "Hello, I am glad to see you."], check=True)
    src = load_audio(d / "src.wav")
    n = 40
    tm.make_face_video(d / "face.mp4", tm.Motion(jaw=tm.jaw_from_audio(src, 25.0, n)), 25.0, (240, 180),
                       audio=Audio(src.samples[: int(n / 25 * 16000)], 16000))
    r = dubtool("extract", "face.mp4", "-o", "face.perf", "-q", cwd=d)
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    values = np.zeros((50, NUM_CHANNELS), np.float32)
    values[:, :52] = rng.uniform(0, 0.5, (50, 52))
    write_csv(Animation(values, 25.0), d / "anim.csv")
    (d / "script.txt").write_text("[happy] Bonjour ! (nods) Je suis content de vous voir.\n")
    (d / "index.csv").write_text("id,line\nl1,Bonjour !\n")
    shutil.copy(REPO / "configs" / "flow_v6.json", d / "cfg.json")
    os.symlink("dub.wav", d / "dub_link.wav")
    os.link(d / "dub.wav", d / "dub_hard.glb")
    os.link(d / "anim.csv", d / "anim_hard.fbx")
    return d


# (command line, phrases the one error line must hold); run in the media folder, nothing may change there.
SAME_FILE = {
    "extract-o-is-input": (["extract", "face.mp4", "-o", "face.mp4"], ["-o face.mp4", "input VIDEO"]),
    "extract-csv-is-input": (["extract", "face.mp4", "--csv", "face.mp4"], ["--csv face.mp4", "input VIDEO"]),
    "extract-o-symlink-to-input": (["extract", "dub_link.wav", "-o", "dub.wav"], ["-o dub.wav", "input VIDEO"]),
    "extract-two-outputs-same": (["extract", "face.mp4", "-o", "x.perf", "--csv", "./x.perf"], ["same file"]),
    "align-o-is-dub": (["align", "src.wav", "dub.wav", "-o", "dub.wav"], ["-o dub.wav", "input DUB"]),
    "align-fit-is-dub": (["align", "src.wav", "dub.wav", "--fit", "dub.wav"], ["--fit dub.wav", "input DUB"]),
    "align-fit-is-symlinked-dub": (["align", "src.wav", "dub_link.wav", "--fit", "dub.wav"], ["--fit dub.wav"]),
    "align-plot-is-o": (["align", "src.wav", "dub.wav", "-o", "t.json", "--plot", "t.json"], ["same file"]),
    "localize-report-is-dub": (["localize", "face.perf", "dub.wav", "-o", "o.csv", "--report", "dub.wav"],
                               ["--report dub.wav", "input DUB"]),
    "localize-preview-is-source": (["localize", "face.mp4", "dub.wav", "-o", "o.csv", "--preview", "face.mp4"],
                                   ["--preview face.mp4", "input SOURCE"]),
    "localize-gltf-hard-link-to-dub": (["localize", "face.perf", "dub.wav", "-o", "o.csv", "--gltf", "dub_hard.glb"],
                                       ["--gltf dub_hard.glb", "input DUB"]),
    "localize-o-is-anim-csv-keyframes": (["localize", "face.perf", "dub.wav", "-o", "anim.csv", "--keyframes",
                                          "anim.csv"], ["-o anim.csv", "--keyframes"]),
    "localize-report-is-preview": (["localize", "face.perf", "dub.wav", "-o", "o.csv", "--report", "p.mp4",
                                    "--preview", "p.mp4"], ["same file"]),
    "keyframes-o-is-script": (["keyframes", "script.txt", "-o", "script.txt"], ["-o script.txt", "input SCRIPT"]),
    "keyframes-csv-is-o": (["keyframes", "script.txt", "-o", "k.json", "--csv", "k.json"], ["same file"]),
    "keyframes-table-index-is-script": (["keyframes", "index.csv", "-o", ".", "--no-embedding"],
                                        ["index.csv", "input SCRIPT"]),
    "render-o-is-audio": (["render", "anim.csv", "-o", "face.mp4", "--audio", "face.mp4"],
                          ["-o face.mp4", "input --audio"]),
    "render-curves-is-o": (["render", "anim.csv", "-o", "r.mp4", "--curves-png", "r.mp4"], ["same file"]),
    "export-fbx-hard-link-to-input": (["export", "anim.csv", "--fbx", "anim_hard.fbx"],
                                      ["--fbx anim_hard.fbx", "input ANIMATION"]),
    "eval-json-is-dub": (["eval", "anim.csv", "--dub", "dub.wav", "--dub-text", DUB_TEXT, "--json", "dub.wav"],
                         ["--json dub.wav", "input --dub"]),
    "train-out-is-config": (["train", "--config", "cfg.json", "--out", "cfg.json"], ["--out cfg.json", "--config"]),
}


@pytest.mark.parametrize("name", list(SAME_FILE))
def test_output_that_is_an_input_is_refused(name, media):
    args, phrases = SAME_FILE[name]
    before = snapshot(media)
    assert_refused(dubtool_in_process(*args, cwd=media), media, before, *phrases)


# ---------------------------------------------------------------- a failure leaves no files (item 2)

@contextlib.contextmanager
def _file_size_limit(limit: int):
    """`ulimit -f` for this process and the ffmpeg it starts: a write past `limit` bytes fails with EFBIG,
    as on a full disk (Python ignores SIGXFSZ)."""
    import resource

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)


@pytest.mark.parametrize("command", ["localize", "align"])
def test_disk_full_on_a_later_output_leaves_no_output(command, media, tmp_path):
    """Run once to see the outputs' sizes, then again with a file-size limit that lets every output but
    the largest be written: the command fails with one line and leaves none of them."""
    out = tmp_path / "out"
    out.mkdir()
    args = {"localize": ["localize", "face.perf", "dub.wav", "--model", "teacher", "--dub-text", DUB_TEXT,
                         "-o", out / "o.csv", "--gltf", out / "o.glb"],
            "align": ["align", "src.wav", "dub.wav", "-o", out / "t.json", "--plot", out / "t.png",
                      "--fit", out / "fit.wav", "--fit-mode", "uniform"]}[command]
    r = dubtool_in_process(*args, cwd=media)
    assert r.returncode == 0, r.stderr
    sizes = sorted(p.stat().st_size for p in out.iterdir())
    assert len(sizes) >= 2, sizes
    for p in out.iterdir():
        p.unlink()
    before = snapshot(media)
    with _file_size_limit((sizes[-1] + sizes[-2]) // 2):
        r = dubtool_in_process(*args, cwd=media)
    line = assert_refused(r, media, before, "cannot write", "file too large")
    assert list(out.iterdir()) == [], (line, list(out.iterdir()))


def test_no_space_on_the_second_output_leaves_neither(media, tmp_path, monkeypatch):
    """ENOSPC while `align` writes its plot: the time map already written is not left behind either."""
    import errno

    import dubtool.align
    from dubtool.fileio import atomic_path

    def plot_fails(src, dub, tm, path):
        with atomic_path(path, suffix=".png") as tmp:
            tmp.write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dubtool.align, "plot_alignment", plot_fails)
    out = tmp_path / "new" / "out"  # a missing folder: created for the outputs, removed with them
    before = snapshot(media)
    r = dubtool_in_process("align", "src.wav", "dub.wav", "-o", out / "t.json", "--plot", out / "t.png",
                           cwd=media)
    assert_refused(r, media, before, "cannot write", "t.png", "no space left")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a killed batch (item 3)

def _children(pid: int) -> set[int]:
    kids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.add(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody reaped it yet)


def _batch(media: Path, out: Path, rows: int) -> Path:
    manifest = out.parent / "lines.csv"
    manifest.write_text("source,dub,lang,output,dub_text\n" + "".join(
        f"{media}/face.perf,{media}/dub.wav,fr,{out}/line{i}.csv,\"{DUB_TEXT}\"\n" for i in range(rows)))
    return manifest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_batch_leaves_no_process(sig, media, tmp_path):
    """kill -9 (or SIGTERM) of `localize --manifest --workers 2` while its workers run: within seconds no
    worker (nor the resource tracker) survives, nothing more is written, no temp file is left and the
    finished lines are whole (resuming them is test_cli_errors' Ctrl-C test)."""
    import time

    out = tmp_path / "out"
    out.mkdir()
    manifest = _batch(media, out, 4)
    p = subprocess.Popen([str(DUBTOOL), "localize", "--manifest", manifest, "--model", "teacher", "--workers", "2"],
                         cwd=media, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    t0 = time.monotonic()
    kids: set[int] = set()
    while time.monotonic() - t0 < 120 and p.poll() is None and not list(out.glob("line*.csv")):
        kids |= _children(p.pid)
        time.sleep(0.05)
    kids |= _children(p.pid)
    assert p.poll() is None, "the batch finished before it could be killed"
    assert len(kids) >= 2, kids
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert p.returncode == 143 and "terminated" in stderr and "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "processes outlived the batch"
    written = sorted(out.iterdir())
    time.sleep(1.0)
    assert sorted(out.iterdir()) == written  # nothing writes any more
    stale_lock = [".dubtool-batch.lock"] if sig == signal.SIGKILL else []  # unlocked: harmless
    assert [f.name for f in written if f.name.startswith(".")] == stale_lock, written
    from dubtool.livelink import read_csv

    assert len(list(out.glob("line*.csv"))) < 4
    for f in out.glob("line*.csv"):
        assert read_csv(f).num_frames > 10


def test_second_batch_on_the_same_outputs_refuses(media, tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    manifest = _batch(media, out, 2)
    with open(out / ".dubtool-batch.lock", "w") as lock:  # what a running batch holds
        lock.write("4242\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = snapshot(tmp_path)
        r = dubtool_in_process("localize", "--manifest", manifest, "--model", "teacher", cwd=media)
        assert_refused(r, tmp_path, before, "another dubtool batch (pid 4242)", str(out))


# ---------------------------------------------------------------- a name that starts with '-' (item 5)

def test_file_named_like_an_option_is_a_file(media, tmp_path):
    """`./-x.mp4` (or `-- -x.mp4`) is tracked, its audio read; a dub `-d.wav` localizes; render muxes it."""
    d = tmp_path / "dash"
    d.mkdir()
    shutil.copy(media / "face.mp4", d / "-x.mp4")
    shutil.copy(media / "dub.wav", d / "-d.wav")
    r = dubtool("extract", "./-x.mp4", "-o", "x.perf", "-q", cwd=d)
    assert r.returncode == 0, r.stderr
    r = dubtool_in_process("extract", "-q", "-o", "y.perf", "--", "-x.mp4", cwd=d)
    assert r.returncode == 0, r.stderr
    from dubtool.performance import load_performance

    assert load_performance(d / "x.perf").num_frames == load_performance(media / "face.perf").num_frames
    assert load_performance(d / "x.perf").audio is not None
    r = dubtool_in_process("localize", "x.perf", "./-d.wav", "--model", "teacher", "--dub-text", DUB_TEXT, "-o",
                           "o.csv", cwd=d)
    assert r.returncode == 0, r.stderr
    r = dubtool_in_process("render", "o.csv", "--audio", "./-d.wav", "-o", "./-r.mp4", "--size", "64x64", cwd=d)
    assert r.returncode == 0, r.stderr
    from dubtool.render import media_duration_s

    assert abs(media_duration_s(d / "-r.mp4") - load_audio(d / "-d.wav").duration_s) < 0.2


# ---------------------------------------------------------------- the LLM client (item 8)

class _Server:
    """A local HTTP server on 127.0.0.1 whose handler is `respond(handler)`; records request headers."""

    def __init__(self, respond):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                try:
                    respond(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _reply(handler, status: int, body: str, headers: dict | None = None) -> None:
    data = body.encode()
    handler.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


def _chat_reply(handler) -> None:
    import json

    content = json.dumps({"keyframes": [{"time_s": 0.5, "description": "brows up", "channels": {"browInnerUp": 0.8},
                                         "ease": "cubic", "hold_s": 0.4}]})
    _reply(handler, 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}))


@pytest.fixture
def servers():
    made = []

    def make(respond):
        made.append(_Server(respond))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("where", ["status line", "body"])
def test_llm_timeout_bounds_the_whole_request(where, servers, monkeypatch):
    """A server sending one byte a second is cut off at --llm-timeout, not kept alive."""
    import time

    from dubtool.errors import LLMError
    from dubtool.keyframes_llm import LLMConfig, chat

    def trickle(handler):
        if where == "body":
            handler.send_response(200)
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            handler.wfile.flush()
        for _ in range(30):
            handler.wfile.write(b"H" if where == "status line" else b" ")
            handler.wfile.flush()
            time.sleep(1.0)

    s = servers(trickle)
    t0 = time.monotonic()
    with pytest.raises(LLMError, match=r"did not answer within 1.5 s"):
        chat(LLMConfig(url=s.url + "/v1", timeout_s=1.5), [{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 3.0


def test_llm_key_is_not_forwarded_to_another_origin(servers, monkeypatch):
    from dubtool.keyframes_llm import LLMConfig, chat

    monkeypatch.setenv("DUBTOOL_LLM_API_KEY", "sk-secret-123")
    other = servers(_chat_reply)
    first = None

    def route(h):  # first hop: a path on the same origin (keeps the key); second: another port (must not get it)
        hop = len(first.headers)
        target = "/moved/chat/completions" if hop == 1 else other.url + "/v1/chat/completions"
        _reply(h, 302 if hop == 1 else 307, "", {"Location": target})

    first = servers(route)
    chat(LLMConfig(url=first.url + "/v1"), [{"role": "user", "content": "hi"}])
    assert [h.get("authorization") for h in first.headers] == ["Bearer sk-secret-123"] * 2
    assert len(other.headers) == 1 and "authorization" not in other.headers[0]


def test_llm_server_text_is_printed_without_control_sequences_and_key_redacted_as_a_token(servers, monkeypatch,
                                                                                          media):
    """What a server sends reaches the terminal without escape sequences (no retitling, clearing or
    hidden text) or rich markup; the key 'k' is redacted where it is a token, not inside 'known'."""
    monkeypatch.setenv("DUBTOOL_LLM_API_KEY", "k")
    s = servers(lambda h: _reply(h, 500, "\x1b]0;pwned\x07\x1b[2J\x1b[8mhidden\x1b[0m known key k refused "
                                       "[bold red]markup[/]\x07"))
    before = snapshot(media)
    r = dubtool_in_process("keyframes", "script.txt", "-o", "k.json", "--no-embedding", "--llm-url", s.url + "/v1",
                           "--no-llm-fallback", cwd=media)
    line = assert_refused(r, media, before, "HTTP 500", "hidden", "known key *** refused", "[bold red]markup[/]")
    assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in line), repr(line)
    assert "pwned" not in line  # an OSC title sequence is removed whole


# ---------------------------------------------------------------- checks before work, messages (items 4, 9)

CHECKED_FIRST = {
    "render-fps-0": (["render", "anim.csv", "-o", "r.mp4", "--fps", "0"], ["--fps must be in 0..240", "got 0"]),
    "keyframes-fps-0": (["keyframes", "script.txt", "-o", "k.json", "--fps", "0"], ["--fps must be in 1..240, got 0"]),
    "export-fps-0": (["export", "anim.csv", "--fbx", "a.fbx", "--fps", "0"], ["--fps must be in 0..240", "got 0"]),
    "localize-steps-0": (["localize", "face.perf", "dub.wav", "-o", "o.csv", "--steps", "0"],
                         ["--steps must be in 1..1000, got 0"]),
    "review-min-closure": (["review", ".", "--min-closure", "2"], ["--min-closure must be in 0..1, got 2"]),
    "rig-sheet-weight": (["rig-sheet", "-o", "s.png", "--weight", "2"], ["--weight must be in 0..1, got 2"]),
    "corpus-workers-0": (["corpus", "--workers", "0", "-o", "c"], ["--workers must be in 1..64, got 0"]),
    "extract-min-cutoff": (["extract", "face.mp4", "-o", "f.perf", "--min-cutoff", "0"], ["--min-cutoff", "positive"]),
    "render-huge-size": (["render", "anim.csv", "-o", "r.mp4", "--size", "100000x100000"],
                         ["--size", "16 to 4096", "100000x100000"]),
    "train-config-is-audio": (["train", "--config", "dub.wav", "--out", "m.pt"], ["dub.wav", "not a text file"]),
    "train-corpus-is-file": (["train", "--corpus", "anim.csv", "--out", "m.pt"], ["--corpus must be a folder"]),
    "train-out-is-folder": (["train", "--config", "cfg.json", "--out", "."], ["is a folder"]),
    "train-out-under-file": (["train", "--config", "cfg.json", "--out", "anim.csv/m.pt"], ["anim.csv is not a folder"]),
}


@pytest.mark.parametrize("name", list(CHECKED_FIRST))
def test_checked_before_any_work(name, media):
    args, phrases = CHECKED_FIRST[name]
    before = snapshot(media)
    assert_refused(dubtool_in_process(*args, cwd=media), media, before, *phrases)


def test_bare_dubtool_shows_help_without_error(tmp_path):
    r = dubtool_in_process(cwd=tmp_path)
    assert r.returncode == 0 and "error" not in r.stderr.lower() and "Usage" in r.stdout, (r.returncode, r.stderr)


def test_warnings_are_not_wrapped_when_stderr_is_not_a_terminal(media, tmp_path, monkeypatch):
    """A log gets one line per warning, however long: rich wraps at its width (80 columns, or $COLUMNS,
    40 here) when it is not told not to."""
    monkeypatch.setenv("COLUMNS", "40")
    r = dubtool_in_process("render", "anim.csv", "--audio", "dub.wav", "-o", tmp_path / "r.mp4", "--size", "64x64",
                           cwd=media)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: audio is") and "to the animation" in warnings[0], \
        r.stderr


def test_keyframes_plot_failing_leaves_neither_keyframes_nor_curves(media, tmp_path, monkeypatch):
    import errno

    import dubtool.keyframes
    from dubtool.fileio import atomic_path

    def plot_fails(anim, track, path):
        with atomic_path(path, suffix=".png") as tmp:
            tmp.write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dubtool.keyframes, "plot_curves", plot_fails)
    before = snapshot(media)
    r = dubtool_in_process("keyframes", "script.txt", "--no-embedding", "-o", tmp_path / "k.json", "--csv",
                           tmp_path / "k.csv", "--plot", tmp_path / "k.png", cwd=media)
    assert_refused(r, media, before, "cannot write", "k.png", "no space left")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["extract", "face.mp4", "--json", "-o", "face.mp4"],
                                  ["align", "src.wav", "nope.wav", "--json"],
                                  ["localize", "face.perf", "dub.wav", "--json", "--steps", "x", "-o", "o.csv"]])
def test_json_mode_failure_is_an_error_object_on_stdout(args, media):
    import json

    before = snapshot(media)
    r = dubtool_in_process(*args, cwd=media)
    line = assert_refused(r, media, before)
    obj = json.loads(r.stdout)
    assert obj == {"error": line.removeprefix("error: "), "exit_code": 2}


def test_batch_whose_results_cannot_be_written_is_refused_before_it_runs(media, tmp_path):
    """(It used to run the whole batch and fail at the end.) A folder where lines.results.csv goes: as
    unwritable as a read-only folder, and testable as root."""
    manifest = tmp_path / "lines.csv"
    manifest.write_text("source,dub,lang,output,dub_text\n"
                        f"{media}/face.perf,{media}/dub.wav,fr,{tmp_path}/out/l.csv,\"{DUB_TEXT}\"\n")
    (tmp_path / "lines.results.csv").mkdir()
    before = snapshot(tmp_path)
    r = dubtool_in_process("localize", "--manifest", manifest, "--model", "teacher", cwd=media)
    assert_refused(r, tmp_path, before, "cannot write", "lines.results.csv", "is a folder")


# ---------------------------------------------------------------- scripts and CI: --json, --quiet, '-' (item 9)

# A failing run of each command with --json: (command line, phrase of the message); run in the media folder.
JSON_FAILURES = {
    "extract": (["extract", "missing.mp4", "--json"], "missing.mp4"),
    "align": (["align", "src.wav", "nope.wav", "--json"], "nope.wav"),
    "localize": (["localize", "face.perf", "dub.wav", "-o", "o.csv", "--steps", "0", "--json"], "--steps"),
    "localize-usage": (["localize", "face.perf", "dub.wav", "--json", "--steps", "x", "-o", "o.csv"], "--steps"),
    "keyframes": (["keyframes", "script.txt", "-o", "k.json", "--fps", "0", "--json"], "--fps"),
    "render": (["render", "anim.csv", "--fps", "0", "--json"], "--fps must be in 0..240"),
    "render-usage": (["render", "anim.csv", "--fps", "abc", "--json"], "'--fps'"),
    "export": (["export", "anim.csv", "--json"], "nothing to write"),
    "eval": (["eval", "anim.csv", "--json", "-"], "--dub"),
    "train": (["train", "--steps", "0", "--out", "m.pt", "--json"], "--steps must be at least 1"),
    "corpus": (["corpus", "--workers", "0", "-o", "c", "--json"], "--workers"),
    "review": (["review", ".", "--min-closure", "2", "--json"], "--min-closure"),
    "setup-models": (["setup-models", "--from", "missing.task", "--json"], "missing.task"),
    "rig-sheet": (["rig-sheet", "-o", "s.png", "--weight", "2", "--json"], "--weight"),
    "localize-stdout-and-json": (["localize", "face.perf", "dub.wav", "-o", "-", "--json"], "-o - and --json"),
}


@pytest.mark.parametrize("quiet", [False, True], ids=["loud", "quiet"])
@pytest.mark.parametrize("name", list(JSON_FAILURES))
def test_every_command_fails_with_a_json_error_object(name, quiet, media):
    """--json: stdout is one {"error", "exit_code"} object; stderr the one error line (also with --quiet)."""
    import json

    args, phrase = JSON_FAILURES[name]
    before = snapshot(media)
    r = dubtool_in_process(*args, *(["--quiet"] if quiet else []), cwd=media)
    line = assert_refused(r, media, before, phrase)
    obj = json.loads(r.stdout)
    assert obj == {"error": line.removeprefix("error: "), "exit_code": 2}


def test_every_command_takes_json_and_quiet(tmp_path):
    from dubtool import cli

    commands = [c.name or c.callback.__name__ for c in cli.app.registered_commands]
    assert len(commands) >= 12
    for name in commands:
        r = dubtool_in_process(name, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "--json" in r.stdout and "--quiet" in r.stdout, (name, r.stdout[-400:])


def test_usage_lines_show_required_options(tmp_path):
    usage = {}
    for name in ("keyframes", "localize", "export", "extract"):
        r = dubtool_in_process(name, "--help", cwd=tmp_path)
        usage[name] = " ".join(line.strip() for line in r.stdout.splitlines()[:4])
    assert "-o OUT [OPTIONS]" in usage["keyframes"]
    assert "(-o OUT.csv | --manifest LINES.csv)" in usage["localize"]
    assert "(--fbx OUT.fbx | --gltf OUT.glb)" in usage["export"]
    assert "VIDEO" in usage["extract"]


def test_successful_json_and_quiet_runs(media, tmp_path):
    """A result object on stdout and nothing on stderr; the inputs unchanged, only the outputs new."""
    import json

    before = snapshot(media)
    runs = {"keyframes": ["keyframes", "script.txt", "--no-embedding", "-o", tmp_path / "k.json"],
            "export": ["export", "anim.csv", "--gltf", tmp_path / "a.glb"],
            "render": ["render", "anim.csv", "--no-video", "--curves-png", tmp_path / "c.png"]}
    for name, args in runs.items():
        r = dubtool_in_process(*args, "--json", "--quiet", cwd=media)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        result = json.loads(r.stdout)
        assert isinstance(result, dict) and result, (name, r.stdout)
    assert snapshot(media) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.glb", "c.png", "k.json"]


def test_dub_from_stdin_and_csv_to_stdout(media, tmp_path):
    """`localize SOURCE - -o -`: the dub piped in, the CSV piped out, byte for byte the file run's CSV;
    --quiet leaves stderr empty; no file appears anywhere (the temporary copies are gone)."""
    args = ["localize", "face.perf", "--model", "teacher", "--dub-text", DUB_TEXT, "--lang", "fr"]
    r = dubtool(*args[:2], "dub.wav", *args[2:], "-o", tmp_path / "file.csv", "-q", cwd=media)
    assert r.returncode == 0, r.stderr
    before = snapshot(media)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with open(media / "dub.wav", "rb") as dub:
        r = subprocess.run([str(DUBTOOL), *map(str, args[:2]), "-", *map(str, args[2:]), "-o", "-", "--quiet"],
                           cwd=media, stdin=dub, capture_output=True, timeout=180,
                           env={**_env(), "TMPDIR": str(scratch)})
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout == (tmp_path / "file.csv").read_bytes()
    assert snapshot(media) == before and list(scratch.iterdir()) == []


def test_empty_stdin_is_refused(media):
    before = snapshot(media)
    r = dubtool("align", "src.wav", "-", "--json", cwd=media, stdin=subprocess.DEVNULL)
    line = assert_refused(r, media, before, "DUB is '-'", "nothing came on stdin")
    import json

    assert json.loads(r.stdout)["error"] == line.removeprefix("error: ")


def test_align_reads_the_dub_from_stdin(media, tmp_path):
    import json

    with open(media / "dub.wav", "rb") as dub:
        r = subprocess.run([str(DUBTOOL), "align", "src.wav", "-", "-o", str(tmp_path / "t.json"), "--json", "-q"],
                           cwd=media, stdin=dub, capture_output=True, text=True, timeout=180, env=_env())
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert json.loads(r.stdout) == json.loads((tmp_path / "t.json").read_text())
