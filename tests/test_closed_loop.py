"""Closed loop across stages: a known animation goes through the Live Link CSV, is rendered by
dubtool.render into an mp4 and tracked back by dubtool.extract. If the rig, the renderer, the
tracker and the CSV agree on units, signs and left/right, every motion comes back on the channel
it went in on, with its sign (docs/conventions.md). Also checks that the exporters (FBX Euler
angles, glTF quaternions) and the keyframe planner's words ("turns left", "glances left", "nods",
"tilts") use the same convention."""

import warnings

import numpy as np
import pytest

from dubtool.arkit import NUM_CHANNELS, Animation, index
from dubtool.livelink import read_csv, write_csv
from dubtool.rig import apply_head_rotation, head_rotation_matrix, load_rig

FPS = 25.0
SEG_S = 0.4
# One motion per segment, each ramping in and out around a plateau; the rest of the face stays neutral.
SEGMENTS = (
    ("neutral", {}),
    ("yaw+", {"HeadYaw": 0.3}),
    ("yaw-", {"HeadYaw": -0.3}),
    ("pitch+", {"HeadPitch": 0.2}),
    ("roll+", {"HeadRoll": 0.2}),
    ("blink_left", {"eyeBlinkLeft": 1.0}),
    ("blink_right", {"eyeBlinkRight": 1.0}),
    ("jaw", {"jawOpen": 0.7}),
    ("brow", {"browInnerUp": 1.0}),
    ("gaze_left", {"LeftEyeYaw": 0.3, "RightEyeYaw": 0.3}),
    ("neutral_end", {}),
)
NAMES = tuple(s[0] for s in SEGMENTS)
NOSE_TIP, FOREHEAD = 1, 10


def _known_animation() -> Animation:
    n = int(round(len(SEGMENTS) * SEG_S * FPS))
    t = np.arange(n) / FPS
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    for k, (_, channels) in enumerate(SEGMENTS):
        env = np.clip(1.5 * (1 - np.abs(t - (k + 0.5) * SEG_S) / (SEG_S / 2)), 0, 1)
        for name, value in channels.items():
            v[:, index(name)] += value * env
    return Animation(v, FPS)


