"""One Euro filter (Casiez, Roussel & Vogel, CHI 2012), vectorised over channels.

A first-order low-pass whose cutoff rises with the signal's speed: at rest the cutoff is
`min_cutoff` Hz (jitter removed), during fast motion it grows by `beta` * |speed| so the filter
follows with little lag. Pure numpy; one pass over time, every channel at once. Offline tracks use
`one_euro_zero_phase` (forward and reversed passes averaged), which removes the remaining lag.
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


def _frames(x, out, scale):
    """(out, x as (T, values), out as (T, values), per-value scale); `out` is allocated (float32) when None.
    The flat views are None for an empty take."""
    x = np.asarray(x)
    if out is None:
        out = np.empty(x.shape, np.float32)
    if x.shape[0] == 0:
        return out, None, None, None
    s = np.broadcast_to(np.asarray(scale, np.float64), x.shape[1:]).reshape(-1)
    return out, x.reshape(x.shape[0], -1), out.reshape(out.shape[0], -1), s


def one_euro(x: np.ndarray, rate_hz: float, config: OneEuroConfig = OneEuroConfig(),
             scale: np.ndarray | float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """Filter `x` (T, ...) sampled at `rate_hz` along axis 0; returns float32 of the same shape.

    `scale` (broadcast to one frame) divides the speed before `beta` applies, so channels in
    different units (pixels, radians, 0..1 weights) can share one `beta`. `out` may be `x` itself
    (float32) to filter in place; the state is float64, one frame at a time, so memory stays ~1x.
    """
    out, flat_in, flat_out, s = _frames(x, out, scale)
    if flat_in is None:
        return out
    _one_euro_steps(flat_in, flat_out, None, rate_hz, config, s)
    return out


def _one_euro_steps(flat_in: np.ndarray, flat_out: np.ndarray, state, rate_hz: float, config: OneEuroConfig,
                    s: np.ndarray):
    """One Euro over the frames of flat_in (T, values) into flat_out, continuing from `state` (the
    (prev, dprev) float64 the previous frames left; None: this is the take's first frame). Returns the
    state after the last frame, so a take filtered block by block is filtered exactly as in one go."""
    a_d = _alpha(config.d_cutoff, rate_hz)
    t0 = 0
    if state is None:
        prev = flat_in[0].astype(np.float64)
        dprev = np.zeros_like(prev)
        flat_out[0] = prev
        t0 = 1
    else:
        prev, dprev = state
    for t in range(t0, flat_in.shape[0]):
        cur = flat_in[t].astype(np.float64)
        dprev += a_d * ((cur - prev) * rate_hz - dprev)
        a = _alpha(config.min_cutoff + config.beta * np.abs(dprev) / s, rate_hz)
        prev += a * (cur - prev)
        flat_out[t] = prev
    return prev, dprev


def one_euro_zero_phase(x: np.ndarray, rate_hz: float, config: OneEuroConfig = OneEuroConfig(),
                        scale: np.ndarray | float = 1.0, out: np.ndarray | None = None,
                        block_columns: int = 512) -> np.ndarray:
    """Offline One Euro without lag: the mean of a forward pass and a time-reversed pass. The
    forward pass lags and the reversed one leads by the same amount, so they cancel (like filtfilt).

    Values filter independently, so a wide frame (478 landmarks) runs in blocks of `block_columns`:
    the reversed pass needs a buffer of one block, not a second copy of the whole take."""
    out, flat_in, flat_out, s = _frames(x, out, scale)
    if flat_in is None:
        return out
    if not np.shares_memory(flat_out, out):
        raise ValueError("one_euro_zero_phase: `out` must be a contiguous float32 array")
    for c0 in range(0, flat_in.shape[1], block_columns):
        cols = slice(c0, c0 + block_columns)
        backward = one_euro(flat_in[::-1, cols], rate_hz, config, s[cols])[::-1]
        block = one_euro(flat_in[:, cols], rate_hz, config, s[cols], out=flat_out[:, cols])
        block += backward
        block *= 0.5
    return out


def one_euro_zero_phase_blocks(read, write, n: int, frame_shape: tuple[int, ...], rate_hz: float,
                               config: OneEuroConfig = OneEuroConfig(), scale: np.ndarray | float = 1.0,
                               block_frames: int = 1024) -> None:
    """one_euro_zero_phase of a take too long to hold, read and written by ranges of frames: `read(a, b)`
    gives frames a..b-1 (b - a, *frame_shape), `write(a, values)` stores float32 results from frame a
    (it may write where `read` reads: frame a is read before it is written). The forward pass goes to
    a temporary file; the reversed pass reads it back block by block, last block first, and writes the
    mean. Memory: a few blocks of frames. Equal to one_euro_zero_phase value for value (the same float64
    recursion per value, the same float32 mean; tests/test_streaming.py)."""
    from .diskarray import DiskArray

    if n == 0:
        return
    width = int(np.prod(frame_shape))
    s = np.broadcast_to(np.asarray(scale, np.float64), frame_shape).reshape(-1)
    forward = DiskArray((n, width), np.float32, prefix="dubtool-smooth-")
    try:
        state = None
        for a in range(0, n, block_frames):
            x = np.asarray(read(a, min(n, a + block_frames))).reshape(-1, width)
            out = np.empty(x.shape, np.float32)
            state = _one_euro_steps(x, out, state, rate_hz, config, s)
            forward.write(a, out)
        state = None
        for a in reversed(range(0, n, block_frames)):
            b = min(n, a + block_frames)
            x = np.asarray(read(a, b)).reshape(-1, width)[::-1]
            back = np.empty(x.shape, np.float32)
            state = _one_euro_steps(x, back, state, rate_hz, config, s)
            block = forward.read(a, b)
            block += back[::-1]
            block *= 0.5
            write(a, block.reshape((b - a,) + tuple(frame_shape)))
    finally:
        forward.close()
