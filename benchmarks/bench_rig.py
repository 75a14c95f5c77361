"""Speed of the face rig: pose and solve on typical clip lengths. One line per figure (median of runs).

    .venv/bin/python benchmarks/bench_rig.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dubtool.rig import head_rotation_matrix, load_rig, vertex_normals  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)


def main() -> None:
    t0 = time.perf_counter()
    load_rig.cache_clear()
    rig = load_rig()
    print(f"load_rig (cold): {1000 * (time.perf_counter() - t0):.1f} ms")
    rng = np.random.default_rng(0)
    w = np.zeros((1800, 61), np.float32)
    for t in range(1800):
        k = rng.choice(52, rng.integers(3, 7), replace=False)
        w[t, k] = rng.uniform(0.2, 1.0, len(k))
    print(f"pose 1800 frames: {1000 * timed(lambda: rig.pose(w)).median:.1f} ms")
    verts = rig.pose(w[:1000])
    rot = head_rotation_matrix(rng.normal(0, .3, 1000), rng.normal(0, .2, 1000), rng.normal(0, .1, 1000))
    tracked = (np.einsum("tdc,tvc->tvd", rot, verts) * 1.1 + 2.0).astype(np.float32)
    print(f"solve 1000 frames (align + bounded LS): {timed(lambda: rig.solve(tracked), 3).median:.2f} s")
    err = np.abs(rig.solve(tracked) - w[:1000, :52]).mean()
    print(f"solve round-trip mean |weight error| (1000 random sparse frames, similarity-transformed): {err:.4f}")
    print(f"vertex_normals 1800 frames: {1000 * timed(lambda: vertex_normals(rig.pose(w), rig.triangles), 3).median:.0f} ms")


if __name__ == "__main__":
    main()
