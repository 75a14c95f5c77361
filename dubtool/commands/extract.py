"""`dubtool extract`: track a video of an actor into a performance (.perf) and/or a Live Link Face CSV."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from ..cli import app
from . import JSON_OPTION, QUIET_OPTION, emit, show_progress


@app.command()
def extract(
    video: Path = typer.Argument(..., metavar="VIDEO", help="Video of the speaking actor (anything ffmpeg reads)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Performance file to write (.perf)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the 61 channels as a Live Link Face CSV."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Output frame rate (default: the video's average rate)."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="One Euro smoothing of the tracks."),
    min_cutoff: float = typer.Option(1.5, "--min-cutoff", help="One Euro cutoff at rest (Hz): lower = smoother."),
    beta: float = typer.Option(0.5, "--beta", help="One Euro speed coefficient: higher = less lag in fast moves."),
    max_width: int = typer.Option(1280, "--max-width", help="Downscale wider frames to this width for tracking."),
    timecode: Optional[str] = typer.Option(None, "--timecode", help="Start timecode of the take, HH:MM:SS:FF at its frame rate (default: the video's timecode tag, else 00:00:00:00)."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Track the actor's face: 478 landmarks, head pose, 52 ARKit blendshapes + head/eye rotations, audio."""
    from ..fileio import require_inputs

    require_inputs((video, "video file"))  # before the stage's imports (mediapipe, numpy)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..cli import stderr_console
    from ..errors import InputError
    from ..extract import ExtractOptions, extract as run_extract, summary
    from ..fileio import require_distinct_outputs, require_writable, staged_outputs
    from ..livelink import start_timecode_s, write_csv
    from ..performance import save_performance
    from ..smoothing import OneEuroConfig

    if output is None and csv is None:
        output = video.with_suffix(".perf")
    require_distinct_outputs({"VIDEO": video}, {"-o": output, "--csv": csv})
    require_writable(output, csv)
    if not 0 < min_cutoff < float("inf"):
        raise InputError(f"--min-cutoff must be a positive number of Hz, got {min_cutoff:g}")
    if not 0 <= beta < float("inf"):
        raise InputError(f"--beta must be a number at least 0, got {beta:g}")
    if max_width < 64:
        raise InputError(f"--max-width must be at least 64 (got {max_width})")
    if timecode is not None:
        start_timecode_s(timecode, fps or 30.0)  # a bad timecode fails before the tracking starts
    opts = ExtractOptions(fps=fps, smoothing=OneEuroConfig(min_cutoff, beta) if smooth else None,
                          max_track_width=max_width, channels_on_disk=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Progress(TextColumn("[bold]extract[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                      TextColumn("{task.fields[rate]} fps"), TimeRemainingColumn(), console=stderr_console(),
                      disable=not show_progress(quiet), transient=True) as bar:
            task = bar.add_task("extract", total=None, rate="-")
            import time

            t0 = time.perf_counter()

            def progress(done: int, total: int) -> None:
                if done % 5 == 0 or done == total:
                    bar.update(task, completed=done, total=total,
                               rate=f"{done / max(time.perf_counter() - t0, 1e-6):.0f}")

            perf = run_extract(video, opts, progress)
    for w in caught:
        stderr_console().print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)

    if timecode is not None:
        perf.animation.timecode_start_s = start_timecode_s(timecode, perf.animation.fps)
    outputs = {}
    with staged_outputs(output, csv):  # both or neither
        if output is not None:
            outputs["perf"] = str(save_performance(perf, output))
        if csv is not None:
            outputs["csv"] = str(write_csv(perf.animation, csv))
    info = summary(perf, outputs)
    if as_json:
        emit(True, info)
        return
    held = [g for g in info["gaps"] if g["filled"] == "held"]
    stderr_console().print(f"{info['frames']} frames at {info['fps']:g} fps ({info['duration_s']:.1f} s), face in "
                      f"{info['face_found_ratio']:.0%} of frames, {len(info['gaps'])} gap(s)"
                      + (f", {len(held)} longer than 0.5 s (held)" if held else "")
                      + f"; {info['fps_processed']:.0f} fps", highlight=False)
    for g in held:
        stderr_console().print(f"[yellow]  no face {g['start_s']:.2f}-{g['end_s']:.2f} s[/]", highlight=False, soft_wrap=True)
    for kind, path in outputs.items():
        print(f"{kind}: {path}")
