"""`dubtool train`: train the flow generator from scratch (building the corpus first if missing; `dubtool corpus`
builds it alone)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ..cli import app, err_console
from . import JSON_OPTION, QUIET_OPTION, emit, show_progress


@app.command()
def train(
    config: Optional[str] = typer.Option(None, "--config", help="Training config (JSON; default: the shipped configs/flow_v4.json)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: str = typer.Option("runs/dubtool_flow_v4.pt", "--out", help="Checkpoint to write (pass models/dubtool_flow_v4.pt to replace the shipped one)."),
    corpus: str = typer.Option("build/corpus", "--corpus", help="Corpus folder (built here when missing; see `dubtool corpus`)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Override the config's number of steps."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop early after this many seconds."),
    rebuild_corpus: bool = typer.Option(False, "--rebuild-corpus", help="Rebuild the corpus even if cached."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train the keypoint-conditioned flow generator and write its checkpoint."""
    import math
    from pathlib import Path

    from ..assets import REPO_ROOT
    from ..corpus import build_corpus
    from ..errors import InputError
    from ..fileio import require_distinct_outputs, require_writable
    from ..train import load_config, train as run_train

    # Every path and option is checked before the corpus is built (that takes minutes).
    config_path = config or REPO_ROOT / "configs" / "flow_v4.json"
    if Path(corpus).exists() and not Path(corpus).is_dir():
        raise InputError(f"--corpus must be a folder, got a file: {corpus}")
    require_distinct_outputs({"--config": config_path, "--corpus": Path(corpus) / "corpus.npz"}, {"--out": out})
    require_writable(out)
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise InputError(f"--time-limit must be a positive number of seconds, got {time_limit}")
    cfg = load_config(config_path)
    # Progress bars only on a terminal; log lines (and the per-step figures) on stderr, so stdout holds the result.
    bars = show_progress(quiet) and not as_json and sys.stdout.isatty()

    def log(message: str) -> None:
        err_console.print(message, highlight=False, markup=False)

    if rebuild_corpus:
        build_corpus(cfg.corpus, corpus, progress=bars, log=log)
    path = run_train(cfg, corpus, out, device=device, steps=steps, time_limit_s=time_limit, progress=bars, log=log)
    emit(as_json, {"checkpoint": str(path)}, [f"checkpoint: {path}"])
