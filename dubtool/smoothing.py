"""One Euro filter (Casiez, Roussel & Vogel, CHI 2012), vectorised over channels.

A first-order low-pass whose cutoff rises with the signal's speed: at rest the cutoff is
`min_cutoff` Hz (jitter removed), during fast motion it grows by `beta` * |speed| so the filter
follows without lag. Pure numpy; one pass over time, every channel at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroConfig:
    """min_cutoff: cutoff (Hz) at rest; beta: cutoff increase per unit/s of speed;
    d_cutoff: cutoff (Hz) of the speed estimate itself."""

    min_cutoff: float = 1.5
    beta: float = 0.5
    d_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, rate_hz: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * np.pi * cutoff)
    te = 1.0 / rate_hz
    return 1.0 / (1.0 + tau / te)


def one_euro(x: np.ndarray, rate_hz: float, config: OneEuroConfig = OneEuroConfig(),
             scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Filter `x` (T, ...) sampled at `rate_hz` along axis 0; returns float32 of the same shape.

    `scale` (broadcast to one frame) divides the speed before `beta` applies, so channels in
    different units (pixels, radians, 0..1 weights) can share one `beta`.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        return x.astype(np.float32)
    flat = x.reshape(x.shape[0], -1)
    s = np.broadcast_to(np.asarray(scale, np.float64), x.shape[1:]).reshape(-1)
    out = np.empty_like(flat)
    a_d = _alpha(config.d_cutoff, rate_hz)
    prev = flat[0].copy()
    dprev = np.zeros_like(prev)
    out[0] = prev
    for t in range(1, flat.shape[0]):
        dx = (flat[t] - prev) * rate_hz
        dprev = dprev + a_d * (dx - dprev)
        cutoff = config.min_cutoff + config.beta * np.abs(dprev) / s
        a = _alpha(cutoff, rate_hz)
        prev = prev + a * (flat[t] - prev)
        out[t] = prev
    return out.reshape(x.shape).astype(np.float32)
