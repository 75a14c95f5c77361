"""align / timemap: phrase segmentation and matching on real en/fr recordings of the same prompts
(Debian's asterisk-core-sounds), the time map's math, the fitted dub, the plot and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool.align import (AlignConfig, Segment, align, clause_times, fit_dub, match_phrases, plot_alignment,
                           segment_speech, split_clauses, text_anchors)
from dubtool.audio import Audio, load_audio, write_wav
from dubtool.errors import InputError, SilenceError
from dubtool.timemap import build_timemap, load_timemap, save_timemap, timemap_from_json

SR = 16000
SOUNDS = Path("/usr/share/asterisk/sounds")
VOICES = {"en": "en_US_f_Allison", "fr": "fr_CA_f_June", "es": "es_MX_f_Allison"}
PROMPTS = ("hello-world", "agent-pass", "auth-thankyou")
TEXT = {"en": "Hello world. Please enter your password followed by the pound key. Thank you.",
        "fr": "Salut tout le monde. Composez votre mot de passe suivi du dièse. Merci."}
needs_sounds = pytest.mark.skipif(not (SOUNDS / VOICES["fr"]).is_dir(),
                                  reason="asterisk-core-sounds-{en,fr}-wav not installed (scripts/setup.sh --dev)")


def make_line(lang: str, prompts=PROMPTS, pause_s: float = 0.6, lead_s: float = 0.3):
    """Concatenate prompts with pauses; returns the Audio and each prompt's speech span in the line
    (measured on the prompt alone, so it is independent of the line-level segmentation)."""
    parts, spans, t = [np.zeros(int(lead_s * SR), np.float32)], [], lead_s
    for name in prompts:
        a = load_audio(SOUNDS / VOICES[lang] / f"{name}.wav")
        segs = segment_speech(a)
        spans.append((t + segs[0].start_s, t + segs[-1].end_s))
        parts += [a.samples, np.zeros(int(pause_s * SR), np.float32)]
        t += a.duration_s + pause_s
    return Audio(np.concatenate(parts), SR), spans


@pytest.fixture(scope="module")
def lines():
    src, src_spans = make_line("en")
    dub, dub_spans = make_line("fr")
    return src, src_spans, dub, dub_spans


def bursts(spec, dur_s, noise_db=-55.0, seed=0):
    """Speech-like bursts (syllable-rate modulated noise) at given (start, end) seconds over a noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur_s * SR)) / SR
    x = rng.normal(0, 10 ** (noise_db / 20), len(t))
    for a, b in spec:
        m = (t >= a) & (t < b)
        env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * (t[m] - a))  # 4 Hz syllables that never fully stop
        x[m] += 0.2 * env * rng.normal(0, 1, m.sum())
    return Audio(x.astype(np.float32), SR)


def test_segmentation_finds_bursts_and_bridges_short_gaps():
    spec = [(0.5, 1.4), (1.5, 2.2), (3.0, 3.8)]  # 0.1 s gap is bridged, 0.8 s pause is not
    segs = segment_speech(bursts(spec, 4.5))
    assert len(segs) == 2
    assert abs(segs[0].start_s - 0.5) < 0.04 and abs(segs[0].end_s - 2.2) < 0.05
    assert abs(segs[1].start_s - 3.0) < 0.04 and abs(segs[1].end_s - 3.8) < 0.05


def test_segmentation_ignores_clicks_and_handles_digital_silence():
    a = bursts([(1.0, 2.0)], 3.0, noise_db=-200)
    a.samples[int(2.5 * SR):int(2.5 * SR) + 40] = 0.5  # a 2.5 ms click
    segs = segment_speech(a)
    assert [(round(s.start_s, 1), round(s.end_s, 1)) for s in segs] == [(1.0, 2.0)]


@needs_sounds
def test_segments_asterisk_prompts(lines):
    src, src_spans, dub, dub_spans = lines
    dub_segs = segment_speech(dub)
    assert len(dub_segs) == 3  # the French prompts have no internal pause
    for seg, (a, b) in zip(dub_segs, dub_spans):
        assert abs(seg.start_s - a) < 0.05 and abs(seg.end_s - b) < 0.05
    # English agent-pass has a pause after "password": 4 phrases
    assert len(segment_speech(src)) == 4