def _plateau(name: str, num_frames: int) -> np.ndarray:
    t = np.arange(num_frames) / FPS
    return np.abs(t - (NAMES.index(name) + 0.5) * SEG_S) < SEG_S * 0.17


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """(sent, tracked): the known animation and what extract reads back from its rendered video."""
    from dubtool.extract import extract
    from dubtool.render import RenderOptions, render_video

    d = tmp_path_factory.mktemp("loop")
    sent = _known_animation()
    csv_path = write_csv(sent, d / "known.csv")
    from_csv = read_csv(csv_path)
    # A webcam-like shot: 640x480, the face about 40% of the frame height, on a grey wall.
    options = RenderOptions(width=640, height=480, zoom=0.65, background=(0.55, 0.57, 0.6))
    video = d / "known.mp4"
    render_video(from_csv, video, options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a silent video: extract warns that there is no audio
        perf = extract(video)
    assert perf.meta["face_found_ratio"] > 0.95, "the tracker must see the rendered face"
    assert perf.num_frames == sent.num_frames
    return sent, perf.animation


def mean(anim: Animation, channel: str, segment: str) -> float:
    return float(anim.channel(channel)[_plateau(segment, anim.num_frames)].mean())


def rise(anim: Animation, channel: str, segment: str) -> float:
    """How far a channel moves during a segment's plateau from the neutral start."""
    return mean(anim, channel, segment) - mean(anim, channel, "neutral")


def test_the_csv_keeps_every_value_and_sign():
    sent = _known_animation()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        back = read_csv(write_csv(sent, Path(d) / "a.csv"))
    assert back.fps == sent.fps
    np.testing.assert_allclose(back.values, sent.values, atol=1e-4)


def test_the_written_csv_has_the_apps_eye_yaw_sign(loop, tmp_path):
    # What extract tracked, as a file: Live Link Face's LeftEyeYaw falls as EyeLookOutLeft - EyeLookInLeft
    # rises and RightEyeYaw rises with EyeLookOutRight - EyeLookInRight (docs/conventions.md, real takes).
    from dubtool.livelink import CSV_COLUMNS

    _, got = loop
    lines = write_csv(got, tmp_path / "tracked.csv").read_text().splitlines()
    rows = np.array([[float(c) for c in line.split(",")[2:]] for line in lines[1:]])
    col = {name: rows[:, i] for i, name in enumerate(CSV_COLUMNS)}
    on, rest = _plateau("gaze_left", len(rows)), _plateau("neutral", len(rows))

    def rise(name):
        return float(col[name][on].mean() - col[name][rest].mean())

    assert rise("EyeLookOutLeft") - rise("EyeLookInLeft") > 0.1 and rise("LeftEyeYaw") < -0.05
    assert rise("EyeLookOutRight") - rise("EyeLookInRight") < -0.1 and rise("RightEyeYaw") < -0.05
    # Radians: a 0.3 rad gaze is written as about 0.3 (not 0.3 / pi).
    assert -0.45 < rise("LeftEyeYaw") < -0.08


def test_head_yaw_sign_and_size_come_back(loop):
    _, got = loop
    # +0.3 rad = the subject turns to their own left (nose to image right); -0.3 the other way.
    assert 0.15 < rise(got, "HeadYaw", "yaw+") < 0.45
    assert -0.45 < rise(got, "HeadYaw", "yaw-") < -0.15
    for other in ("HeadPitch", "HeadRoll"):
        assert abs(rise(got, other, "yaw+")) < 0.06 and abs(rise(got, other, "yaw-")) < 0.06


def test_head_pitch_and_roll_signs_come_back(loop):
    _, got = loop
    assert 0.1 < rise(got, "HeadPitch", "pitch+") < 0.3  # looks down
    assert 0.1 < rise(got, "HeadRoll", "roll+") < 0.3  # tilts to the subject's right shoulder
    assert abs(rise(got, "HeadYaw", "pitch+")) < 0.05 and abs(rise(got, "HeadYaw", "roll+")) < 0.05
    assert abs(rise(got, "HeadRoll", "pitch+")) < 0.05 and abs(rise(got, "HeadPitch", "roll+")) < 0.06


def test_a_left_blink_reads_as_eye_blink_left_not_right(loop):
    _, got = loop
    assert rise(got, "eyeBlinkLeft", "blink_left") > 0.2
    assert mean(got, "eyeBlinkLeft", "blink_left") > mean(got, "eyeBlinkRight", "blink_left") + 0.15
    assert rise(got, "eyeBlinkRight", "blink_right") > 0.2
    assert mean(got, "eyeBlinkRight", "blink_right") > mean(got, "eyeBlinkLeft", "blink_right") + 0.1


def test_jaw_open_rises_during_the_pulse_and_only_then(loop):
    _, got = loop
    assert rise(got, "jawOpen", "jaw") > 0.07
    others = [mean(got, "jawOpen", s) for s in NAMES if s != "jaw"]
    assert mean(got, "jawOpen", "jaw") > max(others) + 0.05


def test_brow_inner_up_rises(loop):
    _, got = loop
    assert rise(got, "browInnerUp", "brow") > 0.15
    others = [mean(got, "browInnerUp", s) for s in NAMES if s != "brow"]
    assert mean(got, "browInnerUp", "brow") > max(others) + 0.1


def test_straight_gaze_reads_as_zero_eye_yaw(loop):
    # Irises drawn dead centre: both eyes near 0, not diverging (before IRIS_REST_OUT_CM the left eye
    # read +0.05 and the right -0.11 rad).
    _, got = loop
    for segment in ("neutral", "neutral_end"):
        for ch in ("LeftEyeYaw", "RightEyeYaw"):
            assert abs(mean(got, ch, segment)) < 0.05, (segment, ch, mean(got, ch, segment))


def test_gaze_to_the_subjects_left_reads_as_positive_eye_yaw(loop):
    _, got = loop
    # Both eyes turn the same way in absolute terms, not only relative to the neutral start.
    assert mean(got, "LeftEyeYaw", "gaze_left") > 0.05 and mean(got, "RightEyeYaw", "gaze_left") > 0.05
    assert rise(got, "LeftEyeYaw", "gaze_left") > 0.08 and rise(got, "RightEyeYaw", "gaze_left") > 0.08
    # ARKit names: the left eye looks out, the right eye looks in.
    assert rise(got, "eyeLookOutLeft", "gaze_left") > 0.1 and rise(got, "eyeLookInRight", "gaze_left") > 0.1
    assert rise(got, "eyeLookInLeft", "gaze_left") < 0.05


def test_the_loop_returns_to_neutral(loop):
    _, got = loop
    for ch in ("HeadYaw", "HeadPitch", "HeadRoll"):
        assert abs(rise(got, ch, "neutral_end")) < 0.04
    for ch in ("eyeBlinkLeft", "jawOpen", "browInnerUp"):
        assert abs(rise(got, ch, "neutral_end")) < 0.08


# ------------------------------------------------------------------- exporters and script words


def _nose_and_top(values61: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rig = load_rig()
    v = apply_head_rotation(rig.neutral, values61)
    return v[NOSE_TIP] - rig.neutral[NOSE_TIP], v[FOREHEAD] - rig.neutral[FOREHEAD]


def _values(**channels) -> np.ndarray:
    v = np.zeros(NUM_CHANNELS, np.float32)
    for k, x in channels.items():
        v[index(k)] = x
    return v


def test_rig_rotation_meanings():
    nose, _ = _nose_and_top(_values(HeadYaw=0.3))
    assert nose[0] > 1.0  # nose toward +x, the subject's left
    nose, _ = _nose_and_top(_values(HeadPitch=0.3))
    assert nose[1] < -1.0  # looks down
    _, top = _nose_and_top(_values(HeadRoll=0.3))
    assert top[0] < -1.0  # top of the head toward -x: tilt to the subject's right shoulder


def test_fbx_euler_angles_rebuild_the_rig_rotation():
    from scipy.spatial.transform import Rotation

    from dubtool.fbx import euler_xyz_degrees

    for yaw, pitch, roll in ((0.3, 0.0, 0.0), (0.0, 0.2, 0.0), (0.0, 0.0, 0.2), (0.25, -0.15, 0.1)):
        rot = head_rotation_matrix(yaw, pitch, roll)
        x, y, z = euler_xyz_degrees(rot[None])[0]
        # FBX eEulerXYZ: X applied first, then Y, then Z (extrinsic xyz), Y up, front +Z, cm.
        rebuilt = Rotation.from_euler("xyz", [x, y, z], degrees=True).as_matrix()
        np.testing.assert_allclose(rebuilt, rot, atol=1e-6)
    x, y, z = euler_xyz_degrees(head_rotation_matrix(0.3, 0.0, 0.0)[None])[0]
    assert y == pytest.approx(np.degrees(0.3), abs=1e-3) and abs(x) < 1e-6 and abs(z) < 1e-6


def test_gltf_quaternions_turn_the_nose_like_the_rig():
    from scipy.spatial.transform import Rotation

    from dubtool.gltf import head_quaternions

    vals = np.stack([_values(HeadYaw=0.3), _values(HeadPitch=0.2), _values(HeadRoll=0.2)])
    q = head_quaternions(vals)  # glTF: xyzw, +Y up, the asset faces +Z, +X is its left
    for row, quat in zip(vals, q):
        np.testing.assert_allclose(Rotation.from_quat(quat).as_matrix(),
                                   head_rotation_matrix(*row[index("HeadYaw"):index("HeadYaw") + 3]), atol=1e-6)
    assert Rotation.from_quat(q[0]).apply([0, 0, 1])[0] > 0.2  # yaw+ turns the face toward +X


@pytest.mark.parametrize("script,channel,sign", [
    ("(turns her head to the left) Look at that.", "HeadYaw", 1),
    ("(turns his head to the right) Look at that.", "HeadYaw", -1),
    ("(glances left) Did you see it?", "LeftEyeYaw", 1),
    ("(glances right) Did you see it?", "RightEyeYaw", -1),
    ("(nods) Yes, I will come.", "HeadPitch", 1),
    ("(tilts her head to the left) Really now.", "HeadRoll", -1),
    ("(tilts her head to the right) Really now.", "HeadRoll", 1),
])
def test_script_words_move_the_head_the_way_they_say(script, channel, sign):
    from dubtool.keyframes import PlanOptions, keyframe_curves, plan_offline

    track = plan_offline(script, options=PlanOptions(use_embedding=False))
    anim = keyframe_curves(track, 30.0, track.duration_s, blinks=False)
    x = anim.channel(channel)
    extreme = x[np.argmax(np.abs(x))]
    assert sign * extreme > 0.05, f"{channel} should go {'+' if sign > 0 else '-'} for {script!r}, got {extreme:.3f}"
    if channel == "HeadYaw":
        nose, _ = _nose_and_top(anim.values[int(np.argmax(np.abs(x)))])
        assert sign * nose[0] > 0  # "left" = the subject's own left = +x
