"""`dubtool corpus`: build the generator's training corpus alone (CPU: espeak-ng, real prompts,
pocketsphinx alignment), so training can run later on a machine that has none of those."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli import app, stderr_console
from . import JSON_OPTION, QUIET_OPTION, emit, show_progress


@app.command()
def corpus(
    config: Optional[Path] = typer.Option(None, "--config", help="Training config whose [corpus] recipe to build (JSON; default: configs/flow_v5.json)."),
    out: Path = typer.Option(Path("build/corpus"), "--out", "-o", help="Folder for corpus.npz and clips.json."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (1..64)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when --out already holds a corpus."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Build the training corpus that `dubtool train --corpus DIR` reads (deterministic for a config)."""
    from ..assets import REPO_ROOT
    from ..corpus import build_corpus, summary, load_corpus
    from ..errors import InputError
    from ..train import load_config

    if not 1 <= workers <= 64:
        raise InputError(f"--workers must be in 1..64, got {workers}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out must be a folder, got a file: {out}")
    if (out / "corpus.npz").is_file() and not force:
        c = load_corpus(out)
        emit(as_json, {"corpus": str(out), "clips": len(c.clips), "minutes": round(c.duration_s / 60, 2), "built": False},
             [f"corpus already built: {out} ({len(c.clips)} clips, {c.duration_s / 60:.1f} min); --force rebuilds it"])
        return
    cfg = load_config(config or REPO_ROOT / "configs" / "flow_v5.json")
    c = build_corpus(cfg.corpus, out, workers=workers, progress=show_progress(quiet) and not as_json,
                     log=lambda m: stderr_console().print(m, highlight=False, markup=False))
    by_split = summary(c)["by_split"]
    emit(as_json, {"corpus": str(out), "clips": len(c.clips), "minutes": round(c.duration_s / 60, 2), "built": True,
                   "by_split": by_split},
         ["splits: " + ", ".join(f"{k} {v['clips']} clips / {v['minutes']:.1f} min" for k, v in by_split.items())])
