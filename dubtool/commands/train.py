"""`dubtool train`: train the flow generator from scratch (building the corpus first if missing; `dubtool corpus`
builds it alone), or with `--captures DIR` fine-tune a trained one on a studio's own real takes."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ..cli import app, stderr_console
from . import JSON_OPTION, QUIET_OPTION, emit, show_progress

DEFAULT_OUT = "runs/dubtool_flow_v6.pt"


@app.command()
def train(
    config: Optional[str] = typer.Option(None, "--config", help="Training config (JSON; default: the shipped configs/flow_v6.json)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: Optional[str] = typer.Option(None, "--out", help=f"Checkpoint to write (default {DEFAULT_OUT}; pass "
                                      "models/dubtool_flow_v6.pt to replace the shipped one; required with --captures)."),
    corpus: str = typer.Option("build/corpus", "--corpus", help="Corpus folder (built here when missing; see `dubtool corpus`)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Override the number of steps (config's, or the fine-tune's 300)."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop early after this many seconds of training."),
    rebuild_corpus: bool = typer.Option(False, "--rebuild-corpus", help="Rebuild the corpus even if cached."),
    captures: Optional[str] = typer.Option(None, "--captures", help="Fine-tune on the real takes in this folder: Live Link "
                                           "Face CSV + .mov/.wav, .perf, or video with audio (see docs/captures.md)."),
    base: Optional[str] = typer.Option(None, "--base", help="With --captures: checkpoint to fine-tune (default: the shipped model)."),
    holdout: float = typer.Option(0.2, "--holdout", help="With --captures: share of the takes held out for the "
                                  "before/after figures (at least 1; 0 = none)."),
    base_corpus: Optional[str] = typer.Option(None, "--base-corpus", help="With --captures: the base model's corpus "
                                              "folder to mix into every batch ('none' = L2-SP only; default: "
                                              "a replay corpus of the base's own espeak clips, built once and cached)."),
    amplitude: Optional[str] = typer.Option(None, "--amplitude", help="With --captures: mouth range the fine-tune "
                                            "learns: shipped (the base model's, default; only timing and shapes come "
                                            "from the takes), takes (the takes' median) or tracked (as captured)."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train the keypoint-conditioned flow generator and write its checkpoint, or fine-tune it on real captures."""
    import math
    from pathlib import Path

    from ..errors import InputError
    from ..fileio import require_distinct_outputs, require_writable

    if steps is not None and steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise InputError(f"--time-limit must be a positive number of seconds, got {time_limit}")
    if captures is not None:
        _train_captures(captures, out, base, holdout, base_corpus, steps, time_limit, device, as_json,
                        {"--config": config, "--rebuild-corpus": rebuild_corpus}, amplitude)
        return
    for flag, value in (("--base", base), ("--base-corpus", base_corpus), ("--amplitude", amplitude)):
        if value is not None:
            raise InputError(f"{flag} goes with --captures DIR (fine-tuning on real takes)")
    from ..assets import REPO_ROOT
    from ..corpus import build_corpus
    from ..train import load_config, train as run_train

    out = out or DEFAULT_OUT
    # Every path and option is checked before the corpus is built (that takes minutes).
    config_path = config or REPO_ROOT / "configs" / "flow_v6.json"
    if Path(corpus).exists() and not Path(corpus).is_dir():
        raise InputError(f"--corpus must be a folder, got a file: {corpus}")
    require_distinct_outputs({"--config": config_path, "--corpus": Path(corpus) / "corpus.npz"}, {"--out": out})
    require_writable(out)
    cfg = load_config(config_path)
    # Progress bars only on a terminal; log lines (and the per-step figures) on stderr, so stdout holds the result.
    bars = show_progress(quiet) and not as_json and sys.stdout.isatty()

    def log(message: str) -> None:
        stderr_console().print(message, highlight=False, markup=False)

    if rebuild_corpus:
        build_corpus(cfg.corpus, corpus, progress=bars, log=log)
    path = run_train(cfg, corpus, out, device=device, steps=steps, time_limit_s=time_limit, progress=bars, log=log)
    emit(as_json, {"checkpoint": str(path)}, [f"checkpoint: {path}"])


def _train_captures(captures, out, base, holdout, base_corpus, steps, time_limit, device, as_json, unused,
                    amplitude=None) -> None:
    """`train --captures DIR --out actor.pt`: every path and option checked first, then the job."""
    import json
    import math
    import sys
    from pathlib import Path

    from dataclasses import replace

    from ..captures import AMPLITUDES, train_on_captures
    from ..errors import InputError
    from ..fileio import require_distinct_outputs, require_file, require_writable
    from ..generate import DEFAULT_MODEL
    from ..train import _device

    for flag, value in unused.items():
        if value:
            raise InputError(f"{flag} trains from scratch; it does not go with --captures")
    if amplitude is not None and amplitude not in AMPLITUDES:
        raise InputError(f"--amplitude must be one of {', '.join(AMPLITUDES)}, got {amplitude!r}")
    if out is None:
        raise InputError("--captures needs --out: the fine-tuned checkpoint to write (e.g. --out actor.pt)")
    folder = Path(captures)
    if not folder.exists():
        raise InputError(f"captures folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"--captures must be a folder of takes, got a file: {folder}")
    if not (math.isfinite(holdout) and 0 <= holdout < 1):
        raise InputError(f"--holdout must be a share from 0 to below 1 (e.g. 0.2), got {holdout}")
    base_path = require_file(base if base is not None else DEFAULT_MODEL, "base checkpoint")
    corpus_arg = "auto"
    if base_corpus is not None:
        if base_corpus.lower() == "none":
            corpus_arg = None
        elif not (Path(base_corpus) / "corpus.npz").is_file():
            raise InputError(f"--base-corpus: no corpus.npz in {base_corpus} (give a `dubtool corpus` folder, or 'none')")
        else:
            corpus_arg = base_corpus
    card = Path(out).with_suffix(".md")
    if Path(out).suffix.lower() == ".md":
        raise InputError(f"--out is the checkpoint (.pt); its model card is written beside it as {card.name}")
    require_distinct_outputs({"--base": base_path}, {"--out": out, "model card": card})
    require_writable(out, card)
    _device(device)
    log = lambda m: print(m, file=sys.stderr)  # progress and rejected pairs; stdout keeps the results
    from ..train import FinetuneConfig

    cfg = FinetuneConfig() if amplitude is None else replace(FinetuneConfig(), amplitude=amplitude)
    run = train_on_captures(folder, out, base_path, holdout=holdout, steps=steps, time_limit_s=time_limit,
                            device=device, base_corpus=corpus_arg, cfg=cfg, progress=sys.stderr.isatty(), log=log)
    if as_json:
        print(json.dumps(run.to_json(), indent=1))
        return
    s = run.scores
    if s:
        b, t = s["base"], s["fine_tuned"]
        f = lambda x: "–" if x is None else f"{x:.2f}"
        print(f"held-out takes ({b['takes']}): mouth-opening r {f(b['mouth_r'])} (base) -> {f(t['mouth_r'])} (fine-tuned); "
              f"jawOpen r {f(b['jaw_r'])} -> {f(t['jaw_r'])}")
    print(f"checkpoint: {run.out}")
    print(f"model card: {run.card}")
