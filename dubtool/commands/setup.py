"""`dubtool setup-models`: install the face-tracker bundle into the local model cache."""

from __future__ import annotations

from typing import Optional

import typer

from ..cli import app
from . import JSON_OPTION, QUIET_OPTION, emit


@app.command("setup-models")
def setup_models(
    from_file: Optional[str] = typer.Option(None, "--from", help="Install this face_landmarker.task instead of fetching it."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Install MediaPipe's face_landmarker.task (checked by sha256) into the model cache."""
    from ..assets import setup_face_landmarker

    path = setup_face_landmarker(from_file)
    emit(as_json, {"face_landmarker": str(path)}, [f"face tracker model: {path}"])
