"""The generator on ONNX Runtime (no torch) gives the torch generator's animation, is used only when its
sidecar was exported from exactly the checkpoint loaded, and everything else falls back to torch."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool import generate
from dubtool.audio import Audio, load_audio
from dubtool.errors import ModelError
from dubtool.generate import DEFAULT_MODEL, Generator, OnnxGenerator, load_model, style_context
from dubtool.keypoints import keypoints_from_curves
from dubtool.onnxrt import sidecar_paths, torch_randn
from dubtool.upperface import procedural_upper_face

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def line():
    """A real recorded line (the bundled French dub, 8.1 s: two overlapping chunks) with a procedural
    upper-face performance as its conditioning."""
    audio = load_audio(REPO / "examples" / "dub_fr.wav")
    up = procedural_upper_face(audio.duration_s, 30.0, np.random.default_rng(0), emotion="joy").animation.values
    return audio, keypoints_from_curves(up), style_context(up)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """torch on one thread here: on a shared 2-core machine its spinning OpenMP pair is 10x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def copied_model(tmp_path):
    """The shipped checkpoint and its ONNX sidecar, copied where a test may spoil them."""
    dst = tmp_path / "m.pt"
    shutil.copy(DEFAULT_MODEL, dst)
    for part, src in sidecar_paths(DEFAULT_MODEL).items():
        shutil.copy(src, sidecar_paths(dst)[part])
    return dst


def test_shipped_sidecar_matches_the_shipped_checkpoint():
    """A stale sidecar (the .pt retrained, the graphs not re-exported) would silently send every user
    to torch: the shipped pair must match."""
    gen = load_model()
    assert isinstance(gen, OnnxGenerator)
    torch_gen = load_model(backend="torch")
    assert gen.dims == torch_gen.dims and gen.sampler == torch_gen.sampler
    assert gen.meta == json.loads(json.dumps(torch_gen.meta))  # the card's history, through JSON
    for k, v in torch_gen.stats().items():
        assert np.array_equal(gen.stats()[k], v), k


def test_onnx_runtime_animation_equals_torch_on_a_real_line(line):
    """Same checkpoint, same seed, same conditioning: the same curves up to float rounding. Measured
    differences are ~1e-6 (float32 kernels summing in another order); 1e-4 is a hundredth of the
    smallest blendshape change anyone sees, and a real divergence (other noise, a wrong mask, dropout
    left on, a chunk misplaced) is > 1e-2."""
    audio, kp, st = line
    onnx_gen, torch_gen = load_model(), load_model(backend="torch")
    assert isinstance(onnx_gen, OnnxGenerator) and type(torch_gen) is Generator
    a = onnx_gen.generate(audio, kp, st, seed=7).values
    b = torch_gen.generate(audio, kp, st, seed=7).values
    assert a.shape == b.shape == (243, 61)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    # guidance 1 (no audio-free pass) and the midpoint method go through other branches of the sampler
    short = Audio(audio.samples[:32000], 16000)
    a = onnx_gen.generate(short, kp[:60], st, guidance=1.0, steps=2, seed=3).values
    b = torch_gen.generate(short, kp[:60], st, guidance=1.0, steps=2, seed=3).values
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    assert np.abs(a - onnx_gen.generate(short, kp[:60], st, seed=3).values).max() > 1e-2  # guidance matters
    m, k, s = onnx_gen._prepare(short, kp[:60], st)
    mt, kt, stt = torch_gen._prepare(short, kp[:60], st)
    a = onnx_gen.sample(m[None], k[None], s[None], steps=2, guidance=2.0, seed=3, method="midpoint")
    b = torch_gen.sample(mt[None], kt[None], stt[None], steps=2, guidance=2.0, seed=3, method="midpoint")
    np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape,seed", [((1, 150, 61), 0), ((2, 37, 61), 12345), ((1, 1, 61), 2 ** 32 + 5)])
def test_noise_is_torchs_seeded_noise(shape, seed, monkeypatch):
    """The ONNX path draws torch.randn's numbers (blocks of 16, a redrawn tail) without torch."""
    from dubtool import onnxrt

    torch = pytest.importorskip("torch")
    ref = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).numpy()
    np.testing.assert_allclose(torch_randn(shape, seed), ref, rtol=0, atol=1e-5)
    monkeypatch.setattr(onnxrt, "RANDN_BLOCK", 64)  # drawn block by block: the same stream
    np.testing.assert_allclose(torch_randn(shape, seed), ref, rtol=0, atol=1e-5)


def test_long_take_in_groups_equals_the_whole_take_on_onnx_runtime(line):
    """The grouped sampling of long takes (bounded memory) runs the ONNX path too: groups of 1 and 2
    chunks with their margins give the whole-take animation (tests/test_streaming.py checks the margin's
    size on torch; one ODE step keeps this one short)."""
    from dubtool.generate import _chunk_starts

    audio, _, st = line
    gen = load_model()
    take = Audio(np.concatenate([audio.samples] * 2), 16000)  # 16 s: 4 chunks
    n = int(round(take.duration_s * gen.fps))
    up = procedural_upper_face(take.duration_s, 30.0, np.random.default_rng(1)).animation.values
    kp = keypoints_from_curves(up)[:n]
    steps = 1
    whole = gen.generate(take, kp, st, steps=steps, seed=3).values
    starts = _chunk_starts(n, gen.sampler.chunk_frames, gen.sampler.overlap_frames)
    assert len(starts) == 4
    for group in (1, 2):
        blocks = gen._generate_grouped(take, lambda a, b: kp[a:b], st, n, starts, group, steps + 2, steps,
                                       gen.sampler.guidance, 3)
        grouped = gen._finish(np.concatenate([v for _, v in blocks]))  # the gains, the clip: per frame
        np.testing.assert_allclose(grouped, whole, rtol=0, atol=1e-4)


