"""`localize --manifest --ray`: a real two-node Ray cluster on this machine (`ray start --head` and a
second `ray start --address`, 1 CPU each) runs a manifest; its outputs must equal the local batch's,
a failing row is reported on its own, and a rerun skips the finished rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dubtool[ray]'; setup.sh --dev installs it)")

from dubtool.arkit import NUM_CHANNELS, Animation  # noqa: E402
from dubtool.audio import Audio, load_audio  # noqa: E402
from dubtool.livelink import read_csv  # noqa: E402
from dubtool.performance import Performance, save_performance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DUB = ROOT / "examples" / "dub_fr.wav"
RAY_BIN = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env() -> dict:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("RAY_ADDRESS", None)
    return env


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: the teardown stops exactly this node's
    processes (gcs, raylet, workers) by that group id, never another Ray on the machine."""
    cmd = [str(RAY_BIN), "start", "--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats",
           "--object-store-memory", str(100 * 1024 * 1024), "--dashboard-agent-listen-port", str(_free_port()),
           "--metrics-export-port", str(_free_port()), *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=_ray_env(),
                            start_new_session=True)


def _stop_node(p: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 2), (signal.SIGKILL, 5)):  # gcs_server may ignore SIGTERM
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the group may outlive its leader for a moment (raylet's workers)
        deadline = time.time() + wait_s
        while time.time() < deadline:
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second worker node, 1 CPU each; yields the head's address."""
    if not RAY_BIN.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    tmp = Path(tempfile.mkdtemp(prefix="dtray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_start_node(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", str(tmp),
                          "--include-dashboard", "false", "--ray-client-server-port", str(_free_port())],
                         tmp / "head.log")]
    try:
        _wait_for_port(port, nodes[0], tmp / "head.log")
        nodes.append(_start_node(["--address", address, "--node-ip-address", "127.0.0.1"], tmp / "worker.log"))
        _wait_for_nodes(address, 2, nodes, tmp)
        yield address
    finally:
        for p in reversed(nodes):
            _stop_node(p)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_port(port: int, node: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if node.poll() is not None:
            pytest.fail(f"ray start --head exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"Ray head did not come up in {timeout_s} s: {log.read_text()[-2000:]}")


def _wait_for_nodes(address: str, n: int, nodes: list, tmp: Path, timeout_s: float = 60) -> None:
    code = ("import ray, sys, time\n"
            f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
            f"deadline = time.time() + {timeout_s}\n"
            f"while sum(x['Alive'] for x in ray.nodes()) < {n} and time.time() < deadline: time.sleep(0.3)\n"
            f"sys.exit(0 if sum(x['Alive'] for x in ray.nodes()) >= {n} else 1)\n")
    r = subprocess.run([sys.executable, "-c", code], env=_ray_env(), capture_output=True, text=True,
                       timeout=timeout_s + 30)
    if r.returncode != 0:
        logs = "".join(f.read_text()[-1500:] for f in sorted(tmp.glob("*.log")))
        pytest.fail(f"the Ray cluster did not reach {n} nodes: {r.stderr[-1500:]} {logs}")


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """Inputs of a small manifest: the bundled example's French dub, a synthetic .perf source
    (English espeak speech, a brow raise and a head turn), and a corrupt dub."""
    from dubtool.espeak import synthesize

    d = tmp_path_factory.mktemp("raylines")
    src = synthesize((ROOT / "examples" / "line_en.txt").read_text().strip(), "en-us").audio
    fps = 25.0
    n = int(round(src.duration_s * fps))
    t = np.arange(n) / fps
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    v[:, 0] = np.clip(np.sin(np.pi * t / src.duration_s), 0, 1)
    z = np.zeros((n, 478, 3), np.float32)
    perf = Performance(z, z.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), Animation(v, fps),
                       np.ones(n, bool), np.ones(n, np.float32), Audio(src.samples, src.sample_rate),
                       {"source": "synthetic"})
    save_performance(perf, d / "src.perf")
    assert load_audio(EXAMPLE_DUB).duration_s > 1
    (d / "corrupt.wav").write_bytes(b"RIFF" + b"\x00garbage" * 50)
    return d


def _manifest(folder: Path, lines: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["source,dub,lang,output",
            f"{lines / 'src.perf'},{EXAMPLE_DUB},fr,out/a.csv",
            f"{lines / 'src.perf'},{lines / 'corrupt.wav'},fr,out/b.csv",
            f"{lines / 'src.perf'},{EXAMPLE_DUB},es,out/c.csv"]
    m = folder / "lines.csv"
    m.write_text("\n".join(rows) + "\n")
    return m


def _dubtool(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dubtool", *map(str, args)], cwd=cwd, env=_ray_env(),
                          capture_output=True, text=True, timeout=240)


def test_ray_batch_on_two_nodes_equals_the_local_batch(cluster, lines, tiny_model, tmp_path):
    from dubtool.batch import run_manifest
    from dubtool.localize import LocalizeOptions

    local = _manifest(tmp_path / "local", lines)
    run_manifest(local, LocalizeOptions(model_path=tiny_model, seed=3), workers=1)

    on_ray = _manifest(tmp_path / "ray", lines)
    r = _dubtool("localize", "--manifest", on_ray, "--ray", cluster, "--model-path", tiny_model, "--seed", "3",
                 "--json", cwd=on_ray.parent)
    assert r.returncode == 1, r.stderr  # one row failed
    summary = json.loads(r.stdout)
    assert (summary["done"], summary["failed"]) == (2, 1)
    res = json.loads((on_ray.parent / "lines.results.json").read_text())
    assert [row["status"] for row in res["rows"]] == ["done", "failed", "done"]
    assert "corrupt.wav" in res["rows"][1]["message"]
    for name in ("a", "c"):  # same seed, same model: the same curves as the local batch
        a, b = read_csv(tmp_path / "local" / "out" / f"{name}.csv"), read_csv(on_ray.parent / "out" / f"{name}.csv")
        assert a.num_frames == b.num_frames > 0
        np.testing.assert_allclose(a.values, b.values, atol=1e-4)
        assert (on_ray.parent / "out" / f"{name}.report.json").is_file()
    assert not (on_ray.parent / "out" / "b.csv").exists()
    assert not [p.name for p in (on_ray.parent / "out").iterdir() if p.name.startswith(".")]  # no temp left

    # resume: the finished rows are skipped (untouched), the failed one is tried again
    before = (on_ray.parent / "out" / "a.csv").stat().st_mtime_ns
    again = run_manifest(on_ray, LocalizeOptions(model_path=tiny_model, seed=3), workers=None, ray=cluster)
    assert [x.status for x in again] == ["skipped", "failed", "skipped"]
    assert (on_ray.parent / "out" / "a.csv").stat().st_mtime_ns == before


def test_ray_errors_are_one_line(tmp_path, lines):
    m = _manifest(tmp_path, lines)
    port = _free_port()  # nothing listens there
    t0 = time.perf_counter()
    r = _dubtool("localize", "--manifest", m, "--ray", f"127.0.0.1:{port}", cwd=tmp_path)
    assert r.returncode == 2 and "cannot reach the Ray cluster" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and time.perf_counter() - t0 < 30
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.csv"))
    r = _dubtool("localize", "src.perf", "dub.wav", "-o", "x.csv", "--ray", cwd=tmp_path)
    assert r.returncode == 2 and "--ray is for batches" in r.stderr, r.stderr
