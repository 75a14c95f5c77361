"""The model's audio front end: the mel filter bank dubtool computes is librosa's, bit for bit (the
shipped model was trained on features built with librosa.filters.mel)."""

from __future__ import annotations

import numpy as np
import pytest

from dubtool.audio import MEL_FMAX, MEL_FMIN, N_FFT, N_MELS, SAMPLE_RATE, mel_features, mel_filterbank


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (SAMPLE_RATE, N_FFT, N_MELS, MEL_FMIN, MEL_FMAX),  # the model's
    (16000, 512, 40, 0.0, 8000.0),
    (22050, 1024, 128, 20.0, 11025.0),
    (8000, 256, 64, 300.0, 3400.0),
])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert fb.dtype == ref.dtype and fb.shape == ref.shape
    assert np.array_equal(fb, ref)


@pytest.mark.parametrize("signal", ["speech", "noise"])
def test_numpy_mel_features_equal_the_torch_stft_features_the_models_were_trained_on(signal):
    """The front end is numpy now (no torch import on a one-shot run); the models were trained on
    torch.stft features with librosa's filter bank. Same numbers up to float32 rounding: torch's
    float32 FFT against numpy's float64 one differ by ~1e-4 in log power at most (the quietest bins),
    ~1e-4 of the features' spread (std ~2-3 log units)."""
    librosa = pytest.importorskip("librosa")
    torch = pytest.importorskip("torch")
    from pathlib import Path

    from dubtool.audio import load_audio

    if signal == "speech":
        x = load_audio(Path(__file__).resolve().parent.parent / "examples" / "dub_fr.wav").samples
    else:
        x = (0.1 * np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2)).astype(np.float32)
    spec = torch.stft(torch.as_tensor(x), N_FFT, hop_length=160, win_length=400, window=torch.hann_window(400),
                      center=True, return_complex=True).abs() ** 2
    fb = torch.as_tensor(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=20, fmax=7600))
    mel = torch.log(torch.clamp(fb @ spec, min=1e-6)).T
    for fps in (30.0, 29.97):
        got = mel_features(x, SAMPLE_RATE, fps)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        idx = torch.clamp((torch.arange(mel.shape[0]) * (160 / SAMPLE_RATE) * fps).long(), max=got.shape[0] - 1)
        ref = torch.zeros(got.shape[0], N_MELS).index_add_(0, idx, mel)
        ref = (ref / torch.zeros(got.shape[0]).index_add_(0, idx, torch.ones(mel.shape[0])).clamp(min=1)[:, None])
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=5e-4)
    # 3 sub-frames per frame (the shipped model's layout): linear interpolation of the 10 ms frames
    got = mel_features(x, SAMPLE_RATE, 30.0, subframes=3)
    n = got.shape[0]
    t = (torch.arange(n * 3, dtype=torch.float64) + 0.5) / 90.0
    pos = torch.clamp(t * 100.0, 0, mel.shape[0] - 1)
    lo = pos.floor().long()
    hi = torch.clamp(lo + 1, max=mel.shape[0] - 1)
    w = (pos - lo).float()[:, None]
    ref = (mel[lo] * (1 - w) + mel[hi] * w).reshape(n, 3 * N_MELS)
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=5e-4)


def test_plain_wav_is_read_without_ffmpeg_and_gives_ffmpegs_samples(tmp_path, monkeypatch):
    """A 16 kHz mono 16-bit WAV (a dub already in dubtool's format) is read in Python, not by an ffmpeg
    process (its start-up was ~40 % of a batch line): bit for bit the samples ffmpeg decodes, full
    scale and clipped values included. Other rates still go through ffmpeg (resampled)."""
    import subprocess
    from pathlib import Path

    import dubtool.audio as audio_mod
    from dubtool.audio import Audio, load_audio, write_wav

    rng = np.random.default_rng(3)
    noise = np.concatenate([rng.uniform(-1.2, 1.2, 20000), [-1.0, 1.0, 0.0]]).astype(np.float32)
    wavs = [write_wav(Audio(noise, SAMPLE_RATE), tmp_path / "noise.wav"),
            Path(__file__).resolve().parent.parent / "examples" / "dub_fr.wav"]
    calls = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(audio_mod.subprocess, "Popen", lambda *a, **k: calls.append(a) or real_popen(*a, **k))
    direct = [load_audio(w).samples for w in wavs]
    assert calls == []
    monkeypatch.setattr(audio_mod, "_read_plain_wav", lambda *a: None)  # the ffmpeg decode, as before
    for w, d in zip(wavs, direct):
        ref = load_audio(w).samples
        assert d.dtype == ref.dtype == np.float32 and np.array_equal(d, ref), w
    assert len(calls) == 2
    monkeypatch.undo()
    monkeypatch.setattr(audio_mod.subprocess, "Popen", lambda *a, **k: calls.append(a) or real_popen(*a, **k))
    eight = write_wav(Audio(noise[:8000], 8000), tmp_path / "eight.wav")
    assert load_audio(eight).samples.size == 16000 and len(calls) == 3  # resampled by ffmpeg
