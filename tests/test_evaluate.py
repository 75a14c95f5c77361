"""`dubtool eval` end to end on a tiny generated line: the JSON holds every metric per system, a lip-synced
animation scores closure 1, the teacher baseline beats the naive copy on /p b m/, and bad input fails
with one line and no partial JSON."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool import evaluate, livelink
from dubtool.arkit import NUM_CHANNELS, Animation, index
from dubtool.audio import Audio, load_audio, write_wav

FPS = 30.0
JAW, BROW, YAW = index("jawOpen"), index("browInnerUp"), index("HeadYaw")
# "ma pa ba ma pa" : bilabial 0.12 s then open vowel 0.25 s, five syllables, 0.2 s lead-in and tail.
SYLLABLES = [("m", "a"), ("p", "a"), ("b", "ɑ"), ("m", "a"), ("p", "a")]
LEAD_S, CONS_S, VOWEL_S = 0.2, 0.12, 0.25
DURATION_S = LEAD_S + len(SYLLABLES) * (CONS_S + VOWEL_S) + 0.2


def _phonemes():
    out, t = [], LEAD_S
    for c, v in SYLLABLES:
        out.append({"symbol": c, "start_s": round(t, 4), "end_s": round(t + CONS_S, 4)})
        out.append({"symbol": v, "start_s": round(t + CONS_S, 4), "end_s": round(t + CONS_S + VOWEL_S, 4)})
        t += CONS_S + VOWEL_S
    return out


def _dub_audio(sr=16000):
    """Voiced bursts on the vowels, silence on the closures (as in real /p b m/ + vowel)."""
    rng = np.random.default_rng(0)
    x = np.zeros(int(DURATION_S * sr), np.float32)
    for p in _phonemes():
        if p["symbol"] in ("a", "ɑ"):
            a, b = int(p["start_s"] * sr), int(p["end_s"] * sr)
            t = np.arange(b - a) / sr
            x[a:b] = 0.3 * np.sin(2 * np.pi * 180 * t) * np.hanning(b - a) + rng.normal(0, 0.01, b - a)
    return Audio(x, sr)


def _curves(lips_synced: bool, seed: int):
    n = int(round(DURATION_S * FPS))
    t = np.arange(n) / FPS
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    jaw = np.zeros(n)
    for p in _phonemes():
        s = slice(int(round(p["start_s"] * FPS)), int(round(p["end_s"] * FPS)))
        is_vowel = p["symbol"] in ("a", "ɑ")
        jaw[s] = 0.55 if (is_vowel or not lips_synced) else 0.0
    v[:, JAW] = np.convolve(jaw, np.ones(3) / 3, "same")
    rng = np.random.default_rng(seed)
    v[:, BROW] = 0.3 + 0.2 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 1))
    v[:, YAW] = 0.05 * np.sin(2 * np.pi * 0.4 * t)
    return Animation(v, FPS)


@pytest.fixture
def line(tmp_path):
    write_wav(_dub_audio(), tmp_path / "dub.wav")
    (tmp_path / "phonemes.json").write_text(json.dumps({"phonemes": _phonemes()}), encoding="utf-8")
    livelink.write_csv(_curves(True, 0), tmp_path / "generated.csv")
    # The source line (another language): same actor's upper face, but its mouth is open where the dub closes.
    livelink.write_csv(_curves(False, 0), tmp_path / "source.csv")
    return tmp_path


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dubtool", "eval", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def _teacher_available():
    try:
        import dubtool.teacher  # noqa: F401
    except ImportError:
        return False
    return True


def test_eval_writes_every_metric_and_scores_a_lip_synced_line(line):
    out = line / "eval.json"
    args = [line / "generated.csv", "--dub", line / "dub.wav", "--phonemes", line / "phonemes.json",
            "--source", line / "source.csv", "--json", out]
    if _teacher_available():
        args.append("--baselines")
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    assert "closure" in r.stdout
    data = json.loads(out.read_text())
    g = data["systems"]["generated"]
    for key in ("bilabial_closure_rate", "bilabials", "jaw_contrast", "lip_audio_lag_frames", "fdd",
                "upper_face_correlation", "disentanglement_leak", "jitter"):
        assert key in g
    assert g["bilabials"] == 5 and g["bilabial_closure_rate"] == 1.0
    assert g["jaw_contrast"] > 0.3
    assert abs(g["lip_audio_lag_frames"]) <= 2
    # Upper face is the source's own: no dynamics deviation, full correlation.
    assert g["fdd"] == pytest.approx(0.0, abs=1e-4) and g["upper_face_correlation"] == pytest.approx(1.0, abs=1e-3)
    assert data["inputs"]["phonemes"] == 10 and data["inputs"]["source"] is True


@pytest.mark.skipif(not _teacher_available(), reason="dubtool.teacher not installed yet")
def test_teacher_baseline_beats_naive_copy_on_bilabial_closure(line):
    out = line / "eval.json"
    r = _run(line / "generated.csv", "--dub", line / "dub.wav", "--phonemes", line / "phonemes.json",
             "--source", line / "source.csv", "--baselines", "--json", out)
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())["systems"]
    assert s["teacher"]["bilabial_closure_rate"] > s["naive_copy"]["bilabial_closure_rate"]
    assert s["naive_copy"]["disentanglement_leak"] == pytest.approx(1.0, abs=1e-3)  # the copy IS the source mouth
    v = json.loads(out.read_text())["verdict"]
    assert v["beats_naive_on_closure"] is True


def test_naive_copy_and_verdict_in_process(line):
    """Without the CLI: the naive copy keeps the source's open mouth on /p b m/ and loses to the lip-synced line."""
    from dubtool import baselines

    dub = load_audio(line / "dub.wav")
    phon = evaluate.load_phonemes_json(line / "phonemes.json")
    src = livelink.read_csv(line / "source.csv")
    gen = livelink.read_csv(line / "generated.csv")
    naive = baselines.naive_copy(src, gen.num_frames, gen.fps, dub.duration_s)
    m_gen = evaluate.evaluate_animation(gen, dub, phon, naive)
    m_naive = evaluate.evaluate_animation(naive, dub, phon, naive)
    assert m_gen.bilabial_closure_rate == 1.0 and m_naive.bilabial_closure_rate == 0.0
    v = evaluate.verdict({"generated": m_gen.__dict__, "naive_copy": m_naive.__dict__})
    assert v["beats_naive_on_closure"] and v["less_source_leak_than_naive"]


