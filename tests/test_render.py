"""dubtool render: the face reads (open mouth dark, blinks hide the irises, head turns), videos
play with sound at the animation's length, bad input fails cleanly without partial files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dubtool.arkit import Animation, index
from dubtool.errors import InputError
from dubtool.livelink import write_csv
from dubtool.render import RenderOptions, render_frames

SIZE = 192


def pose(**channels) -> np.ndarray:
    v = np.zeros(61, np.float32)
    for k, x in channels.items():
        v[index(k)] = x
    return v


@pytest.fixture(scope="module")
def stills():
    frames = [pose(), pose(jawOpen=1.0), pose(eyeBlinkLeft=1.0, eyeBlinkRight=1.0), pose(HeadYaw=0.5)]
    imgs = list(render_frames(Animation(np.stack(frames), 30.0), RenderOptions(width=SIZE, height=SIZE)))
    return dict(zip(("neutral", "jaw", "blink", "yaw"), imgs))


def _foreground(img, bg=RenderOptions().background):
    return np.abs(img.astype(int) - np.array(bg) * 255).sum(-1) > 30


def test_face_fills_the_frame(stills):
    fg = _foreground(stills["neutral"])
    assert 0.25 < fg.mean() < 0.8
    ys, xs = np.nonzero(fg)
    assert abs(xs.mean() - SIZE / 2) < SIZE * 0.05  # centred


def test_open_jaw_shows_a_dark_mouth(stills):
    def interior(img):  # mouth-interior pixels: dark, or red far from skin tone (tongue, throat)
        x = img[int(SIZE * 0.55):int(SIZE * 0.85)].astype(int)
        return int(((x[..., 1] < 0.55 * x[..., 0]) | (x.max(-1) < 35)).sum())
    assert interior(stills["jaw"]) > 2.5 * interior(stills["neutral"])


def test_closed_lips_hide_the_mouth_and_an_open_jaw_shows_it():
    """At rest and on a /p b m/ (jaw slightly open, lips pressed and closed over it) the lip line shows
    neither mouth interior nor background through the lips; jawOpen 0.3 does."""
    from dubtool.render import camera_matrix
    from dubtool.rig import load_rig

    opts = RenderOptions(width=640, height=480)
    frames = [pose(), pose(jawOpen=0.07, mouthPressLeft=0.3, mouthPressRight=0.3, mouthClose=0.3),
              pose(jawOpen=0.05, mouthClose=0.05, mouthPressLeft=0.35, mouthPressRight=0.35, mouthRollLower=0.15),
              pose(jawOpen=0.3)]
    imgs = list(render_frames(Animation(np.stack(frames), 30.0), opts))
    q = camera_matrix(opts) @ np.append(load_rig().neutral[13], 1.0)
    x, y = int((q[0] / q[3] + 1) / 2 * opts.width), int((q[1] / q[3] + 1) / 2 * opts.height)

    def hole(img):  # pixels around the lip line that are background or mouth interior (dark / red)
        m = img[y - 12:y + 20, x - 40:x + 40].astype(int)
        bg = np.abs(m - np.array(opts.background) * 255).sum(-1) < 25
        interior = (m[..., 1] < 0.45 * m[..., 0]) | (m.max(-1) < 40)
        return int((bg | interior).sum())

    rest, bilabial, teacher, jaw = (hole(i) for i in imgs)
    assert rest == 0 and bilabial == 0 and teacher == 0, (rest, bilabial, teacher)
    assert jaw > 100


def test_blink_covers_the_irises(stills):
    eyes = slice(int(SIZE * 0.3), int(SIZE * 0.5))
    dark = lambda img: (img[eyes].max(-1) < 35).sum()  # noqa: E731 - pupils
    assert dark(stills["neutral"]) > 10
    assert dark(stills["blink"]) < 0.3 * dark(stills["neutral"])


def test_head_yaw_turns_the_face(stills):
    # Positive yaw turns the nose towards the subject's left = image right.
    def centre_x(img):
        return float(np.nonzero(_foreground(img))[1].mean())
    assert centre_x(stills["yaw"]) > centre_x(stills["neutral"]) + SIZE * 0.04


def _probe(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,pix_fmt",
                        "-show_entries", "format=duration", "-of", "json", str(path)], capture_output=True, text=True)
    return json.loads(r.stdout)


def _dubtool(*args):
    return subprocess.run([sys.executable, "-m", "dubtool", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    d = tmp_path_factory.mktemp("take")
    t = np.arange(45) / 30.0
    v = np.zeros((45, 61), np.float32)
    v[:, index("jawOpen")] = 0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)
    v[:, index("browInnerUp")] = t / t[-1]
    csv = d / "anim.csv"
    write_csv(Animation(v, 30.0, 0.0), csv)
    src = d / "source.csv"
    write_csv(Animation(v[::-1].copy(), 30.0, 0.0), src)
    wav = d / "dub.wav"
    sr = 16000
    import soundfile as sf
    sf.write(wav, 0.2 * np.sin(2 * np.pi * 220 * np.arange(int(sr * 1.0)) / sr), sr)  # 1.0 s < 1.5 s animation
    return d, csv, src, wav


def test_cli_renders_h264_aac_at_animation_length(take):
    d, csv, _, wav = take
    out = d / "preview.mp4"
    r = _dubtool("render", csv, "--audio", wav, "-o", out, "--size", "128x96", "--background", "#000000")
    assert r.returncode == 0, r.stderr
    assert "padded" in r.stderr  # the 1 s audio was padded to the 1.5 s animation
    info = _probe(out)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert kinds["video"]["codec_name"] == "h264" and kinds["video"]["pix_fmt"] == "yuv420p"
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (128, 96)
    assert kinds["audio"]["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - 1.5) < 0.1
    assert not list(d.glob(".preview*"))  # no temp left behind


def test_cli_compare_with_timemap_and_curves(take):
    d, csv, src, _ = take
    tm = d / "timemap.json"
    tm.write_text(json.dumps({"version": 1, "source_duration_s": 1.5, "dub_duration_s": 1.5,
                              "knots": [[0, 0], [0.5, 0.7], [1.5, 1.5]],
                              "phrases": [{"source": [0.1, 1.2], "dub": [0.2, 1.3]}], "method": "phrase-dp"}))
    out, png = d / "cmp.mp4", d / "curves.png"
    r = _dubtool("render", csv, "--compare", src, "--timemap", tm, "-o", out, "--size", "128x128",
                 "--curves-png", png, "--channels", "jawOpen,browInnerUp")
    assert r.returncode == 0, r.stderr
    v = [s for s in _probe(out)["streams"] if s["codec_type"] == "video"][0]
    assert v["width"] == 256 and v["height"] > 128  # two faces side by side, curve strip below
    from PIL import Image
    img = np.asarray(Image.open(png))
    assert img.shape[0] > 200 and img.shape[1] > 600 and img[..., :3].std() > 10


@pytest.mark.parametrize("bad,needle", [
    ("abc", "line 3"),  # (a `nan` cell is a dropped frame: interpolated, with a warning)
    ("2.5", "outside 0..1"),
    ("0.5,0.5", "line 3: 64 cells"),
])
def test_cli_bad_csv_names_the_line_and_writes_nothing(take, bad, needle):
    d, csv, _, _ = take
    lines = csv.read_text().splitlines()
    cells = lines[2].split(",")
    cells[2 + index("jawOpen")] = bad
    lines[2] = ",".join(cells)
    broken = d / f"broken_{bad}.csv"
    broken.write_text("\n".join(lines) + "\n")
    out = d / f"broken_{bad}.mp4"
    r = _dubtool("render", broken, "-o", out)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_bad_options_are_input_errors():
    with pytest.raises(InputError):
        RenderOptions(width=101, height=100)
    from dubtool.render import parse_color, parse_size
    with pytest.raises(InputError):
        parse_size("big")
    with pytest.raises(InputError):
        parse_color("#12345")
    assert parse_color("#ff0000") == (1.0, 0.0, 0.0)


def _mouth_window(opts):
    from dubtool.render import camera_matrix
    from dubtool.rig import load_rig
    q = camera_matrix(opts) @ np.append(load_rig().neutral[13], 1.0)
    x, y = int((q[0] / q[3] + 1) / 2 * opts.width), int((q[1] / q[3] + 1) / 2 * opts.height)
    return slice(y - 15, y + 30), slice(x - 45, x + 45)


def _teeth(img):  # ivory pixels: bright and unsaturated (skin is orange, the cavity dark, the tongue red)
    x = img.astype(int)
    hi, lo = x.max(-1), x.min(-1)
    return int(((hi > 110) & (hi - lo < 0.2 * hi)).sum())


def test_teeth_show_when_the_jaw_opens_and_not_when_the_lips_are_closed():
    opts = RenderOptions(width=640, height=480)
    frames = [pose(), pose(jawOpen=0.07, mouthPressLeft=0.3, mouthPressRight=0.3, mouthClose=0.3),
              pose(jawOpen=0.3), pose(jawOpen=0.7), pose(jawOpen=0.3, tongueOut=1.0)]
    rest, bilabial, jaw3, jaw7, tongue = (img[_mouth_window(opts)] for img in
                                          render_frames(Animation(np.stack(frames), 30.0), opts))
    assert _teeth(rest) == 0 and _teeth(bilabial) == 0
    assert _teeth(jaw3) > 60 and _teeth(jaw7) > 60

    def red(img):  # tongue pixels: red, not dark
        x = img.astype(int)
        return int(((x[..., 0] > 100) & (x[..., 1] < 0.6 * x[..., 0])).sum())
    assert red(tongue) > red(jaw3) + 200  # tongueOut brings the tongue forward into the opening


@pytest.mark.parametrize("gaze,side", [
    (dict(LeftEyeYaw=0.4, RightEyeYaw=0.4), +1),            # her left = image right
    (dict(LeftEyeYaw=-0.4, RightEyeYaw=-0.4), -1),
    (dict(eyeLookOutLeft=0.8, eyeLookInRight=0.8), +1),     # no eye rotations: the eyeLook shapes
    (dict(eyeLookInLeft=0.8, eyeLookOutRight=0.8), -1),
])
def test_irises_move_toward_the_image_side_the_gaze_points_to(gaze, side):
    opts = RenderOptions(width=512, height=512)
    neutral, turned = render_frames(Animation(np.stack([pose(), pose(**gaze)]), 30.0), opts)
    band = slice(int(512 * 0.28), int(512 * 0.42))

    def pupils_x(img):  # mean x of the pupils in each half of the image
        dark = img[band].max(-1) < 35
        ys, xs = np.nonzero(dark)
        return np.array([xs[xs < 256].mean(), xs[xs >= 256].mean()])
    shift = pupils_x(turned) - pupils_x(neutral)
    assert np.all(side * shift > 2), shift


def test_gaze_down_moves_the_pupils_down():
    opts = RenderOptions(width=512, height=512)
    neutral, down = render_frames(Animation(np.stack([pose(), pose(LeftEyePitch=0.3, RightEyePitch=0.3)]), 30.0), opts)
    band = slice(int(512 * 0.2), int(512 * 0.5))
    ys = [np.nonzero(img[band].max(-1) < 35)[0].mean() for img in (neutral, down)]
    assert ys[1] > ys[0] + 2


def test_cli_compare_with_a_video_shows_its_frames_beside_the_dub(take):
    d, csv, _, _ = take
    video = d / "source.mp4"  # a red 1.5 s source video, 4:3
    r = subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=160x120:r=30:d=1.5",
                        "-pix_fmt", "yuv420p", str(video)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = d / "cmp_video.mp4"
    r = _dubtool("render", csv, "--compare", video, "-o", out, "--size", "128x128")
    assert r.returncode == 0, r.stderr
    v = [s for s in _probe(out)["streams"] if s["codec_type"] == "video"][0]
    assert v["width"] == 256 and v["height"] > 128  # video | dub, curve strip below
    frame = np.frombuffer(subprocess.run(["ffmpeg", "-loglevel", "error", "-ss", "0.5", "-i", str(out), "-frames:v", "1",
                                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True).stdout,
                          np.uint8).reshape(v["height"], 256, 3)
    left = frame[30:98, 10:118].astype(int)  # inside the letterboxed video (aspect kept: 128x96)
    assert left[..., 0].mean() > 180 and left[..., 1].mean() < 80  # the source's red frames
    assert np.abs(frame[30:98, 138:246].astype(int) - [235, 0, 0]).sum(-1).min() > 60  # the face, not red


def test_face_crop_frames_the_tracked_face():
    from dubtool.render import face_crop
    lm = np.zeros((3, 478, 3))
    lm[..., 0] = np.linspace(0.4, 0.6, 478)  # a face box x 0.4..0.6, y 0.3..0.5 of a 1000x800 image
    lm[..., 1] = np.linspace(0.3, 0.5, 478)
    x, y, w, h = face_crop(lm, np.ones(3, bool), 1000, 800, aspect=1.0)
    assert h == pytest.approx(160 / 0.77, abs=2) and w == pytest.approx(h, abs=2)
    assert x + w / 2 == pytest.approx(500, abs=2) and y + h / 2 == pytest.approx(320, abs=2)
    x, y, w, h = face_crop(lm * [1, 3, 1], np.ones(3, bool), 1000, 800, aspect=1.0)  # too tall: clamped inside
    assert 0 <= y and y + h <= 800 and 0 <= x and x + w <= 1000
    assert face_crop(lm, np.zeros(3, bool), 1000, 800, 1.0) is None


def test_cli_compare_with_a_perf_shows_its_source_video_cropped_to_the_face(take):
    """A .perf remembers the video it was tracked on: --compare shows it (cropped to the tracked face
    box) | the source on the rig | the dub."""
    from dubtool.performance import Performance, save_performance
    d, csv, _, _ = take
    video = d / "actor.mp4"  # blue frame, a green "face" at x 120..200, y 80..160 of 320x240
    r = subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "color=c=blue:s=320x240:r=30:d=1.5,drawbox=x=120:y=80:w=80:h=80:color=green:t=fill",
                        "-pix_fmt", "yuv420p", str(video)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n = 45
    lm = np.zeros((n, 478, 3), np.float32)
    lm[..., 0] = np.linspace(120, 200, 478) / 320
    lm[..., 1] = np.linspace(80, 160, 478) / 240
    perf = Performance(lm, lm.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                       Animation(np.zeros((n, 61), np.float32), 30.0), np.ones(n, bool), np.ones(n, np.float32),
                       None, {"source": str(video), "width": 320, "height": 240})
    save_performance(perf, d / "actor.perf")
    out = d / "cmp_perf.mp4"
    r = _dubtool("render", csv, "--compare", d / "actor.perf", "-o", out, "--size", "128x128")
    assert r.returncode == 0, r.stderr
    v = [s for s in _probe(out)["streams"] if s["codec_type"] == "video"][0]
    assert v["width"] == 384  # video | source render | dub
    frame = np.frombuffer(subprocess.run(["ffmpeg", "-loglevel", "error", "-ss", "0.5", "-i", str(out), "-frames:v", "1",
                                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True).stdout,
                          np.uint8).reshape(v["height"], 384, 3).astype(int)
    face = frame[44:84, 44:84]  # centre of the video panel: the green face box, enlarged by the crop
    assert face[..., 1].mean() > 100 and face[..., 2].mean() < 60
    green_cols = (frame[64, :128, 1] > 100).sum()
    assert 80 < green_cols < 120  # the 80 px face box fills 0.77 of the 128 px panel (~99 px)


@pytest.mark.parametrize("channels", [dict(jawOpen=1.0), dict(jawOpen=0.5, jawLeft=0.8), dict(jawForward=1.0),
                                      dict(jawOpen=0.4, mouthFunnel=0.8, mouthSmileLeft=0.5)])
def test_lower_teeth_follow_the_rigs_jaw(channels):
    """The renderer's fast jaw model moves the lower teeth as the exact rigid fit of the posed chin
    does (within 0.5 mm), and jawOpen drops them."""
    from dubtool.faceparts import JawMotion, jaw_transform, mouth_parts
    from dubtool.rig import load_rig
    rig = load_rig()
    v = pose(**channels)
    fast, exact = JawMotion(rig.neutral, rig.deltas).transform(v), jaw_transform(rig.neutral, rig.pose(v))
    teeth = mouth_parts(rig.neutral).lower_teeth[0]
    a, b = (teeth @ m[:3, :3].T + m[:3, 3] for m in (fast, exact))
    assert np.abs(a - b).max() < 0.05
    if "jawOpen" in channels:
        assert (b[:, 1] - teeth[:, 1]).mean() < -0.3 * channels["jawOpen"]  # the rig's chin drops them
