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


def test_mel_features_equal_the_librosa_filter_bank_features():
    librosa = pytest.importorskip("librosa")
    import torch

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(SAMPLE_RATE * 2)).astype(np.float32)
    got = mel_features(x, SAMPLE_RATE, 30.0).numpy()
    spec = torch.stft(torch.as_tensor(x), N_FFT, hop_length=160, win_length=400, window=torch.hann_window(400),
                      center=True, return_complex=True).abs() ** 2
    fb = torch.as_tensor(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=20, fmax=7600))
    mel = torch.log(torch.clamp(fb @ spec, min=1e-6)).T
    idx = torch.clamp((torch.arange(mel.shape[0]) * (160 / SAMPLE_RATE) * 30.0).long(), max=got.shape[0] - 1)
    ref = torch.zeros(got.shape[0], N_MELS).index_add_(0, idx, mel)
    ref = (ref / torch.zeros(got.shape[0]).index_add_(0, idx, torch.ones(mel.shape[0])).clamp(min=1)[:, None]).numpy()
    assert np.array_equal(got, ref)