def test_match_phrases_groups_split_phrase():
    src = [Segment(0.3, 1.6), Segment(2.3, 3.7), Segment(4.0, 5.4), Segment(6.2, 6.9)]
    dub = [Segment(0.3, 1.3), Segment(2.0, 4.9), Segment(5.5, 6.2)]
    groups = match_phrases(src, dub)
    assert [(g.source_segments, g.dub_segments) for g in groups] == [(1, 1), (2, 1), (1, 1)]
    assert groups[1].source_start_s == 2.3 and groups[1].source_end_s == 5.4


def test_match_phrases_dub_splits_into_two():
    src = [Segment(0.2, 2.0), Segment(3.0, 4.0)]
    dub = [Segment(0.2, 1.0), Segment(1.3, 2.4), Segment(3.3, 4.5)]
    groups = match_phrases(src, dub)
    assert [(g.source_segments, g.dub_segments) for g in groups] == [(1, 2), (1, 1)]


def test_match_phrases_very_different_counts_still_covers_everything():
    src = [Segment(0.1 + i, 0.6 + i) for i in range(8)]
    dub = [Segment(0.2, 7.5)]
    groups = match_phrases(src, dub, AlignConfig(max_group=2))
    assert len(groups) == 1 and groups[0].source_segments == 8


@needs_sounds
def test_align_maps_each_prompt_onto_its_translation(lines):
    src, src_spans, dub, dub_spans = lines
    tm = align(src, dub)
    assert tm.method == "phrase-dp" and len(tm.phrases) == 3
    for (sa, sb), (da, db) in zip(src_spans, dub_spans):
        assert abs(float(tm.dub_time(sa)) - da) < 0.06
        assert abs(float(tm.dub_time(sb)) - db) < 0.06
        assert abs(float(tm.source_time(da)) - sa) < 0.06
    assert tm.source_duration_s == pytest.approx(src.duration_s)
    assert tm.dub_duration_s == pytest.approx(dub.duration_s)


@needs_sounds
def test_align_survives_background_noise(lines):
    src, src_spans, dub, dub_spans = lines
    rng = np.random.default_rng(0)

    def noisy(a, snr_db):
        x = a.samples
        p = np.mean(x[np.abs(x) > 0.01] ** 2)
        return Audio((x + rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), len(x))).astype(np.float32), SR)

    tm = align(noisy(src, 20), noisy(dub, 20))
    for (sa, sb), (da, db) in zip(src_spans, dub_spans):
        assert abs(float(tm.dub_time(sa)) - da) < 0.15 and abs(float(tm.dub_time(sb)) - db) < 0.15


@needs_sounds
def test_transcripts_place_clause_boundaries_in_the_pauses(lines):
    src, src_spans, dub, dub_spans = lines
    assert split_clauses(TEXT["en"]) == ["Hello world.", "Please enter your password followed by the pound key.",
                                         "Thank you."]
    got = clause_times(dub, TEXT["fr"], "fr-fr")
    assert len(got) == 2
    for t, (prev, nxt) in zip(got, zip(dub_spans[:-1], dub_spans[1:])):
        assert prev[1] - 0.35 < t < nxt[0] + 0.35  # each boundary lands in (or right at) its pause
    tm = align(src, dub, source_text=TEXT["en"], dub_text=TEXT["fr"], source_voice="en-us", dub_voice="fr-fr")
    assert tm.method == "phrase-dp+text"
    # a comma in one language only: clause counts differ (4 vs 3), sentence ends still pair up
    pairs, note = text_anchors(src, dub, TEXT["en"].replace("Hello world", "Hello, world"), TEXT["fr"],
                               "en-us", "fr-fr")
    assert len(pairs) == 2 and "sentence" in note
    for (a, b), (s_prev, s_next), (d_prev, d_next) in zip(pairs, zip(src_spans, src_spans[1:]),
                                                          zip(dub_spans, dub_spans[1:])):
        assert s_prev[1] - 0.35 < a < s_next[0] + 0.35 and d_prev[1] - 0.35 < b < d_next[0] + 0.35
    for (sa, sb), (da, db) in zip(src_spans, dub_spans):
        assert abs(float(tm.dub_time(sa)) - da) < 0.06


