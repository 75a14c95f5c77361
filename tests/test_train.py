"""Training-time audio augmentation (dubtool.train._Batcher.augment_mel): off means plain
normalisation; each augmentation does what it says to the spectrum."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dubtool.train import TrainConfig, _Batcher

M = 80


def _batcher(sub: int = 1, **aug) -> _Batcher:
    n = 400
    rng = np.random.default_rng(0)
    corpus = SimpleNamespace(
        mel=rng.standard_normal((n, sub * M)).astype(np.float16), target=np.zeros((n, 61), np.float16),
        offset=np.zeros((n, 29), np.float16), keypoints=np.zeros((n, 174), np.float16),
        viseme=np.repeat(np.arange(n // 20), 20).astype(np.uint8) % 15,
        style=np.zeros((2, 122), np.float32), split=np.zeros(2, np.int8), starts=np.array([0, 200]),
        lengths=np.array([200, 200]))
    stats = {"mel_mean": np.full(sub * M, 1.0, np.float32), "mel_std": np.full(sub * M, 2.0, np.float32),
             "kp_mean": np.zeros(174, np.float32), "kp_std": np.ones(174, np.float32),
             "style_mean": np.zeros(122, np.float32), "style_std": np.ones(122, np.float32),
             "target_mean": np.zeros(61, np.float32), "target_std": np.ones(61, np.float32)}
    return _Batcher(corpus, stats, replace(TrainConfig(window_frames=64), **aug), "cpu", 0, M)


def _peaked(b: int, t: int, sub: int, at: int) -> torch.Tensor:
    x = torch.ones(b, t, sub, M)
    x[..., at] = 9.0
    return x.reshape(b, t, sub * M)


def test_no_augmentation_is_plain_normalisation():
    bt = _batcher(sub=3)
    x = torch.randn(4, 10, 3 * M)
    assert torch.allclose(bt.augment_mel(x), (x - 1.0) / 2.0)


@pytest.mark.parametrize("sub", [1, 3])
def test_warp_moves_a_spectral_peak_by_at_most_the_warp(sub):
    bt = _batcher(sub=sub, mel_warp_bins=4.0)
    out = bt.augment_mel(_peaked(64, 5, sub, 40)).reshape(64, 5, sub, M)
    peak = out.argmax(dim=-1)  # (B, T, sub)
    moved = (peak - 40).abs()
    assert moved.max() <= 4 and moved.float().mean() > 0.5  # shifted, within the bound
    assert (peak == peak[:, :1, :1]).all()  # one shift per window: every frame and subframe alike


def test_frequency_masks_zero_bands_no_wider_than_asked():
    bt = _batcher(mel_freq_masks=1, mel_freq_mask_bins=6)
    out = bt.augment_mel(torch.full((256, 3, M), 5.0))  # normalised value 2 everywhere
    zero = out[:, 0] == 0
    assert zero.sum(dim=1).max() <= 6 and zero.any()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # the band covers the whole window


def test_noise_and_tilt_have_the_asked_size():
    x = torch.full((128, 50, M), 1.0)  # normalises to 0
    noisy = _batcher(mel_noise=0.3).augment_mel(x)
    assert abs(float(noisy.std()) - 0.3) < 0.02
    tilted = _batcher(mel_tilt=0.5).augment_mel(x)
    assert float(tilted.abs().max()) <= 0.5 + 1e-6
    edge = tilted[:, 0, -1] - tilted[:, 0, 0]  # per window: 2 * tilt
    assert float(edge.abs().max()) > 0.5


def test_augment_p_leaves_the_other_windows_plain():
    bt = _batcher(mel_noise=0.5, mel_augment_p=0.5)
    x = torch.full((400, 20, M), 1.0)
    out = bt.augment_mel(x)
    plain = (out == 0).all(dim=2).all(dim=1)
    assert 0.35 < float(plain.float().mean()) < 0.65


def test_viseme_labels_follow_the_audio_through_swaps():
    """The auxiliary viseme target belongs to the audio: when a window's audio comes from another
    sample, so do its viseme labels (the mel rows and labels are picked with the same index)."""
    bt = _batcher(p_swap_audio=0.5)
    mel, kp, style, y, drops, frame_w, vis = bt(64)
    assert vis.shape == mel.shape[:2] and vis.dtype == torch.int64
    # Undo the normalisation: the corpus row of each frame is recoverable from its mel vector.
    raw = bt.mel.float()
    for b in range(0, 64, 8):
        row = int(((raw[None] - (mel[b, :1] * 2.0 + 1.0)) ** 2).sum(-1).argmin())
        assert torch.equal(vis[b], bt.viseme[row:row + vis.shape[1]])


def _room(**aug):
    """augment_room on a loud burst (frames 2-9) in quiet (log-power -12), one window, 30 fps x 3 subframes."""
    bt = _batcher(sub=3, **aug)
    x = torch.full((1, 40, 3, M), -12.0)
    x[:, 2:10] = 0.0
    return x, bt.augment_room(x.clone())


def test_reverberation_leaves_a_decaying_tail_after_the_sound_and_nothing_before():
    x, out = _room(room_reverb_p=1.0, room_rt60_s=(0.6, 0.6), room_drr_db=(0.0, 0.0))
    frame = out.mean(dim=(2, 3))[0]
    assert (frame[:2] < -11.0).all()  # causal: before the burst only the quiet's own (weak) tail
    tail = frame[10:20]  # after the burst: decays from near the burst's level towards the quiet
    assert tail[0] > -3.0 and (tail[1:] <= tail[:-1] + 1e-4).all() and tail[-1] > -12.0 + 1.0
    assert abs(float(torch.quantile(out.reshape(120, M).mean(1), 0.95)) - float(torch.quantile(x.reshape(120, M).mean(1), 0.95))) < 1e-4


def test_noise_fills_the_pauses_at_the_drawn_snr_and_spares_the_loud_frames():
    x, out = _room(room_noise_p=1.0, room_snr_db=(10.0, 10.0))
    quiet = out[0, 20:].mean()
    assert -6.5 < float(quiet) < -1.0  # ~10 dB (2.3 nats) below the speech level, not the -12 floor
    assert float((out[0, 2:10] - x[0, 2:10]).abs().mean()) < 0.5


def test_band_limiting_takes_the_top_of_the_spectrum_and_keeps_the_bottom():
    x = torch.zeros(1, 10, 3, M)
    out = _batcher(sub=3, room_lowpass_p=1.0, room_lowpass_bins=(50, 50)).augment_room(x.clone())
    assert float(out[..., 70].mean()) < float(out[..., 10].mean()) - 10.0
    assert torch.allclose(out[..., :50] - out[..., :50].mean(), torch.zeros_like(out[..., :50]), atol=1e-5)


def test_room_augmentation_is_off_by_default_and_runs_inside_augment_mel():
    bt = _batcher(sub=3)
    x = torch.randn(4, 10, 3 * M)
    assert torch.allclose(bt.augment_mel(x), (x - 1.0) / 2.0)
    on = _batcher(sub=3, room_noise_p=1.0).augment_mel(x)
    assert not torch.allclose(on, (x - 1.0) / 2.0)


class _Replay:
    """A generator whose 'sample' returns a given animation (normalised with identity statistics):
    validation is then scored on known curves."""

    def __init__(self, values):
        self.values = torch.as_tensor(values)
        self.sampler = SimpleNamespace(steps=1, guidance=1.0)
        self.fps = 30.0

    def equalize(self, mel, spectrum=None):
        return mel

    def normalize_inputs(self, mel, kp, st):
        return torch.as_tensor(mel), torch.as_tensor(kp), torch.as_tensor(st)

    def sample(self, *a, **k):
        return self.values[None]

    def denormalize(self, x):
        return x


def test_validation_counts_sealed_open_vowels_and_closures():
    from dubtool.metrics import open_vowel_false_closures
    from dubtool.phonemes import Phoneme
    from dubtool.teacher import lower_face_from_phonemes
    from dubtool.train import validate

    phon = [("m", 0.2, 0.3), ("a", 0.3, 0.6), ("t", 0.6, 0.7), ("a", 0.7, 1.0), ("p", 1.0, 1.1), ("a", 1.1, 1.5)]
    ph = [Phoneme(*p) for p in phon]
    teacher = lower_face_from_phonemes(ph, 1.8, 30.0).values
    sealed = teacher.copy()
    sealed[:, :52] = 0.0  # the rest face: lips together everywhere
    n = len(teacher)
    for values, closure in ((teacher, 1.0), (sealed, 1.0)):
        corpus = SimpleNamespace(
            split=np.array([1]), starts=np.array([0]), lengths=np.array([n]), mel=np.zeros((n, 80), np.float16),
            keypoints=np.zeros((n, 174), np.float16), target=values.astype(np.float16),
            style=np.zeros((1, 122), np.float32), clips=[{"phonemes": phon}])
        out = validate(_Replay(values), corpus, "val_voice", 1)
        closed, total = open_vowel_false_closures(values, ph, 30.0)
        assert total > 20 and out["open_vowel_closed"] == pytest.approx(closed / total)
        assert out["bilabial_closure"] == closure
    assert validate(_Replay(sealed), corpus, "val_voice", 1)["open_vowel_closed"] == 1.0
    c, t = open_vowel_false_closures(teacher, ph, 30.0)
    assert c / t < 0.5  # the teacher opens on its open vowels: the two cases differ
    assert out["lower_mae"] == 0.0


def test_training_equalization_is_inference_equalization_on_each_window():
    """mel_cmn > 0: each training window's speech spectrum is moved onto mel_ref exactly as
    generate.equalize_spectrum moves a take's at inference (so the network trains on what it will read)."""
    from dubtool.generate import equalize_spectrum, speech_spectrum

    sub = 3
    bt = _batcher(sub=sub)
    ref = np.linspace(-5.0, -1.0, sub * M).astype(np.float32)
    bt.stats["mel_ref"] = torch.as_tensor(ref)
    bt.mel_cmn = 0.7
    rng = np.random.default_rng(3)
    x = rng.normal(-4.0, 1.5, (3, 50, sub * M)).astype(np.float32)
    x[:, 10:20] -= 8.0  # a pause: its frames are not speech and do not count
    out = bt.augment_mel(torch.as_tensor(x)).numpy() * 2.0 + 1.0  # undo the plain normalisation
    for i in range(3):
        want = equalize_spectrum(x[i], speech_spectrum(x[i]), ref, 0.7)
        np.testing.assert_allclose(out[i], want, rtol=0, atol=2e-4)