def test_sidecar_of_another_checkpoint_is_not_used(copied_model, tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("DUBTOOL_BACKEND", raising=False)
    assert isinstance(load_model(copied_model), OnnxGenerator)
    other = tmp_path / "other.pt"  # v5's sidecar beside another checkpoint
    shutil.copy(tiny_model, other)
    for part, src in sidecar_paths(copied_model).items():
        shutil.copy(src, sidecar_paths(other)[part])
    with pytest.warns(UserWarning, match="exported from another version of other.pt"):
        gen = load_model(other)
    assert type(gen) is Generator and gen.dims.d_model == 32
    with pytest.raises(ModelError, match="cannot run on ONNX Runtime"):
        load_model(other, backend="onnx")
    # a graph changed after export (hand-edited, truncated copy)
    vel = sidecar_paths(copied_model)["velocity"]
    vel.write_bytes(vel.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="m.velocity.onnx does not match"):
        assert type(load_model(copied_model)) is Generator
    # forcing torch needs no sidecar check at all
    monkeypatch.setenv("DUBTOOL_BACKEND", "torch")
    assert type(load_model(DEFAULT_MODEL)) is Generator


def test_saving_a_checkpoint_removes_its_stale_sidecar(copied_model):
    gen = load_model(copied_model, backend="torch")
    generate.save_checkpoint(copied_model, gen.net, gen.dims, gen.sampler, gen.stats(), {"name": "retrained"})
    assert not any(p.exists() for p in sidecar_paths(copied_model).values())
    assert type(load_model(copied_model)) is Generator


def test_without_onnxruntime_the_model_runs_on_torch(copied_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    gen = load_model(copied_model)
    assert type(gen) is Generator
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        load_model(copied_model, backend="onnx")


def test_exported_sidecar_runs_any_shape(tiny_model, tmp_path):
    """`python -m dubtool.train onnx` on a checkpoint of another shape: the graphs take any batch and
    length (exported with dynamic axes, traced at a shape no real call has)."""
    pytest.importorskip("onnx")
    from dubtool.train import main as train_main

    ckpt = tmp_path / "tiny.pt"
    shutil.copy(tiny_model, ckpt)
    train_main(["onnx", str(ckpt)])
    onnx_gen, torch_gen = load_model(ckpt), load_model(ckpt, backend="torch")
    assert isinstance(onnx_gen, OnnxGenerator)
    rng = np.random.default_rng(1)
    for b, n in ((1, 9), (2, 200)):  # one short chunk; two batched takes of two chunks
        mel = rng.standard_normal((b, n, onnx_gen.dims.mel_width)).astype(np.float32)
        kp = rng.standard_normal((b, n, onnx_gen.dims.n_keypoints)).astype(np.float32)
        st = rng.standard_normal((b, onnx_gen.dims.style_dim)).astype(np.float32)
        a = onnx_gen.sample(mel, kp, st, steps=2, guidance=2.0, seed=4)
        import torch

        ref = torch_gen.sample(torch.as_tensor(mel), torch.as_tensor(kp), torch.as_tensor(st), steps=2, guidance=2.0,
                               seed=4).numpy()
        np.testing.assert_allclose(a, ref, rtol=0, atol=1e-4)


def test_onnx_sampling_does_not_depend_on_its_call_sizes(tiny_model, tmp_path, monkeypatch):
    """The ONNX sampler gathers each call's chunk rows as it goes and calls the graphs on a few chunks at a
    time (flat memory on long takes): one chunk per call or every chunk in one call, the same animation."""
    pytest.importorskip("onnx")
    from dubtool.train import main as train_main

    ckpt = tmp_path / "tiny.pt"
    shutil.copy(tiny_model, ckpt)
    train_main(["onnx", str(ckpt)])
    gen = load_model(ckpt)
    assert isinstance(gen, OnnxGenerator)
    rng = np.random.default_rng(2)
    b, n = 2, 520  # two takes of four chunks each, guided: 16 chunk rows per velocity call
    mel = rng.standard_normal((b, n, gen.dims.mel_width)).astype(np.float32)
    kp = rng.standard_normal((b, n, gen.dims.n_keypoints)).astype(np.float32)
    st = rng.standard_normal((b, gen.dims.style_dim)).astype(np.float32)
    runs = []
    for size in (1, 3, 64):
        monkeypatch.setattr(generate, "ENCODE_CHUNK_BATCH", size)
        monkeypatch.setattr(generate, "VELOCITY_CHUNK_BATCH", size)
        runs.append(gen.sample(mel, kp, st, steps=2, guidance=2.0, seed=5))
    assert runs[0].shape == (b, n, gen.dims.n_channels)
    for other in runs[1:]:
        np.testing.assert_allclose(other, runs[0], rtol=0, atol=1e-6)
