"""Glue shared by `dubtool render` and `dubtool export`: read an animation file (Live Link CSV or
.perf), get the face rig, and write the requested interchange files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arkit import BLENDSHAPE_NAMES, Animation
from .errors import InputError
from .fileio import require_file


def load_animation(path: str | os.PathLike) -> Animation:
    """Animation from a Live Link Face CSV or a dubtool .perf file (chosen by extension)."""
    p = require_file(path, "animation file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        from .livelink import read_csv

        return read_csv(p)
    if suffix == ".perf":
        from .performance import load_performance

        return load_performance(p).animation
    raise InputError(f"{p}: unknown animation format {suffix or '(no extension)'}; give a Live Link .csv or a .perf file")


def _stand_in_rig():
    """TEMPORARY until models/face_rig.npz is committed: the canonical mesh with crude jawOpen and
    blink shapes, as a rig.FaceRig."""
    from .rig import INNER_LIPS, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR, FaceRig, canonical_mesh

    neutral, uvs, tri = canonical_mesh()
    deltas = np.zeros((52, len(neutral), 3), np.float32)
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    lower = neutral[:, 1] < neutral[14, 1] + 0.3
    deltas[jaw, lower, 1] = -2.0 * np.clip((neutral[14, 1] + 0.3 - neutral[lower, 1]) / 2.0, 0, 1)
    for name, up, low in (("eyeBlinkLeft", [386, 385, 387, 384, 388], 374),
                          ("eyeBlinkRight", [159, 158, 160, 157, 161], 145)):
        deltas[BLENDSHAPE_NAMES.index(name), up, 1] = neutral[low, 1] - neutral[up, 1]
    opening = np.zeros(len(tri), bool)
    for loop in (INNER_LIPS, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR):
        opening |= np.isin(tri, loop).all(1)
    return FaceRig(neutral, deltas, tri.astype(np.int32), uvs, BLENDSHAPE_NAMES, np.arange(10), opening)


def load_face_rig():
    """The face rig (dubtool.rig.load_rig)."""
    from .errors import ModelError
    from .rig import load_rig

    try:
        return load_rig()
    except ModelError:
        return _stand_in_rig()