def test_guidance_distillation_learns_the_guided_velocity_in_one_pass(tmp_path):
    """`distill_guidance`: the student's single pass comes closer to the teacher's two-pass guided
    velocity (v_free + g (v_audio - v_free)) than the teacher's own conditional pass, on windows it
    did not train on; the result samples with guidance 1.0 and keeps the teacher's articulation gains."""
    from dubtool.corpus import CorpusConfig, build_corpus
    from dubtool.generate import (ModelDimensions, SamplerConfig, build_net, identity_stats, load_model,
                                  save_checkpoint)
    from dubtool.train import _Batcher, distill_guidance

    dims = ModelDimensions(d_model=32, n_layers=1, n_heads=2, ff_mult=2, audio_subframes=3)
    torch.manual_seed(0)
    net = build_net(dims)
    with torch.no_grad():
        for p in net.parameters():  # an untrained net's zero-initialised output layers would give v = 0
            p.normal_(0.0, 0.15)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, net, dims, SamplerConfig(steps=2, guidance=2.5), identity_stats(dims),
                    {"name": "tiny-teacher", "articulation_gain": {"jawOpen": 1.2}}, onnx=False)
    build_corpus(replace(CorpusConfig(), espeak_clips=2, val_voice_clips=0, val_lang_clips=0, asterisk_prompts=0,
                         asterisk_prompts_other=0, min_clip_s=4.5, max_clip_s=6.0, audio_subframes=3),
                 tmp_path / "corpus", progress=False, workers=1)
    out = distill_guidance(teacher, tmp_path / "corpus", tmp_path / "student.pt", steps=60, batch_size=8, lr=3e-3,
                           onnx=False, log=lambda *_: None)
    t_gen, s_gen = load_model(str(teacher), backend="torch"), load_model(str(out), backend="torch")
    assert s_gen.sampler.guidance == 1.0 and s_gen.meta["articulation_gain"] == {"jawOpen": 1.2}
    assert s_gen.meta["distilled"]["teacher_guidance"] == 2.5

    from dubtool.corpus import load_corpus
    from dubtool.train import TrainConfig as TC

    batch = _Batcher(load_corpus(tmp_path / "corpus"), t_gen.stats(), TC(p_drop_audio=0, p_drop_keypoints=0,
                     p_drop_style=0), "cpu", 99, dims.n_mels)
    mel, kp, style, y, _d, _w, _v = batch(8)
    x = 0.4 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((8,), 0.5)
    with torch.no_grad():
        tn = t_gen.net
        cond = tn(x, t, mel, kp, style)
        free = tn(x, t, mel, kp, style, torch.ones(8, dtype=torch.bool))
        guided = free + 2.5 * (cond - free)
        student = s_gen.net(x, t, mel, kp, style)
    before = float(((cond - guided) ** 2).mean())
    after = float(((student - guided) ** 2).mean())
    assert after < 0.5 * before, (before, after)


