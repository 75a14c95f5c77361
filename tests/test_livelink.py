"""Live Link Face CSV: what the app writes (radians, its eye-yaw sign, 60 fps timecodes), exact round
trips, what Unreal's importer reads, and clear errors on bad files."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from dubtool import arkit, livelink
from dubtool.arkit import Animation
from dubtool.errors import InputError

# The first 12 frames of a public Live Link Face take (csv/facial.csv of
# github.com/alexdjulin/LiveLinkFace-CSV-Retarget-For-Motionbuilder, MIT licence: tests/data/README.md),
# byte for byte: the eyes look down, then saccade to the subject's left and up.
REAL_TAKE = Path(__file__).parent / "data" / "llf_facial_excerpt.csv"


def _anim(n=50, fps=30.0, start=None, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.random((n, arkit.NUM_CHANNELS), dtype=np.float32)
    v[:, 52:] = (v[:, 52:] - 0.5) * 0.6  # rotations in radians, signed
    return Animation(v, fps, start)


def _columns(text: str) -> dict[str, np.ndarray]:
    """A CSV's numeric columns by header name, as a plain reader (Blender add-ons, pandas) sees them."""
    lines = text.splitlines()
    header = lines[0].split(",")
    rows = np.array([[float(c) for c in line.split(",")[1:]] for line in lines[1:]])
    return {name: rows[:, i - 1] for i, name in enumerate(header) if i > 0}


def unreal_sample_times(text: str) -> np.ndarray:
    """Seconds at which Unreal's LiveLinkFaceImporterFactory keys each row: it infers a 60 fps timecode
    if any frame field exceeds 30, else 30 fps, and keys H*3600 + M*60 + S + FF.fff / rate."""
    fields = [line.split(",")[0].split(":") for line in text.splitlines()[1:]]
    rate = 60.0 if any(float(f[3]) > 30.0 for f in fields) else 30.0
    return np.array([int(f[0]) * 3600 + int(f[1]) * 60 + int(f[2]) + float(f[3]) / rate for f in fields])


def _slope_r(x, y):
    return np.polyfit(x, y, 1)[0], np.corrcoef(x, y)[0, 1]


def test_channel_names_follow_live_link_order():
    assert len(arkit.CHANNEL_NAMES) == 61
    assert arkit.CHANNEL_NAMES[0] == "eyeBlinkLeft" and arkit.CHANNEL_NAMES[17] == "jawOpen"
    assert arkit.CHANNEL_NAMES[51] == "tongueOut" and arkit.CHANNEL_NAMES[52] == "HeadYaw"
    assert arkit.CHANNEL_NAMES[-1] == "RightEyeRoll"
    assert arkit.index("JawOpen") == arkit.index("jawOpen") == 17
    with pytest.raises(InputError):
        arkit.index("jawOpenWide")


@pytest.mark.parametrize("fps,start", [(30.0, None), (60.0, 10 * 3600 + 45 * 60 + 40.3), (24.0, 1.5), (25.0, 0.0),
                                       (23.976, 3600.0), (29.97, 0.0), (50.0, 86399.0)])
def test_csv_round_trip_is_exact(tmp_path, fps, start):
    a = _anim(fps=fps, start=start)
    a.values[3, 5] = 1.5e-5  # a weight that 10 decimals would round
    path = livelink.write_csv(a, tmp_path / "take.csv")
    b = livelink.read_csv(path)
    assert np.array_equal(a.values, b.values)
    assert b.fps == fps
    assert b.timecode_start_s == pytest.approx(start or 0.0, abs=1e-3)
    assert livelink.to_csv_text(b) == path.read_text()


def test_a_real_app_take_round_trips_cell_for_cell():
    text = REAL_TAKE.read_text()
    anim = livelink.read_csv(REAL_TAKE)
    assert anim.num_frames == 12 and anim.fps == 30.0  # 30 fps capture on a 60 fps timecode
    assert anim.timecode_start_s == pytest.approx(12 * 3600 + 24 * 60 + 24 + 19.960 / 60)
    assert livelink.to_csv_text(anim) == text  # values, units, column order and timecodes
    # ... and a changed take keeps the app's format: 10 decimals, the app's signs.
    edited = anim.with_values(anim.values)
    edited.values[:, arkit.index("jawOpen")] = 0.5
    lines = livelink.to_csv_text(edited).splitlines()
    assert lines[1].split(",")[2 + livelink.CSV_COLUMNS.index("JawOpen")] == "0.5000000000"
    assert lines[1].split(",")[-6:] == text.splitlines()[1].split(",")[-6:]


