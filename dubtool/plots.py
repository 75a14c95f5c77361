"""Curve plots of animation channels: a PNG for `--curves-png`, and the moving strip under the
faces in `dubtool render --compare` (drawn once with matplotlib, then cropped per frame)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arkit import Animation, index
from .errors import InputError
from .fileio import atomic_path

DEFAULT_CHANNELS = ("jawOpen", "browInnerUp", "eyeBlinkLeft")
COLOURS = ("#e8744f", "#5fb0e8", "#9be36a", "#e8d35f", "#c58be8", "#e85f9c", "#5fe8c8", "#b0b0b0")


def parse_channels(text: str | None) -> tuple[str, ...]:
    """'jawOpen,browInnerUp' -> canonical names (unknown names raise an InputError)."""
    if not text:
        return DEFAULT_CHANNELS
    from .arkit import CHANNEL_NAMES

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InputError("--channels is empty; give names like jawOpen,browInnerUp")
    return tuple(CHANNEL_NAMES[index(n)] for n in names)


def _figure(width_px: int, height_px: int, dpi: int = 100):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)


def _to_rgb(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_curves_png(curves: dict[str, Animation], channels, out_png: str | os.PathLike, title: str | None = None,
                    phrases=()) -> Path:
    """One panel per channel, every animation in `curves` (label -> Animation) overlaid; written atomically."""
    channels = tuple(channels)
    fig = _figure(1200, 160 + 150 * len(channels))
    axes = fig.subplots(len(channels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, ch in zip(axes, channels):
        c = index(ch)
        for k, (label, anim) in enumerate(curves.items()):
            ax.plot(anim.times_s, anim.values[:, c], color=COLOURS[k % len(COLOURS)], lw=1.3, label=label)
        for (a, b) in phrases:
            ax.axvspan(a, b, color="#888888", alpha=0.12, lw=0)
        ax.set_ylabel(ch, fontsize=9)
        ax.grid(alpha=0.3)
        if c < 52:
            ax.set_ylim(-0.03, 1.03)
    axes[-1].set_xlabel("time (s)")
    if len(curves) > 1:
        axes[0].legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out


class CurveStrip:
    """The strip under `--compare` faces: dub (solid) and time-mapped source (dashed) curves with
    the aligned phrases, a fixed legend on the left and a scrolling 8 s window with a centre cursor
    (or the whole take with a moving cursor when it is shorter)."""

    WINDOW_S = 8.0
    LEGEND_W = 130

    def __init__(self, dub: Animation, source_values: np.ndarray | None, channels, width: int, height: int, timemap=None):
        self.width, self.height = width, height
        self.duration = dub.duration_s
        plot_w = width - self.LEGEND_W
        self.scroll = self.duration > self.WINDOW_S
        self.px_per_s = plot_w / (self.WINDOW_S if self.scroll else self.duration)
        pad = plot_w / 2 if self.scroll else 0
        total_w = int(round(self.duration * self.px_per_s + 2 * pad))
        self.pad = pad
        self.plot_w = plot_w
        self.legend = self._legend(channels, height)
        self.image = self._curves(dub, source_values, channels, total_w, height, pad, timemap)

    def _legend(self, channels, height: int) -> np.ndarray:
        fig = _figure(self.LEGEND_W, height)
        fig.patch.set_facecolor("#1b1c20")
        n = len(channels) + 2
        for k, ch in enumerate(channels):
            fig.text(0.06, 1 - (k + 1) / (n + 1), ch, color=COLOURS[k % len(COLOURS)], fontsize=8, va="center")
        fig.text(0.06, 1 - (n - 1) / (n + 1), "— dub   -- source", color="#dddddd", fontsize=7, va="center")
        fig.text(0.06, 1 - n / (n + 1), "grey: phrases", color="#aaaaaa", fontsize=7, va="center")
        return _to_rgb(fig)

    def _curves(self, dub, source_values, channels, total_w, height, pad, timemap) -> np.ndarray:
        fig = _figure(total_w, height)
        fig.patch.set_facecolor("#1b1c20")
        ax = fig.add_axes((0, 0.04, 1, 0.92))
        ax.set_facecolor("#1b1c20")
        t = dub.times_s
        x0 = -pad / self.px_per_s
        ax.set_xlim(x0, x0 + total_w / self.px_per_s)
        ax.set_ylim(-0.05, 1.12)
        ax.axis("off")
        for k, ch in enumerate(channels):
            c = index(ch)
            col = COLOURS[k % len(COLOURS)]
            ax.plot(t, dub.values[:, c], color=col, lw=1.4)
            if source_values is not None:  # None: a video-only comparison has no source curves
                ax.plot(t, source_values[:, c], color=col, lw=1.0, ls="--", alpha=0.8)
        if timemap is not None:
            for p in timemap.phrases:
                ax.axvspan(p.dub_start_s, p.dub_end_s, ymin=0.0, ymax=1.0, color="#ffffff", alpha=0.07, lw=0)
                ax.text(p.dub_start_s, 1.08, f"src {p.source_start_s:.1f}-{p.source_end_s:.1f}s", color="#aaaaaa",
                        fontsize=6, va="center")
        for s in range(int(self.duration) + 1):
            ax.axvline(s, color="#555555", lw=0.5, ymax=0.05)
        return _to_rgb(fig)

    def frame(self, t_s: float) -> np.ndarray:
        """(height, width, 3) strip for time t with the cursor drawn."""
        out = np.empty((self.height, self.width, 3), np.uint8)
        out[:, : self.LEGEND_W] = self.legend[: self.height, : self.LEGEND_W]
        if self.scroll:
            left = int(round(t_s * self.px_per_s))
            view = self.image[:, left:left + self.plot_w]
            cursor = self.plot_w // 2
        else:
            view = self.image[:, : self.plot_w]
            cursor = min(self.plot_w - 1, int(round(t_s * self.px_per_s)))
        w = view.shape[1]
        out[:, self.LEGEND_W:self.LEGEND_W + w] = view[: self.height]
        out[:, self.LEGEND_W + w:] = 27
        x = self.LEGEND_W + cursor
        out[:, max(x - 1, 0):x + 1] = (255, 255, 255)
        return out
