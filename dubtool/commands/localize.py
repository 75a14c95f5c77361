"""`dubtool localize SOURCE DUB --lang fr -o out.csv` and `dubtool localize --manifest lines.csv`."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..cli import app


@app.command("localize")
def localize_command(
    source: Optional[str] = typer.Argument(None, help="Source take: a .perf file or a video (extract runs first)."),
    dub: Optional[str] = typer.Argument(None, help="Dub audio (or a video with the dub track)."),
    lang: str = typer.Option("fr", "--lang", help="Dub language code (e.g. fr, es, de)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Live Link Face CSV to write."),
    report: Optional[str] = typer.Option(None, "--report", help="JSON report (default: <output>.report.json)."),
    fbx: Optional[str] = typer.Option(None, "--fbx", help="Also write an FBX with the animation."),
    gltf: Optional[str] = typer.Option(None, "--gltf", help="Also write a glTF with the animation."),
    preview: Optional[str] = typer.Option(None, "--preview", help="Also render a preview mp4 with the dub audio."),
    model: str = typer.Option("flow", "--model", help="flow (trained generator) or teacher (needs --dub-text)."),
    model_path: Optional[str] = typer.Option(None, "--model-path", help="Generator checkpoint (default models/dubtool_flow_v1.pt)."),
    dub_text: Optional[str] = typer.Option(None, "--dub-text", help="Transcript of the dub (teacher model, metrics, alignment)."),
    source_text: Optional[str] = typer.Option(None, "--source-text", help="Transcript of the source (alignment)."),
    source_lang: str = typer.Option("en", "--source-lang", help="Source language code."),
    keyframes: Optional[str] = typer.Option(None, "--keyframes", help="Semantic keyframes file driving the upper face."),
    keyframe_blend: float = typer.Option(1.0, "--keyframe-blend", help="0..1 weight of --keyframes against the source."),
    steps: Optional[int] = typer.Option(None, "--steps", help="ODE steps of the flow sampler."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Output frame rate (default: the model's)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    start: Optional[float] = typer.Option(None, "--start", help="Process the dub from this second."),
    end: Optional[float] = typer.Option(None, "--end", help="Process the dub up to this second."),
    stretch_blinks: bool = typer.Option(False, "--stretch-blinks", help="Warp blinks with the time map instead of keeping their natural speed."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Batch: CSV with source,dub,lang,output[,dub_text,keyframes]."),
    workers: int = typer.Option(1, "--workers", help="Batch: parallel worker processes."),
    force: bool = typer.Option(False, "--force", help="Batch: redo rows whose output already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary JSON on stdout."),
) -> None:
    """Lip-sync the dub while keeping the source actor's upper-face performance, head and eyes."""
    from rich.console import Console

    from ..errors import InputError
    from ..localize import LocalizeOptions

    err = Console(stderr=True)
    options = LocalizeOptions(lang=lang, source_lang=source_lang, model=model, model_path=model_path, fps=fps,
                              steps=steps, guidance=guidance, seed=seed, device=device, dub_text=dub_text,
                              source_text=source_text, keyframes=keyframes, keyframe_blend=keyframe_blend,
                              start_s=start, end_s=end, stretch_blinks=stretch_blinks)
    if manifest:
        if source or dub or output:
            raise InputError("give either SOURCE DUB -o OUT or --manifest, not both")
        _run_batch(manifest, options, workers, force, as_json, err)
        return
    if not (source and dub):
        raise InputError("localize needs SOURCE and DUB (or --manifest lines.csv)")
    if not output:
        raise InputError("localize needs an output CSV: -o out.csv")
    from ..localize import localize_files

    rep = localize_files(source, dub, output, options, report, fbx=fbx, gltf=gltf, preview=preview)
    for w in rep["warnings"]:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if as_json:
        summary = {k: rep[k] for k in ("source", "dub", "lang", "model", "fps", "frames", "dub_duration_s",
                                       "metrics", "warnings", "outputs", "realtime_factor")}
        summary["phrases"] = len(rep["timemap"]["phrases"])
        print(json.dumps(summary, indent=1))
        return
    m = rep["metrics"]
    print(f"{output}: {rep['frames']} frames at {rep['fps']:g} fps ({rep['dub_duration_s']:.2f} s of {lang} dub, "
          f"{len(rep['timemap']['phrases'])} phrase group(s) matched, {rep['realtime_factor']:.1f}x real time)")
    if m.get("bilabial_closure_rate") is not None:
        print(f"  lips close on {m['bilabial_closure_rate']:.0%} of {m['bilabials']} bilabials")
    if m.get("lip_audio_lag_frames") is not None:
        print(f"  lip-audio lag: {m['lip_audio_lag_frames']} frame(s)")
    for k, v in rep["outputs"].items():
        if k != "csv":
            print(f"  {k}: {v}")


def _run_batch(manifest: str, options, workers: int, force: bool, as_json: bool, err) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..batch import read_manifest, run_manifest, write_results

    n = len(read_manifest(manifest))
    with Progress(TextColumn("localize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("rows", total=n)
        results = run_manifest(manifest, options, workers=workers, force=force,
                               on_result=lambda r: bar.advance(task))
    csv_path, json_path = write_results(results, manifest)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        print(json.dumps({"done": sum(r.status == "done" for r in results),
                          "skipped": sum(r.status == "skipped" for r in results), "failed": len(failed),
                          "results_csv": str(csv_path), "results_json": str(json_path)}, indent=1))
    else:
        table = Table(title=f"{manifest}: {len(results)} line(s)")
        for col in ("line", "output", "status", "seconds", "message"):
            table.add_column(col)
        style = {"done": "green", "skipped": "dim", "failed": "red"}
        for r in results:
            table.add_row(str(r.line), r.output, f"[{style[r.status]}]{r.status}[/]", f"{r.seconds:.1f}", r.message)
        err.print(table)
        err.print(f"results: {csv_path}, {json_path}")
    if failed:
        sys.exit(1)
