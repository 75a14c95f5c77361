"""`dubtool setup-models`: install the face-tracker bundle into the local model cache."""

from __future__ import annotations

from typing import Optional

import typer

from ..cli import app


@app.command("setup-models")
def setup_models(
    from_file: Optional[str] = typer.Option(None, "--from", help="Install this face_landmarker.task instead of fetching it."),
) -> None:
    """Install MediaPipe's face_landmarker.task (checked by sha256) into the model cache."""
    from ..assets import setup_face_landmarker

    path = setup_face_landmarker(from_file)
    print(f"face tracker model: {path}")
