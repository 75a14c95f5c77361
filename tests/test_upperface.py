"""Procedural upper-face performances: blink statistics, ranges, channel groups, determinism."""

import numpy as np
import pytest

from dubtool.arkit import BLENDSHAPE_IDX, LOWER_IDX, UPPER_IDX, index
from dubtool.errors import InputError
from dubtool.upperface import EMOTIONS, procedural_upper_face


def _runs(mask):
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


@pytest.fixture(scope="module")
def takes():
    return [procedural_upper_face(60.0, 100.0, np.random.default_rng(seed)) for seed in range(8)]


def test_blink_rate_and_duration(takes):
    rates, durations = [], []
    for u in takes:
        lid = u.animation.channel("eyeBlinkLeft")
        blinks = _runs(lid > 0.8)  # lid nearly shut
        rates.append(len(blinks))  # per 60 s = per minute
        # full blink duration: from leaving the resting lid level to coming back to it
        rest = np.percentile(lid, 30)
        for a, b in _runs(lid > rest + 0.1):
            if lid[a:b].max() > 0.8:
                durations.append((b - a) / 100.0 / 0.8)  # the 10 %..10 % width is ~80 % of the full blink
    assert 12 <= np.mean(rates) <= 22 and min(rates) >= 6 and max(rates) <= 30
    assert 0.08 <= np.percentile(durations, 5) and np.percentile(durations, 95) <= 0.35
    # refractory period: no two blinks closer than 0.4 s
    for u in takes:
        starts = [s for s, _ in u.animation.meta["blinks"]]
        assert np.all(np.diff(starts) > 0.4)


def test_blinks_close_fast_open_slow(takes):
    lid = takes[0].animation.channel("eyeBlinkRight")
    ups, downs = [], []
    rest = np.percentile(lid, 30)
    for a, b in _runs(lid > rest + 0.1):
        peak = a + int(np.argmax(lid[a:b]))
        ups.append(peak - a)
        downs.append(b - peak)
    assert np.median(downs) > 1.3 * np.median(ups)


def test_values_and_channel_groups(takes):
    for u in takes:
        v = u.animation.values
        assert np.all((v[:, BLENDSHAPE_IDX] >= 0) & (v[:, BLENDSHAPE_IDX] <= 1))
        assert np.all(v[:, LOWER_IDX] == 0)
        assert np.abs(v[:, 52:]).max() < 0.8  # head/eye rotations in plausible radians
        assert u.lower_offset.shape == v.shape
        others = np.setdiff1d(np.arange(61), LOWER_IDX)
        assert np.all(u.lower_offset[:, others] == 0) and np.all(u.lower_offset >= 0)
        assert v[:, UPPER_IDX].std(0).max() > 0.1  # something moves
        for ch in ("HeadYaw", "HeadPitch", "LeftEyeYaw", "browInnerUp"):
            assert v[:, index(ch)].std() > 0.005, ch


def test_eye_look_matches_eye_rotation(takes):
    v = takes[1].animation.values
    yaw = v[:, index("LeftEyeYaw")]
    look = v[:, index("eyeLookOutLeft")] - v[:, index("eyeLookInLeft")]
    assert np.corrcoef(yaw, look)[0, 1] > 0.95
    ryaw = v[:, index("RightEyeYaw")]
    rlook = v[:, index("eyeLookOutRight")] - v[:, index("eyeLookInRight")]
    assert np.corrcoef(ryaw, rlook)[0, 1] < -0.95
    pitch = v[:, index("LeftEyePitch")]
    assert np.corrcoef(pitch, v[:, index("eyeLookDownLeft")] - v[:, index("eyeLookUpLeft")])[0, 1] > 0.95


def test_deterministic_per_seed():
    a = procedural_upper_face(10.0, 30.0, np.random.default_rng(7))
    b = procedural_upper_face(10.0, 30.0, np.random.default_rng(7))
    c = procedural_upper_face(10.0, 30.0, np.random.default_rng(8))
    assert np.array_equal(a.animation.values, b.animation.values)
    assert np.array_equal(a.lower_offset, b.lower_offset)
    assert not np.array_equal(a.animation.values, c.animation.values)
    assert a.animation.num_frames == 300


@pytest.mark.parametrize("emotion,upper,lower", [
    ("joy", "cheekSquintLeft", "mouthSmileLeft"), ("surprise", "eyeWideLeft", None),
    ("anger", "browDownLeft", "mouthPressLeft"), ("sadness", "browInnerUp", "mouthFrownLeft")])
def test_emotions(emotion, upper, lower):
    u = procedural_upper_face(8.0, 30.0, np.random.default_rng(1), emotion=emotion)
    n = procedural_upper_face(8.0, 30.0, np.random.default_rng(1), emotion="neutral")
    mid = slice(60, 180)
    assert u.animation.channel(upper)[mid].mean() > n.animation.channel(upper)[mid].mean() + 0.15
    if lower:
        assert u.lower_offset[mid, index(lower)].mean() > 0.1
    assert np.all(n.lower_offset == 0)


def test_speech_activity_adds_beats():
    t = np.arange(600) / 30.0
    act = (np.sin(2 * np.pi * 0.3 * t) > 0.3).astype(float)  # bursts of speech
    on = act > 0
    loud, quiet = [], []
    for seed in range(6):
        a = procedural_upper_face(20.0, 30.0, np.random.default_rng(seed), speech_activity=act).animation
        q = procedural_upper_face(20.0, 30.0, np.random.default_rng(seed)).animation
        loud.append(a.channel("HeadPitch")[on].mean() - a.channel("HeadPitch")[~on].mean())
        quiet.append(q.channel("HeadPitch")[on].mean() - q.channel("HeadPitch")[~on].mean())
    assert np.mean(loud) > 0.02 and np.mean(loud) > np.mean(quiet) + 0.015


def test_bad_input():
    with pytest.raises(InputError, match="emotion"):
        procedural_upper_face(2.0, 30.0, np.random.default_rng(0), emotion="hangry")
    with pytest.raises(InputError, match="fps"):
        procedural_upper_face(2.0, 0.0, np.random.default_rng(0))
    assert procedural_upper_face(0.0, 30.0, np.random.default_rng(0)).animation.num_frames == 0
    assert set(EMOTIONS) >= {"joy", "surprise", "anger", "sadness"}
