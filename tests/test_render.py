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