def test_fine_tune_base_windows_keep_the_recipe_closure_weights():
    """`dubtool train --captures` mixing in the base corpus: the takes are fitted with the fine-tune's light
    closure weights (a tracker's press is noisy), while the base corpus's windows, whose teacher curves seal the
    lips on /p b m/, keep the recipe's: a sealed frame of a base window weighs 1 + 12, of a take 1."""
    from dubtool.arkit import index
    from dubtool.train import FinetuneConfig, InputError, finetune_loss_configs

    recipe = TrainConfig(lip_weight=5.0, closure_frame_weight=12.0, viseme_weight=0.3)
    takes, base = finetune_loss_configs(FinetuneConfig(), recipe, 64)
    assert (takes.lip_weight, takes.closure_frame_weight) == (1.0, 0.0)
    assert (base.lip_weight, base.closure_frame_weight) == (5.0, 12.0)
    for c in (takes, base):  # no phoneme labels on real takes; the fine-tune's window, batch and lip-gap loss
        assert (c.viseme_weight, c.window_frames, c.batch_size, c.lip_gap_weight) == (0.0, 64, 16, 0.5)
    same = finetune_loss_configs(FinetuneConfig(base_weights="capture"), recipe, 64)
    assert same[0] == same[1] == takes
    with pytest.raises(InputError, match="base_weights"):
        finetune_loss_configs(FinetuneConfig(base_weights="teacher"), recipe, 64)

    b = _batcher()
    b.target[:, [index("mouthPressLeft"), index("mouthPressRight")]] = 0.6  # every frame sealed
    for cfg, want in ((base, 13.0), (takes, 1.0)):
        b.cfg = replace(cfg, p_swap_audio=0, p_swap_keypoints=0, p_swap_style=0)
        frame_w = b(2)[5]
        assert torch.allclose(frame_w, torch.full_like(frame_w, want))
