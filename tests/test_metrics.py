"""Metrics on hand-made cases whose answer is known: lips closed on /p b m/ score 1, a mouth shifted
3 frames after the sound lags 3, identical animations have zero FDD/LVE, a ramp has zero jitter."""

from types import SimpleNamespace

import numpy as np
import pytest

from dubtool import metrics
from dubtool.arkit import NUM_CHANNELS, index
from dubtool.errors import InputError
from dubtool.keypoints import UPPER_FACE_VERTICES

FPS = 30.0
JAW, CLOSE, BROW = index("jawOpen"), index("mouthClose"), index("browInnerUp")
LOWER_LIP = (14, 17, 84, 87, 178, 314, 317, 402, 405)


@pytest.fixture
def rig():
    """A linear 468-vertex rig with known geometry: lips 0.1 apart at rest; jawOpen lowers the lower lip
    by 2 units; mouthClose raises it by 2 (closing the lips on an open jaw); browInnerUp lifts brows by 1."""
    neutral = np.zeros((468, 3))
    neutral[14, 1] = -0.1
    deltas = np.zeros((52, 468, 3))
    deltas[JAW, list(LOWER_LIP), 1] = -2.0
    deltas[CLOSE, list(LOWER_LIP), 1] = 2.0
    deltas[BROW, list(UPPER_FACE_VERTICES[:20]), 1] = 1.0
    return SimpleNamespace(neutral=neutral, deltas=deltas)


def _speech_line():
    """Phonemes of 'mama papa' at 30 fps: bilabials at 0.0-0.1, 0.3-0.4, 0.6-0.7, 0.9-1.0 s, vowels between."""
    ph = []
    for k, cons in enumerate("mmpp"):
        t = 0.3 * k
        ph.append((cons, t, t + 0.1))
        ph.append(("a", t + 0.1, t + 0.3))
    return ph


def _anim_from_jaw(jaw, close=None):
    v = np.zeros((len(jaw), NUM_CHANNELS))
    v[:, JAW] = jaw
    if close is not None:
        v[:, CLOSE] = close
    return v


def _lipsync(phonemes, n, closed=True):
    """Jaw open on vowels; on bilabials either closed (jaw 0) or left open (jaw 0.6)."""
    jaw = np.zeros(n)
    for sym, a, b in phonemes:
        s = slice(int(round(a * FPS)), int(round(b * FPS)))
        jaw[s] = 0.6 if sym == "a" else (0.0 if closed else 0.6)
    return _anim_from_jaw(jaw)


@pytest.mark.parametrize("use_rig", [True, False])
def test_closed_lips_on_bilabials_score_one_open_lips_zero(rig, use_rig, monkeypatch):
    if not use_rig:
        monkeypatch.setattr(metrics, "_default_rig", lambda: None)
    r = rig if use_rig else None
    ph = _speech_line()
    n = int(1.2 * FPS)
    assert metrics.bilabial_closure_rate(_lipsync(ph, n, closed=True), ph, FPS, rig=r) == 1.0
    assert metrics.bilabial_closure_rate(_lipsync(ph, n, closed=False), ph, FPS, rig=r) == 0.0
    # Half the bilabials closed -> 0.5.
    half = _lipsync(ph, n, closed=True)
    half[int(0.6 * FPS):int(0.7 * FPS), JAW] = 0.6
    half[int(0.9 * FPS):int(1.0 * FPS), JAW] = 0.6
    assert metrics.bilabial_closure_rate(half, ph, FPS, rig=r, tolerance_s=0.0) == 0.5


def test_mouth_close_on_open_jaw_counts_as_closure(rig):
    ph = [("p", 0.2, 0.3), ("ɑ", 0.3, 0.5)]
    jaw = np.full(20, 0.3)
    close = np.zeros(20)
    close[6:9] = 0.3  # lips sealed against the open jaw, as ARKit's mouthClose does
    assert metrics.bilabial_closure_rate(_anim_from_jaw(jaw, close), ph, FPS, rig=rig) == 1.0
    assert metrics.bilabial_closure_rate(_anim_from_jaw(jaw), ph, FPS, rig=rig) == 0.0


def test_no_bilabials_gives_nan(rig):
    assert np.isnan(metrics.bilabial_closure_rate(np.zeros((10, 61)), [("a", 0, 0.3)], FPS, rig=rig))


def test_lip_gap_measures_inner_lips_on_the_rig(rig):
    v = _anim_from_jaw([0.0, 0.5, 1.0])
    np.testing.assert_allclose(metrics.lip_gap(v, rig), [0.1, 1.1, 2.1], atol=1e-9)
    neutral, open_ = metrics.lip_gap_reference(rig)
    assert (neutral, open_) == pytest.approx((0.1, 1.1))


def test_open_vowel_jaw_contrast():
    ph = _speech_line()
    j = metrics.open_vowel_jaw(_lipsync(ph, 36), ph, FPS)
    assert j.open_vowel_mean == pytest.approx(0.6)
    assert j.other_mean == pytest.approx(0.0)
    assert j.contrast == pytest.approx(0.6)


