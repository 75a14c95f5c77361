"""The training corpus: augmentation keeps phoneme times in step with the audio, keypoints carry no
lip motion, the held-out splits stay held out, and a build is reproducible."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dubtool import arkit, corpus
from dubtool.corpus import CorpusConfig
from dubtool.keypoints import KEYPOINT_DIM, keypoints_from_curves
from dubtool.lang import voice_for

ROOT = Path(__file__).resolve().parent.parent


def _tone(seconds=2.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_change_scales_length_like_phoneme_times(factor):
    x = _tone()
    y = corpus.change_speed(x, factor)
    assert len(y) == pytest.approx(len(x) / factor, rel=0.002)
    # The tone's on/off envelope moves with the same factor the corpus applies to phoneme times.
    on_x = np.flatnonzero(np.abs(x) > 0.2)[-1] / 16000
    on_y = np.flatnonzero(np.abs(y) > 0.2)[-1] / 16000
    assert on_y == pytest.approx(on_x / factor, abs=0.005)


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_noise_is_added_at_the_requested_snr(snr_db):
    x = _tone(4.0)
    y = corpus.add_noise(x, np.random.default_rng(0), snr_db)
    active = np.abs(x) > 0.02 * np.abs(x).max()
    noise = y - x
    measured = 10 * np.log10(np.mean(x[active] ** 2) / np.mean(noise ** 2))
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_augment_keeps_audio_in_range_and_reports_speed():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y, speed, applied = corpus.augment(_tone(), rng, p=1.0)
        assert np.all(np.abs(y) <= 1.0) and np.all(np.isfinite(y))
        assert 0.9 <= speed <= 1.1
        assert len(y) == pytest.approx(len(_tone()) / speed, rel=0.002)


def test_keypoints_ignore_lip_channels_and_follow_brows():
    n = 10
    v = np.zeros((n, arkit.NUM_CHANNELS), np.float32)
    base = keypoints_from_curves(v)
    lips = v.copy()
    lips[:, arkit.LOWER_IDX] = 1.0
    assert keypoints_from_curves(lips) == pytest.approx(base)
    brows = v.copy()
    brows[:, arkit.index("browInnerUp")] = 1.0
    kb = keypoints_from_curves(brows)
    assert kb.shape == (n, KEYPOINT_DIM)
    assert np.abs(kb - base).max() > 0.5
    head = v.copy()
    head[:, arkit.index("HeadPitch")] = 0.2
    assert keypoints_from_curves(head)[:, -2] == pytest.approx(0.2)  # head yaw, pitch, roll are last


def test_actor_faces_differ_but_keep_keypoints_lip_free():
    from dubtool.rig import load_rig

    rig = load_rig()
    a, b = corpus.ActorFace(rig, np.random.default_rng(0)), corpus.ActorFace(rig, np.random.default_rng(1))
    v = np.zeros((4, 61), np.float32)
    v[:, arkit.index("browOuterUpLeft")] = 0.8
    ka, kb = keypoints_from_curves(v, a), keypoints_from_curves(v, b)
    assert not np.allclose(ka, kb)  # identity changes how far the brows move
    v[:, arkit.index("jawOpen")] = 1.0
    assert keypoints_from_curves(v, a) == pytest.approx(ka)


def test_held_out_splits_are_disjoint():
    cfg = CorpusConfig()
    assert not set(cfg.train_languages) & set(cfg.val_languages)
    assert not set(cfg.train_variants) & set(cfg.val_variants)
    for lang in cfg.train_languages + cfg.val_languages:
        assert len(corpus.load_sentences(lang)) >= 10
        voice_for(lang)  # every corpus language is one dubtool speaks
    assert set(cfg.asterisk_languages) == {"en", "fr", "es"}  # real speech in the languages dubbed into
    for lang in cfg.asterisk_languages:
        prompts = corpus.asterisk_training_prompts(lang)
        if not prompts:
            pytest.skip(f"asterisk-core-sounds-{lang}-wav not installed")
        root = corpus.asterisk_dir(lang)
        wavs = sorted(root.rglob("*.wav"), key=lambda p: str(p.relative_to(root)))
        eval_set = {w for i, w in enumerate(wavs) if i % 5 == 0}
        assert not eval_set & {w for _, w in prompts}, lang
        assert len(prompts) > 100


def test_evalset_dub_lines_are_never_training_prompts():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_evalset", ROOT / "scripts" / "build_evalset.py")
    be = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(be)
    train = {w for lang in CorpusConfig().asterisk_languages for _, w in corpus.asterisk_training_prompts(lang)}
    if not train:
        pytest.skip("asterisk-core-sounds-*-wav not installed")
    for lang in ("en", "fr", "es"):
        held = {w for _, w in be.held_out(lang)}
        assert held and not held & train, lang


def test_pseudo_sentences_use_the_language_words():
    sents = corpus.load_sentences("fr")
    words = {w.lower() for s in sents for w in __import__("re").findall(r"[\w'’-]+", s)}
    rng = np.random.default_rng(0)
    for _ in range(10):
        s = corpus.pseudo_sentence(sents, rng)
        assert {w.lower() for w in __import__("re").findall(r"[\w'’-]+", s)} <= words


@pytest.fixture(scope="module")
def tiny_cfg():
    return replace(CorpusConfig(), espeak_clips=2, val_voice_clips=1, val_lang_clips=1, asterisk_prompts=0,
                   asterisk_prompts_other=0,
                   min_clip_s=1.5, max_clip_s=2.5)


def test_make_clip_is_deterministic_for_a_seed():
    from dubtool.espeak import synthesize
    from dubtool.rig import load_rig

    syn = synthesize("Bob made a map.", "en-us")
    cfg = CorpusConfig()
    a = corpus.make_clip(syn.audio.samples, syn.phonemes, np.random.default_rng(5), cfg, load_rig(), 1.0)
    b = corpus.make_clip(syn.audio.samples, syn.phonemes, np.random.default_rng(5), cfg, load_rig(), 1.0)
    for k in ("mel", "target", "offset", "keypoints", "style"):
        assert np.array_equal(a[k], b[k]), k
    # Per-frame viseme labels: /b m p/ of "Bob made a map" are labelled bilabial, on the frames where
    # the target (the teacher) seals the lips.
    from dubtool.phonemes import VISEME_CLASSES

    vis = a["viseme"]
    assert vis.shape == (len(a["mel"]),) and np.array_equal(vis, b["viseme"])
    bil = vis == VISEME_CLASSES.index("bilabial")
    n_bilabials = sum(1 for p in a["phonemes"] if p[0].strip("ˈˌː") in ("b", "m", "p"))
    assert n_bilabials >= 4 and bil.sum() >= n_bilabials
    press = a["target"][:, arkit.index("mouthPressLeft")].astype(float)
    assert press[bil].mean() > 1.5 * press[~bil].mean()
    # Speed augmentation moved the phoneme times with the audio: the last phone ends inside the clip.
    assert a["phonemes"][-1][2] <= len(a["mel"]) / cfg.fps + 1e-3


def test_tiny_build_is_aligned_and_reproducible(tmp_path, tiny_cfg):
    c1 = corpus.build_corpus(tiny_cfg, tmp_path / "a", progress=False, workers=1)
    corpus.build_corpus(tiny_cfg, tmp_path / "b", progress=False, workers=1)
    c2 = corpus.load_corpus(tmp_path / "b")
    # Same clips, texts, voices and splits; espeak-ng jitters its output by a few samples between
    # calls, so lengths may differ by a frame (docs/model.md).
    assert [(c["id"], c["text"], c["voice"]) for c in c1.clips] == [(c["id"], c["text"], c["voice"]) for c in c2.clips]
    assert np.abs(c1.lengths - c2.lengths).max() <= 1
    assert [c["split"] for c in c1.clips] == ["train", "train", "val_voice", "val_lang"]
    assert c1.clips[-1]["lang"] in tiny_cfg.val_languages
    assert c1.mel.shape[0] == c1.target.shape[0] == c1.keypoints.shape[0] == c1.viseme.shape[0] == c1.lengths.sum()
    assert c1.style.shape == (4, 122)
    # The stored emotion offset is exactly what the target's lower face carries beyond the teacher.
    assert c1.offset.shape == (len(c1.mel), len(arkit.LOWER_IDX))
    # Lip motion: the teacher opens the jaw during speech.
    assert c1.target[:, arkit.index("jawOpen")].astype(float).max() > 0.1
    # Val clips keep their phoneme timings for the bilabial metric; frames match the timings.
    ph = c1.clips[2]["phonemes"]
    assert ph and ph[-1][2] <= c1.lengths[2] / 30.0 + 0.05


def test_missing_or_corrupt_corpus_is_a_clear_error(tmp_path):
    from dubtool.errors import InputError

    with pytest.raises(InputError, match="no corpus"):
        corpus.load_corpus(tmp_path)
    (tmp_path / "corpus.npz").write_bytes(b"garbage")
    (tmp_path / "clips.json").write_text("{}")
    with pytest.raises(InputError, match="corrupt"):
        corpus.load_corpus(tmp_path)


def test_telephone_band_removes_everything_above_4khz():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    y = corpus.telephone_band(x)
    assert y.shape == x.shape and y.dtype == np.float32
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[f > 4200].sum() < 1e-3 * spec.sum()
    assert spec[(f > 500) & (f < 3000)].sum() > 0.8 * spec.sum()


def test_stored_corpus_keeps_features_and_targets_within_8_bit_steps(tmp_path, tiny_cfg):
    """mel, keypoints, targets and offsets travel as per-column 8-bit codes: every value comes back
    within half a step (range / 510) of what was built, the other arrays exactly."""
    built = corpus.build_corpus(tiny_cfg, tmp_path / "c", progress=False, workers=1)
    back = corpus.load_corpus(tmp_path / "c")
    for name in corpus.QUANTIZED:
        a, b = getattr(built, name).astype(np.float32), getattr(back, name).astype(np.float32)
        half_step = (a.max(axis=0) - a.min(axis=0)) / 510 + 2e-3 * np.abs(a).max(axis=0)  # + float16 rounding
        assert a.shape == b.shape and np.all(np.abs(a - b) <= half_step[None] + 1e-6), name
    assert set(corpus.QUANTIZED) >= {"mel", "keypoints", "target", "offset"}
    assert np.array_equal(built.starts, back.starts) and np.array_equal(built.lengths, back.lengths)
    assert np.array_equal(built.viseme, back.viseme) and built.viseme.max() > 0


def test_corpus_stacks_mel_subframes_when_configured(tmp_path, tiny_cfg):
    from dataclasses import replace

    cfg = replace(tiny_cfg, audio_subframes=3, espeak_clips=1, val_voice_clips=0, val_lang_clips=0)
    c = corpus.build_corpus(cfg, tmp_path / "s", progress=False, workers=1)
    assert c.mel.shape == (c.lengths.sum(), 3 * 80)
    # A model that reads other features refuses it with the reason (train and train --captures --base-corpus).
    from dubtool.errors import InputError
    from dubtool.generate import ModelDimensions

    corpus.check_fits(c, replace(ModelDimensions(), n_mels=80, audio_subframes=3, audio_features="mel"), "c")
    with pytest.raises(InputError, match="240 wide but the model reads 80 x 2 subframes = 160"):
        corpus.check_fits(c, replace(ModelDimensions(), n_mels=80, audio_subframes=2, audio_features="mel"), "c")
    with pytest.raises(InputError, match="corpus audio features are 'mel' but the model reads 'whisper"):
        corpus.check_fits(c, replace(ModelDimensions(), n_mels=80, audio_subframes=3,
                                     audio_features="whisper-base-l3"), "c")


def test_viseme_labels_mark_each_frame_by_the_phoneme_under_its_centre():
    from dubtool.phonemes import VISEME_CLASSES, Phoneme

    ph = [Phoneme("b", 0.10, 0.20), Phoneme("a", 0.20, 0.40)]
    v = corpus.viseme_labels(ph, 15, 30.0)  # frame k's centre: (k + 0.5) / 30 s
    names = [VISEME_CLASSES[i] for i in v]
    assert names[:3] == ["silence"] * 3  # centres 17, 50, 83 ms
    assert names[3:6] == ["bilabial"] * 3  # 117, 150, 183 ms
    assert names[6:12] == ["open_vowel"] * 6 and names[12:] == ["silence"] * 3


def test_shipped_recipe_never_trains_or_validates_on_a_benchmark_language():
    """The unseen-language benchmark's languages (and the external check's, cs/nl games) stay out of the
    shipped recipe's training and validation languages, and its real speech out of the corpus."""
    import importlib.util
    import json

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("bench_unseen_lang", root / "benchmarks" / "bench_unseen_lang.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    unseen = {code.split("-")[0] for code in bench.KLETTRES_LANGS.values()} | {"cs"}
    cfg = json.loads((root / "configs" / "flow_v6.json").read_text())["corpus"]
    used = {code.split("-")[0] for code in cfg["train_languages"] + cfg["val_languages"] + cfg["asterisk_languages"]}
    assert unseen and not unseen & used, unseen & used
    source = (root / "dubtool" / "corpus.py").read_text()
    assert "klettres" not in source and "fillets" not in source and '"it": "it_IT' not in source
    # nor the real-speech validation set's two speakers (benchmarks/bench_realval.py)
    spec = importlib.util.spec_from_file_location("bench_realval", root / "benchmarks" / "bench_realval.py")
    realval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realval)
    packages = [pkg for pkg, _folder, _core in realval.PACKAGES.values()]
    assert len(packages) == 2 and not any(pkg in source or "asterisk-prompt" in source for pkg in packages)


def test_a_missing_espeak_is_named_not_reported_as_an_unsupported_language(monkeypatch):
    """On a machine without espeak-ng (a GPU image, say) a non-curated language fails on the missing
    program, with the install line, not with "espeak-ng has no voice for it"."""
    from dubtool import lang
    from dubtool.errors import DependencyError

    monkeypatch.setattr(lang, "_espeak_voices", lambda: {})
    assert voice_for("fr") == lang.LANGUAGES["fr"].voice  # curated codes need no look-up
    with pytest.raises(DependencyError, match="'el' needs espeak-ng's voices, and espeak-ng is not installed"):
        voice_for("el")
