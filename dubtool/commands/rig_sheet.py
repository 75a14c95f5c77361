"""`dubtool rig-sheet`: a contact sheet PNG of the face rig's neutral and its 52 ARKit blendshapes."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..cli import app
from . import JSON_OPTION, QUIET_OPTION, emit


@app.command("rig-sheet")
def rig_sheet(
    out: str = typer.Option("rig_contact_sheet.png", "-o", "--out", help="PNG to write."),
    shape: Optional[List[str]] = typer.Option(None, "--shape", help="Only these blendshapes (repeatable), e.g. --shape jawOpen."),
    weight: float = typer.Option(1.0, "--weight", help="Weight each shape is shown at (0..1)."),
    region: str = typer.Option("face", "--region", help="face, or a close-up: mouth | eyes."),
    columns: int = typer.Option(8, "--columns", min=1, max=20, help="Panels per row."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Render the neutral face and each blendshape at full weight in a labelled grid."""
    from ..errors import InputError
    from ..fileio import require_writable
    from ..rig import contact_sheet

    if not out.lower().endswith(".png"):
        raise InputError(f"rig-sheet writes PNG; give an output ending in .png, not {out!r}")
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"--weight must be in 0..1, got {weight}")
    require_writable(out)
    path = contact_sheet(out, names=tuple(shape) if shape else None, weight=weight, columns=columns, region=region)
    emit(as_json, {"outputs": [str(path)]}, [f"contact sheet: {path}"])