def test_the_real_take_shows_the_apps_units_and_signs():
    # The relations docs/conventions.md measures on three public takes, checked on the excerpt.
    c = _columns(REAL_TAKE.read_text())
    for side in ("Left", "Right"):
        k, r = _slope_r(c[f"EyeLookDown{side}"] - c[f"EyeLookUp{side}"], c[f"{side}EyePitch"])
        assert r > 0.99 and 0.45 < k < 0.7, (side, k, r)  # radians: full eyeLookDown ~ 0.6 rad = 35 deg
    k, r = _slope_r(c["EyeLookOutLeft"] - c["EyeLookInLeft"], c["LeftEyeYaw"])
    assert r < -0.99 and -0.7 < k < -0.45
    k, r = _slope_r(c["EyeLookOutRight"] - c["EyeLookInRight"], c["RightEyeYaw"])
    assert r > 0.99 and 0.45 < k < 0.7
    # Inside dubtool both eyes' yaw rises as they turn to the subject's left (left eye out, right eye in).
    anim = livelink.read_csv(REAL_TAKE)
    gaze_left = anim.channel("eyeLookOutLeft") - anim.channel("eyeLookInLeft")
    assert np.corrcoef(gaze_left, anim.channel("LeftEyeYaw"))[0, 1] > 0.99
    gaze_left = anim.channel("eyeLookInRight") - anim.channel("eyeLookOutRight")
    assert np.corrcoef(gaze_left, anim.channel("RightEyeYaw"))[0, 1] > 0.99


def test_written_eye_rotations_relate_to_the_eye_look_shapes_like_the_apps(tmp_path):
    # dubtool's procedural gaze (eye rotations and eyeLook shapes set together) as a file.
    from dubtool.upperface import procedural_upper_face

    up = procedural_upper_face(8.0, 30.0, np.random.default_rng(3))
    c = _columns(livelink.to_csv_text(up.animation))
    k, r = _slope_r(c["EyeLookOutLeft"] - c["EyeLookInLeft"], c["LeftEyeYaw"])
    assert r < -0.95 and -0.8 < k < -0.4, (k, r)  # the app: r -1.00, slope -0.58..-0.60
    k, r = _slope_r(c["EyeLookOutRight"] - c["EyeLookInRight"], c["RightEyeYaw"])
    assert r > 0.95 and 0.4 < k < 0.8, (k, r)
    for side in ("Left", "Right"):
        k, r = _slope_r(c[f"EyeLookDown{side}"] - c[f"EyeLookUp{side}"], c[f"{side}EyePitch"])
        assert r > 0.95 and 0.4 < k < 0.8, (side, k, r)  # radians (radians/pi would be 0.14)


def test_rotations_are_radians_with_the_apps_yaw_and_roll_signs():
    a = Animation.zeros(1, 30.0)
    for name, x in (("HeadYaw", 0.3), ("HeadPitch", 0.2), ("HeadRoll", 0.1), ("LeftEyeYaw", 0.25),
                    ("LeftEyePitch", -0.15), ("RightEyeYaw", -0.05), ("RightEyePitch", 0.125)):
        a.values[0, arkit.index(name)] = x
    c = _columns(livelink.to_csv_text(a))
    assert c["HeadYaw"][0] == pytest.approx(-0.3) and c["HeadPitch"][0] == pytest.approx(0.2)
    assert c["HeadRoll"][0] == pytest.approx(-0.1)
    assert c["LeftEyeYaw"][0] == pytest.approx(-0.25) and c["LeftEyePitch"][0] == pytest.approx(-0.15)
    assert c["RightEyeYaw"][0] == pytest.approx(0.05) and c["RightEyePitch"][0] == pytest.approx(0.125)
    row = livelink.to_csv_text(a).splitlines()[1].split(",")
    assert row[2 + arkit.index("LeftEyeRoll")] == "0.0000000000"  # no "-0.0000000000"
    row[2 + arkit.index("HeadRoll")] = "3.5"
    with pytest.raises(InputError, match=r"outside -pi..pi \(rotations are radians\)"):
        livelink.parse_csv(",".join(livelink.HEADER) + "\n" + ",".join(row) + "\n")


