"""`dubtool export`: an animation as binary FBX and/or glTF for DCC tools and engines."""

from __future__ import annotations

from typing import Optional

import typer

from ..cli import app
from . import JSON_OPTION, QUIET_OPTION, emit


@app.command(options_metavar="(--fbx OUT.fbx | --gltf OUT.glb) [OPTIONS]")
def export(
    animation: str = typer.Argument(..., metavar="ANIMATION", help="Live Link Face CSV or .perf file."),
    fbx: Optional[str] = typer.Option(None, "--fbx", help="Write a binary FBX 7.4 (mesh + 52 ARKit blendshapes + curves)."),
    gltf: Optional[str] = typer.Option(None, "--gltf", help="Write glTF 2.0 (.glb binary or .gltf JSON)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Resample the curves to this frame rate first."),
    take: str = typer.Option("dub", "--take", help="Animation take (stack) name."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Export ARKit curves on the face rig: FBX for Maya/Blender/Unreal, glTF for engines and the web."""
    from ..fileio import require_inputs

    require_inputs((animation, "animation file"))  # before the stage's imports (numpy)
    from ..errors import InputError
    from ..export import export_animation, load_animation
    from ..fileio import require_distinct_outputs, require_writable

    if not fbx and not gltf:
        raise InputError("nothing to write: give --fbx OUT.fbx and/or --gltf OUT.glb")
    require_distinct_outputs({"ANIMATION": animation}, {"--fbx": fbx, "--gltf": gltf})
    require_writable(fbx, gltf)
    if not take.strip():
        raise InputError("--take must be a non-empty name")
    anim = load_animation(animation)
    if fps is not None:
        if not 0 < fps <= 240:
            raise InputError(f"--fps must be in 0..240 (above 0), got {fps:g}")
        anim = anim.resampled(fps)
    paths = [str(p) for p in export_animation(anim, fbx=fbx, gltf=gltf, take_name=take)]
    emit(as_json, {"outputs": paths, "frames": anim.num_frames, "fps": anim.fps},
         [f"wrote {path} ({anim.num_frames} frames at {anim.fps:g} fps)" for path in paths])