def test_timemap_is_monotone_and_invertible():
    tm = build_timemap(10.0, 12.0, [(1.0, 1.5), (4.0, 6.0), (3.9, 7.0), (8.0, 9.0)])  # (3.9, 7.0) breaks order
    k = tm.knots_array
    assert np.all(np.diff(k[:, 0]) > 0) and np.all(np.diff(k[:, 1]) > 0)
    x = np.linspace(0, 10, 101)
    assert np.allclose(tm.source_time(tm.dub_time(x)), x)
    assert float(tm.dub_time(4.0)) == pytest.approx(6.0)
    assert float(tm.source_time(-1.0)) == 0.0 and float(tm.source_time(99.0)) == 10.0
    again = timemap_from_json(json.loads(json.dumps(tm.to_json())))
    assert np.allclose(again.knots_array, k)
    with pytest.raises(InputError):
        timemap_from_json({"version": 99, "knots": []})


def test_timemap_file_roundtrip_and_bad_file(tmp_path):
    tm = build_timemap(2.0, 3.0, [(1.0, 2.0)])
    save_timemap(tm, tmp_path / "tm.json")
    assert load_timemap(tmp_path / "tm.json").knots == tm.knots
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        load_timemap(tmp_path / "bad.json")


def test_silent_dub_is_a_clear_error():
    with pytest.raises(SilenceError):
        align(bursts([(0.5, 1.5)], 2.0), Audio(np.zeros(SR * 2, np.float32), SR))


@needs_sounds
def test_fit_moves_dub_phrases_onto_source_timing(lines):
    src, src_spans, dub, dub_spans = lines
    tm = align(src, dub)
    fitted = fit_dub(dub, tm, "phrase")
    assert len(fitted.samples) == len(src.samples)
    segs = segment_speech(fitted)
    assert len(segs) == 3
    for seg, (a, b) in zip(segs, src_spans):
        assert abs(seg.start_s - a) < 0.08 and abs(seg.end_s - b) < 0.08
    uni = fit_dub(dub, tm, "uniform")
    assert len(uni.samples) == len(src.samples)


@needs_sounds
def test_cli_align_outputs_and_errors(lines, tmp_path):
    src, _, dub, _ = lines
    write_wav(src, tmp_path / "src.wav")
    # the dub as 44.1 kHz stereo: align must downmix and resample
    import soundfile as sf
    import librosa

    d44 = librosa.resample(dub.samples, orig_sr=SR, target_sr=44100)
    sf.write(tmp_path / "dub.wav", np.stack([d44, 0.5 * d44], axis=1), 44100)
    run = lambda *a: subprocess.run([sys.executable, "-m", "dubtool", "align", *a], capture_output=True, text=True,
                                    cwd=tmp_path)
    r = run("src.wav", "dub.wav", "-o", "tm.json", "--plot", "tm.png", "--lang", "fr")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "tm.json").read_text())
    assert data["version"] == 1 and len(data["phrases"]) == 3
    assert data["knots"][0] == [0.0, 0.0] and data["knots"][-1][1] == pytest.approx(dub.duration_s, abs=1e-3)
    assert (tmp_path / "tm.png").read_bytes()[:4] == b"\x89PNG"
    # corrupt dub: one-line error, non-zero exit, nothing written
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    r = run("src.wav", "bad.wav", "-o", "tm2.json")
    assert r.returncode != 0 and "bad.wav" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "tm2.json").exists()
    # silence-only dub
    write_wav(Audio(np.zeros(SR, np.float32), SR), tmp_path / "silence.wav")
    r = run("src.wav", "silence.wav", "-o", "tm3.json")
    assert r.returncode != 0 and "no speech" in r.stderr and not (tmp_path / "tm3.json").exists()
    # without transcripts any language aligns (audio only); a transcript needs a language espeak-ng speaks
    r = run("src.wav", "dub.wav", "--lang", "xx", "--dub-text", "bonjour", "-o", "tm4.json")
    assert r.returncode != 0 and "unsupported language 'xx'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "tm4.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_plot_is_written_atomically(tmp_path):
    a, b = bursts([(0.2, 0.8)], 1.2), bursts([(0.3, 1.0)], 1.4, seed=1)
    tm = align(a, b)
    out = plot_alignment(a, b, tm, tmp_path / "p.png")
    assert out.stat().st_size > 1000 and [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_split_clauses_and_sentences():
    text = "Hello, world. It costs 3.5 dollars; thanks!  Bye"
    assert split_clauses(text) == ["Hello,", "world.", "It costs 3.5 dollars;", "thanks!", "Bye"]
    assert split_clauses(text, "sentence") == ["Hello, world.", "It costs 3.5 dollars; thanks!", "Bye"]
    assert split_clauses("你好，世界。谢谢！", "sentence") == ["你好，世界。", "谢谢！"]
