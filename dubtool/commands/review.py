"""`dubtool review OUT_DIR -o review.html`: the static review page of a dubbed batch."""

from __future__ import annotations

import json

import typer

from ..cli import app


@app.command("review")
def review_command(
    batch: str = typer.Argument(..., help="Batch folder (holding <manifest>.results.json), the results JSON or the manifest CSV."),
    output: str = typer.Option("review.html", "-o", "--output", help="HTML page to write (media are linked relative to it)."),
    previews: bool = typer.Option(False, "--previews", help="Render a preview mp4 (<line>.preview.mp4) for lines without one (slow: ~5-10 s a line)."),
    min_closure: float = typer.Option(0.75, "--min-closure", help="Flag lines whose lips close on fewer of the /p b m/ (0..1)."),
    max_stretch: float = typer.Option(1.5, "--max-stretch", help="Flag lines with a phrase stretched or squeezed more than this factor."),
    max_align_cost: float = typer.Option(1.0, "--max-align-cost", help="Flag lines whose worst matched phrase group costs more."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary JSON on stdout."),
) -> None:
    """Write one self-contained page listing every line with its figures and flags, the dub and source
    side by side, and approve/flag marks exported as a manifest that re-runs the flagged lines."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import InputError
    from ..review import Thresholds, write_review

    if not 0.0 <= min_closure <= 1.0:
        raise InputError(f"--min-closure must be in 0..1, got {min_closure}")
    if max_stretch < 1.0 or max_align_cost < 0:
        raise InputError("--max-stretch must be >= 1 and --max-align-cost >= 0")
    thresholds = Thresholds(min_closure=min_closure, max_stretch=max_stretch, max_align_cost=max_align_cost)
    err = Console(stderr=True)
    with Progress(TextColumn("previews"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True, disable=not previews or as_json) as bar:
        task = bar.add_task("previews", total=None)
        summary = write_review(batch, output, previews=previews, thresholds=thresholds,
                               progress=lambda i, n: bar.update(task, completed=i, total=n))
    for e in summary["preview_errors"]:
        err.print(f"[yellow]warning:[/] preview not rendered: {e}", highlight=False)
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    flags = ", ".join(f"{k} {v}" for k, v in sorted(summary["flags"].items(), key=lambda kv: -kv[1])) or "none"
    print(f"{summary['page']}: {summary['lines']} line(s) ({summary['done']} done, {summary['failed']} failed"
          + (f", {summary['pending']} not run" if summary["pending"] else "")
          + f"); flagged: {flags}; {summary['previews']} preview(s); {summary['bytes'] / 1e6:.2f} MB")