def test_header_and_rows_match_live_link_face(tmp_path):
    path = livelink.write_csv(_anim(n=40, start=17 * 3600 + 31 * 60 + 10), tmp_path / "a.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft")
    # The app's own column order (differs from Unreal's enum for the jaw/mouth sideways pairs).
    assert ",JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft," in lines[0]
    assert lines[0].endswith("HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")
    # A 30 fps take on the app's 60 fps timecode: frames 0, 2, 4 ... with a 3-digit sub-frame.
    assert lines[1].startswith("17:31:10:00.000,61,")
    assert lines[2].startswith("17:31:10:02.000,61,")
    assert len(lines[1].split(",")) == 63
    assert all(len(c.split(".")[1]) == 10 for c in lines[1].split(",")[2:])  # 10 decimals, like the app


@pytest.mark.parametrize("fps", [24.0, 25.0, 50.0, 30.0, 60.0, 23.976, 29.97])
def test_any_take_rate_imports_evenly_in_unreal(fps):
    a = _anim(n=int(3 * fps), fps=fps, start=10 * 3600 + 0.25)
    t = unreal_sample_times(livelink.to_csv_text(a))
    np.testing.assert_allclose(np.diff(t), 1.0 / fps, atol=2e-5)
    assert t[0] == pytest.approx(36000.25, abs=1e-4)


def test_a_short_take_imports_evenly_too():
    # 10 frames at 24 fps stay under frame 30 of a 60 fps timecode; Unreal would read them as 30 fps.
    text = livelink.to_csv_text(_anim(n=10, fps=24.0, start=0.0))
    np.testing.assert_allclose(np.diff(unreal_sample_times(text)), 1 / 24, atol=2e-5)
    assert livelink.parse_csv(text).fps == 24.0


def test_a_timecode_at_the_take_rate_would_jump_in_unreal():
    # What dubtool wrote before (FF counted at 25 fps): Unreal reads it as 30 fps and jumps every second.
    d = np.diff(unreal_sample_times(livelink.to_csv_text(_anim(n=75, fps=25.0), timecode_rate=25.0)))
    assert d.max() > 0.15 and d.min() == pytest.approx(1 / 30, abs=1e-6)


@pytest.mark.parametrize("rate,fps", [(25.0, 25.0), (24.0, 24.0), (30.0, 30.0), (60.0, 30.0), (50.0, 50.0)])
def test_reading_measures_the_rate_from_timecodes_at_any_rate(rate, fps):
    # Files from other tools (or older dubtool) count FF at the take's rate; the app's at 60.
    text = livelink.to_csv_text(_anim(n=int(2.5 * fps), fps=fps, start=3600.0), timecode_rate=rate)
    b = livelink.parse_csv(text)
    assert b.fps == fps and b.meta["timecode_rate"] == rate and b.timecode_start_s == pytest.approx(3600.0)


def test_reads_a_live_link_face_recording_with_crlf_and_subframes():
    # As the app writes it: 60 fps timecodes with sub-frame fractions (59.94 fps), CRLF line ends.
    header = ",".join(livelink.HEADER)
    rows = []
    for i in range(8):
        vals = ["0.5000000000" if n == "JawOpen" else "0.0000000000" for n in livelink.CSV_COLUMNS]
        rows.append(f"09:12:{44 + (55 + i) // 60:02d}:{(55 + i) % 60:02d}.{i:03d},61," + ",".join(vals))
    anim = livelink.parse_csv("\r\n".join([header] + rows) + "\r\n")
    assert anim.num_frames == 8 and anim.fps == 59.94
    assert anim.channel("jawOpen").tolist() == [0.5] * 8
    assert anim.timecode_start_s == pytest.approx(9 * 3600 + 12 * 60 + 44 + 55 / 60, abs=1e-6)


def test_extra_columns_are_ignored_with_one_warning():
    lines = livelink.to_csv_text(_anim(n=3)).splitlines()
    text = "\n".join([lines[0] + ",Frame,Note"] + [f"{r},{i},ok" for i, r in enumerate(lines[1:])]) + "\n"
    with pytest.warns(UserWarning, match="ignored column.*'Frame', 'Note'") as caught:
        b = livelink.parse_csv(text)
    assert len(caught) == 1
    assert np.array_equal(b.values, _anim(n=3).values)


