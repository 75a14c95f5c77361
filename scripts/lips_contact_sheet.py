"""Contact sheet of generated mouths beside real ones: for moments picked by the REAL mouth (widest open,
sealed during speech, in between), the rig posed with what the flow model generated from the clip's own
audio (no transcript), with the real speaker's tracked lip contours (blue) and the generated lip contours
(red) drawn over it, in the same canonical head frame (cm).

    .venv/bin/python scripts/lips_contact_sheet.py CLIP.mp4 [CLIP.mp4 ...] -o docs/lips_contact_sheet.png \
        [--model-path PATH] [--cache build/realclips] [--with-frames]

The sheet for docs/ draws only tracked contours: ../shared/realclips must not be committed, nor frames of
them. --with-frames adds the video frame under each panel, for a local look only (never commit that one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

from dubtool import metrics, reference  # noqa: E402
from dubtool.arkit import NUM_BLENDSHAPES  # noqa: E402
from dubtool.fileio import atomic_path  # noqa: E402
from dubtool.rig import draw_face, load_rig  # noqa: E402

# MediaPipe face-mesh lip loops (the rig shares the topology).
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
STABLE = (1, 4, 6, 33, 133, 263, 362, 168)  # nose and eye corners: where the two faces are aligned


def short_name(stem: str) -> str:
    for a, b in (("videoretalking_", "vr "), ("pcavs_", ""), ("Audio_Source_", "A"), ("Pose_Source_", "P"),
                 ("Input_", "I"), ("_mouth_with_audio", "m")):
        stem = stem.replace(a, b)
    return stem


def pick_moments(real_gap: np.ndarray, speech: np.ndarray, per_kind: int) -> list[tuple[str, int]]:
    """(kind, frame) for the widest-open, most-closed and median real mouths during speech."""
    idx = np.flatnonzero(speech)
    if len(idx) < 3 * per_kind:
        return []
    order = idx[np.argsort(real_gap[idx])]
    mid = len(order) // 2
    picks = [("open", int(f)) for f in order[::-1][:per_kind]]
    picks += [("closed", int(f)) for f in order[:per_kind]]
    picks += [("mid", int(f)) for f in order[mid - per_kind // 2: mid - per_kind // 2 + per_kind]]
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--cache", default=str(ROOT / "build" / "realclips"))
    ap.add_argument("--with-frames", action="store_true", help="add the video frames (local look only)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import bench_reallips as bench
    from dubtool.localize import get_generator

    generator = get_generator(args.model_path, "cpu")
    rig = load_rig()
    panels = []
    for clip in args.clips:
        perf = bench.load_or_extract(clip, Path(args.cache))
        gen = bench.generate_own_audio(perf, generator)
        ref = reference.reference_from_performance(perf)
        gv, _, real_gap = reference.common_frames(gen, ref)
        n = len(gv)
        speech = reference.speech_mask(perf.audio.samples, perf.audio.sample_rate, gen.fps, n)
        gen_gap = metrics.lip_gap(gv, rig)
        canon_t = np.arange(len(perf.landmarks_canonical)) / perf.fps
        for kind, f in pick_moments(real_gap, speech, 1):
            t = f / gen.fps
            src = int(np.argmin(np.abs(canon_t - t)))
            panels.append(dict(clip=clip.stem, kind=kind, t=t, real=perf.landmarks_canonical[src, :468],
                               gen=rig.pose(gv[f, :NUM_BLENDSHAPES]), real_gap=real_gap[f], gen_gap=gen_gap[f],
                               video=clip, src_frame=src, perf=perf))
    order = {"open": 0, "mid": 1, "closed": 2}
    panels.sort(key=lambda p: (order[p["kind"]], p["clip"]))
    cols = len(args.clips)
    rows = 3 * (2 if args.with_frames else 1)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    counts = {"open": 0, "mid": 0, "closed": 0}
    for p in panels:
        r = order[p["kind"]] * (2 if args.with_frames else 1)
        c = counts[p["kind"]]
        counts[p["kind"]] += 1
        ax = axes[r, c]
        draw_face(ax, rig, p["gen"], None, yaw=0.0)
        shift = p["gen"][list(STABLE)].mean(0) - p["real"][list(STABLE)].mean(0)
        for loop, colour in ((OUTER_LIPS, "tab:blue"), (INNER_LIPS, "tab:blue")):
            pts = p["real"][list(loop) + [loop[0]]] + shift
            ax.plot(pts[:, 0], pts[:, 1], color=colour, lw=1.0)
        for loop in (OUTER_LIPS, INNER_LIPS):
            pts = p["gen"][list(loop) + [loop[0]]]
            ax.plot(pts[:, 0], pts[:, 1], color="tab:red", lw=0.8, ls="--")
        ax.set_xlim(-4.2, 4.2)
        ax.set_ylim(-6.8, -1.4)
        ax.set_title(f"{short_name(p['clip'])} {p['t']:.1f}s\nreal {10 * p['real_gap']:.0f} mm / gen {10 * p['gen_gap']:.0f} mm",
                     fontsize=6)
    if args.with_frames:
        _add_frames(axes, panels, order)
    for kind, r in order.items():
        axes[r * (2 if args.with_frames else 1), 0].text(-4.1, -1.5, kind, fontsize=7, va="top", weight="bold")
    fig.suptitle("generated mouth (rig, red dashed lips) vs the real speaker's tracked lips (blue), same instant; "
                 "moments picked by the real mouth", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    with atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    print(f"lips contact sheet: {args.out} ({len(panels)} panels)")


def _add_frames(axes, panels, order) -> None:
    """Video frames under each panel (local use only: the real clips' frames are never committed)."""
    from rig_video_sheet import face_crop

    from dubtool.video import iter_frames

    counts = {"open": 0, "mid": 0, "closed": 0}
    for p in panels:
        r, c = order[p["kind"]] * 2 + 1, counts[p["kind"]]
        counts[p["kind"]] += 1
        for i, frame in enumerate(iter_frames(str(p["video"]), fps=p["perf"].fps)):
            if i == p["src_frame"]:
                axes[r, c].imshow(face_crop(frame, p["perf"].landmarks_image[i]))
                break


if __name__ == "__main__":
    main()
