"""localize: the source performance carried onto a dub. End to end on a generated actor video
(extract -> align -> localize -> CSV), lips checked against espeak's exact phoneme times of the dub;
pipeline mechanics with a real (untrained, tiny) flow checkpoint; batch manifests; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool.align import segment_speech
from dubtool.arkit import NUM_CHANNELS, Animation, index
from dubtool.audio import Audio, load_audio, write_wav
from dubtool.errors import InputError, SilenceError
from dubtool.livelink import read_csv
from dubtool.localize import (PERFORMANCE_IDX, LocalizeOptions, blend_performance, compose, localize,
                              localize_files, warp_preserving_blinks, warp_values)
from dubtool.performance import Performance, save_performance
from dubtool.timemap import build_timemap

SR = 16000
ROOT = Path(__file__).resolve().parent.parent
SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
FLOW_CKPT = ROOT / "models" / "dubtool_flow_v6.pt"
DUB_TEXT = "Composez votre mot de passe suivi du dièse. Merci."
BROW = index("browInnerUp")


def silence(s: float) -> np.ndarray:
    return np.zeros(int(s * SR), np.float32)


def source_line() -> Audio:
    """The English source: two asterisk prompts (a real voice) with a pause, or espeak without them."""
    if SOUNDS.is_dir():
        parts = [load_audio(SOUNDS / f"{n}.wav").samples for n in ("agent-pass", "auth-thankyou")]
    else:
        from dubtool.espeak import synthesize

        parts = [synthesize(t, "en-us").audio.samples for t in ("Please enter your password.", "Thank you.")]
    return Audio(np.concatenate([silence(0.3), parts[0], silence(0.6), parts[1], silence(0.4)]), SR)


@pytest.fixture(scope="module")
def dub():
    """The French dub synthesised at a slower rate than the aligner's own synthesis; returns the audio
    and its exact phoneme times (the ground truth lips are checked against)."""
    from dubtool.espeak import synthesize

    a = synthesize("Composez votre mot de passe suivi du dièse.", "fr-fr", rate_wpm=150)
    b = synthesize("Merci.", "fr-fr", rate_wpm=150)
    lead, gap = 0.3, 0.6
    off_b = lead + a.audio.duration_s + gap
    phon = [p.__class__(p.symbol, p.start_s + lead, p.end_s + lead) for p in a.phonemes]
    phon += [p.__class__(p.symbol, p.start_s + off_b, p.end_s + off_b) for p in b.phonemes]
    audio = Audio(np.concatenate([silence(lead), a.audio.samples, silence(gap), b.audio.samples, silence(0.4)]), SR)
    return audio, phon


def brow_curve(t: np.ndarray, src: Audio) -> np.ndarray:
    """A brow raise on the middle of each source phrase: where it lands in the dub tells the warp."""
    segs = segment_speech(src)
    out = np.zeros_like(t)
    for s in segs[-2:]:
        c = 0.5 * (s.start_s + s.end_s)
        out += np.clip(1 - np.abs(t - c) / 0.45, 0, 1) ** 2
    return np.clip(out, 0, 1)


def synthetic_performance(src: Audio, fps: float = 25.0) -> Performance:
    n = int(round(src.duration_s * fps))
    t = np.arange(n) / fps
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    v[:, BROW] = brow_curve(t, src)
    v[:, index("HeadYaw")] = 0.1 * np.sin(2 * np.pi * t / 2.0)
    v[:, index("jawOpen")] = 0.3  # the source's own mouth must not reach the output
    z = np.zeros((n, 478, 3), np.float32)
    return Performance(z, z.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), Animation(v, fps),
                       np.ones(n, bool), np.ones(n, np.float32), src, {"source": "synthetic"})


@pytest.fixture(scope="module")
def files(tmp_path_factory, dub):
    d = tmp_path_factory.mktemp("loc")
    src = source_line()
    save_performance(synthetic_performance(src), d / "src.perf")
    write_wav(dub[0], d / "dub.wav")
    return d


# --- pure steps ---------------------------------------------------------------------------------

def test_warp_values_resamples_at_source_times():
    v = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    assert np.allclose(warp_values(v, 10.0, np.array([0.0, 0.25, 0.9, 5.0]))[:, 0], [0.0, 2.5, 9.0, 9.0])
    tm = build_timemap(1.0, 2.0, [])  # dub twice as long: every source frame shows twice as long
    got = warp_values(v, 10.0, tm.source_time(np.arange(20) / 10.0))  # 2 s of dub at 10 fps
    assert np.allclose(got[::2, 0], np.arange(10))


def test_blinks_keep_their_natural_speed_when_the_dub_is_slower():
    fps = 30.0
    t = np.arange(int(3 * fps)) / fps
    v = np.zeros((len(t), NUM_CHANNELS), np.float32)
    lid = 0.1 + 0.8 * np.clip(1 - np.abs(t - 1.0) / 0.1, 0, 1)  # a 0.2 s blink at 1.0 s
    v[:, index("eyeBlinkLeft")] = lid
    v[:, index("eyeBlinkRight")] = lid
    v[:, BROW] = t / 3  # a slow brow drift is warped as usual
    tm = build_timemap(3.0, 9.0, [])  # the dub is 3x slower
    dub_t = np.arange(int(9 * fps)) / fps
    out = warp_preserving_blinks(v, fps, tm, dub_t)
    stretched = warp_values(v, fps, tm.source_time(dub_t))
    closed = out[:, index("eyeBlinkLeft")] > 0.5
    assert abs(int(closed.sum()) - int((lid > 0.5).sum())) <= 1  # not 3x longer
    assert int((stretched[:, index("eyeBlinkLeft")] > 0.5).sum()) >= 2.5 * (lid > 0.5).sum()
    assert abs(dub_t[np.argmax(out[:, index("eyeBlinkLeft")])] - 3.0) <= 1 / fps  # at the mapped time
    assert out[:, index("eyeBlinkLeft")].max() > 0.85
    far = np.abs(dub_t - 3.0) > 0.3
    assert np.allclose(out[far, index("eyeBlinkLeft")], 0.1, atol=1e-4)
    assert np.allclose(out[:, BROW], stretched[:, BROW])
    assert np.allclose(out[:, index("eyeBlinkRight")], out[:, index("eyeBlinkLeft")])


def test_compose_takes_lower_face_from_model_and_the_rest_from_the_performance():
    lower = np.full((5, NUM_CHANNELS), 0.7, np.float32)
    perf = np.full((5, NUM_CHANNELS), 0.2, np.float32)
    out = compose(lower, perf)
    assert np.allclose(out[:, index("jawOpen")], 0.7) and np.allclose(out[:, index("mouthClose")], 0.7)
    assert np.allclose(out[:, BROW], 0.2) and np.allclose(out[:, index("HeadYaw")], 0.2)
    assert np.allclose(out[:, index("LeftEyeYaw")], 0.2) and np.allclose(out[:, index("eyeBlinkLeft")], 0.2)
    half = blend_performance(perf, np.ones_like(perf), 0.5)
    assert np.allclose(half[:, PERFORMANCE_IDX], 0.6) and np.allclose(half[:, index("jawOpen")], 0.2)


# --- the pipeline with the flow model --------------------------------------------------------------

def test_flow_pipeline_length_brows_and_report(files, tiny_model, dub):
    from dubtool.performance import load_performance

    perf = load_performance(files / "src.perf")
    audio = dub[0]
    res = localize(perf, audio, LocalizeOptions(lang="fr", model_path=tiny_model))
    anim = res.animation
    assert anim.fps == 30.0 and anim.num_frames == round(audio.duration_s * 30.0)
    # brows = the source brow curve time-warped through the map
    expect = np.interp(res.timemap.source_time(anim.times_s), perf.animation.times_s, perf.animation.values[:, BROW])
    assert np.corrcoef(anim.values[:, BROW], expect)[0, 1] > 0.98
    # the brow raise on the source's second phrase ("thank you") lands on the dub's "merci"
    dub_segs = segment_speech(audio)
    peak_t = anim.times_s[np.argmax(anim.values[:, BROW] * (anim.times_s > dub_segs[0].end_s))]
    assert dub_segs[-1].start_s - 0.1 < peak_t < dub_segs[-1].end_s + 0.1
    assert not np.allclose(anim.values[:, index("jawOpen")], 0.3)  # the source mouth is not copied
    rep = res.report
    assert rep["frames"] == anim.num_frames and len(rep["timemap"]["phrases"]) == 2
    assert rep["settings"]["steps"] == 2 and rep["metrics"]["brow_inner_up_corr"] > 0.98
    json.dumps(rep)
    # output fps, span and determinism
    res60 = localize(perf, audio, LocalizeOptions(lang="fr", model_path=tiny_model, fps=60.0, start_s=1.0, end_s=2.5,
                                                  timecode="10:00:00:30"))
    assert res60.animation.fps == 60.0 and res60.animation.num_frames == 90
    assert res60.animation.timecode_start_s == pytest.approx(36000.5 + 1.0)  # --timecode plus --start
    with pytest.raises(InputError, match="bad timecode"):
        LocalizeOptions(timecode="10:00").validate()
    again = localize(perf, audio, LocalizeOptions(lang="fr", model_path=tiny_model))
    assert np.array_equal(again.animation.values, anim.values)


def test_long_dub_warns_and_keyframes_drive_the_brows(files, tiny_model, dub, tmp_path):
    from dubtool.performance import load_performance

    perf = load_performance(files / "src.perf")
    long_dub = Audio(np.tile(dub[0].samples, 5), SR)  # 5x: clearly past LONG_DUB_RATIO (4x was 2.99-3.0x)
    kf = {"version": 1, "duration_s": long_dub.duration_s, "blinks_per_min": 0,
          "keyframes": [{"time_s": 2.0, "description": "worried", "channels": {"browInnerUp": 1.0}, "hold_s": 30}]}
    (tmp_path / "kf.json").write_text(json.dumps(kf))
    res = localize(perf, long_dub, LocalizeOptions(model_path=tiny_model, keyframes=str(tmp_path / "kf.json"),
                                                   keyframe_blend=0.5))
    assert any("longer than the source" in w for w in res.report["warnings"])
    assert res.animation.num_frames == round(long_dub.duration_s * 30)
    late = res.animation.times_s > 4.0  # keyframe fully in: brow = 0.5 * source + 0.5 * 1.0
    assert np.all(res.animation.values[late, BROW] >= 0.5 - 1e-4)


# --- end to end: video -> CSV -------------------------------------------------------------------

@pytest.fixture(scope="module")
def actor_video(tmp_path_factory):
    """A small generated actor video speaking the source line with known brow raises."""
    from dubtool import testmedia

    try:
        testmedia.astronaut_face()
    except Exception as e:  # no scikit-image / face model
        pytest.skip(f"test media unavailable: {e}")
    src = source_line()
    fps = 25.0
    n = int(round(src.duration_s * fps))
    t = np.arange(n) / fps
    jaw = testmedia.jaw_from_audio(src, fps, n) * 0.8
    path = tmp_path_factory.mktemp("video") / "actor_en.mp4"
    testmedia.make_face_video(path, testmedia.Motion(jaw=jaw, brow=brow_curve(t, src)), fps, (320, 240), audio=src)
    return path, src


@pytest.fixture(scope="module")
def actor_perf(actor_video, tmp_path_factory):
    """The generated video through `dubtool extract` (once for both end-to-end tests)."""
    from dubtool.extract import extract

    path = tmp_path_factory.mktemp("perf") / "actor.perf"
    perf = extract(actor_video[0])
    save_performance(perf, path)
    return path, perf


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dubtool", *args], capture_output=True, text=True, cwd=cwd)


def test_localize_any_espeak_language_in_flow_mode_and_unknown_only_for_the_teacher(files, tiny_model, tmp_path):
    """`--lang cs` (not among the trained languages) localizes in flow mode; an unknown language with a
    transcript still localizes (the transcript is skipped, with a warning); the teacher refuses it in one line."""
    base = [str(files / "src.perf"), str(files / "dub.wav"), "--model-path", tiny_model]
    r = _cli("localize", *base, "--lang", "cs", "-o", "cs.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_csv(tmp_path / "cs.csv").num_frames > 0
    r = _cli("localize", *base, "--lang", "xx", "--dub-text", DUB_TEXT, "-o", "xx.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = json.loads((tmp_path / "xx.report.json").read_text())["warnings"]
    assert any("--dub-text not used" in w for w in warnings)
    r = _cli("localize", *base, "--lang", "xx", "--model", "teacher", "--dub-text", DUB_TEXT, "-o", "t.csv", cwd=tmp_path)
    assert r.returncode != 0 and "unsupported language 'xx'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "t.csv").exists()


def _check_end_to_end(tmp_path, perf, dub, model_args, min_closure, min_brow_corr=0.9, max_gap=None):
    """localize CLI -> CSV, then what a user cares about: length, lips on the dub's bilabials at
    espeak's exact phoneme times, brows following the source brows through the time map."""
    from dubtool import metrics
    from dubtool.timemap import timemap_from_json

    write_wav(dub[0], tmp_path / "dub.wav")
    r = _cli("localize", str(perf[0]), "dub.wav", "--lang", "fr", *model_args, "--dub-text", DUB_TEXT,
             "-o", "out.csv", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    anim = read_csv(tmp_path / "out.csv")
    fps = summary["fps"]
    assert anim.num_frames == round(dub[0].duration_s * fps)
    checks = metrics.bilabial_closures(anim.values, dub[1], fps)
    assert len(checks) >= 4
    detail = [(c.symbol, round(c.start_s, 2), round(c.min_gap, 2)) for c in checks]
    assert np.mean([c.closed for c in checks]) >= min_closure, detail
    if max_gap is not None:  # the lips at least nearly meet on every /p b m/
        assert max(c.min_gap for c in checks) < max_gap, detail
    report = json.loads((tmp_path / "out.report.json").read_text())
    tm = timemap_from_json(report["timemap"])
    assert len(tm.phrases) == 2
    src = perf[1].animation
    warped = np.interp(tm.source_time(anim.times_s), src.times_s, src.values[:, BROW])
    assert warped.std() > 0.05  # the tracker saw the brow raises
    assert np.corrcoef(anim.values[:, BROW], warped)[0, 1] > min_brow_corr
    assert report["metrics"]["bilabials"] >= 4 and report["metrics"]["lip_audio_lag_frames"] is not None
    return report


def test_end_to_end_extract_align_localize_csv(actor_perf, dub, tmp_path):
    """extract -> align -> localize (teacher) -> Live Link CSV."""
    _check_end_to_end(tmp_path, actor_perf, dub, ["--model", "teacher"], min_closure=0.75)


@pytest.mark.skipif(not FLOW_CKPT.is_file(), reason="trained checkpoint models/dubtool_flow_v6.pt not present yet")
def test_end_to_end_with_trained_flow_model(actor_perf, dub, tmp_path):
    """extract -> align -> localize (the shipped flow model) -> Live Link CSV."""
    # The shipped model seals ~half of real-speech bilabials (model card); espeak's run-to-run jitter
    # moves this line's gaps around the 0.2 threshold (seen: 0.08-0.23), so: at least half sealed,
    # and every one nearly closed.
    report = _check_end_to_end(tmp_path, actor_perf, dub, [], min_closure=0.5, max_gap=0.35)
    assert report["model"] == "flow" and report["fps"] == 30.0


@pytest.mark.skipif(not FLOW_CKPT.is_file(), reason="trained checkpoint models/dubtool_flow_v6.pt not present yet")
def test_upper_face_regenerated_by_the_model_follows_the_source(actor_perf, dub, tmp_path):
    """--upper model: the brows come out of the generator (keypoint conditioning), not a copy,
    and still follow the time-warped source."""
    _check_end_to_end(tmp_path, actor_perf, dub, ["--upper", "model"], min_closure=0.5, min_brow_corr=0.7,
                      max_gap=0.35)


# --- batch --------------------------------------------------------------------------------------

def test_batch_manifest_parallel_resume_and_failures(files, tiny_model, tmp_path):
    from dubtool.batch import read_manifest, run_manifest

    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + b"\x00garbage" * 50)
    rows = ["source,dub,lang,output",
            f"{files / 'src.perf'},{files / 'dub.wav'},fr,out/a.csv",
            f"{files / 'src.perf'},corrupt.wav,fr,out/b.csv",
            f"{files / 'src.perf'},{files / 'dub.wav'},xx,out/c.csv",
            f"{files / 'src.perf'},{files / 'dub.wav'},es,out/d.csv"]
    (tmp_path / "lines.csv").write_text("\n".join(rows) + "\n")
    assert [r.lang for r in read_manifest(tmp_path / "lines.csv")] == ["fr", "fr", "xx", "es"]
    r = _cli("localize", "--manifest", "lines.csv", "--workers", "2", "--model-path", tiny_model, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    res = json.loads((tmp_path / "lines.results.json").read_text())
    # 'xx' is no language espeak-ng speaks: the flow model needs audio only, so that line is done too.
    assert [row["status"] for row in res["rows"]] == ["done", "failed", "done", "done"]
    assert "corrupt.wav" in res["rows"][1]["message"]
    assert read_csv(tmp_path / "out/a.csv").num_frames > 0 and (tmp_path / "out/d.report.json").is_file()
    assert read_csv(tmp_path / "out/c.csv").num_frames > 0 and not (tmp_path / "out/b.csv").exists()
    assert "failed" in r.stderr  # the rich table
    # resume: finished rows are skipped, failed ones retried; --force redoes everything
    before = (tmp_path / "out/a.csv").stat().st_mtime_ns
    again = run_manifest(tmp_path / "lines.csv", LocalizeOptions(model_path=tiny_model))
    assert [x.status for x in again] == ["skipped", "failed", "skipped", "skipped"]
    assert (tmp_path / "out/a.csv").stat().st_mtime_ns == before
    (tmp_path / "one.csv").write_text(rows[0] + "\n" + rows[1] + "\n")
    forced = run_manifest(tmp_path / "one.csv", LocalizeOptions(model_path=tiny_model), force=True)
    assert [x.status for x in forced] == ["done"] and (tmp_path / "out/a.csv").stat().st_mtime_ns != before


def test_manifest_errors_name_the_line(tmp_path):
    from dubtool.batch import read_manifest

    (tmp_path / "m.csv").write_text("source,dub,output\na.perf,b.wav,c.csv\n")
    with pytest.raises(InputError, match="line 1: missing column.*lang"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("source,dub,lang,output\na.perf,b.wav,fr,c.csv\na.perf,,fr,d.csv\n")
    with pytest.raises(InputError, match="line 3: empty 'dub'"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("source,dub,lang,output\na,b,fr,c.csv\nx,y,fr,c.csv\n")
    with pytest.raises(InputError, match="line 3: output"):
        read_manifest(tmp_path / "m.csv")


# --- bad input ----------------------------------------------------------------------------------

def test_bad_inputs_fail_clearly_and_write_nothing(files, tiny_model, tmp_path):
    opts = LocalizeOptions(model_path=tiny_model)
    write_wav(Audio(np.zeros(SR * 2, np.float32), SR), tmp_path / "silence.wav")
    with pytest.raises(SilenceError):
        localize_files(files / "src.perf", tmp_path / "silence.wav", tmp_path / "o1.csv", opts)
    (tmp_path / "corrupt.perf").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputError, match="corrupt.perf"):
        localize_files(tmp_path / "corrupt.perf", files / "dub.wav", tmp_path / "o2.csv", opts)
    with pytest.raises(InputError, match="source must be a .perf file or a video"):
        localize_files(files / "dub.wav", files / "dub.wav", tmp_path / "o3.csv", opts)
    # flow mode takes any language (it needs audio only); the transcript-driven teacher needs one espeak speaks
    with pytest.raises(InputError, match="unsupported language 'klingon'.*--model teacher"):
        localize_files(files / "src.perf", files / "dub.wav", tmp_path / "o4.csv",
                       LocalizeOptions(lang="klingon", model="teacher", dub_text="bonjour"))
    (tmp_path / "adir.csv").mkdir()
    with pytest.raises(InputError, match="it is a folder"):  # checked before any work
        localize_files(files / "src.perf", files / "dub.wav", tmp_path / "adir.csv", opts)
    (tmp_path / "adir.csv").rmdir()
    with pytest.raises(InputError, match="--dub-text"):
        localize_files(files / "src.perf", files / "dub.wav", tmp_path / "o5.csv", LocalizeOptions(model="teacher"))
    assert list(tmp_path.iterdir()) == [tmp_path / "silence.wav", tmp_path / "corrupt.perf"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.perf", "silence.wav"]
    # the CLI turns them into one line and a non-zero exit
    r = _cli("localize", str(files / "src.perf"), "silence.wav", "-o", "o.csv", "--model-path", tiny_model,
             cwd=tmp_path)
    assert r.returncode != 0 and "no speech" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.csv").exists()


def test_stereo_44k_dub_is_downmixed_and_resampled(files, tiny_model, dub, tmp_path):
    import librosa
    import soundfile as sf

    x = librosa.resample(dub[0].samples, orig_sr=SR, target_sr=44100)
    sf.write(tmp_path / "dub44.wav", np.stack([x, x], axis=1), 44100)
    rep = localize_files(files / "src.perf", tmp_path / "dub44.wav", tmp_path / "o.csv",
                         LocalizeOptions(model_path=tiny_model))
    assert rep["frames"] == round(dub[0].duration_s * 30) and read_csv(tmp_path / "o.csv").num_frames == rep["frames"]