def test_nan_cells_are_interpolated_from_the_neighbouring_frames_with_one_warning():
    a = Animation.zeros(6, 30.0)
    a.values[:, arkit.index("jawOpen")] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    a.values[:, arkit.index("HeadPitch")] = 0.1
    lines = livelink.to_csv_text(a).splitlines()
    jaw, pitch = 2 + livelink.CSV_COLUMNS.index("JawOpen"), 2 + livelink.CSV_COLUMNS.index("HeadPitch")
    for r, col in ((2, jaw), (3, jaw), (6, jaw), (4, pitch)):  # a dropped span, the last frame, a rotation
        cells = lines[r].split(",")
        cells[col] = "nan"
        lines[r] = ",".join(cells)
    with pytest.warns(UserWarning, match=r"4 NaN cell\(s\) on 4 frame\(s\) \(first on line 3\).*interpolation") as caught:
        b = livelink.parse_csv("\n".join(lines) + "\n")
    assert len(caught) == 1
    np.testing.assert_allclose(b.channel("jawOpen"), [0.0, 0.2, 0.4, 0.6, 0.8, 0.8], atol=1e-6)
    np.testing.assert_allclose(b.channel("HeadPitch"), 0.1, atol=1e-7)


@pytest.mark.parametrize("mutate,needle", [
    (lambda h, r: (h.replace(",JawOpen", ""), r), "line 1: missing blendshape column"),
    (lambda h, r: (h + ",JawOpen", [x + ",0" for x in r]), "line 1: column.*named twice"),
    (lambda h, r: (h, [r[0], r[1] + ",0.5"]), "line 3: 64 cells, the header has 63"),
    (lambda h, r: (h, [r[0], r[1].rsplit(",", 1)[0]]), "line 3: 62 cells"),
    (lambda h, r: (h, [r[0], r[1].replace(",61,0.0000000000", ",61,abc", 1)]), "line 3: .*not a number"),
    (lambda h, r: (h, [r[1], r[0]]), "line 3: timecode does not increase"),
    (lambda h, r: (h, [r[0], r[1].replace(",61,0.0000000000", ",61,7", 1)]), "line 3: .*outside 0..1"),
    (lambda h, r: (h, [r[0], "00:00:00:xx.000" + r[1][15:]]), "line 3: bad timecode"),
])
def test_bad_csv_gives_a_clear_error_naming_the_line(mutate, needle):
    text = livelink.to_csv_text(Animation.zeros(2, 30.0))
    lines = text.splitlines()
    header, rows = mutate(lines[0], lines[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=needle) as e:
            livelink.parse_csv("\n".join([header] + rows) + "\n")
    assert "\n" not in str(e.value)


def test_trailing_commas_are_accepted():
    lines = livelink.to_csv_text(_anim(n=2)).splitlines()
    b = livelink.parse_csv("\n".join([lines[0] + ","] + [r + ",," for r in lines[1:]]) + "\n")
    assert np.array_equal(b.values, _anim(n=2).values)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        livelink.read_csv(tmp_path / "nope.csv")


def test_columns_are_matched_by_name_not_position():
    a = Animation.zeros(1, 30.0)
    a.values[0, arkit.index("jawLeft")] = 0.25
    a.values[0, arkit.index("mouthRight")] = 0.75
    text = livelink.to_csv_text(a)
    header, row = (line.split(",") for line in text.splitlines())
    assert row[header.index("JawLeft")] == "0.2500000000" and row[header.index("MouthRight")] == "0.7500000000"
    b = livelink.parse_csv(text)
    assert b.channel("jawLeft")[0] == 0.25 and b.channel("mouthRight")[0] == 0.75 and b.channel("jawRight")[0] == 0


@pytest.mark.parametrize("text,fps,seconds", [
    ("10:00:00:00", 24.0, 36000.0), ("10:00:00:12", 24.0, 36000.5), ("01:02:03;15", 29.97, 3723.5),
    ("00:00:01.25", 25.0, 1.25), ("23:59:59:59", 60.0, 86399 + 59 / 60),
])
def test_start_timecodes(text, fps, seconds):
    assert livelink.start_timecode_s(text, fps) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10:00:00:24", "25:00:00:00", "10:00", "ten o'clock", "10:61:00:00"])
def test_bad_start_timecodes_are_input_errors(text):
    with pytest.raises(InputError, match="bad timecode"):
        livelink.start_timecode_s(text, 24.0)
