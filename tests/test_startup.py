"""Start-up stays cheap: `dubtool --help` and the error paths a user hits most (a bad option, a
mistyped file) answer without importing the heavy stack (torch, librosa, scipy, numpy, mediapipe...),
and a one-shot localize never loads librosa/scipy/numba. Checked by what a fresh process imports
(`python -X importtime`), not by timing, so the test is the same on a busy machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "librosa", "scipy", "numba", "numpy", "mediapipe", "matplotlib", "cv2", "moderngl", "pydantic")


def imported_packages(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "dubtool", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    names = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines()
             if line.startswith("import time:")}
    return r, names


def assert_light(names: set[str]) -> None:
    heavy = sorted(names & set(HEAVY))
    hint = (" (typer >= 0.29 validates options through pydantic: install 'typer<0.29' as pyproject.toml says)"
            if heavy == ["pydantic"] else "")
    assert not heavy, f"start-up imported {heavy}{hint}"


@pytest.mark.parametrize("args", [[], ["--help"], ["localize", "--help"], ["extract", "--help"]])
def test_help_imports_no_heavy_package(args, tmp_path):
    r, names = imported_packages(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
    assert "Usage:" in r.stdout and ("localize" in r.stdout or "--help" in r.stdout)
    assert_light(names)


@pytest.mark.parametrize("args,phrase", [
    (["localize", "--bogus"], "No such option"),
    (["localize", "nope.perf", "nope.wav", "--lang", "fr", "-o", "out.csv"], "dub audio not found: nope.wav"),
    (["localize", "nope.perf", "dub.wav", "--lang", "fr", "-o", "out.csv"], "source not found: nope.perf"),
    (["extract", "nope.mp4", "-o", "a.perf"], "video file not found: nope.mp4"),
    (["render", "nope.csv", "-o", "r.mp4"], "animation file not found: nope.csv"),
    (["export", "nope.csv", "--fbx", "o.fbx"], "animation file not found: nope.csv"),
    (["align", "nope.wav", "dub.wav", "-o", "t.json"], "source not found: nope.wav"),
])
def test_user_errors_answer_before_heavy_imports(args, phrase, tmp_path):
    (tmp_path / "dub.wav").write_bytes(b"RIFF....WAVE")  # exists: only the other input is missing
    r, names = imported_packages(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-500:]
    errors = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1 and phrase in errors[0], errors
    assert_light(names)
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob("*.perf"))


def _one_shot_inputs(tmp_path: Path) -> None:
    """src.perf (a still face) and dub.wav (1.5 s of voiced buzz) in tmp_path."""
    from dubtool.arkit import NUM_CHANNELS, Animation
    from dubtool.audio import Audio, write_wav
    from dubtool.performance import Performance, save_performance

    sr, fps = 16000, 25.0
    t = np.arange(int(1.5 * sr)) / sr
    speech = Audio((0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), sr)
    write_wav(speech, tmp_path / "dub.wav")
    n = int(round(speech.duration_s * fps))
    z = np.zeros((n, 478, 3), np.float32)
    save_performance(Performance(z, z.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                                 Animation(np.zeros((n, NUM_CHANNELS), np.float32), fps), np.ones(n, bool),
                                 np.ones(n, np.float32), speech, {"source": "test"}), tmp_path / "src.perf")


def test_one_shot_localize_loads_no_librosa_scipy_numba(tiny_model, tmp_path):
    """The first line of a process costs what a repeat does: the mel front end no longer imports
    librosa.filters (which pulled scipy.signal and numba: seconds on the first line only). The tiny
    checkpoint has no ONNX sidecar: it runs on torch."""
    _one_shot_inputs(tmp_path)
    r, names = imported_packages("localize", "src.perf", "dub.wav", "--lang", "fr", "--model-path", tiny_model,
                                 "-o", "out.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-800:]
    assert (tmp_path / "out.csv").is_file()
    assert "torch" in names  # it did run the flow model
    late = sorted(names & {"librosa", "scipy", "numba", "langcodes"})
    assert not late, f"a one-shot localize imported {late}"


def test_one_shot_localize_with_the_shipped_model_never_imports_torch(tmp_path, monkeypatch):
    """The shipped generator runs on ONNX Runtime from its sidecar: a one-shot localize from a .perf
    (read, align, warp, generate, CSV, report) does not pay torch's 1-2.5 s import."""
    pytest.importorskip("onnxruntime")
    _one_shot_inputs(tmp_path)
    monkeypatch.delenv("DUBTOOL_BACKEND", raising=False)
    r, names = imported_packages("localize", "src.perf", "dub.wav", "--lang", "fr", "-o", "out.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-800:]
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "out.report.json").is_file()
    assert "onnxruntime" in names  # it did run the flow model
    heavy = sorted(names & {"torch", "librosa", "scipy", "numba", "langcodes", "mediapipe", "matplotlib"})
    assert not heavy, f"a one-shot localize imported {heavy}"


def test_face_tracker_does_not_import_mediapipes_drawing_utilities(tmp_path):
    """`import mediapipe` runs its legacy solutions API, whose drawing utilities import matplotlib.pyplot
    and cv2 (~0.8 s of a one-shot localize from a video). dubtool's tracker defers that package: it is
    not executed for tracking, and still works for code that uses it."""
    pytest.importorskip("mediapipe")
    code = ("import sys\nfrom dubtool.extract import FaceTracker\nFaceTracker()\n"
            "print(sorted(m for m in ('matplotlib', 'cv2') if m in sys.modules))\n"
            "import mediapipe as mp\nprint(mp.solutions.drawing_utils.DrawingSpec.__name__, 'matplotlib' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["[]", "DrawingSpec True"]


@pytest.mark.parametrize("preset,expected", [(None, 1), ("2", 2)])
def test_the_command_runs_numpy_with_one_blas_thread_unless_told(preset, expected, tmp_path):
    """numpy's OpenBLAS kept a second thread spinning after every small product of a line: half the CPU of a
    batch line, taken from the core a second worker needs. `dubtool` runs one BLAS thread unless
    OPENBLAS_NUM_THREADS says otherwise (workers inherit it)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")  # noqa: F841
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = ("from dubtool.cli import thread_defaults\nthread_defaults()\nimport numpy, threadpoolctl\n"
            "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.strip()) == expected


def test_the_fixed_mmap_threshold_is_kept_off_the_training_loop(monkeypatch):
    """Every command but `train` fixes glibc's mmap threshold (flat memory on long inputs); a training loop
    reuses the same tensors every step, which the fixed threshold turned into an mmap/munmap per block."""
    import ctypes

    from dubtool import cli

    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Libc())
    cli._fix_mmap_threshold(["localize", "a.perf", "b.wav", "-o", "c.csv"])
    assert calls == [(-3, cli.MMAP_THRESHOLD_BYTES)]
    cli._fix_mmap_threshold(["train", "--captures", "takes", "--out", "actor.pt"])
    cli._fix_mmap_threshold(["--quiet", "train", "--config", "c.json"])
    assert len(calls) == 1
