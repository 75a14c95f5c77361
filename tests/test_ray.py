"""`localize --manifest --ray`: a real two-node Ray cluster on this machine (`ray start --head` and a
second `ray start --address`, 1 CPU each) runs a manifest; its outputs must equal the local batch's,
a failing row is reported on its own, and a rerun skips the finished rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'dubtool[ray]'; setup.sh --dev installs it)")

from dubtool.arkit import NUM_CHANNELS, Animation, index  # noqa: E402
from dubtool.audio import Audio, load_audio  # noqa: E402
from dubtool.livelink import read_csv  # noqa: E402
from dubtool.performance import Performance, save_performance  # noqa: E402
from raycluster import LocalCluster, free_port, ray_env  # noqa: E402  (tests/raycluster.py)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DUB = ROOT / "examples" / "dub_fr.wav"


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second worker node (`ray start`), 1 CPU each; yields the head's address."""
    try:
        c = LocalCluster(nodes=2)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """Inputs of a small manifest: the bundled example's French dub, a synthetic .perf source
    (espeak reading the example's English line, a brow raise over it), and a corrupt dub."""
    from dubtool.espeak import synthesize

    d = tmp_path_factory.mktemp("raylines")
    src = synthesize((ROOT / "examples" / "line_en.txt").read_text().strip(), "en-us").audio
    fps = 25.0
    n = int(round(src.duration_s * fps))
    t = np.arange(n) / fps
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    v[:, index("browInnerUp")] = np.clip(np.sin(np.pi * t / src.duration_s), 0, 1)
    z = np.zeros((n, 478, 3), np.float32)
    perf = Performance(z, z.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), Animation(v, fps),
                       np.ones(n, bool), np.ones(n, np.float32), Audio(src.samples, src.sample_rate),
                       {"source": "synthetic"})
    save_performance(perf, d / "src.perf")
    assert load_audio(EXAMPLE_DUB).duration_s > 1
    (d / "corrupt.wav").write_bytes(b"RIFF" + b"\x00garbage" * 50)
    return d


def _manifest(folder: Path, lines: Path, more: int = 0, name: str = "lines.csv") -> Path:
    """Rows a (fr), b (a corrupt dub), c (es), then `more` rows d0, d1, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["source,dub,lang,output",
            f"{lines / 'src.perf'},{EXAMPLE_DUB},fr,out/a.csv",
            f"{lines / 'src.perf'},{lines / 'corrupt.wav'},fr,out/b.csv",
            f"{lines / 'src.perf'},{EXAMPLE_DUB},es,out/c.csv"]
    rows += [f"{lines / 'src.perf'},{EXAMPLE_DUB},fr,out/d{i}.csv" for i in range(more)]
    m = folder / name
    m.write_text("\n".join(rows) + "\n")
    return m


def _dubtool(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dubtool", *map(str, args)], cwd=cwd, env=ray_env(),
                          capture_output=True, text=True, timeout=240)


def test_ray_batch_on_two_nodes_equals_the_local_batch(cluster, lines, tiny_model, tmp_path):
    from dubtool.batch import run_manifest
    from dubtool.localize import LocalizeOptions

    local = _manifest(tmp_path / "local", lines)
    run_manifest(local, LocalizeOptions(model_path=tiny_model, seed=3), workers=1)

    on_ray = _manifest(tmp_path / "ray", lines)
    r = _dubtool("localize", "--manifest", on_ray, "--ray", cluster.address, "--model-path", tiny_model, "--seed", "3",
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

    # SIGTERM while the actors work on a longer manifest: exit 143, the finished lines stay whole,
    # nothing half written is left, the actors are gone
    before = (on_ray.parent / "out" / "a.csv").stat().st_mtime_ns
    big = _manifest(on_ray.parent, lines, more=16, name="big.csv")
    cmd = [sys.executable, "-m", "dubtool", "localize", "--manifest", str(big), "--ray", cluster.address,
           "--model-path", tiny_model, "--seed", "3"]
    p = subprocess.Popen(cmd, cwd=big.parent, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = on_ray.parent / "out"
    deadline = time.time() + 120
    while not list(out.glob("d*.csv")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert cluster.processes("LocalizeWorker"), err_of(p)  # the actors, seen while they work
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    finished = sorted(out.glob("d*.csv"))
    assert 1 <= len(finished) < 16, err
    assert all(read_csv(f).num_frames > 0 for f in finished)
    assert not [f.name for f in out.iterdir() if f.name.startswith(".")]  # no temp file of a line in flight
    deadline = time.time() + 20
    while cluster.processes("LocalizeWorker") and time.time() < deadline:
        time.sleep(0.2)
    assert not cluster.processes("LocalizeWorker")

    # resume: the finished rows are skipped (untouched), the failed one is tried again, the rest done
    again = run_manifest(big, LocalizeOptions(model_path=tiny_model, seed=3), workers=1, ray=cluster.address)
    status = {Path(x.output).stem: x.status for x in again}
    assert status["a"] == status["c"] == "skipped" and status["b"] == "failed"
    assert all(status[f.stem] == "skipped" for f in finished)
    assert all(status[f"d{i}"] in ("done", "skipped") for i in range(16))
    assert (out / "a.csv").stat().st_mtime_ns == before


def err_of(p: subprocess.Popen) -> str:
    return "" if p.poll() is None else p.stderr.read()


def test_ray_errors_are_one_line(tmp_path, lines):
    m = _manifest(tmp_path, lines)
    port = free_port()  # nothing listens there
    t0 = time.perf_counter()
    r = _dubtool("localize", "--manifest", m, "--ray", f"127.0.0.1:{port}", cwd=tmp_path)
    assert r.returncode == 2 and "cannot reach the Ray cluster" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and time.perf_counter() - t0 < 30
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.csv"))
    r = _dubtool("localize", "src.perf", "dub.wav", "-o", "x.csv", "--ray", cwd=tmp_path)
    assert r.returncode == 2 and "--ray is for batches" in r.stderr, r.stderr
