"""Glue shared by `dubtool render` and `dubtool export`: read an animation file (Live Link CSV or
.perf), get the face rig, and write the requested interchange files."""

from __future__ import annotations

import os
from pathlib import Path

from .arkit import Animation
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


def check_export_paths(fbx: str | os.PathLike | None, gltf: str | os.PathLike | None) -> None:
    """Refuse output names whose suffix does not match the format (before any work is done)."""
    if fbx is not None and Path(fbx).suffix.lower() != ".fbx":
        raise InputError(f"{fbx}: the FBX output must end in .fbx")
    if gltf is not None and Path(gltf).suffix.lower() not in (".glb", ".gltf"):
        raise InputError(f"{gltf}: the glTF output must end in .glb or .gltf")


def export_animation(anim: Animation, fbx: str | os.PathLike | None = None, gltf: str | os.PathLike | None = None,
                     take_name: str = "dub", rig=None) -> list[Path]:
    """Write the requested interchange files; returns their paths."""
    check_export_paths(fbx, gltf)
    if rig is None:
        from .rig import load_rig

        rig = load_rig()
    written = []
    if fbx is not None:
        from .fbx import write_fbx

        written.append(write_fbx(anim, fbx, rig, take_name))
    if gltf is not None:
        from .gltf import write_gltf

        written.append(write_gltf(anim, gltf, rig, take_name))
    return written