def test_time_map_warps_the_source_onto_the_dub():
    from dubtool import baselines
    from dubtool.timemap import build_timemap

    src = Animation(np.zeros((60, NUM_CHANNELS), np.float32), FPS)  # 2 s source
    src.values[:, BROW] = np.arange(60) / FPS                        # brow value = source time
    tm = build_timemap(2.0, 1.0, [(1.0, 0.25)])                      # first second squeezed into 0.25 s
    w = baselines.warp_to_dub(src, 30, FPS, 1.0, tm)
    assert w.values[6, BROW] == pytest.approx(0.8, abs=1e-3)                      # dub 0.2 s -> source 0.8 s
    assert w.values[15, BROW] == pytest.approx(1.0 + (0.5 - 0.25) / 0.75, abs=1e-3)  # dub 0.5 s -> 1.33 s


def test_bad_inputs_fail_with_one_line_and_no_json(line):
    out = line / "eval.json"
    (line / "bad.json").write_text('[{"symbol": "p", "start_s": 0.5}]', encoding="utf-8")
    r = _run(line / "generated.csv", "--dub", line / "dub.wav", "--phonemes", line / "bad.json", "--json", out)
    assert r.returncode != 0 and "bad.json" in r.stderr and "phoneme 0" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()
    r = _run(line / "generated.csv", "--phonemes", line / "phonemes.json")
    assert r.returncode != 0 and "--dub" in r.stderr
    short = Audio(np.zeros(8000, np.float32) + 0.1, 16000)
    write_wav(short, line / "short.wav")
    r = _run(line / "generated.csv", "--dub", line / "short.wav", "--phonemes", line / "phonemes.json")
    assert r.returncode != 0 and "lasts" in r.stderr


