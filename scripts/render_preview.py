"""Write docs/render_preview.png: the preview renderer on poses that show the mouth interior and the
gaze (rest, jawOpen 0.3 / 0.7, funnel, smile, /p/ closure, tongueOut, gaze left / down, head turn).

    python scripts/render_preview.py [OUT.png]
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dubtool.arkit import Animation, index
from dubtool.render import RenderOptions, render_frames


def pose(**channels) -> np.ndarray:
    v = np.zeros(61, np.float32)
    for k, x in channels.items():
        v[index(k)] = x
    return v


POSES = [
    ("rest", pose()),
    ("jawOpen 0.3", pose(jawOpen=0.3)),
    ("jawOpen 0.7", pose(jawOpen=0.7)),
    ("funnel (oo)", pose(jawOpen=0.2, mouthFunnel=0.8)),
    ("smile", pose(mouthSmileLeft=0.8, mouthSmileRight=0.8, jawOpen=0.1)),
    ("/p/ closure", pose(jawOpen=0.07, mouthPressLeft=0.3, mouthPressRight=0.3, mouthClose=0.3)),
    ("tongueOut", pose(jawOpen=0.4, tongueOut=1.0)),
    ("gaze her left", pose(LeftEyeYaw=0.4, RightEyeYaw=0.4)),
    ("gaze down", pose(LeftEyePitch=0.35, RightEyePitch=0.35)),
    ("head turn + jaw", pose(HeadYaw=0.5, jawOpen=0.6, LeftEyeYaw=-0.3, RightEyeYaw=-0.3)),
]


def main(out: str = "docs/render_preview.png", size: int = 256, columns: int = 5) -> None:
    # Rendered at 2x and halved (smoother edges), closer than the default framing.
    big = RenderOptions(width=2 * size, height=2 * size, zoom=1.5)  # forehead to chin: mouth and eyes read
    imgs = list(render_frames(Animation(np.stack([p for _, p in POSES]), 30.0), big))
    rows = (len(imgs) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * size, rows * size))
    for k, ((label, _), img) in enumerate(zip(POSES, imgs)):
        tile = Image.fromarray(img).resize((size, size), Image.LANCZOS)
        ImageDraw.Draw(tile).text((8, size - 18), label, fill=(230, 230, 230))
        sheet.paste(tile, ((k % columns) * size, (k // columns) * size))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:2])
