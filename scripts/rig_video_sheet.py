"""Real-video comparison sheet: frames of a tracked video beside the face rig posed with the frame's
tracked ARKit scores (optionally beside an older rig too), to judge by eye whether the rig's mouth
opens like the face in the video.

    .venv/bin/python scripts/rig_video_sheet.py VIDEO PERF -o docs/rig_video_comparison.png \
        [--old-rig old_face_rig.npz] [--frames 6]

PERF is `dubtool extract VIDEO -o PERF`. Frames are picked at spread-out jawOpen values (lowest to
highest). The rig is drawn frontal (head rotation removed), the video crop is centred on the face.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dubtool.arkit import index  # noqa: E402
from dubtool.fileio import atomic_path  # noqa: E402
from dubtool.performance import load_performance  # noqa: E402
from dubtool.rig import draw_face, load_rig, load_rig_file  # noqa: E402
from dubtool.video import iter_frames  # noqa: E402


def pick_frames(jaw: np.ndarray, found: np.ndarray, count: int) -> list[int]:
    """Frame indices at evenly spaced jawOpen quantiles among tracked frames."""
    ok = np.flatnonzero(found)
    order = ok[np.argsort(jaw[ok])]
    return sorted({int(order[round(q * (len(order) - 1))]) for q in np.linspace(0.02, 1.0, count)})


def face_crop(frame: np.ndarray, landmarks_image: np.ndarray) -> np.ndarray:
    """Square crop around the tracked face (landmarks normalised to the image), a little margin."""
    h, w = frame.shape[:2]
    xy = landmarks_image[:, :2] * np.array([w, h])
    lo, hi = xy.min(0), xy.max(0)
    c, half = (lo + hi) / 2, 0.62 * (hi - lo).max()
    x0, y0 = int(max(c[0] - half, 0)), int(max(c[1] - half, 0))
    x1, y1 = int(min(c[0] + half, w)), int(min(c[1] + half, h))
    return frame[y0:y1, x0:x1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("perf")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--old-rig", help="also draw this rig (e.g. the previous models/face_rig.npz)")
    ap.add_argument("--frames", type=int, default=6)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perf = load_performance(args.perf)
    values = perf.animation.values
    jaw = values[:, index("jawOpen")]
    picks = pick_frames(jaw, perf.face_found, args.frames)
    frames = {}
    for i, frame in enumerate(iter_frames(args.video, fps=perf.fps)):
        if i in picks:
            frames[i] = face_crop(frame, perf.landmarks_image[i])
        if i >= picks[-1]:
            break
    rigs = [("fitted rig", load_rig())]
    if args.old_rig:
        rigs.append(("previous rig", load_rig_file(args.old_rig)))
    rows = 1 + len(rigs)
    fig, axes = plt.subplots(rows, len(picks), figsize=(1.9 * len(picks), 2.0 * rows + 0.4), squeeze=False)
    for col, i in enumerate(picks):
        ax = axes[0, col]
        ax.imshow(frames[i])
        ax.axis("off")
        ax.set_title(f"frame {i}  jawOpen {jaw[i]:.2f}", fontsize=7)
        for row, (label, rig) in enumerate(rigs, start=1):
            v = rig.pose(values[i, :52])
            ax = axes[row, col]
            draw_face(ax, rig, v, np.linalg.norm(v - rig.neutral, axis=1), yaw=0.0)
            ax.set_xlim(-7.5, 7.5)
            ax.set_ylim(-10.0, 5.0)
            if col == 0:
                ax.text(-7.4, 4.6, label, fontsize=7, va="top")
    fig.suptitle(f"{Path(args.video).name}: video frames (top) and the rig posed with their tracked scores",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"comparison sheet: {args.out} (frames {picks})")


if __name__ == "__main__":
    main()