def _bursty_audio(seed=0, seconds=3.0, sr=16000):
    """Noise bursts of random lengths: a speech-like RMS envelope with no periodicity."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * sr), np.float32)
    t = 0.1
    while t < seconds - 0.3:
        d = rng.uniform(0.08, 0.25)
        a = int(t * sr)
        x[a:a + int(d * sr)] = rng.normal(0, rng.uniform(0.1, 0.4), int(d * sr))
        t += d + rng.uniform(0.05, 0.3)
    return x, sr


@pytest.mark.parametrize("shift", [3, 0, -2])
def test_lip_audio_lag_recovers_a_known_shift(rig, shift):
    from dubtool.audio import rms_envelope

    x, sr = _bursty_audio()
    env = rms_envelope(x, sr, FPS)
    jaw = np.roll(env / env.max(), shift)  # mouth opens `shift` frames after the sound
    if shift > 0:
        jaw[:shift] = 0
    elif shift < 0:
        jaw[shift:] = 0
    assert metrics.lip_audio_lag(_anim_from_jaw(jaw), x, sr, FPS, rig=rig) == shift


def test_lip_audio_lag_refuses_a_frozen_mouth(rig):
    x, sr = _bursty_audio()
    with pytest.raises(InputError):
        metrics.lip_audio_lag(np.zeros((90, 61)), x, sr, FPS, rig=rig)


def _performance(n=90, seed=1):
    rng = np.random.default_rng(seed)
    v = np.zeros((n, NUM_CHANNELS))
    t = np.arange(n) / FPS
    v[:, BROW] = 0.3 + 0.3 * np.sin(2 * np.pi * 0.7 * t)
    v[:, index("eyeBlinkLeft")] = (rng.random(n) > 0.9).astype(float)
    v[:, index("HeadYaw")] = 0.1 * np.sin(2 * np.pi * 0.3 * t)
    return v


def test_fdd_zero_for_identical_and_grows_with_damped_motion(rig):
    ref = _performance()
    assert metrics.fdd(ref, ref, FPS, rig=rig) == 0.0
    damped = ref.copy()
    damped[:, BROW] = 0.3 + 0.5 * (ref[:, BROW] - 0.3)
    flat = ref.copy()
    flat[:, BROW] = 0.3
    f_damped, f_flat = metrics.fdd(damped, ref, FPS, rig=rig), metrics.fdd(flat, ref, FPS, rig=rig)
    assert 0 < f_damped < f_flat
    # Brow std is 0.3/sqrt(2) weight units = 0.212 rig units on 20 of the upper-face vertices.
    assert f_flat == pytest.approx(0.3 / np.sqrt(2) * 20 / len(UPPER_FACE_VERTICES), rel=0.05)


def test_upper_face_correlation():
    ref = _performance()
    assert metrics.upper_face_correlation(ref, ref) == pytest.approx(1.0)
    assert metrics.upper_face_correlation(np.zeros_like(ref), ref) == 0.0
    inverted = ref.copy()
    inverted[:, metrics.PERFORMANCE_IDX] *= -1
    assert metrics.upper_face_correlation(inverted, ref) == pytest.approx(-1.0)


def test_lve_zero_for_identical_and_equals_the_lip_displacement(rig):
    a = _anim_from_jaw(np.linspace(0, 1, 30))
    assert metrics.lip_vertex_error(a, a, rig=rig) == 0.0
    b = a.copy()
    b[:, JAW] += 0.1  # lower lip moves 0.2 units further on every frame
    b[:, JAW] = np.clip(b[:, JAW], 0, 1)
    expected = np.mean(2 * (np.clip(a[:, JAW] + 0.1, 0, 1) - a[:, JAW]))
    assert metrics.lip_vertex_error(a, b, rig=rig) == pytest.approx(expected)


def test_jitter_of_a_ramp_is_zero_and_noise_is_not():
    ramp = np.tile(np.linspace(0, 1, 50)[:, None], (1, NUM_CHANNELS))
    assert metrics.jitter(ramp) == pytest.approx(0.0, abs=1e-12)
    noisy = ramp + np.random.default_rng(0).normal(0, 0.05, ramp.shape)
    assert metrics.jitter(noisy) > 0.05


def test_disentanglement_leak_high_for_copied_mouth_low_for_independent(rig):
    rng = np.random.default_rng(3)
    src = _anim_from_jaw(np.convolve(rng.random(200), np.ones(5) / 5, "same"))
    other = _anim_from_jaw(np.convolve(rng.random(200), np.ones(5) / 5, "same"))
    assert metrics.disentanglement_leak(src, src, rig=rig) == pytest.approx(1.0)
    assert abs(metrics.disentanglement_leak(other, src, rig=rig)) < 0.3


def test_swap_sensitivity_separates_lower_and_upper_changes():
    a = _performance()
    b = a.copy()
    b[:, JAW] = 0.5  # audio swapped: only the mouth changes
    s = metrics.swap_sensitivity(a, b)
    assert s.lower > 0 and s.upper == 0.0 and s.ratio > 1e6


def test_bad_shapes_and_lengths_are_clear_errors(rig):
    with pytest.raises(InputError, match="frames x 61"):
        metrics.jitter(np.zeros((10, 52)))
    with pytest.raises(InputError, match="differ in length"):
        metrics.fdd(np.zeros((100, 61)), np.zeros((50, 61)), FPS, rig=rig)
    # A rounding difference of a frame is tolerated.
    assert metrics.fdd(np.zeros((100, 61)), np.zeros((99, 61)), FPS, rig=rig) == 0.0


def test_metrics_accept_animation_objects(rig):
    from dubtool.arkit import Animation

    a = Animation(_performance().astype(np.float32), FPS)
    assert metrics.jitter(a) == pytest.approx(metrics.jitter(a.values))


def test_arpabet_phonemes_from_pocketsphinx_are_understood(rig):
    ph = [("M", 0.0, 0.1), ("AA1", 0.1, 0.3), ("P", 0.3, 0.4), ("AH0", 0.4, 0.6)]
    jaw = np.zeros(18)
    jaw[3:9] = 0.6
    jaw[12:18] = 0.6
    v = _anim_from_jaw(jaw)
    assert metrics.bilabial_closure_rate(v, ph, FPS, rig=rig) == 1.0
    assert metrics.open_vowel_jaw(v, ph, FPS).open_vowel_mean == pytest.approx(0.6)


def test_shipped_rig_opens_lips_with_the_jaw_and_closes_them_with_mouth_close():
    rig = metrics.default_rig()
    if rig is None:
        pytest.skip("models/face_rig.npz not built")
    neutral, open_ = metrics.lip_gap_reference(rig)
    assert open_ > neutral + 0.3  # jawOpen 0.5 parts the lips by several mm (rig units are cm)
    v = _anim_from_jaw([0.5, 0.5], close=[0.0, 0.5])
    g = metrics.normalized_lip_gap(v, rig)
    assert g[0] == pytest.approx(1.0) and g[1] < 0.3


def test_shipped_rig_closed_means_lips_touching():
    """On the shipped rig the rest lips touch, so a /p/ counts as closed only when the inner lips are within
    ~2 mm; the QA bilabial (mouthClose beyond jawOpen, lips pressed past each other) is closed, not open."""
    rig = metrics.default_rig()
    if rig is None:
        pytest.skip("models/face_rig.npz not built")
    neutral, open_ = metrics.lip_gap_reference(rig)
    assert neutral < 0.05                                   # rest gap under 0.5 mm (rig units are cm)
    ph = [("p", 0.0, 0.1)]
    bilabial = np.zeros((3, NUM_CHANNELS))
    bilabial[:, JAW], bilabial[:, CLOSE] = 0.07, 0.3
    bilabial[:, index("mouthPressLeft")] = bilabial[:, index("mouthPressRight")] = 0.3
    assert metrics.lip_gap(bilabial, rig)[0] < 0.05
    assert metrics.bilabial_closure_rate(bilabial, ph, FPS, rig=rig) == 1.0
    # A jaw dropped just enough to part the lips by >= 2.5 mm is open.
    jaw = np.linspace(0, 0.5, 51)
    parted = jaw[np.argmax(metrics.lip_gap(_anim_from_jaw(jaw), rig) >= 0.25)]
    assert metrics.bilabial_closure_rate(_anim_from_jaw(np.full(3, parted)), ph, FPS, rig=rig) == 0.0
    assert metrics.bilabial_closure_rate(_anim_from_jaw(np.full(3, 0.02)), ph, FPS, rig=rig) == 1.0


def test_crossed_lips_have_no_gap(rig):
    # mouthClose beyond jawOpen lifts the lower lip past the upper one: sealed, gap 0 (not |distance|).
    v = _anim_from_jaw([0.0, 0.1], close=[0.3, 0.0])
    np.testing.assert_allclose(metrics.lip_gap(v, rig), [0.0, 0.3], atol=1e-9)


def test_open_vowel_false_closures_can_leave_out_the_frames_beside_a_bilabial():
    from dubtool.phonemes import Phoneme

    # /a/ 0.0-0.5 s, /m/ 0.5-0.6 s, /a/ 0.6-1.0 s at 30 fps; the lips sealed (rest face) from 0.40 to 0.70 s
    ph = [Phoneme("a", 0.0, 0.5), Phoneme("m", 0.5, 0.6), Phoneme("a", 0.6, 1.0)]
    v = np.zeros((30, NUM_CHANNELS), np.float32)
    v[:, index("jawOpen")] = 0.5
    v[12:21, index("jawOpen")] = 0.0
    closed, total = metrics.open_vowel_false_closures(v, ph, 30.0)
    assert (closed, total) == (6, 27)  # frames 12-14 and 18-20 lie in the vowels
    far_closed, far_total = metrics.open_vowel_false_closures(v, ph, 30.0, away_from_bilabials_s=0.07)
    # frames 13-14 and 18-20 lie within 70 ms of the /m/ ([0.43, 0.67) s): frame 12 is the one far closure left
    assert (far_closed, far_total) == (1, 27 - 5)
