"""`localize --manifest --ray`: a real two-node Ray cluster on this machine (`ray start --head` and a
second `ray start --address`, 1 CPU each) runs a manifest; its outputs must equal the local batch's,
a failing row is reported on its own, and a rerun skips the finished rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'dubtool[ray]'; setup.sh --dev installs it)")

from dubtool.arkit import NUM_CHANNELS, Animation, index  # noqa: E402
from dubtool.audio import Audio  # noqa: E402
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


MORE = 16  # rows d0.. after a, b, c: enough that a SIGTERM lands while the actors still work


def test_ray_batch_on_two_nodes_equals_the_local_batch(cluster, lines, tiny_model, tmp_path):
    from dubtool.batch import run_manifest
    from dubtool.localize import LocalizeOptions

    local = _manifest(tmp_path / "local", lines, more=1)
    run_manifest(local, LocalizeOptions(model_path=tiny_model, seed=3), workers=1)

    # SIGTERM while the two actors work: exit 143, the finished lines stay whole, nothing half written
    # is left, the actors are gone
    m = _manifest(tmp_path / "ray", lines, more=MORE)
    out = m.parent / "out"
    cmd = [sys.executable, "-m", "dubtool", "localize", "--manifest", str(m), "--ray", cluster.address,
           "--model-path", tiny_model, "--seed", "3"]
    p = subprocess.Popen(cmd, cwd=m.parent, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the actors must be seen while they work; wait until they are and two lines are done (a slow
    # 2-core runner may take a while to start them), then stop the run
    t0, seen = time.time(), False
    while time.time() < t0 + 180 and p.poll() is None:
        seen = seen or bool(cluster.processes("LocalizeWorker"))
        if seen and (out / "a.csv").exists() and (out / "c.csv").exists():
            break
        time.sleep(0.1)
    assert seen and p.poll() is None, (
        f"actors seen: {seen}, after {time.time() - t0:.0f} s; run exited: {p.poll()}; "
        f"done: {sorted(f.name for f in out.glob('*.csv')) if out.is_dir() else []}; {err_of(p)}\n{cluster.logs()}")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    finished = sorted(out.glob("*.csv"))
    assert 2 <= len(finished) < MORE + 2, err
    assert all(read_csv(f).num_frames > 0 for f in finished)
    assert not [f.name for f in out.iterdir() if f.name.startswith(".")]  # no temp file of a line in flight
    deadline = time.time() + 20
    while cluster.processes("LocalizeWorker") and time.time() < deadline:
        time.sleep(0.2)
    assert not cluster.processes("LocalizeWorker")

    # rerun: the finished rows are skipped (untouched), the rest done, the failing row reported alone
    stamps = {f.name: f.stat().st_mtime_ns for f in finished}
    again = run_manifest(m, LocalizeOptions(model_path=tiny_model, seed=3), workers=2, ray=cluster.address)
    rows = {Path(x.output).stem: asdict(x) for x in again}
    assert [x.line for x in again] == list(range(2, MORE + 5))  # one result per row, in manifest order
    assert rows["b"]["status"] == "failed" and "corrupt.wav" in rows["b"]["message"]
    assert all(rows[Path(f).stem]["status"] == "skipped" for f in stamps)
    assert all(f.stat().st_mtime_ns == stamps[f.name] for f in finished)
    assert all(rows[f"d{i}"]["status"] in ("done", "skipped") for i in range(MORE))
    assert not (out / "b.csv").exists() and (out / "a.report.json").is_file()
    for name in ("a", "c", "d0"):  # same seed, same model: the same curves as the local batch
        x, y = read_csv(local.parent / "out" / f"{name}.csv"), read_csv(out / f"{name}.csv")
        assert x.num_frames == y.num_frames > 0
        np.testing.assert_allclose(x.values, y.values, atol=1e-4)


def err_of(p: subprocess.Popen) -> str:
    return "" if p.poll() is None else p.stdout.read()[-2000:] + p.stderr.read()[-2000:]


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
    # without Ray installed (an import that fails, as in an install without the extra)
    (tmp_path / "noray" / "ray").mkdir(parents=True)
    (tmp_path / "noray" / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(ray_env(), PYTHONPATH=os.pathsep.join([str(tmp_path / "noray"), ray_env()["PYTHONPATH"]]))
    r = subprocess.run([sys.executable, "-m", "dubtool", "localize", "--manifest", str(m), "--ray"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install 'dubtool[ray]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_ray_is_imported_only_for_ray():
    code = "import sys, dubtool.cli, dubtool.batch; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    r = subprocess.run([sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


class _FakeCluster:
    """Just the cluster_resources() of a Ray cluster, for the actor plan."""

    def __init__(self, **resources) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict:
        return self.resources


def test_actor_plan_uses_gpus_when_the_cluster_has_them():
    from dubtool.errors import InputError
    from dubtool.raybatch import _plan

    assert _plan(_FakeCluster(CPU=16.0, GPU=2.0), None, None, 100) == (2, {"num_cpus": 1, "num_gpus": 1}, "cuda")
    assert _plan(_FakeCluster(CPU=16.0, GPU=2.0), None, "cpu", 100) == (16, {"num_cpus": 1}, "cpu")
    assert _plan(_FakeCluster(CPU=4.0), None, None, 3) == (3, {"num_cpus": 1}, "cpu")  # no more actors than rows
    assert _plan(_FakeCluster(CPU=4.0), 2, None, 10)[0] == 2
    with pytest.raises(InputError, match="has 4 CPU"):
        _plan(_FakeCluster(CPU=4.0), 8, None, 10)
    with pytest.raises(InputError, match="no GPU"):
        _plan(_FakeCluster(CPU=4.0), None, "cuda", 10)


def test_a_node_that_does_not_see_the_shared_folder_fails_its_rows(tmp_path):
    from dubtool.batch import ManifestRow
    from dubtool.localize import LocalizeOptions
    from dubtool.raybatch import LocalizeWorker

    w = LocalizeWorker(LocalizeOptions(model="teacher"), str(tmp_path / "not-mounted"))
    r = w.run(ManifestRow(2, "a.perf", "a.wav", "fr", str(tmp_path / "out" / "a.csv")))
    assert r.status == "failed" and "not-mounted" in r.message and "same path" in r.message
    assert not (tmp_path / "out").exists()


def test_object_store_outputs_upload_the_csv_last_and_resume(lines, tiny_model, tmp_path):
    """Outputs named by an fsspec URL (memory:// here; s3:// with s3fs on a cluster) — the same code
    path on the local batch and on Ray actors."""
    import fsspec

    from dubtool.batch import run_manifest
    from dubtool.localize import LocalizeOptions

    m = tmp_path / "uri.csv"
    m.write_text("source,dub,lang,output\n"
                 f"{lines / 'src.perf'},{EXAMPLE_DUB},fr,memory://dubtool-test/fr/a.csv\n"
                 f"{lines / 'src.perf'},{lines / 'corrupt.wav'},fr,memory://dubtool-test/fr/b.csv\n"
                 f"{lines / 'src.perf'},{EXAMPLE_DUB},fr,local/a.csv\n")
    fs = fsspec.filesystem("memory")
    first = run_manifest(m, LocalizeOptions(model_path=tiny_model, seed=3))
    assert [r.status for r in first] == ["done", "failed", "done"]
    assert fs.isfile("/dubtool-test/fr/a.csv") and not fs.exists("/dubtool-test/fr/b.csv")
    report = json.loads(fs.cat("/dubtool-test/fr/a.report.json"))
    assert report["outputs"]["csv"] == "memory://dubtool-test/fr/a.csv"
    (tmp_path / "a_uploaded.csv").write_bytes(fs.cat("/dubtool-test/fr/a.csv"))
    np.testing.assert_array_equal(read_csv(tmp_path / "a_uploaded.csv").values, read_csv(tmp_path / "local/a.csv").values)
    again = run_manifest(m, LocalizeOptions(model_path=tiny_model, seed=3))
    assert [r.status for r in again] == ["skipped", "failed", "skipped"]
    fs.rm("/dubtool-test", recursive=True)
