"""Live Link Face CSV: exact round trip, the app's header, and clear errors on bad files."""

import numpy as np
import pytest

from dubtool import arkit, livelink
from dubtool.arkit import Animation
from dubtool.errors import InputError


def _anim(n=50, fps=30.0, start=None, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.random((n, arkit.NUM_CHANNELS), dtype=np.float32)
    v[:, 52:] = (v[:, 52:] - 0.5) * 0.6  # rotations in radians, signed
    return Animation(v, fps, start)


def test_channel_names_follow_live_link_order():
    assert len(arkit.CHANNEL_NAMES) == 61
    assert arkit.CHANNEL_NAMES[0] == "eyeBlinkLeft" and arkit.CHANNEL_NAMES[17] == "jawOpen"
    assert arkit.CHANNEL_NAMES[51] == "tongueOut" and arkit.CHANNEL_NAMES[52] == "HeadYaw"
    assert arkit.CHANNEL_NAMES[-1] == "RightEyeRoll"
    assert arkit.index("JawOpen") == arkit.index("jawOpen") == 17
    with pytest.raises(InputError):
        arkit.index("jawOpenWide")


@pytest.mark.parametrize("fps,start", [(30.0, None), (60.0, 10 * 3600 + 45 * 60 + 40.3), (24.0, 1.5)])
def test_csv_round_trip_is_exact(tmp_path, fps, start):
    a = _anim(fps=fps, start=start)
    path = livelink.write_csv(a, tmp_path / "take.csv")
    b = livelink.read_csv(path)
    assert np.array_equal(a.values, b.values)
    assert b.fps == fps
    assert b.timecode_start_s == pytest.approx(start or 0.0, abs=1e-3)
    assert livelink.to_csv_text(b) == path.read_text()


def test_header_and_rows_match_live_link_face(tmp_path):
    path = livelink.write_csv(_anim(n=3, start=17 * 3600 + 31 * 60 + 10), tmp_path / "a.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft")
    # The app's own column order (differs from Unreal's enum for the jaw/mouth sideways pairs).
    assert ",JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft," in lines[0]
    assert lines[0].endswith("HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")
    assert lines[1].startswith("17:31:10:00.000,61,")
    assert lines[2].startswith("17:31:10:01.000,61,")
    assert len(lines[1].split(",")) == 63


def test_reads_a_live_link_face_recording_with_crlf_and_subframes():
    # As the app writes it: 60 fps timecodes with sub-frame fractions, CRLF line ends.
    header = ",".join(livelink.HEADER)
    rows = []
    for i in range(4):
        vals = ["0.5" if n == "JawOpen" else "0" for n in arkit.LIVE_LINK_NAMES]
        rows.append(f"09:12:44:{55 + i:02d}.{(i * 137) % 1000:03d},61," + ",".join(vals))
    anim = livelink.parse_csv("\r\n".join([header] + rows) + "\r\n")
    assert anim.num_frames == 4
    assert anim.channel("jawOpen").tolist() == [0.5] * 4
    assert anim.timecode_start_s == pytest.approx(9 * 3600 + 12 * 60 + 44 + 55 / 60, abs=1e-6)


@pytest.mark.parametrize("mutate,needle", [
    (lambda h, r: (h.replace(",JawOpen", ""), r), "missing blendshape column"),
    (lambda h, r: (h + ",Wobble", [x + ",0" for x in r]), "unknown column"),
    (lambda h, r: (h, [r[0], r[1].replace(",61,", ",61,nan,", 1).rsplit(",", 1)[0]]), "line 3"),
    (lambda h, r: (h, [r[0], r[1].replace(",61,0", ",61,abc", 1)]), "not a number"),
    (lambda h, r: (h, [r[1], r[0]]), "does not increase"),
    (lambda h, r: (h, [r[0], r[1].replace(",61,0", ",61,7", 1)]), "outside 0..1"),
])
def test_bad_csv_gives_a_clear_error_naming_the_line(mutate, needle):
    text = livelink.to_csv_text(Animation.zeros(2, 30.0))
    lines = text.splitlines()
    header, rows = mutate(lines[0], lines[1:])
    with pytest.raises(InputError, match=needle):
        livelink.parse_csv("\n".join([header] + rows) + "\n")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        livelink.read_csv(tmp_path / "nope.csv")


def test_columns_are_matched_by_name_not_position():
    a = Animation.zeros(1, 30.0)
    a.values[0, arkit.index("jawLeft")] = 0.25
    a.values[0, arkit.index("mouthRight")] = 0.75
    text = livelink.to_csv_text(a)
    header, row = (line.split(",") for line in text.splitlines())
    assert row[header.index("JawLeft")] == "0.25" and row[header.index("MouthRight")] == "0.75"
    b = livelink.parse_csv(text)
    assert b.channel("jawLeft")[0] == 0.25 and b.channel("mouthRight")[0] == 0.75 and b.channel("jawRight")[0] == 0


def test_rotations_are_written_as_degrees_over_180():
    # Epic's ARKit bridge maps -180..180 degrees to -1..1; a 90-degree head turn is 0.5 in the file.
    a = Animation.zeros(1, 30.0)
    a.values[0, arkit.index("HeadYaw")] = np.pi / 2
    a.values[0, arkit.index("LeftEyePitch")] = -np.pi / 18  # -10 degrees
    row = livelink.to_csv_text(a).splitlines()[1].split(",")
    assert float(row[2 + arkit.index("HeadYaw")]) == pytest.approx(0.5)
    assert float(row[2 + arkit.index("LeftEyePitch")]) == pytest.approx(-10 / 180)
    with pytest.raises(InputError, match="outside -1..1"):
        row[2 + arkit.index("HeadRoll")] = "3.5"
        livelink.parse_csv(",".join(livelink.HEADER) + "\n" + ",".join(row) + "\n")
