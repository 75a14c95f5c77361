"""Scoring against a real performance (`dubtool eval --reference`) on synthetic takes, and `--lang`
accepting every language espeak-ng speaks while an unknown one only blocks the transcript paths."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from dubtool import livelink, reference
from dubtool.arkit import NUM_CHANNELS, Animation, index
from dubtool.audio import Audio, write_wav
from dubtool.errors import InputError

FPS, SR, SECONDS = 30.0, 16000, 6.0
JAW, PUCKER = index("jawOpen"), index("mouthPucker")


def _take(seed=0):
    """A talking take: jaw and pucker follow syllable-rate random bursts; the audio is loud where the jaw opens."""
    rng = np.random.default_rng(seed)
    n = int(SECONDS * FPS)
    bursts = np.repeat(rng.random(n // 6 + 1), 6)[:n]
    jaw = np.convolve(np.clip(bursts - 0.3, 0, None), np.ones(4) / 4, "same")
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    v[:, JAW] = 0.6 * jaw
    v[:, PUCKER] = 0.3 * np.roll(jaw, 9)
    env = np.repeat(jaw, SR // int(FPS))
    env[: SR // 2] = 0.0  # half a second of silence: not speech
    audio = Audio((np.sin(np.arange(len(env)) * 2 * np.pi * 150 / SR) * env).astype(np.float32), SR)
    return Animation(v, FPS), audio


def _ref(anim):
    return reference.Reference(anim, None, "livelink")


def test_identical_take_scores_r_one_and_amplitude_one():
    anim, audio = _take()
    s = reference.score(anim, _ref(anim), audio.samples, SR)
    assert s.mouth_r == pytest.approx(1.0) and s.mouth_r_best == pytest.approx(1.0) and s.lag_frames == 0
    assert s.jaw_r == pytest.approx(1.0)
    assert s.amplitude_ratio["jawOpen"] == pytest.approx(1.0) and s.std_ratio["mouthPucker"] == pytest.approx(1.0)
    assert 0 < s.speech_frames < s.frames  # the silent lead-in is not speech


def test_shifted_take_finds_the_lag_and_double_motion_doubles_amplitude():
    anim, audio = _take()
    late = anim.with_values(np.roll(anim.values, 2, axis=0))
    s = reference.score(late, _ref(anim), audio.samples, SR)
    assert s.lag_frames == 2 and s.mouth_r_best > 0.95 and s.mouth_r < s.mouth_r_best
    big = anim.with_values(np.clip(anim.values * 1.5, 0, 1))
    assert reference.score(big, _ref(anim), audio.samples, SR).amplitude_ratio["jawOpen"] == pytest.approx(1.5, rel=0.02)


def test_flat_or_unrelated_take_scores_low():
    anim, audio = _take()
    flat = anim.with_values(np.zeros_like(anim.values))
    s = reference.score(flat, _ref(anim), audio.samples, SR)
    assert math.isnan(s.mouth_r) and s.amplitude_ratio["jawOpen"] == 0.0
    other, _ = _take(seed=5)
    assert abs(reference.score(other, _ref(anim), audio.samples, SR).mouth_r) < 0.4


def test_resamples_a_60fps_capture_and_refuses_another_line():
    anim, audio = _take()
    cap = anim.resampled(60.0)
    s = reference.score(anim, _ref(cap), audio.samples, SR)
    assert s.fps == FPS and s.mouth_r > 0.99 and s.lag_frames == 0
    short = Animation(anim.values[: int(2 * FPS)], FPS)
    with pytest.raises(InputError, match="reference"):
        reference.score(anim, _ref(short), audio.samples, SR)


def test_reference_stats_table_parses():
    text = "intro\n\n| channel | mean | std |\n|---|---:|---:|\n| jawOpen | 0.176 | 0.095 |\n| mouthPress | x | y |\n"
    assert reference.parse_stats_markdown(text) == {"jawOpen": (0.176, 0.095)}
    with pytest.raises(InputError):
        reference.parse_stats_markdown("no table here")


def test_eval_reference_cli_writes_json(tmp_path):
    anim, audio = _take()
    livelink.write_csv(anim, tmp_path / "gen.csv")
    livelink.write_csv(anim.with_values(np.roll(anim.values, -1, axis=0)), tmp_path / "real.csv")
    write_wav(audio, tmp_path / "dub.wav")
    r = subprocess.run([sys.executable, "-m", "dubtool", "eval", "gen.csv", "--reference", "real.csv", "--dub", "dub.wav",
                        "--json", "out.json"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["lag_frames"] == 1 and data["mouth_r_best"] > 0.95 and "mouth-opening r" in r.stdout


# --- --lang ------------------------------------------------------------------------------------

def test_every_espeak_language_and_iso_aliases_resolve():
    from dubtool.lang import espeak_codes, lookup

    codes = espeak_codes()
    if not codes:
        pytest.skip("espeak-ng not installed")
    assert all(lookup(c) is not None for c in codes)
    for alias in ("cs", "ces", "cze"):
        assert lookup(alias).voice == "cs"
    for alias in ("nl", "nld", "dut"):
        assert lookup(alias).voice == "nl"
    assert lookup("pt_BR").voice == "pt-br" and lookup("fr-CA").code == "fr"
    assert lookup("xx") is None


def test_unknown_language_blocks_only_the_teacher():
    from dubtool.localize import LocalizeOptions

    LocalizeOptions(lang="xx", model="flow").validate()
    LocalizeOptions(lang="cs", model="teacher", dub_text="ahoj").validate()
    with pytest.raises(InputError, match="unsupported language 'xx'.*teacher"):
        LocalizeOptions(lang="xx", model="teacher", dub_text="hello").validate()
