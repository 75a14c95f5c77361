"""Bad input, as a shell script meets it: every command is run through the real `dubtool` executable on
generated media. A user error must give exit status 2, exactly one non-empty line on stderr that names
the file or option and says what is wrong, no traceback, and no output (or `.name.*` temp file) left.
Ctrl-C exits 130 and SIGTERM 143 with nothing partial; a batch keeps its finished lines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dubtool.arkit import NUM_CHANNELS, Animation
from dubtool.audio import Audio, load_audio, write_wav
from dubtool.livelink import read_csv, write_csv

DUBTOOL = Path(sys.executable).with_name("dubtool")
REPO = Path(__file__).resolve().parent.parent
DUB_TEXT = "Bonjour, je suis content de vous voir ce matin."

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("ffmpeg"),
                                reason="needs espeak-ng and ffmpeg")


def dubtool(*args, cwd: Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DUBTOOL_DEBUG"}
    return subprocess.run([str(DUBTOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def assert_user_error(r: subprocess.CompletedProcess, out_dir: Path, *phrases: str, code: int = 2) -> str:
    """Exit `code`, one line on stderr holding every phrase, no traceback, nothing written to `out_dir`."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    assert files_in(out_dir) == [], files_in(out_dir)
    return lines[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Good and bad inputs, all generated: speech from espeak-ng, a face video, text renamed as media,
    truncated files, malformed CSV/JSON, a silent WAV, 8 kHz and 48 kHz stereo copies."""
    from dubtool import testmedia as tm
    from dubtool.assets import face_landmarker_path
    from dubtool.errors import DubtoolError

    try:
        face_landmarker_path()
    except DubtoolError as e:
        pytest.skip(f"face tracker model not installed ({e}); run `dubtool setup-models`")
    d = tmp_path_factory.mktemp("bad_input")
    subprocess.run(["espeak-ng", "-v", "fr", "-w", str(d / "dub.wav"), DUB_TEXT], check=True)
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(d / "src.wav"), "Hello, I am glad to see you."], check=True)
    dub = load_audio(d / "dub.wav")
    for name, rate, channels in (("dub8k.wav", 8000, 1), ("dub48st.wav", 48000, 2)):
        subprocess.run([tm.ffmpeg_binary(), "-v", "error", "-y", "-i", str(d / "dub.wav"), "-ar", str(rate),
                        "-ac", str(channels), str(d / name)], check=True)
    write_wav(Audio(np.zeros(32000, np.float32), 16000), d / "silence.wav")

    n = 40  # 1.6 s at 25 fps: enough for the tracker, quick to extract
    src = load_audio(d / "src.wav")
    tm.make_face_video(d / "face.mp4", tm.Motion(jaw=tm.jaw_from_audio(src, 25.0, n)), 25.0, (240, 180),
                       audio=Audio(src.samples[: int(n / 25 * 16000)], 16000))
    tm.make_noise_video(d / "noface.mp4", 0.6, 25.0)
    r = dubtool("extract", "face.mp4", "-o", "face.perf", "-q", cwd=d)
    assert r.returncode == 0, r.stderr

    for name in ("text.mp4", "text.wav", "text.perf", "text.json"):
        (d / name).write_text("this is not what the name says\n")
    (d / "empty.mp4").write_bytes(b"")
    (d / "head.mp4").write_bytes((d / "face.mp4").read_bytes()[:600])  # cut inside the header
    (d / "trunc.wav").write_bytes((d / "dub.wav").read_bytes()[:30])
    (d / "folder").mkdir()
    (d / "script.txt").write_text("[happy] Bonjour ! (nods) Je suis content de vous voir.\n")
    # 2 h 2 min of 16x16 grey at 1 fps: a tiny file that is too long at 30 fps.
    subprocess.run([tm.ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=16x16:r=1:d=7320",
                    "-c:v", "libx264", "-preset", "ultrafast", str(d / "long.mp4")], check=True)
    subprocess.run([tm.ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=16400x16",
                    "-frames:v", "1", str(d / "wide.png")], check=True)

    rng = np.random.default_rng(0)
    values = np.zeros((50, NUM_CHANNELS), np.float32)
    values[:, :52] = rng.uniform(0, 0.5, (50, 52))
    write_csv(Animation(values, 25.0), d / "anim.csv")
    lines = (d / "anim.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[7] = "abc"
    (d / "bad_cell.csv").write_text("\n".join(lines[:5] + [",".join(cells)] + lines[6:]) + "\n")
    (d / "short_row.csv").write_text("\n".join(lines[:3] + [",".join(lines[3].split(",")[:10])] + lines[4:]) + "\n")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 8)

    perf = (d / "face.perf").read_bytes()
    (d / "trunc.perf").write_bytes(perf[: len(perf) // 2])
    with zipfile.ZipFile(d / "face.perf") as z, zipfile.ZipFile(d / "shape.perf", "w") as o:
        for name in z.namelist():
            if name == "animation.npy":
                import io

                buf = io.BytesIO()
                np.save(buf, np.zeros((5, NUM_CHANNELS), np.float32))
                o.writestr(name, buf.getvalue())
            else:
                o.writestr(name, z.read(name))
    (d / "bad_tm.json").write_text('{"version": 1, "phrases": [\n')
    (d / "bad_kf.json").write_text('{"keyframes": [{"time_s": "soon"}]}\n')
    (d / "list.json").write_text("[1, 2, 3]\n")
    (d / "bad_config.json").write_text('{"model": {"layers": 4,}}\n')
    (d / "bad_manifest.csv").write_text("source,dub,lang,output\nface.perf,dub.wav\n")
    return d


@pytest.fixture
def out(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def readonly_dir(tmp_path_factory) -> Path:
    """A folder nobody can create files in: a chmod 555 folder, or /sys where we run as root."""
    if os.geteuid() != 0:
        d = tmp_path_factory.mktemp("readonly")
        d.chmod(0o555)
        return d
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink(probe)
    pytest.skip("running as root with a writable /sys: no read-only folder to test with")


# (command line, phrases the one error line must hold). {out} is the per-test output folder.
CASES = {
    # extract: missing, empty, not media, truncated header, a folder, no face, audio only, limits, options
    "extract-missing": (["extract", "missing.mp4", "-o", "{out}/a.perf"], ["missing.mp4", "not found"]),
    "extract-empty": (["extract", "empty.mp4", "-o", "{out}/a.perf"], ["empty.mp4", "empty"]),
    "extract-text-as-mp4": (["extract", "text.mp4", "-o", "{out}/a.perf"], ["text.mp4", "not a readable video"]),
    "extract-truncated-header": (["extract", "head.mp4", "-o", "{out}/a.perf"], ["head.mp4"]),
    "extract-folder": (["extract", "folder", "-o", "{out}/a.perf"], ["folder", "not a file"]),
    "extract-no-face": (["extract", "noface.mp4", "-o", "{out}/a.perf"], ["noface.mp4", "face was found in 0"]),
    "extract-audio-only": (["extract", "dub.wav", "-o", "{out}/a.perf"], ["dub.wav", "no video stream"]),
    "extract-too-long": (["extract", "long.mp4", "--fps", "30", "-o", "{out}/a.perf"], ["long.mp4", "at most"]),
    "extract-too-wide": (["extract", "wide.png", "-o", "{out}/a.perf"], ["wide.png", "16400x16"]),
    "extract-negative-fps": (["extract", "face.mp4", "--fps", "-5", "-o", "{out}/a.perf"], ["--fps"]),
    "extract-fps-not-number": (["extract", "face.mp4", "--fps", "abc", "-o", "{out}/a.perf"],
                               ["--fps", "dubtool extract --help"]),
    "extract-min-cutoff-nan": (["extract", "face.mp4", "--min-cutoff", "nan", "-o", "{out}/a.perf"], ["--min-cutoff"]),
    "extract-output-is-folder": (["extract", "face.mp4", "-o", "{out}"], ["is a folder"]),
    "extract-output-under-file": (["extract", "face.mp4", "-o", "dub.wav/a.perf"], ["dub.wav is not a folder"]),
    # align
    "align-text-as-wav": (["align", "src.wav", "text.wav", "-o", "{out}/t.json"], ["text.wav", "cannot decode audio"]),
    "align-truncated-wav": (["align", "src.wav", "trunc.wav", "-o", "{out}/t.json"], ["trunc.wav"]),
    "align-silent-dub": (["align", "src.wav", "silence.wav", "-o", "{out}/t.json"], ["silence.wav", "no speech"]),
    "align-unknown-lang": (["align", "src.wav", "dub.wav", "--lang", "xx", "--dub-text", "bonjour", "-o", "{out}/t.json"],
                           ["unsupported language 'xx'", "fr"]),
    "align-folder": (["align", "folder", "dub.wav", "-o", "{out}/t.json"], ["folder", "not a file"]),
    # localize (all refused before any model is loaded)
    "localize-unknown-lang": (["localize", "face.perf", "dub.wav", "--lang", "xx", "--model", "teacher",
                               "--dub-text", "bonjour", "-o", "{out}/o.csv"],
                              ["unsupported language 'xx'"]),
    "localize-silent-dub": (["localize", "face.perf", "silence.wav", "-o", "{out}/o.csv"], ["silence.wav", "no speech"]),
    "localize-corrupt-perf": (["localize", "trunc.perf", "dub.wav", "-o", "{out}/o.csv"],
                              ["trunc.perf", "corrupt performance file"]),
    "localize-text-as-perf": (["localize", "text.perf", "dub.wav", "-o", "{out}/o.csv"], ["text.perf"]),
    "localize-no-face": (["localize", "noface.mp4", "dub.wav", "-o", "{out}/o.csv"], ["noface.mp4", "face"]),
    "localize-steps-0": (["localize", "face.perf", "dub.wav", "--steps", "0", "-o", "{out}/o.csv"], ["--steps"]),
    "localize-seed-not-int": (["localize", "face.perf", "dub.wav", "--seed", "1.5", "-o", "{out}/o.csv"], ["--seed"]),
    "localize-negative-fps": (["localize", "face.perf", "dub.wav", "--fps", "-3", "-o", "{out}/o.csv"], ["--fps"]),
    "localize-bad-keyframes": (["localize", "face.perf", "dub.wav", "--keyframes", "bad_kf.json", "--model", "teacher",
                                "--dub-text", DUB_TEXT, "-o", "{out}/o.csv"], ["bad_kf.json"]),
    "localize-bad-checkpoint": (["localize", "face.perf", "dub.wav", "--model-path", "text.perf", "-o",
                                 "{out}/o.csv"], ["text.perf", "checkpoint"]),
    "localize-bad-manifest": (["localize", "--manifest", "bad_manifest.csv"], ["bad_manifest.csv", "line 2"]),
    # keyframes
    "keyframes-missing-script": (["keyframes", "nope.txt", "-o", "{out}/k.json"], ["nope.txt", "not found"]),
    "keyframes-binary-script": (["keyframes", "dub.wav", "-o", "{out}/k.json"], ["dub.wav", "UTF-8"]),
    "keyframes-fps-0": (["keyframes", "script.txt", "-o", "{out}/k.json", "--fps", "0"], ["--fps"]),
    "keyframes-silent-audio": (["keyframes", "script.txt", "-o", "{out}/k.json", "--audio", "silence.wav"],
                               ["silence.wav", "no speech"]),
    "keyframes-unknown-lang": (["keyframes", "script.txt", "-o", "{out}/k.json", "--audio", "dub.wav", "--lang", "xx"],
                               ["unsupported language 'xx'"]),
    "keyframes-llm-timeout-negative": (["keyframes", "script.txt", "-o", "{out}/k.json", "--llm-url",
                                        "http://127.0.0.1:9/v1", "--llm-timeout", "-1"], ["--llm-timeout"]),
    "keyframes-csv-under-file": (["keyframes", "script.txt", "-o", "{out}/k.json", "--csv", "dub.wav/k.csv"],
                                 ["dub.wav is not a folder"]),
    # render
    "render-bad-cell": (["render", "bad_cell.csv", "-o", "{out}/r.mp4"], ["bad_cell.csv", "line 6", "not a number"]),
    "render-wrong-shape-perf": (["render", "shape.perf", "-o", "{out}/r.mp4"], ["shape.perf", "corrupt"]),
    "render-odd-size": (["render", "anim.csv", "-o", "{out}/r.mp4", "--size", "513x512"], ["513x512"]),
    "render-fps-0": (["render", "anim.csv", "-o", "{out}/r.mp4", "--fps", "0"], ["fps"]),
    "render-text-audio": (["render", "anim.csv", "-o", "{out}/r.mp4", "--audio", "text.wav"], ["text.wav"]),
    "render-bad-timemap": (["render", "anim.csv", "-o", "{out}/r.mp4", "--compare", "face.perf", "--timemap",
                            "bad_tm.json"], ["bad_tm.json", "not a JSON time map"]),
    "render-zoom-nan": (["render", "anim.csv", "-o", "{out}/r.mp4", "--zoom", "nan"], ["--zoom"]),
    "render-yaw-inf": (["render", "anim.csv", "-o", "{out}/r.mp4", "--yaw", "inf"], ["--yaw"]),
    "render-not-mp4": (["render", "anim.csv", "-o", "{out}/r.txt"], ["r.txt", ".mp4"]),
    "render-video-as-animation": (["render", "face.mp4", "-o", "{out}/r.mp4"], ["face.mp4", ".csv or a .perf"]),
    # export
    "export-nothing": (["export", "anim.csv"], ["--fbx", "--gltf"]),
    "export-short-row": (["export", "short_row.csv", "--fbx", "{out}/o.fbx"], ["short_row.csv", "line 4"]),
    "export-binary-csv": (["export", "binary.csv", "--gltf", "{out}/o.glb"], ["binary.csv", "not a text CSV"]),
    "export-wrong-suffix": (["export", "anim.csv", "--fbx", "{out}/o.obj"], ["o.obj", ".fbx"]),
    "export-second-output-unwritable": (["export", "anim.csv", "--gltf", "{out}/o.glb", "--fbx", "dub.wav/o.fbx"],
                                        ["dub.wav is not a folder"]),
    # train (only what fails before the corpus is built), eval, rig-sheet, setup-models
    "train-missing-config": (["train", "--config", "nope.json", "--out", "{out}/m.pt"], ["nope.json", "not found"]),
    "train-malformed-config": (["train", "--config", "bad_config.json", "--out", "{out}/m.pt"],
                               ["bad_config.json", "invalid JSON at line 1"]),
    "train-zero-steps": (["train", "--steps", "0", "--corpus", "{out}/corpus", "--out", "{out}/m.pt"], ["--steps must be at least 1, got 0"]),
    "train-negative-time-limit": (["train", "--time-limit", "-1", "--corpus", "{out}/corpus", "--out", "{out}/m.pt"],
                                  ["--time-limit"]),
    "eval-bad-set": (["eval", "--set", "list.json"], ["list.json", "manifest"]),
    "eval-no-transcript": (["eval", "anim.csv", "--dub", "dub.wav"], ["--dub-text"]),
    "eval-bad-phonemes": (["eval", "anim.csv", "--dub", "dub.wav", "--phonemes", "text.json"], ["text.json"]),
    "rig-sheet-unknown-shape": (["rig-sheet", "-o", "{out}/r.png", "--shape", "nope"], ["nope"]),
    "rig-sheet-columns-0": (["rig-sheet", "-o", "{out}/r.png", "--columns", "0"], ["--columns"]),
    "setup-models-wrong-file": (["setup-models", "--from", "text.wav"], ["text.wav", "sha256"]),
    "setup-models-folder": (["setup-models", "--from", "folder"], ["folder"]),
    "unknown-command": (["lipsync", "face.perf"], ["No such command 'lipsync'"]),
    "missing-argument": (["extract"], ["Missing argument", "dubtool extract --help"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, media, out):
    args, phrases = CASES[name]
    r = dubtool(*[a.format(out=out) for a in args], cwd=media)
    assert_user_error(r, out, *phrases)


# (command line writing into the read-only folder {ro}, with everything else valid)
UNWRITABLE = {
    "extract": ["extract", "face.mp4", "-o", "{ro}/a.perf"],
    "align": ["align", "src.wav", "dub.wav", "-o", "{ro}/t.json"],
    "localize": ["localize", "face.perf", "dub.wav", "--model", "teacher", "--dub-text", DUB_TEXT, "-o", "{ro}/o.csv"],
    "keyframes": ["keyframes", "script.txt", "-o", "{ro}/k.json", "--no-embedding"],
    "render": ["render", "anim.csv", "-o", "{ro}/r.mp4"],
    "export": ["export", "anim.csv", "--fbx", "{ro}/o.fbx"],
    "rig-sheet": ["rig-sheet", "-o", "{ro}/r.png", "--shape", "jawOpen"],
}


@pytest.mark.parametrize("command", list(UNWRITABLE))
def test_read_only_output_folder(command, media, readonly_dir):
    before = files_in(readonly_dir)
    r = dubtool(*[a.format(ro=readonly_dir) for a in UNWRITABLE[command]], cwd=media)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {readonly_dir}" in lines[0] and "not writable" in lines[0], lines[0]
    assert files_in(readonly_dir) == before


def test_missing_output_folder_is_created(media, tmp_path):
    out = tmp_path / "new" / "deeper" / "anim.glb"
    r = dubtool("export", "anim.csv", "--gltf", out, cwd=media)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 1000 and files_in(out.parent) == ["anim.glb"]


@pytest.mark.parametrize("dub", ["dub8k.wav", "dub48st.wav"])
def test_other_sample_rates_and_stereo_work(dub, media, out):
    """8 kHz mono and 48 kHz stereo dubs align like the 22 kHz original (same speech, same timing)."""
    r = dubtool("align", "src.wav", dub, "-o", out / "t.json", "--json", cwd=media)
    assert r.returncode == 0, r.stderr
    import json

    tm = json.loads(r.stdout)
    assert abs(tm["dub_duration_s"] - load_audio(media / "dub.wav").duration_s) < 0.05
    assert files_in(out) == ["t.json"]


def _interrupt(args, media: Path, out: Path, sig: int, wait_for: str) -> subprocess.CompletedProcess:
    """Start the command in its own process group, send `sig` to the group (as a terminal's Ctrl-C does)
    once a file matching `wait_for` shows up in `out`, and collect the result."""
    env = {k: v for k, v in os.environ.items() if k != "DUBTOOL_DEBUG"}
    p = subprocess.Popen([str(DUBTOOL), *map(str, args)], cwd=media, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and p.poll() is None and not list(out.glob(wait_for)):
        time.sleep(0.01)
    assert p.poll() is None, f"finished before it could be interrupted: {p.communicate()}"
    os.killpg(p.pid, sig)
    stdout, stderr = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_interrupt_while_writing_leaves_nothing(sig, code, word, media, out):
    """Interrupted while the output's temp file is being written: no output, no temp file, one line."""
    r = _interrupt(["render", "anim.csv", "-o", out / "r.mp4", "--fps", "240", "--size", "640x640"], media, out, sig,
                   ".r.mp4.*.mp4")
    assert_user_error(r, out, word, code=code)


def test_batch_keeps_finished_lines_and_reports_each_failure(media, out):
    manifest = out.parent / "lines.csv"
    manifest.write_text("source,dub,lang,output,dub_text\n"
                        f"face.perf,dub.wav,fr,{out}/good.csv,\"{DUB_TEXT}\"\n"
                        f"trunc.perf,dub.wav,fr,{out}/corrupt.csv,\"{DUB_TEXT}\"\n"
                        f"face.perf,silence.wav,fr,{out}/silent.csv,\"{DUB_TEXT}\"\n"
                        f"face.perf,dub.wav,xx,{out}/lang.csv,\"{DUB_TEXT}\"\n")
    for name in ("face.perf", "trunc.perf", "dub.wav", "silence.wav"):
        os.symlink(media / name, out.parent / name)
    r = dubtool("localize", "--manifest", manifest, "--model", "teacher", cwd=media)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert read_csv(out / "good.csv").num_frames > 10
    assert sorted(p for p in files_in(out) if p.endswith(".csv")) == ["good.csv"]
    assert not [p for p in files_in(out) if p.startswith(".")]
    results = (out.parent / "lines.results.csv").read_text().splitlines()
    assert results[1].split(",")[2] == "done"
    assert "failed" in results[2] and "trunc.perf" in results[2]
    assert "failed" in results[3] and "no speech" in results[3]
    assert "failed" in results[4] and "unsupported language" in results[4]


def test_ctrl_c_in_batch_keeps_finished_lines(media, out):
    """Ctrl-C after the first line: finished lines' outputs stay whole, nothing partial is left, exit 130
    (a rerun then skips the finished lines)."""
    rows = "".join(f"face.perf,dub.wav,fr,{out}/line{i}.csv,\"{DUB_TEXT}\"\n" for i in range(6))
    manifest = out.parent / "many.csv"
    manifest.write_text("source,dub,lang,output,dub_text\n" + rows)
    for name in ("face.perf", "dub.wav"):
        os.symlink(media / name, out.parent / name)
    r = _interrupt(["localize", "--manifest", manifest, "--model", "teacher"], media, out, signal.SIGINT, "line0.csv")
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    done = [p for p in files_in(out) if p.endswith(".csv")]
    assert "line0.csv" in done and len(done) < 6
    assert not [p for p in files_in(out) if p.startswith(".")]
    for name in done:
        assert read_csv(out / name).num_frames > 10


def test_localize_refuses_wrong_fbx_suffix(media, out):
    r = dubtool("localize", "face.perf", "dub.wav", "--model", "teacher", "--dub-text", DUB_TEXT, "-o", out / "o.csv",
                "--fbx", out / "o.obj", cwd=media)
    assert_user_error(r, out, "o.obj", ".fbx")


def test_localize_refuses_nan_start(media, out):
    r = dubtool("localize", "face.perf", "dub.wav", "--start", "nan", "-o", out / "o.csv", cwd=media)
    assert_user_error(r, out, "--start")
