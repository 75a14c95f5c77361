"""`dubtool keyframes`: a script with emotion/action cues -> semantic keyframes JSON (+ curves CSV, plot)."""

from __future__ import annotations

from typing import Optional

import typer

from ..cli import app
from . import JSON_OPTION, QUIET_OPTION, emit


@app.command(options_metavar="-o OUT [OPTIONS]")
def keyframes(
    script: str = typer.Argument(..., metavar="SCRIPT", help="Script: a text file (dialogue lines, NAME: lines, prose, cues like [angry], (nods), 'Context: ...' lines) or a CSV/TSV table with one line per row."),
    output: str = typer.Option(..., "-o", "--output", help="Keyframes JSON to write (e.g. line.keyframes.json); for a CSV/TSV script, a folder that gets <id>.keyframes.json per row and index.csv."),
    columns: Optional[str] = typer.Option(None, "--columns", help="CSV/TSV: map roles to headers, e.g. id=Ref,line=Text,direction=Notes,context=Scene,character=Who,duration=Secs (default: usual names)."),
    csv: Optional[str] = typer.Option(None, "--csv", help="Also write the upper-face curves as Live Link Face CSV."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Also write a PNG plot of the curves."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Line length in seconds (default: from --audio, else estimated from the text)."),
    audio: Optional[str] = typer.Option(None, "--audio", help="Dub recording: gives the duration and word timings."),
    lang: str = typer.Option("en", "--lang", help="Language of the script (word timing through phoneme alignment)."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate of the curves."),
    timecode: Optional[str] = typer.Option(None, "--timecode", help="Start timecode of the --csv curves, HH:MM:SS:FF at --fps (default 00:00:00:00)."),
    seed: int = typer.Option(0, "--seed", help="Seed for automatic blinks."),
    blink_rate: float = typer.Option(17.0, "--blink-rate", help="Automatic blinks per minute (0 = none)."),
    no_embedding: bool = typer.Option(False, "--no-embedding", help="Offline planner: lexicon only, do not load the sentence-embedding model."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="OpenAI-compatible server base URL (e.g. http://127.0.0.1:8080/v1). Nothing is sent anywhere without it."),
    llm_model: str = typer.Option("default", "--llm-model", help="Model name to ask the server for."),
    llm_key_env: str = typer.Option("DUBTOOL_LLM_API_KEY", "--llm-key-env", help="Environment variable holding the API key (sent as a Bearer token, never printed)."),
    llm_timeout: float = typer.Option(60.0, "--llm-timeout", help="Seconds to wait for the server per request."),
    llm_fallback: bool = typer.Option(True, "--llm-fallback/--no-llm-fallback", help="If the model fails or returns unusable output, fall back to the offline planner (with a warning) instead of stopping."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Plan upper-face semantic keyframes (brows, lids, gaze, head) for a line from its script."""
    from rich.markup import escape

    from ..errors import InputError
    from ..fileio import require_distinct_outputs, require_file, require_writable, staged_outputs
    from ..keyframes import (PlanOptions, estimate_word_times, keyframe_curves, parse_script, plan_keyframes,
                             plot_curves, save_keyframes, words_from_audio)

    from ..script_reading import is_table

    path = require_file(script, "script file")
    if is_table(path):
        if csv or plot or audio:
            raise InputError("--csv, --plot and --audio are per line: not available with a CSV/TSV script")
        _table(path, output, columns, duration, fps, seed, blink_rate, no_embedding, llm_url, llm_model, llm_key_env,
               llm_timeout, llm_fallback, as_json)
        return
    if columns:
        raise InputError("--columns is for CSV/TSV scripts")
    require_distinct_outputs({"SCRIPT": script, "--audio": audio}, {"-o": output, "--csv": csv, "--plot": plot})
    require_writable(output, csv, plot)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    if duration is not None and not 0 < duration <= 4 * 3600:
        raise InputError(f"--duration must be in 0..14400 seconds (above 0), got {duration:g}")
    if not 1 <= fps <= 240:
        raise InputError(f"--fps must be in 1..240, got {fps:g}")
    if not 0 < llm_timeout <= 3600:
        raise InputError(f"--llm-timeout must be in 0..3600 seconds (above 0), got {llm_timeout:g}")
    if not 0 <= blink_rate <= 60:
        raise InputError(f"--blink-rate must be in 0..60 blinks a minute, got {blink_rate:g}")
    start_tc = None
    if timecode is not None:
        from ..livelink import start_timecode_s

        start_tc = start_timecode_s(timecode, fps)
    spoken = parse_script(text).spoken_text
    if audio is not None:
        words, dur = words_from_audio(audio, spoken, lang)
        if duration is not None:
            dur = duration
    else:
        words, dur = estimate_word_times(spoken, duration)
    llm = None
    if llm_url:
        from ..keyframes_llm import LLMConfig

        llm = LLMConfig(url=llm_url, model=llm_model, key_env=llm_key_env, timeout_s=llm_timeout,
                        fallback=llm_fallback)
    options = PlanOptions(fps=fps, seed=seed, blinks_per_min=blink_rate, use_embedding=not no_embedding)

    def log(msg: str) -> None:
        from ..cli import stderr_console

        stderr_console().print(f"[yellow]{escape(msg)}[/]", highlight=False, soft_wrap=True)

    track = plan_keyframes(text, dur, words, options, llm=llm, log=log)
    with staged_outputs(csv, plot, output):  # all or nothing
        save_keyframes(track, output)
        if csv or plot:
            anim = keyframe_curves(track, fps, track.duration_s)
            anim.timecode_start_s = start_tc
            if csv:
                from ..livelink import write_csv

                write_csv(anim, csv)
            if plot:
                plot_curves(anim, track, plot)
    result = {"keyframes": str(output), "count": len(track.keyframes), "duration_s": track.duration_s,
              "planner": track.source, "outputs": {"keyframes": str(output)}}
    lines = [f"keyframes: {output} ({len(track.keyframes)} keyframes over {track.duration_s:.2f} s, {track.source})"]
    if csv:
        result["outputs"]["csv"] = str(csv)
        lines.append(f"curves: {csv} ({anim.num_frames} frames at {fps:g} fps, "
                     f"{len(anim.meta['auto_blinks_s'])} auto blinks)")
    if plot:
        result["outputs"]["plot"] = str(plot)
        lines.append(f"plot: {plot}")
    emit(as_json, result, lines)


def _table(path, output, columns, duration, fps, seed, blink_rate, no_embedding, llm_url, llm_model, llm_key_env,
           llm_timeout, llm_fallback, as_json=False) -> None:
    """One keyframes file per row, named by id, plus index.csv (id, keyframes) for a localize manifest."""
    import csv as csvmod
    import io
    from pathlib import Path

    from rich.markup import escape

    from ..errors import InputError
    from ..expressions import PrototypeMatcher
    from ..fileio import require_distinct_outputs, write_text_atomic
    from ..keyframes import PlanOptions, plan_keyframes, save_keyframes
    from ..script_reading import parse_columns, read_script_table

    rows = read_script_table(path, parse_columns(columns))
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {output}: for a CSV/TSV script -o must be a folder (one keyframes file per row)")
    require_distinct_outputs({"SCRIPT": path}, {"-o index": out / "index.csv",
                                                **{f"row {r.row}": out / f"{r.id}.keyframes.json" for r in rows}})
    out.mkdir(parents=True, exist_ok=True)
    llm = None
    if llm_url:
        from ..keyframes_llm import LLMConfig

        llm = LLMConfig(url=llm_url, model=llm_model, key_env=llm_key_env, timeout_s=llm_timeout, fallback=llm_fallback)
    options = PlanOptions(fps=fps, seed=seed, blinks_per_min=blink_rate, use_embedding=not no_embedding)
    matcher = PrototypeMatcher(use_embedding=not no_embedding)  # one model load for the whole table

    def log(msg: str) -> None:
        from ..cli import stderr_console

        stderr_console().print(f"[yellow]{escape(msg)}[/]", highlight=False, soft_wrap=True)

    index = io.StringIO()
    w = csvmod.writer(index, lineterminator="\n")
    w.writerow(["id", "character", "keyframes"])
    total = 0
    for row in rows:
        try:
            track = plan_keyframes(row.script_text(), row.duration_s or duration, options=options, llm=llm,
                                   matcher=matcher, log=lambda m, r=row: log(f"{path.name} row {r.row}: {m}"))
        except InputError as e:
            raise InputError(f"{path}: row {row.row} ({row.id}): {e}") from None
        name = f"{row.id}.keyframes.json"
        save_keyframes(track, out / name)
        w.writerow([row.id, row.character, name])
        total += len(track.keyframes)
    write_text_atomic(out / "index.csv", index.getvalue())
    emit(as_json, {"files": len(rows), "folder": str(out), "count": total, "index": str(out / "index.csv")},
         [f"keyframes: {len(rows)} files in {out} ({total} keyframes), index: {out / 'index.csv'}"])
