"""`dubtool extract` on generated videos of a real face (the astronaut, warped with known motion):
landmarks land on the face, blendshapes and rotations follow the known motion with the right signs,
gaps are filled and flagged, bad input fails cleanly, and nothing is sent over the network."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool import testmedia as tm
from dubtool.errors import InputError, NoFaceError
from dubtool.extract import (ExtractOptions, eye_rotations, extract, fill_gaps, head_rotations, similarity_fit)
from dubtool.performance import load_performance, save_performance
from dubtool.smoothing import OneEuroConfig, one_euro, one_euro_zero_phase
from dubtool.video import iter_frames, probe

pytest.importorskip("skimage")
try:
    from dubtool.assets import face_landmarker_path

    face_landmarker_path()
except Exception as e:  # noqa: BLE001
    pytest.skip(f"face tracker model not installed: {e}", allow_module_level=True)

FPS = 25.0
SIZE = (256, 192)
SEG = 8  # frames per motion segment
SEGMENTS = ("neutral", "jaw", "blink_left", "yaw+", "yaw-", "pitch+", "roll+", "brow")
REPO = Path(__file__).resolve().parent.parent


def _segment_motion() -> tm.Motion:
    n = SEG * len(SEGMENTS)
    c = {k: np.zeros(n) for k in ("jaw", "blink_left", "blink_right", "brow", "yaw", "pitch", "roll")}
    put = {"jaw": ("jaw", 1.0), "blink_left": ("blink_left", 1.0), "yaw+": ("yaw", 0.35), "yaw-": ("yaw", -0.35),
           "pitch+": ("pitch", 0.25), "roll+": ("roll", 0.25), "brow": ("brow", 1.0)}
    for k, name in enumerate(SEGMENTS):
        if name in put:
            key, v = put[name]
            c[key][k * SEG:(k + 1) * SEG] = v
    return tm.Motion(**c)


def _seg(name: str) -> slice:
    k = SEGMENTS.index(name)
    return slice(k * SEG + 2, (k + 1) * SEG)  # skip the first frames of a segment (tracker settles)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("extract_media")
    motion = _segment_motion()
    n = SEG * len(SEGMENTS)
    tm.make_face_video(d / "motion.mp4", motion, FPS, SIZE, audio=tm.tone_audio(n / FPS))
    neutral = tm.Motion(jaw=np.zeros(50))
    # Occlusions: 4 blank frames (0.16 s, interpolated) and 16 (0.64 s, held and reported).
    blanks = list(range(12, 16)) + list(range(28, 44))
    tm.make_face_video(d / "gaps.mp4", neutral, FPS, SIZE, audio=None, blank_frames=blanks)
    tm.make_noise_video(d / "noface.mp4", seconds=1.0, fps=FPS, audio=tm.tone_audio(1.0))
    # Stored on its side (turned clockwise) with a rotation tag (90 = counter-clockwise), no audio.
    face = tm.astronaut_face()
    frames = [np.ascontiguousarray(np.rot90(tm.render_frame(face, SIZE), k=-1)) for _ in range(15)]
    tm.write_video(d / "sideways.mp4", frames, FPS)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(d / "sideways.mp4"), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(d / "rotated.mp4")], check=True)
    # Variable frame rate: drop every 4th frame and keep the original timestamps.
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(d / "gaps.mp4"), "-vf",
                    r"select='lt(mod(n\,4)\,3)'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "veryfast",
                    str(d / "vfr.mp4")], check=True)
    from dubtool.audio import write_wav

    write_wav(tm.tone_audio(1.0), d / "speech.wav")
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    return d


@pytest.fixture(scope="module")
def motion_perf(media):
    return extract(media / "motion.mp4", ExtractOptions(smoothing=None))


def _ch(perf, name, seg):
    return float(perf.animation.channel(name)[_seg(seg)].mean())


def test_landmarks_land_on_the_known_face(motion_perf):
    x0, y0, x1, y1 = tm.face_box_in_frame(tm.astronaut_face(), SIZE)
    lm = motion_perf.landmarks_image[_seg("neutral"), :468, :2]
    assert np.allclose(lm[..., 0].min(axis=1), x0, atol=0.03) and np.allclose(lm[..., 0].max(axis=1), x1, atol=0.03)
    assert np.allclose(lm[..., 1].min(axis=1), y0, atol=0.03) and np.allclose(lm[..., 1].max(axis=1), y1, atol=0.03)
    assert motion_perf.face_found.all() and motion_perf.confidence.min() > 0.5


def test_jaw_blink_and_brow_follow_the_video(motion_perf):
    p = motion_perf
    assert _ch(p, "jawOpen", "jaw") > _ch(p, "jawOpen", "neutral") + 0.1
    # The subject's left eye closed: eyeBlinkLeft (by name) rises, the right one much less.
    assert _ch(p, "eyeBlinkLeft", "blink_left") > _ch(p, "eyeBlinkLeft", "neutral") + 0.25
    assert _ch(p, "eyeBlinkLeft", "blink_left") > _ch(p, "eyeBlinkRight", "blink_left") + 0.2
    assert _ch(p, "browInnerUp", "brow") > _ch(p, "browInnerUp", "neutral") + 0.1
    assert p.animation.channel("tongueOut").max() == 0.0
    assert p.animation.values[:, :52].min() >= 0 and p.animation.values[:, :52].max() <= 1


def test_head_rotation_signs_match_the_known_motion(motion_perf):
    p = motion_perf
    base = {k: _ch(p, k, "neutral") for k in ("HeadYaw", "HeadPitch", "HeadRoll")}
    assert _ch(p, "HeadYaw", "yaw+") - base["HeadYaw"] > 0.08  # turned to the subject's left
    assert _ch(p, "HeadYaw", "yaw-") - base["HeadYaw"] < -0.08
    assert _ch(p, "HeadPitch", "pitch+") - base["HeadPitch"] > 0.05  # looking down
    assert 0.15 < _ch(p, "HeadRoll", "roll+") - base["HeadRoll"] < 0.35  # 0.25 rad applied


def test_canonical_landmarks_remove_head_pose(motion_perf):
    p = motion_perf
    stable = [1, 4, 6, 10, 33, 133, 263, 362]
    img_move = np.abs(p.landmarks_image[_seg("yaw+")].mean(0) - p.landmarks_image[_seg("yaw-")].mean(0))[stable, 0]
    can = p.landmarks_canonical
    can_move = np.linalg.norm(can[_seg("yaw+")].mean(0) - can[_seg("yaw-")].mean(0), axis=1)[stable]
    assert img_move.mean() * SIZE[0] > 8  # the nose/eyes moved several pixels in the image...
    assert can_move.max() < 0.6  # ...but stay put (within 6 mm) in canonical space
    # canonical units are the mesh's (~cm): eye corners ~9 cm apart
    assert 7.5 < float(np.linalg.norm(can[0, 33] - can[0, 263])) < 10.5
    assert np.abs(p.animation.values[:, 55:61]).max() < 0.6  # eye rotations are sane angles


def test_performance_round_trips_with_audio(motion_perf, tmp_path):
    out = save_performance(motion_perf, tmp_path / "a.perf")
    back = load_performance(out)
    assert np.array_equal(back.landmarks_canonical, motion_perf.landmarks_canonical)
    assert np.array_equal(back.animation.values, motion_perf.animation.values)
    assert back.audio is not None and abs(back.audio.duration_s - motion_perf.duration_s) < 0.1
    assert back.meta["fps"] == FPS and back.meta["width"] == SIZE[0] and back.meta["tool_version"]


def test_occlusion_gaps_are_interpolated_flagged_and_reported(media):
    with pytest.warns(UserWarning, match="no audio"):
        p = extract(media / "gaps.mp4")
    assert p.audio is None
    assert not p.face_found[12:16].any() and not p.face_found[28:44].any() and p.face_found[:12].all()
    assert (p.confidence[12:16] == 0).all()
    gaps = {(g["start_frame"], g["end_frame"]): g["filled"] for g in p.meta["gaps"]}
    assert gaps == {(12, 16): "interpolated", (28, 44): "held"} and p.meta["long_gaps"] == 1
    # filled frames hold the face where it was, not zeros
    assert np.abs(p.landmarks_image[14] - p.landmarks_image[11]).max() < 0.02
    assert np.abs(p.landmarks_image[35, :468, 0].mean() - 0.5) < 0.1


def test_rotated_video_is_upright_and_audio_optional(media):
    info = probe(media / "rotated.mp4")
    assert (info.width, info.height) == SIZE and info.rotation in (90, 270) and not info.has_audio
    with pytest.warns(UserWarning):
        p = extract(media / "rotated.mp4")
    assert p.face_found.mean() > 0.9 and p.meta["width"] == SIZE[0]
    assert abs(float(p.animation.channel("HeadRoll").mean())) < 0.3  # upright, not on its side


def test_variable_frame_rate_comes_out_constant(media):
    info = probe(media / "vfr.mp4")
    with pytest.warns(UserWarning, match="no audio"):  # and tracked on a downscaled copy
        p = extract(media / "vfr.mp4", ExtractOptions(fps=FPS, max_track_width=192))
    assert p.fps == FPS and abs(p.num_frames - info.duration_s * FPS) <= 2
    assert (p.meta["track_width"], p.meta["width"]) == (192, SIZE[0]) and p.face_found.mean() > 0.5


def test_bad_inputs_raise_clear_errors(media, tmp_path):
    with pytest.raises(InputError, match="no video stream"):
        extract(media / "speech.wav")
    with pytest.raises(InputError, match="not a readable video"):
        extract(media / "corrupt.mp4")
    with pytest.raises(InputError, match="not found"):
        extract(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="--fps"):
        extract(media / "motion.mp4", ExtractOptions(fps=0))
    with pytest.raises(NoFaceError, match="0 of 25 frames"):
        extract(media / "noface.mp4")


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "dubtool", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, **kw)


def test_cli_no_face_exits_nonzero_without_partial_output(media, tmp_path):
    out = tmp_path / "x.perf"
    r = _cli(["extract", media / "noface.mp4", "-o", out, "--csv", tmp_path / "x.csv"])
    assert r.returncode != 0
    assert "error:" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # neither output nor temp files


def test_cli_writes_perf_csv_json_and_sends_nothing(media, tmp_path):
    """The default run opens no IPv4/IPv6 connection (traced with strace -f)."""
    from dubtool.livelink import read_csv

    out, csv = tmp_path / "m.perf", tmp_path / "m.csv"
    args = ["extract", media / "motion.mp4", "-o", out, "--csv", csv, "--json"]
    trace = tmp_path / "trace.txt"
    if shutil.which("strace"):
        r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
                            sys.executable, "-m", "dubtool", *map(str, args)], capture_output=True, text=True, cwd=REPO)
    elif shutil.which("unshare") and os.geteuid() == 0:  # no tracer: run with no network at all
        r = subprocess.run(["unshare", "-n", sys.executable, "-m", "dubtool", *map(str, args)],
                           capture_output=True, text=True, cwd=REPO)
    else:
        pytest.skip("neither strace nor unshare (as root) available to watch the network")
    assert r.returncode == 0, r.stderr
    if trace.exists():
        calls = trace.read_text()
        inet = [ln for ln in calls.splitlines() if "AF_INET" in ln and "127.0.0.1" not in ln and "::1" not in ln]
        assert inet == [], inet[:3]
    summary = json.loads(r.stdout)
    assert summary["frames"] == SEG * len(SEGMENTS) and summary["face_found_ratio"] == 1.0
    assert summary["outputs"] == {"perf": str(out), "csv": str(csv)}
    anim = read_csv(csv)
    perf = load_performance(out)
    assert anim.num_frames == perf.num_frames and np.allclose(anim.values, perf.animation.values, atol=1e-6)
    # default smoothing keeps the jaw opening (no lag wipe-out)
    assert float(perf.animation.channel("jawOpen")[_seg("jaw")].mean()) > 0.1


# ---- pure parts -------------------------------------------------------------------------------

def test_one_euro_removes_jitter_without_lagging_fast_moves():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    still = 0.5 + rng.normal(0, 0.01, (300, 4))
    out = one_euro(still, 30.0, OneEuroConfig(), scale=0.1)
    assert out[30:].std(axis=0).max() < 0.5 * still[30:].std(axis=0).min()
    step = np.where(t < 5, 0.0, 1.0)[:, None] + rng.normal(0, 0.01, (300, 1))
    s = one_euro(step, 30.0, OneEuroConfig(), scale=0.1)[:, 0]
    assert s[150 + 3] > 0.8  # within 0.1 s of a step the filter has followed it


def test_zero_phase_one_euro_has_no_lag_on_speech_rate_motion():
    fps = 25.0
    t = np.arange(500) / fps
    clean = 0.3 + 0.25 * np.sin(2 * np.pi * 2.5 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)  # syllable bursts
    x = (clean + np.random.default_rng(0).normal(0, 0.02, t.size))[:, None]

    def lag(y):
        return max(range(-5, 6), key=lambda k: np.corrcoef(np.roll(y, -k)[10:-10], clean[10:-10])[0, 1])

    fwd = one_euro(x, fps, OneEuroConfig(), scale=0.1)[:, 0]
    zp = one_euro_zero_phase(x, fps, OneEuroConfig(), scale=0.1)[:, 0]
    assert lag(fwd) >= 1 and lag(zp) == 0
    assert np.std(np.diff(zp, 2)) < 0.7 * np.std(np.diff(x[:, 0], 2))  # jitter down
    assert np.sqrt(np.mean((zp - clean) ** 2)) < 0.6 * np.sqrt(np.mean((fwd - clean) ** 2))


def test_fill_gaps_interpolates_short_and_holds_long():
    found = np.ones(40, bool)
    found[5:8] = False
    found[20:35] = False
    x = np.arange(40, dtype=np.float64)[:, None].copy()
    x[~found] = -1
    gaps = fill_gaps([x], found, fps=25.0, max_gap_s=0.5)
    assert np.allclose(x[5:8, 0], [5, 6, 7])
    assert (x[20:27, 0] == 19).all() and (x[28:35, 0] == 35).all()
    assert [g["filled"] for g in gaps] == ["interpolated", "held"]


def _rot(yaw, pitch, roll):
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def test_head_rotation_decomposition_and_similarity_fit_invert_known_transforms():
    angles = np.array([[0.3, -0.2, 0.1], [-0.5, 0.4, -0.3]])
    pose = np.tile(np.eye(4), (2, 1, 1))
    pose[:, :3, :3] = [_rot(*a) for a in angles]
    assert np.allclose(head_rotations(pose), angles)
    from dubtool.rig import head_rotation_matrix  # the rig poses heads with the same convention

    pose[:, :3, :3] = head_rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    assert np.allclose(head_rotations(pose), angles)
    rng = np.random.default_rng(1)
    dst = rng.normal(size=(30, 3))
    r = _rot(0.4, 0.1, -0.2)
    src = ((dst - 2.0) @ r) / 3.0  # dst = 3 R src + 2
    s, rr, t = similarity_fit(src[None], dst)
    assert np.allclose(s, 3.0) and np.allclose(rr[0], r) and np.allclose(t, 2.0)


def test_eye_rotation_follows_the_iris():
    from dubtool.extract import IRIS_REST_OUT_CM, IRIS_REST_UP_CM

    canon = np.zeros((4, 478, 3), np.float32)
    canon[:, 362], canon[:, 263] = (1.5, 0, 0), (4.5, 0, 0)
    canon[:, 33], canon[:, 133] = (-4.5, 0, 0), (-1.5, 0, 0)
    # A straight gaze: each iris sits a little outward (towards its ear) and up from its corner midpoint.
    canon[:, 473] = (3.0 + IRIS_REST_OUT_CM, IRIS_REST_UP_CM, 0)
    canon[:, 468] = (-3.0 - IRIS_REST_OUT_CM, IRIS_REST_UP_CM, 0)
    canon[1, 473, 0] += 0.4  # left iris moves toward the subject's left
    canon[1, 468, 1] -= 0.4  # right iris moves down
    canon[2, [473, 468], 0] += 0.3  # both irises toward the subject's left: left looks out, right looks in
    canon[3, [473, 468], 0] -= 0.3  # and toward the subject's right
    e = eye_rotations(canon)
    assert np.allclose(e[0], 0, atol=1e-6)
    assert e[1, 0] > 0.3 and e[1, 4] > 0.3 and abs(e[1, 1]) < 1e-6
    # Conjugate gaze: the same yaw for both eyes (no rest offset pulling them apart).
    assert e[2, 0] == pytest.approx(e[2, 3], abs=1e-6) and e[2, 0] > 0.2
    assert e[3, 0] == pytest.approx(e[3, 3], abs=1e-6) and e[3, 0] < -0.2


def test_straight_gaze_of_a_real_face_reads_as_parallel_eyes(motion_perf):
    # The astronaut looks at the camera: her eyes must not read as diverging (before IRIS_REST_OUT_CM
    # the two yaws here differed by 0.18 rad). Their common direction is left to the closed-loop
    # test: on this 86-pixel face the tracker's iris reads ~0.1 rad to her right for both eyes.
    left = _ch(motion_perf, "LeftEyeYaw", "neutral")
    right = _ch(motion_perf, "RightEyeYaw", "neutral")
    assert abs(left - right) < 0.05, (left, right)


def test_iter_frames_streams_scaled_frames(media):
    frames = list(iter_frames(media / "motion.mp4", size=(128, 96)))
    assert len(frames) == SEG * len(SEGMENTS) and frames[0].shape == (96, 128, 3)
    it = iter_frames(media / "motion.mp4")
    next(it)
    it.close()  # stopping early ends ffmpeg cleanly


def test_bundled_example_is_small_and_as_described():
    import soundfile as sf

    ex = REPO / "examples"
    info = probe(ex / "actor_en.mp4")
    assert 6.0 <= info.duration_s <= 8.5 and (info.width, info.height) == (640, 480) and info.fps == 25.0
    assert info.has_audio
    dub = sf.info(str(ex / "dub_fr.wav"))
    assert dub.duration > info.duration_s  # the dub runs a little longer than the source
    assert (ex / "line_en.txt").read_text().strip() and (ex / "line_fr.txt").read_text().strip()
    total = sum((ex / f).stat().st_size for f in ("actor_en.mp4", "dub_fr.wav", "line_en.txt", "line_fr.txt"))
    assert total < 1.5e6


def test_the_videos_timecode_becomes_the_takes_and_timecode_overrides_it(tmp_path):
    # A camera-style start timecode on the container (QuickTime tmcd track), FF at the video's 25 fps.
    plain, tagged = tmp_path / "plain.mp4", tmp_path / "tc.mov"
    tm.make_face_video(plain, tm.Motion(jaw=np.zeros(10)), FPS, SIZE, audio=None)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(plain), "-c", "copy",
                    "-timecode", "10:00:00:12", str(tagged)], check=True)
    assert probe(tagged).timecode == "10:00:00:12" and probe(plain).timecode is None
    csv = tmp_path / "tc.csv"
    r = _cli(["extract", tagged, "--csv", csv])
    assert r.returncode == 0, r.stderr
    first = csv.read_text().splitlines()[1]
    assert first.startswith("10:00:00:28.800,61,")  # 12/25 s on the app's 60 fps timecode
    r = _cli(["extract", tagged, "--csv", csv, "--timecode", "01:02:03:05"])
    assert r.returncode == 0, r.stderr
    assert csv.read_text().splitlines()[1].startswith("01:02:03:12.000,61,")
    r = _cli(["extract", tagged, "--csv", tmp_path / "bad.csv", "--timecode", "01:02:03:25"])
    assert r.returncode != 0 and "bad timecode" in r.stderr and not (tmp_path / "bad.csv").exists()


def test_two_halves_tracked_at_once_give_the_one_piece_result(media):
    """A take held in memory is tracked as two halves side by side (two cores: ~1.35x faster from a
    video); the second tracker starts early, so the result is the one-piece tracking's to within
    MediaPipe's own tracking noise, frame for frame, with nothing lost or doubled at the seam."""
    from dataclasses import replace

    from dubtool import extract as ex

    one = extract(media / "motion.mp4", replace(ExtractOptions(smoothing=None), track_threads=1))
    two = extract(media / "motion.mp4", replace(ExtractOptions(smoothing=None), track_threads=2))
    n = one.animation.num_frames
    assert n >= ex.MIN_SPLIT_FRAMES and two.animation.num_frames == n
    assert np.array_equal(one.face_found, two.face_found)
    a, b = one.animation.values, two.animation.values
    h = n // 2
    np.testing.assert_array_equal(a[:h], b[:h])  # the first half is the same tracker on the same frames
    assert np.abs(a[h:] - b[h:]).max() < 0.05  # weights 0..1, rotations in radians
    lm = np.abs(np.asarray(one.landmarks_image) - np.asarray(two.landmarks_image))
    assert lm[:h].max() == 0 and lm[h:].max() < 0.01  # image fractions: under 2 px of the 192 px frame


def test_stderr_survives_two_trackers_warming_up_at_once(media):
    """Each tracker silences MediaPipe's native start-up notices on fd 2 while it warms up; with two
    trackers in two threads the terminal's stderr must come back (error messages after an extract)."""
    import threading
    from dataclasses import replace

    from dubtool import extract as ex

    before = os.fstat(2)
    extract(media / "motion.mp4", replace(ExtractOptions(smoothing=None), track_threads=2))
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    inside = threading.Barrier(4)

    def overlap():
        with ex._native_stderr_silenced():
            inside.wait(timeout=5)

    threads = [threading.Thread(target=overlap) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino) and ex._silence["depth"] == 0
