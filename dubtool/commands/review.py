"""`dubtool review OUT_DIR -o review.html`: the static review page of a dubbed batch."""

from __future__ import annotations

import typer

from ..cli import app, stderr_console
from . import JSON_OPTION, QUIET_OPTION, emit, show_progress


@app.command("review")
def review_command(
    batch: str = typer.Argument(..., metavar="BATCH", help="Batch folder (holding <manifest>.results.json), the results JSON or the manifest CSV."),
    output: str = typer.Option("review.html", "-o", "--output", help="HTML page to write (media are linked relative to it)."),
    previews: bool = typer.Option(False, "--previews", help="Render a preview mp4 (<line>.preview.mp4) for lines without one (slow: ~5-10 s a line)."),
    min_closure: float = typer.Option(0.75, "--min-closure", help="Flag lines whose lips close on fewer of the /p b m/ (0..1)."),
    max_stretch: float = typer.Option(1.5, "--max-stretch", help="Flag lines with a phrase stretched or squeezed more than this factor."),
    max_align_cost: float = typer.Option(1.0, "--max-align-cost", help="Flag lines whose worst matched phrase group costs more."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Write one self-contained page listing every line with its figures and flags, the dub and source
    side by side, and approve/flag marks exported as a manifest that re-runs the flagged lines."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import InputError
    from ..review import Thresholds, write_review

    if not 0.0 <= min_closure <= 1.0:
        raise InputError(f"--min-closure must be in 0..1, got {min_closure:g}")
    if max_stretch < 1.0:
        raise InputError(f"--max-stretch must be at least 1, got {max_stretch:g}")
    if max_align_cost < 0:
        raise InputError(f"--max-align-cost must be at least 0, got {max_align_cost:g}")
    thresholds = Thresholds(min_closure=min_closure, max_stretch=max_stretch, max_align_cost=max_align_cost)
    err = stderr_console()
    with Progress(TextColumn("previews"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True, disable=not previews or as_json or not show_progress(quiet)) as bar:
        task = bar.add_task("previews", total=None)
        summary = write_review(batch, output, previews=previews, thresholds=thresholds,
                               progress=lambda i, n: bar.update(task, completed=i, total=n))
    for e in summary["preview_errors"]:
        err.print(f"[yellow]warning:[/] preview not rendered: {e}", highlight=False)
    if as_json:
        emit(True, summary)
        return
    flags = ", ".join(f"{k} {v}" for k, v in sorted(summary["flags"].items(), key=lambda kv: -kv[1])) or "none"
    print(f"{summary['page']}: {summary['lines']} line(s) ({summary['done']} done, {summary['failed']} failed"
          + (f", {summary['pending']} not run" if summary["pending"] else "")
          + f"); flagged: {flags}; {summary['previews']} preview(s); {summary['bytes'] / 1e6:.2f} MB")