def test_eval_set_never_overlaps_the_training_prompts():
    import importlib.util
    from pathlib import Path

    corpus = pytest.importorskip("dubtool.corpus")
    script = Path(__file__).resolve().parent.parent / "scripts" / "build_evalset.py"
    spec = importlib.util.spec_from_file_location("build_evalset", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    if not build.asterisk_dir("en").is_dir():
        pytest.skip("asterisk-core-sounds-en-wav not installed")
    held_out = {str(w) for _, w in build.held_out_english()}
    training = {str(w) for _, w in corpus.asterisk_training_prompts()}
    assert held_out and training and not held_out & training


def test_eval_set_summarises_per_language(line):
    """A one-item evaluation set (the fixture line, source as a .perf with audio, uniform time map)."""
    from dubtool.performance import Performance, save_performance
    from dubtool.timemap import save_timemap, uniform_timemap

    pytest.importorskip("dubtool.teacher")
    src = livelink.read_csv(line / "source.csv")
    n = src.num_frames
    z = np.zeros((n, 478, 3), np.float32)
    perf = Performance(z, z, np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), src, np.ones(n, bool),
                       np.ones(n, np.float32), load_audio(line / "dub.wav"), {"synthetic": True})
    save_performance(perf, line / "source.perf")
    save_timemap(uniform_timemap(src.duration_s, DURATION_S), line / "timemap.json")
    manifest = {"version": 1, "items": [{"id": "fr-test", "lang": "fr", "source_lang": "en",
                                         "dub_audio": "dub.wav", "phonemes": "phonemes.json",
                                         "source_perf": "source.perf", "timemap": "timemap.json"}]}
    (line / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = line / "set.json"
    r = _run("--set", line / "manifest.json", "--model", "none", "--json", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert set(data["summary"]) == {"fr", "all"}
    fr = data["summary"]["fr"]
    assert fr["teacher"]["items"] == 1 and fr["teacher"]["bilabial_closure_rate"] == 1.0
    assert fr["naive_copy"]["bilabial_closure_rate"] == 0.0
    assert data["items"][0]["id"] == "fr-test"
    (line / "manifest.json").write_text('{"items": []}', encoding="utf-8")
    r = _run("--set", line / "manifest.json", "--model", "none")
    assert r.returncode != 0 and "no items" in r.stderr


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """An untrained, small flow checkpoint: the code path of `eval --set` with a model, not its quality."""
    from dubtool.generate import ModelDimensions, SamplerConfig, build_net, identity_stats, save_checkpoint
    from dubtool.keypoints import KEYPOINT_DIM

    dims = ModelDimensions(n_keypoints=KEYPOINT_DIM, d_model=32, n_layers=1, n_heads=2)
    return save_checkpoint(tmp_path / "tiny.pt", build_net(dims), dims, SamplerConfig(steps=2), identity_stats(dims),
                           {"name": "tiny"})


def test_model_output_keeps_the_warped_source_upper_face(line, tiny_checkpoint):
    from dubtool import baselines
    from dubtool.generate import load_model
    from dubtool.metrics import PERFORMANCE_IDX
    from dubtool.performance import Performance
    from dubtool.timemap import uniform_timemap

    src = livelink.read_csv(line / "source.csv")
    n = src.num_frames
    z = np.zeros((n, 478, 3), np.float32)
    perf = Performance(z, z, np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), src, np.ones(n, bool),
                       np.ones(n, np.float32), load_audio(line / "dub.wav"), {})
    dub = load_audio(line / "dub.wav")
    gen = load_model(str(tiny_checkpoint))
    tm = uniform_timemap(src.duration_s, dub.duration_s)
    m = int(round(dub.duration_s * gen.fps))
    warped = baselines.warp_to_dub(src, m, gen.fps, dub.duration_s, tm)
    anim = evaluate.generate_for_line(gen, dub, perf, warped, tm)
    assert anim.num_frames == m
    np.testing.assert_allclose(anim.values[:, PERFORMANCE_IDX], warped.values[:, PERFORMANCE_IDX], atol=1e-4)
    raw = evaluate.raw_generation(gen, dub, perf, warped)
    rep = evaluate.evaluate_line(anim, dub, evaluate.load_phonemes_json(line / "phonemes.json"), src, tm,
                                 with_baselines=True, extra={"flow_raw": raw})
    assert set(rep.systems) == {"generated", "flow_raw", "teacher", "naive_copy"}
    assert rep.systems["generated"].fdd == pytest.approx(0.0, abs=1e-4)
    assert rep.systems["flow_raw"].fdd > 0  # an untrained net does not reproduce the brow motion


def test_paired_gain_interval_separates_a_real_gain_from_noise():
    """The set verdict's 'significant' must not fire on noise, and must fire on a consistent gain."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 40)
    real = evaluate.paired_gain_ci(list(base + 0.2 + rng.normal(0, 0.1, 40)), list(base))
    noise = evaluate.paired_gain_ci(list(base + rng.normal(0, 0.3, 40)), list(base))
    assert real["significant"] and real["ci95"][0] > 0.1 and real["mean"] == pytest.approx(0.2, abs=0.05)
    assert not noise["significant"] and noise["ci95"][0] < 0 < noise["ci95"][1]
    assert evaluate.paired_gain_ci([1.0, float("nan")], [0.0, 0.0]) is None  # too few finite pairs


def test_set_verdict_reports_closure_and_jaw_gains_per_language():
    def item(lang, g, n):
        return {"lang": lang, "systems": {"generated": {"bilabial_closure_rate": g, "jaw_contrast": g / 10},
                                          "naive_copy": {"bilabial_closure_rate": n, "jaw_contrast": n / 10}}}
    items = [item("fr", 0.9, 0.1 + 0.01 * i) for i in range(10)] + [item("es", 0.3 + 0.05 * (i % 3 - 1), 0.3) for i in range(9)]
    fr, es = evaluate.set_gains_over_naive(items, "fr"), evaluate.set_gains_over_naive(items, "es")
    assert fr["closure_gain_over_naive"]["significant"] and fr["jaw_gain_over_naive"]["lines"] == 10
    assert not es["closure_gain_over_naive"]["significant"]
    assert evaluate.set_gains_over_naive(items, "all")["closure_gain_over_naive"]["lines"] == 19
    v = evaluate.verdict({"generated": {"bilabial_closure_rate": 0.4, "jaw_contrast": 0.02},
                          "naive_copy": {"bilabial_closure_rate": 0.3, "jaw_contrast": 0.05},
                          "teacher": {"bilabial_closure_rate": 1.0}})
    assert v["beats_naive_on_closure"] and not v["beats_naive_on_jaw_contrast"]
    assert not v["matches_teacher_within_margin"] and v["closure_gap_to_teacher"] == pytest.approx(0.6)


@pytest.mark.skipif(not (Path(__file__).resolve().parent.parent / "models" / "dubtool_flow_v6.pt").is_file(),
                    reason="shipped checkpoint not present")
def test_shipped_model_seals_most_bilabials_of_real_held_out_lines(tmp_path):
    """What issue 8 promises, on a slice of the real held-out set (8 prompts per language + the 10
    unseen-speaker lines, rebuilt from the installed recordings): no transcript, yet the lips close on
    most /p b m/, far more than the naive copy, near the transcript-driven teacher. The full set's
    figures are in docs/eval.md; this slice is small and a third of it is the unseen speakers (the
    shipped v3 sealed 0.74 of it, v5 0.70, the teacher 1.00, the copy ~0.3), so the bounds are loose:
    at least 0.65, i.e. within 0.35 of a perfect teacher."""
    from dubtool.corpus import asterisk_transcripts

    root = Path(__file__).resolve().parent.parent
    if not all(asterisk_transcripts(lang) for lang in ("en", "fr", "es")):
        pytest.skip("asterisk-core-sounds-{en,fr,es} not installed (scripts/setup.sh --dev)")
    r = subprocess.run([sys.executable, str(root / "scripts" / "build_evalset.py"), "--out", str(tmp_path / "set"),
                        "--per-lang", "8", "--jobs", "2"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "eval.json"
    r = _run("--set", tmp_path / "set" / "manifest.json", "--json", out)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(out.read_text())["summary"]["all"]
    gen, teacher, naive = (s[k]["bilabial_closure_rate"] for k in ("generated", "teacher", "naive_copy"))
    assert teacher >= 0.95 and naive <= 0.5
    assert gen >= 0.65 and teacher - gen <= 0.35 and gen - naive >= 0.3, (gen, teacher, naive)
    assert s["generated"]["jaw_contrast"] > s["naive_copy"]["jaw_contrast"] + 0.05
