"""`dubtool train --captures`: pairs found and validated (one line per rejected pair), a deterministic
hold-out, and an end-to-end fine-tune of a tiny model on takes cut from the bundled example (tracked
once by `dubtool extract`): a loadable checkpoint that localize takes, a card with the held-out
figures, and a training loss on the captures that goes down."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool.arkit import Animation
from dubtool.audio import Audio, ffmpeg_binary, write_wav
from dubtool.captures import CaptureLimits, collect, find_pairs, split_holdout
from dubtool.errors import InputError
from dubtool.livelink import write_csv
from dubtool.performance import Performance, save_performance

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples"


@pytest.fixture(scope="module")
def example_perf():
    """The bundled example actor through `dubtool extract` (once)."""
    from dubtool.errors import DubtoolError
    from dubtool.extract import extract

    try:
        return extract(EXAMPLE / "actor_en.mp4")
    except DubtoolError as e:  # no face tracker model installed
        pytest.skip(f"extract unavailable: {e}")


def _cut(perf, a: float, b: float):
    fps, sr = perf.fps, perf.audio.sample_rate
    i, j = int(round(a * fps)), int(round(b * fps))
    return i, j, Animation(perf.animation.values[i:j], fps), Audio(perf.audio.samples[int(a * sr):int(b * sr)], sr)


@pytest.fixture(scope="module")
def capture_dir(example_perf, tmp_path_factory):
    """Three good takes of the three kinds (Live Link CSV at 60 fps + .wav, Live Link CSV + .mov whose
    audio ffmpeg reads, a .perf carrying its audio) and three bad pairs: curves 2 s against 7.5 s
    of audio, a CSV with silent audio, a CSV with no audio beside it."""
    d = tmp_path_factory.mktemp("captures")
    perf = example_perf
    _, _, anim, audio = _cut(perf, 0.0, 3.7)
    write_csv(anim.resampled(60.0), d / "Slate1_1_Actor.csv")
    write_wav(audio, d / "Slate1_1_Actor.wav")
    _, _, anim, audio = _cut(perf, 3.7, 7.4)
    write_csv(anim.resampled(60.0), d / "Slate1_2_Actor.csv")
    write_wav(audio, d / "tmp.wav")
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", str(d / "tmp.wav"), "-c:a", "aac",
                    str(d / "Slate1_2_Actor.mov")], check=True)
    (d / "tmp.wav").unlink()
    i, j, anim, audio = _cut(perf, 1.5, 5.5)
    save_performance(Performance(perf.landmarks_image[i:j], perf.landmarks_canonical[i:j], perf.head_pose[i:j], anim,
                                 perf.face_found[i:j], perf.confidence[i:j], audio, dict(perf.meta)), d / "take3.perf")
    _, _, anim, _ = _cut(perf, 0.0, 2.0)
    write_csv(anim, d / "short.csv")
    write_wav(perf.audio, d / "short.wav")
    _, _, anim, audio = _cut(perf, 0.0, 3.0)
    write_csv(anim, d / "quiet.csv")
    write_wav(Audio(np.zeros_like(audio.samples), audio.sample_rate), d / "quiet.wav")
    write_csv(anim, d / "lonely.csv")
    return d


def test_pairs_by_stem_and_one_line_per_rejected_pair(capture_dir):
    pairs, lonely = find_pairs(capture_dir)
    kinds = {p.name: (p.kind, p.audio.suffix if p.audio else None) for p in pairs}
    assert kinds["Slate1_1_Actor"] == ("livelink", ".wav") and kinds["Slate1_2_Actor"] == ("livelink", ".mov")
    assert kinds["take3"] == ("perf", None)
    assert [r.line() for r in lonely] == ["rejected lonely: lonely.csv has no audio beside it (expected lonely.mov or "
                                          "lonely.wav)"]
    lines = []
    good, rejected = collect(capture_dir, CaptureLimits(), log=lines.append)
    assert [c.name for c in good] == ["Slate1_1_Actor", "Slate1_2_Actor", "take3"]
    assert good[0].animation.fps == 60.0 and good[2].lip_gap is not None  # the .perf keeps its tracked lips
    assert abs(good[1].audio.duration_s - 3.7) < 0.1  # the .mov's audio, read through ffmpeg
    assert sorted(lines) == sorted(r.line() for r in rejected) and len(lines) == 3
    by = {r.name: r.reason for r in rejected}
    assert by["short"] == "curves last 2.00 s but the audio 7.49 s (they must agree within 0.5 s)"
    assert "no speech found" in by["quiet"] and str(capture_dir) not in by["quiet"]


def test_holdout_is_deterministic_by_name_and_leaves_takes_to_train_on():
    names = [f"take_{i:02d}" for i in range(10)]
    train, held = split_holdout(names, 0.2)
    assert len(held) == 2 and sorted(train + held) == names
    assert split_holdout(list(reversed(names)), 0.2) == (train, held)  # the order files come in does not matter
    assert split_holdout(names[:2], 0.2)[1] and split_holdout(names[:2], 0.9)[0]  # at least one of each
    assert split_holdout(names, 0.0) == (names, []) and split_holdout(names[:1], 0.5) == (names[:1], [])


def test_amplitude_gains_even_out_the_takes_and_keep_their_timing():
    from dubtool.arkit import NUM_CHANNELS, index
    from dubtool.captures import Capture, Pair, amplitude_gains, capture_features
    from dubtool.generate import ModelDimensions
    from dubtool.metrics import lip_gap

    fps, sr = 30.0, 16000
    t = np.arange(90) / fps
    caps = []
    for i, amp in enumerate((0.05, 0.1, 0.4)):  # the same speech rhythm, three mouth ranges
        v = np.zeros((len(t), NUM_CHANNELS), np.float32)
        v[:, index("jawOpen")] = amp * (1 + np.sin(2 * np.pi * 4 * t)) / 2
        v[:, index("eyeBlinkLeft")] = 0.5  # upper face: never scaled
        caps.append(Capture(Pair(f"t{i}", "perf", Path(f"t{i}.perf")), Animation(v, fps),
                            Audio(np.zeros(len(t) * sr // int(fps), np.float32), sr)))
    assert amplitude_gains(caps, "tracked") == [1.0, 1.0, 1.0]
    gains = amplitude_gains(caps, "takes")
    dims = ModelDimensions()
    feats = [capture_features(c, dims, g) for c, g in zip(caps, gains)]
    spread = [lip_gap(f["target"]).std() for f in feats]
    assert max(spread) / min(spread) < 1.1  # the takes' median range, whatever each take moved (they moved 8x apart)
    assert gains[1] == pytest.approx(1.0)  # the median take is left as it is
    for c, f in zip(caps, feats):  # the timing and the upper face are the take's own
        assert np.corrcoef(f["target"][:, index("jawOpen")], c.animation.values[:, index("jawOpen")])[0, 1] > 0.999
        assert np.allclose(f["target"][:, index("eyeBlinkLeft")], 0.5)
    with pytest.raises(InputError, match="amplitude must be one of"):
        amplitude_gains(caps, "louder")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dubtool", *args], capture_output=True, text=True, cwd=cwd)


def test_fine_tune_end_to_end(capture_dir, tiny_model, tmp_path):
    import torch

    from dubtool.generate import load_model

    # A base calibrated like the shipped one: its articulation gains must not be applied on top of a network
    # that learnt the takes' own range.
    ck = torch.load(tiny_model, map_location="cpu", weights_only=False)
    ck["meta"]["articulation_gain"] = {"jawOpen": 1.3, "mouthClose": 1.3}
    calibrated = tmp_path / "calibrated.pt"
    torch.save(ck, calibrated)
    r = _cli("train", "--captures", str(capture_dir), "--base", str(calibrated), "--out", "out/actor.pt", "--steps", "20",
             "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rejected = [line for line in r.stderr.splitlines() if line.startswith("rejected ")]
    assert sorted(line.split(":")[0] for line in rejected) == ["rejected lonely", "rejected quiet", "rejected short"]
    assert len(summary["used"]) == 2 and len(summary["heldout"]) == 1
    ft = summary["fine_tune"]
    assert ft["steps"] == 20 and "L2-SP" in summary["regulariser"]
    assert "no base corpus (the checkpoint records no corpus config to replay)" in summary["regulariser"]
    assert ft["probe_loss_after"]["capture"] < ft["probe_loss_before"]["capture"]  # same windows and noise: it learnt
    # A normal checkpoint, normalised with the base's statistics, that localize takes.
    tuned, base = load_model(tmp_path / "out" / "actor.pt"), load_model(tiny_model)
    assert all(np.array_equal(tuned.stats()[k], base.stats()[k]) for k in base.stats())
    assert "articulation_gain" not in tuned.meta
    assert tuned.meta["base_model"]["name"] == "tiny-untrained"
    card = (tmp_path / "out" / "actor.md").read_text()
    held = summary["heldout"][0]["take"]
    assert held in card and "| mouth-opening r, lag 0 |" in card and "rejected short: curves last 2.00 s" in card
    row = next(line for line in card.splitlines() if line.startswith("| mouth-opening r, lag 0 |"))
    assert row.count("|") == 4 and "–" not in row  # base and fine-tuned figures, both measured
    assert summary["scores"]["fine_tuned"]["mouth_r"] == pytest.approx(float(row.split("|")[3]), abs=0.006)
    verdict = summary["scores"]["verdict"]  # one held-out take: better exactly when its r rose
    s = summary["scores"]
    assert verdict.startswith("better") == (s["fine_tuned"]["mouth_r"] > s["base"]["mouth_r"])
    assert f"**Verdict: {verdict}.**" in card
    assert ("warning: the fine-tuned model is not better" in r.stderr) == verdict.startswith("not better")
    # What `localize --model-path out/actor.pt` runs (in-process: one interpreter start less).
    from dubtool.livelink import read_csv
    from dubtool.localize import LocalizeOptions, localize_files

    opts = LocalizeOptions(lang="en", model_path=str(tmp_path / "out" / "actor.pt"))
    report = localize_files(capture_dir / "take3.perf", capture_dir / "Slate1_1_Actor.wav", tmp_path / "dub.csv", opts)
    assert report["settings"]["generator"]["name"] == "tiny-untrained+actor"  # the fine-tuned model made the lips
    assert read_csv(tmp_path / "dub.csv").num_frames == report["frames"] > 0


def test_no_valid_pair_fails_in_one_line_exit_2(capture_dir, tiny_model, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("short.csv", "short.wav", "lonely.csv"):
        (bad / name).write_bytes((capture_dir / name).read_bytes())
    r = _cli("train", "--captures", "bad", "--base", tiny_model, "--out", "a.pt", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no valid capture pair" in err[0]
    assert len([line for line in r.stderr.splitlines() if line.startswith("rejected ")]) == 2
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "a.md").exists()


@pytest.mark.parametrize("change, says", [
    ({"holdout": 1.5}, "--holdout must be a share"), ({"holdout": float("nan")}, "--holdout must be a share"),
    ({"base": "nothere.pt"}, "base checkpoint not found"), ({"device": "tpu"}, "unknown device"),
    ({"unused": {"--config": "x.json"}}, "--config trains from scratch"), ({"out": None}, "--captures needs --out"),
    ({"captures": "nothere"}, "captures folder not found"), ({"base_corpus": "nothere"}, "--base-corpus: no corpus.npz"),
    ({"out": "actor.md"}, "--out is the checkpoint"), ({"amplitude": "louder"}, "--amplitude must be one of"),
])
def test_options_are_checked_before_any_work(capture_dir, tmp_path, monkeypatch, change, says):
    from dubtool.commands.train import _train_captures

    monkeypatch.chdir(tmp_path)
    args = {"captures": str(capture_dir), "out": "a.pt", "base": None, "holdout": 0.2, "base_corpus": None,
            "steps": None, "time_limit": None, "device": "cpu", "as_json": False, "unused": {}, **change}
    with pytest.raises(InputError, match=says):
        _train_captures(**args)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_verdict_needs_a_higher_median_and_half_the_takes():
    from dubtool.captures import heldout_verdict

    def scores(pairs):
        b, t = (float(np.median([p[i] for p in pairs])) for i in (0, 1))
        return {"base": {"mouth_r": b}, "fine_tuned": {"mouth_r": t},
                "per_take": [{"take": f"t{i}", "base_mouth_r": x, "fine_tuned_mouth_r": y} for i, (x, y) in enumerate(pairs)]}

    assert heldout_verdict(scores([(0.3, 0.5), (0.4, 0.6), (0.2, 0.1)])).startswith("better than the base (median "
                                                                                   "mouth-opening r 0.30 -> 0.50, 2 of 3")
    assert heldout_verdict(scores([(0.3, 0.2), (0.4, 0.35), (0.2, 0.5)])).startswith("not better")  # median falls
    assert heldout_verdict(scores([(0.3, 0.9), (0.4, 0.3), (0.5, 0.45), (0.6, 0.55)])).startswith("not better")  # 1 of 4
    assert heldout_verdict(scores([(float("nan"), 0.5)])).startswith("not scored")


def test_replay_corpus_is_the_base_corpus_own_first_espeak_clips(tmp_path):
    """With no built corpus at hand, the base mix is rebuilt from the checkpoint's own corpus config: the
    same first espeak training clips (the base trained on them), no held-out or real-prompt clips, cached."""
    from dubtool.captures import replay_corpus
    from dubtool.corpus import CorpusConfig, _espeak_jobs, load_corpus, replay_config
    from dubtool.generate import ModelDimensions

    full = CorpusConfig(espeak_clips=40, audio_subframes=1)
    small = replay_config({**json.loads(json.dumps(full.__dict__)), "unknown_future_key": 1}, 3)
    assert (small.val_voice_clips, small.val_lang_clips, small.asterisk_languages) == (0, 0, ())
    assert _espeak_jobs(small) == [j for j in _espeak_jobs(full) if j["split"] == "train"][:3]

    class Base:  # what replay_corpus reads of a loaded checkpoint
        dims = ModelDimensions(d_model=32, n_layers=1, n_heads=2, ff_mult=2)
        meta = {"config": {"corpus": json.loads(json.dumps(full.__dict__))}}

    lines = []
    folder, corpus = replay_corpus(Base, clips=2, cache=tmp_path / "replay", log=lines.append)
    assert folder == tmp_path / "replay" and len(corpus.clips) == 2 and lines[0].startswith("replay corpus: building 2")
    assert [c["id"] for c in corpus.clips] == ["espeak-train-0000", "espeak-train-0001"]
    assert corpus.mel.shape[1] == Base.dims.mel_width and (corpus.split == 0).all()
    again = []
    _, cached = replay_corpus(Base, clips=2, cache=tmp_path / "replay", log=again.append)
    assert not any("building" in line for line in again)  # read back, as saved (8-bit codes)
    assert np.array_equal(cached.target, load_corpus(folder).target) and np.allclose(cached.target, corpus.target, atol=0.01)
    Base.meta = {}  # a checkpoint that records no corpus config: no replay, L2-SP alone
    assert replay_corpus(Base, clips=2, cache=tmp_path / "other", log=lines.append) == (None, None)


def test_by_default_the_fine_tune_mixes_the_replay_corpus(capture_dir, tiny_model, tmp_path, monkeypatch):
    """By default `train --captures` rebuilds a replay slice of the base's own
    corpus (its checkpoint records the config), caches it under DUBTOOL_HOME, and mixes it into every batch."""
    import torch

    from dubtool import captures
    from dubtool.corpus import CorpusConfig
    from dubtool.train import FinetuneConfig

    ck = torch.load(tiny_model, map_location="cpu", weights_only=False)
    ck["meta"]["config"] = {"corpus": json.loads(json.dumps(CorpusConfig(audio_subframes=1).__dict__))}
    base = tmp_path / "base.pt"
    torch.save(ck, base)
    monkeypatch.setenv("DUBTOOL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(captures, "REPLAY_CLIPS", 3)
    monkeypatch.chdir(tmp_path)
    lines = []
    run = captures.train_on_captures(capture_dir, tmp_path / "actor.pt", base, steps=4, progress=False,
                                     cfg=FinetuneConfig(base_share=0.25), log=lines.append)
    replay = next((tmp_path / "home").glob("replay-*"))
    assert f"25% of every batch from the base corpus {replay}" in run.regulariser
    assert run.fine_tune["batch"] == {"capture": 12, "base_corpus": 4}
    assert any(line.startswith("replay corpus: building 3 espeak clips") for line in lines)
    assert "base_corpus" in run.fine_tune["probe_loss_after"]  # forgetting is measured on it too


def test_corpus_replay_of_builds_the_mix_for_a_machine_without_espeak(tiny_model, tmp_path):
    """`dubtool corpus --replay-of MODEL --out DIR` builds the replay corpus alone (on a CPU machine with
    espeak-ng), for `train --captures --base-corpus DIR` elsewhere; another corpus in DIR is not replaced."""
    import torch

    from dubtool.corpus import CorpusConfig, load_corpus

    ck = torch.load(tiny_model, map_location="cpu", weights_only=False)
    ck["meta"]["config"] = {"corpus": json.loads(json.dumps(CorpusConfig(audio_subframes=1).__dict__))}
    base = tmp_path / "base.pt"
    torch.save(ck, base)
    r = _cli("corpus", "--replay-of", str(base), "--out", "replay", "--clips", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clips"] == 2 and len(load_corpus(tmp_path / "replay").clips) == 2
    again = _cli("corpus", "--replay-of", str(base), "--out", "replay", "--clips", "2", cwd=tmp_path)
    assert again.returncode == 0 and "building" not in again.stderr  # already there: read back
    other = _cli("corpus", "--replay-of", str(base), "--out", "replay", "--clips", "3", cwd=tmp_path)
    assert other.returncode == 2 and "already holds another corpus" in other.stderr
    assert len(load_corpus(tmp_path / "replay").clips) == 2  # left as it was
    bare = _cli("corpus", "--replay-of", tiny_model, "--out", "none", cwd=tmp_path)
    assert bare.returncode == 2 and "records no corpus config" in bare.stderr and not (tmp_path / "none").exists()
