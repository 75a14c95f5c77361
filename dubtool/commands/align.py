"""`dubtool align SOURCE DUB`: phrase-level time map between a source take and its dub."""

from __future__ import annotations

from typing import Optional

import typer

from ..cli import app
from . import JSON_OPTION, QUIET_OPTION, emit, stdin_file


@app.command("align")
def align_command(
    source: str = typer.Argument(..., metavar="SOURCE", help="Source take: a .perf file, a video or an audio file."),
    dub: str = typer.Argument(..., metavar="DUB", help="Dub audio (or a video with the dub track); - reads it from stdin."),
    output: str = typer.Option("timemap.json", "-o", "--output", help="Time map JSON to write."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Also write a PNG of both waveforms with matched phrases."),
    source_text: Optional[str] = typer.Option(None, "--source-text", help="Transcript of the source line."),
    dub_text: Optional[str] = typer.Option(None, "--dub-text", help="Transcript of the dub line."),
    lang: str = typer.Option("fr", "--lang", help="Dub language code (espeak voice for --dub-text)."),
    source_lang: str = typer.Option("en", "--source-lang", help="Source language code (for --source-text)."),
    fit: Optional[str] = typer.Option(None, "--fit", help="Also write the dub time-stretched to the source timing (WAV)."),
    fit_mode: str = typer.Option("phrase", "--fit-mode", help="phrase (rubberband time map) or uniform."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Match the dub's phrases to the source's and write a piecewise-linear time map."""
    with stdin_file(dub, "DUB") as dub_file:
        _align(source, dub_file, output, plot, source_text, dub_text, lang, source_lang, fit, fit_mode, as_json)


def _align(source, dub, output, plot, source_text, dub_text, lang, source_lang, fit, fit_mode, as_json) -> None:
    from ..fileio import require_inputs

    require_inputs((source, "source"), (dub, "dub audio"))  # before the stage's imports (numpy)
    from ..align import align, fit_dub, plot_alignment
    from ..audio import load_audio, require_speech, write_wav
    from ..errors import InputError
    from ..lang import language
    from ..localize import load_source_audio
    from ..timemap import save_timemap, timemap_json_text

    from ..fileio import require_distinct_outputs, require_writable, staged_outputs

    require_distinct_outputs({"SOURCE": source, "DUB": dub}, {"-o": output, "--plot": plot, "--fit": fit})
    require_writable(output, plot, fit)
    if fit_mode not in ("phrase", "uniform"):
        raise InputError(f"--fit-mode must be 'phrase' or 'uniform', got {fit_mode!r}")
    # Languages matter only for the transcripts (espeak times them); phrase matching needs audio only.
    dub_voice = language(lang, "--dub-text").voice if dub_text else "en"
    source_voice = language(source_lang, "--source-text").voice if source_text else "en"
    src_audio = load_source_audio(source)
    dub_audio = load_audio(dub, what="dub audio")
    require_speech(dub_audio, f"{dub}")
    tm = align(src_audio, dub_audio, source_text=source_text, dub_text=dub_text, source_voice=source_voice,
               dub_voice=dub_voice)
    with staged_outputs(plot, fit, output):  # all or nothing
        save_timemap(tm, output)
        if plot:
            plot_alignment(src_audio, dub_audio, tm, plot)
        if fit:
            write_wav(fit_dub(load_audio(dub, sample_rate=48000, what="dub audio"), tm, fit_mode), fit)
    if as_json:
        print(timemap_json_text(tm), end="")  # the time map itself: the same JSON as the file
        return
    emit(False, {}, [f"time map: {output}  ({tm.method}, {len(tm.phrases)} phrase group(s), "
                     f"source {tm.source_duration_s:.2f} s -> dub {tm.dub_duration_s:.2f} s)",
                     *(f"  {note}" for note in tm.notes), *([f"plot: {plot}"] if plot else []),
                     *([f"fitted dub: {fit}"] if fit else [])])
