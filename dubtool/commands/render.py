"""`dubtool render`: an mp4 preview of an animation (optionally beside its source performance)."""

from __future__ import annotations

from typing import Optional

import typer

from ..cli import app, stderr_console
from . import JSON_OPTION, QUIET_OPTION, emit, show_progress


@app.command()
def render(
    animation: str = typer.Argument(..., metavar="ANIMATION", help="Live Link Face CSV or .perf file to render."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output .mp4 (default: beside the input)."),
    audio: Optional[str] = typer.Option(None, "--audio", help="Dub audio to mux in (padded/trimmed to the animation)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Source to show beside the dub: a .perf/CSV (rendered "
                                          "on the rig; a .perf also shows its source video if the file is there) or a "
                                          "video (.mp4/.mov/...: its frames, side by side)."),
    timemap: Optional[str] = typer.Option(None, "--timemap", help="timemap.json from `dubtool align` (with --compare)."),
    source_video: Optional[str] = typer.Option(None, "--source-video", help="Source video shown beside the faces "
                                               "(with --compare; default: the one the .perf was extracted from)."),
    curves_png: Optional[str] = typer.Option(None, "--curves-png", help="Also write a PNG plot of channels over time."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Channels for the plots, e.g. jawOpen,browInnerUp."),
    size: str = typer.Option("512x512", "--size", help="Face view size WIDTHxHEIGHT (even numbers)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Resample to this frame rate (default: the animation's)."),
    background: str = typer.Option("#292b33", "--background", help="Background colour #rrggbb."),
    zoom: float = typer.Option(1.0, "--zoom", help="Camera zoom (1 frames the face)."),
    yaw: float = typer.Option(0.0, "--yaw", help="Camera yaw in degrees (positive: from the subject's left)."),
    pitch: float = typer.Option(0.0, "--pitch", help="Camera pitch in degrees (positive: from above)."),
    no_video: bool = typer.Option(False, "--no-video", help="Only write --curves-png."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Render a shaded face preview (H.264 + AAC mp4) of ARKit curves, headless on the CPU."""
    from pathlib import Path

    from ..fileio import require_inputs

    require_inputs((animation, "animation file"))  # before the stage's imports (numpy, moderngl)
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..errors import InputError
    from ..export import load_animation
    from ..fileio import require_distinct_outputs, require_writable
    from ..plots import parse_channels, plot_curves_png
    from ..render import Comparison, RenderOptions, parse_color, parse_size, render_video, source_on_dub_timeline

    console = stderr_console()
    if no_video and not curves_png:
        raise InputError("--no-video needs --curves-png")
    if not no_video and output and Path(output).suffix.lower() not in (".mp4", ".mov", ".m4v"):
        raise InputError(f"{output}: render writes an H.264 mp4; give an output ending in .mp4")
    require_distinct_outputs({"ANIMATION": animation, "--audio": audio, "--compare": compare, "--timemap": timemap,
                              "--source-video": source_video},
                             {"-o": None if no_video else (output or str(Path(animation).with_suffix(".mp4"))),
                              "--curves-png": curves_png})
    require_writable(None if no_video else (output or str(Path(animation).with_suffix(".mp4"))), curves_png)
    if not 0 < zoom < float("inf"):
        raise InputError(f"--zoom must be a positive number, got {zoom:g}")
    if not (-180 <= yaw <= 180 and -90 <= pitch <= 90):
        raise InputError(f"--yaw must be in -180..180 and --pitch in -90..90 degrees, got {yaw:g}, {pitch:g}")
    if fps is not None and not 0 < fps <= 240:
        raise InputError(f"--fps must be in 0..240 (above 0), got {fps:g}")
    w, h = parse_size(size)
    if not (16 <= w <= 4096 and 16 <= h <= 4096 and w % 2 == 0 and h % 2 == 0):
        raise InputError(f"--size must be WIDTHxHEIGHT in even numbers from 16 to 4096, got {size}")
    anim = load_animation(animation)
    options = RenderOptions(width=w, height=h, fps=fps, background=parse_color(background), zoom=zoom,
                            yaw_deg=yaw, pitch_deg=pitch)
    chans = parse_channels(channels)
    if (timemap or source_video) and not compare:
        raise InputError("--timemap and --source-video need --compare SOURCE (.perf, .csv or a video)")
    comp = None
    if compare:
        from ..fileio import require_file
        from ..render import VIDEO_SUFFIXES, face_crop

        tm = None
        if timemap:
            from ..timemap import load_timemap

            tm = load_timemap(timemap)
        source_anim, crop = None, None
        if Path(compare).suffix.lower() in VIDEO_SUFFIXES:
            require_file(compare, "source video")
            source_video = source_video or compare
        elif Path(compare).suffix.lower() == ".perf":
            from ..performance import load_performance

            perf = load_performance(require_file(compare, "source performance"))
            source_anim = perf.animation
            recorded = perf.meta.get("source")
            if source_video is None and recorded and Path(recorded).is_file():
                source_video = recorded
            if source_video and _same_size(source_video, perf.meta):  # the video the landmarks were tracked on
                crop = face_crop(perf.landmarks_image, perf.face_found, int(perf.meta["width"]),
                                 int(perf.meta["height"]), w / h, zoom)
        else:
            source_anim = load_animation(compare)
        if source_video:
            require_file(source_video, "source video")
        comp = Comparison(source_anim, tm, source_video, chans, crop)

    if curves_png:
        curves = {"dub" if comp else Path(animation).stem: anim}
        if comp is not None and comp.source is not None:
            from ..arkit import Animation

            curves["source (time-mapped)"] = Animation(source_on_dub_timeline(comp.source, anim.times_s, comp.timemap),
                                                       anim.fps)
        phrases = [(p.dub_start_s, p.dub_end_s) for p in comp.timemap.phrases] if comp and comp.timemap else ()
        plot_curves_png(curves, chans, curves_png, title=Path(animation).name, phrases=phrases)
        if not as_json:
            console.print(f"curves: {curves_png}")
    if no_video:
        emit(as_json, {"outputs": {"curves_png": str(curves_png)}})
        return
    out = output or str(Path(animation).with_suffix(".mp4"))
    with Progress(TextColumn("rendering"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not show_progress(quiet)) as bar:
        task = bar.add_task("render", total=anim.num_frames)
        result = render_video(anim, out, audio=audio, options=options, compare=comp,
                              progress=lambda i, n: bar.update(task, completed=i, total=n))
    for w_ in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w_)}", highlight=False, soft_wrap=True)
    outputs = {"video": str(result.path), **({"curves_png": str(curves_png)} if curves_png else {})}
    emit(as_json, {"outputs": outputs, "frames": result.num_frames, "fps": result.fps, "width": result.width,
                   "height": result.height, "seconds": round(result.total_s, 3), "warnings": list(result.warnings)},
         [f"video: {result.path} ({result.num_frames} frames at {result.fps:g} fps, {result.width}x{result.height}, "
          f"{result.num_frames / max(result.total_s, 1e-9):.0f} fps end to end)"])


def _same_size(video: str, meta: dict) -> bool:
    from ..video import probe

    info = probe(video)
    return (info.width, info.height) == (meta.get("width"), meta.get("height"))

