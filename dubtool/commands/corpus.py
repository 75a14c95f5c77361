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
    config: Optional[Path] = typer.Option(None, "--config", help="Training config whose [corpus] recipe to build (JSON; default: configs/flow_v6.json)."),
    out: Path = typer.Option(Path("build/corpus"), "--out", "-o", help="Folder for corpus.npz and clips.json."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (1..64)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when --out already holds a corpus."),
    replay_of: Optional[Path] = typer.Option(None, "--replay-of", help="Build instead the replay corpus of this "
                                             "checkpoint (the base mix of `train --captures`; pass --out to "
                                             "--base-corpus on a machine without espeak-ng)."),
    clips: Optional[int] = typer.Option(None, "--clips", help="With --replay-of: espeak clips (default 96)."),
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
    if replay_of is not None or clips is not None:
        return _replay(replay_of, clips, config, out, force, as_json)
    if (out / "corpus.npz").is_file() and not force:
        c = load_corpus(out)
        emit(as_json, {"corpus": str(out), "clips": len(c.clips), "minutes": round(c.duration_s / 60, 2), "built": False},
             [f"corpus already built: {out} ({len(c.clips)} clips, {c.duration_s / 60:.1f} min); --force rebuilds it"])
        return
    cfg = load_config(config or REPO_ROOT / "configs" / "flow_v6.json")
    c = build_corpus(cfg.corpus, out, workers=workers, progress=show_progress(quiet) and not as_json,
                     log=lambda m: stderr_console().print(m, highlight=False, markup=False))
    by_split = summary(c)["by_split"]
    emit(as_json, {"corpus": str(out), "clips": len(c.clips), "minutes": round(c.duration_s / 60, 2), "built": True,
                   "by_split": by_split},
         ["splits: " + ", ".join(f"{k} {v['clips']} clips / {v['minutes']:.1f} min" for k, v in by_split.items())])


def _replay(model, clips, config, out: Path, force: bool, as_json: bool) -> None:
    """`corpus --replay-of MODEL --out DIR`: the replay slice of the checkpoint's own corpus config."""
    import shutil

    from ..captures import REPLAY_CLIPS, replay_corpus, replay_corpus_config, replay_matches
    from ..errors import InputError
    from ..fileio import require_file
    from ..generate import load_model

    if model is None:
        raise InputError("--clips goes with --replay-of MODEL (the checkpoint whose corpus to replay)")
    if config is not None:
        raise InputError("--replay-of builds from the checkpoint's own corpus config; it does not go with --config")
    clips = REPLAY_CLIPS if clips is None else clips
    if not 1 <= clips <= 10000:
        raise InputError(f"--clips must be in 1..10000, got {clips}")
    gen = load_model(require_file(model, "checkpoint"))
    if (out / "corpus.npz").is_file():
        from ..corpus import load_corpus

        cfg = replay_corpus_config(gen, clips)
        same = cfg is not None and replay_matches(load_corpus(out), cfg)
        if force:
            shutil.rmtree(out)
        elif not same:
            raise InputError(f"--out {out} already holds another corpus; give an empty folder or --force to replace it")
    log = lambda m: stderr_console().print(m, highlight=False, markup=False)
    folder, c = replay_corpus(gen, clips, cache=out, log=log)
    if c is None:
        raise InputError(f"{model}: no replay corpus (the checkpoint records no corpus config, or the build failed: "
                         "see the warning above)")
    emit(as_json, {"corpus": str(folder), "clips": len(c.clips), "minutes": round(c.duration_s / 60, 2)},
         [f"replay corpus: {folder} ({len(c.clips)} clips, {c.duration_s / 60:.1f} min); "
          f"`dubtool train --captures DIR --base-corpus {folder}` mixes it"])
