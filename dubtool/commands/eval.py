"""`dubtool eval`: quality metrics of a generated animation against its inputs (and baselines), or of
the model over the held-out evaluation set."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from ..cli import app, stderr_console
from . import QUIET_OPTION, emit, show_progress


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def _table(title: str, systems: dict[str, dict]):
    from rich.table import Table

    from ..evaluate import METRIC_TABLE

    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("better", style="dim")
    for name in systems:
        t.add_column(name, justify="right")
    for key, label, fmt, better in METRIC_TABLE:
        cells = [_fmt(m.get(key), fmt) for m in systems.values()]
        if all(c == "–" for c in cells):
            continue
        t.add_row(label, better, *cells)
    return t


def _verdict_line(v: dict) -> str | None:
    """One line: beats the naive copy (with the paired 95 % interval over a set)? within the teacher margin?"""
    parts = []
    for key, gain, what in (("beats_naive_on_closure", "closure_gain_over_naive", "/p b m/ closure"),
                            ("beats_naive_on_jaw_contrast", "jaw_gain_over_naive", "jaw contrast")):
        if gain in v:
            g = v[gain]
            parts.append(("beats" if g["significant"] else "does NOT significantly beat") + f" the naive copy on {what}"
                         f" ({g['mean']:+.2f}, 95% CI {g['ci95'][0]:+.2f}..{g['ci95'][1]:+.2f}, {g['lines']} lines)")
        elif key in v:
            parts.append(("beats" if v[key] else "does NOT beat") + f" the naive copy on {what}")
    if "less_source_leak_than_naive" in v:
        parts.append(("less" if v["less_source_leak_than_naive"] else "NOT less") + " source-mouth leak than the copy")
    if "matches_teacher_within_margin" in v:
        parts.append(("within" if v["matches_teacher_within_margin"] else "NOT within")
                     + f" {v['teacher_margin']:.2f} of the teacher's closure rate (gap {v['closure_gap_to_teacher']:+.2f})")
    return "generated: " + "; ".join(parts) if parts else None


def _score_reference(console, generated: Optional[Path], reference: Path, dub: Optional[Path], max_lag: int) -> dict:
    """`eval GENERATED --reference CAPTURE --dub dub.wav`: print the table, return the JSON figures."""
    from rich.table import Table

    from ..audio import load_audio
    from ..errors import InputError
    from ..livelink import read_csv
    from ..reference import load_reference, score

    if generated is None or dub is None:
        raise InputError("give GENERATED.csv, --reference CAPTURE and --dub dub.wav")
    if not 0 <= max_lag <= 30:
        raise InputError(f"--max-lag must be in 0..30 frames, got {max_lag}")
    anim = read_csv(generated)
    ref = load_reference(reference)
    audio = load_audio(dub, what="dub audio")
    s = score(anim, ref, audio.samples, audio.sample_rate, max_lag=max_lag)
    data = {"inputs": {"generated": str(generated), "reference": str(reference), "dub": str(dub),
                       "reference_kind": ref.kind}, **s.to_json()}
    t = Table(title=f"{generated.name} vs {reference.name}: {s.frames} frames at {s.fps:g} fps, "
                    f"{s.speech_frames} speech frames", title_justify="left")
    for col, just in (("figure", "left"), ("generated", "right"), ("loudness envelope", "right")):
        t.add_column(col, justify=just)
    t.add_row("mouth-opening r, lag 0", _fmt(s.mouth_r, "{:.2f}"), _fmt(s.envelope_r, "{:.2f}"))
    t.add_row(f"mouth-opening r, best lag ±{max_lag}", _fmt(s.mouth_r_best, "{:.2f}"), _fmt(s.envelope_r_best, "{:.2f}"))
    t.add_row("lag (frames, + = generated late)", f"{s.lag_frames:+d}", "")
    t.add_row("jawOpen r", _fmt(s.jaw_r, "{:.2f}"), "")
    console.print(t)
    c = Table(title="lower-face channels (amplitude = generated / real during speech)", title_justify="left")
    for col in ("channel", "r", "p95 ratio", "std ratio"):
        c.add_column(col, justify="left" if col == "channel" else "right")
    for name, r in s.channel_r.items():
        amp, std = s.amplitude_ratio.get(name), s.std_ratio.get(name)
        if all(not (isinstance(x, float) and math.isfinite(x)) for x in (r, amp, std)):
            continue
        c.add_row(name, _fmt(r, "{:.2f}"), _fmt(amp, "{:.2f}x"), _fmt(std, "{:.2f}x"))
    console.print(c)
    console.print(f"mouth opening: real = {s.mouth_source}; generated = rig lip gap of its weights")
    for note in s.notes:
        console.print(f"[yellow]note:[/] {note}")
    return data


@app.command("eval")
def eval_command(
    generated: Optional[Path] = typer.Argument(None, metavar="GENERATED", help="Generated animation (Live Link Face CSV) to score."),
    dub: Optional[Path] = typer.Option(None, "--dub", help="The dub audio the animation was made for."),
    dub_text: Optional[str] = typer.Option(None, "--dub-text", help="Transcript of the dub (phoneme timing by alignment)."),
    phonemes: Optional[Path] = typer.Option(None, "--phonemes", help="Phoneme alignment JSON instead of --dub-text."),
    lang: str = typer.Option("fr", "--lang", help="Language of the dub (for --dub-text alignment)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Source performance (.perf or Live Link CSV)."),
    timemap: Optional[Path] = typer.Option(None, "--timemap", help="Time map JSON from `dubtool align`."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all figures to this JSON file; --json - "
                                            "prints them on stdout (the tables then go to stderr) and a failure "
                                            "as an error object {\"error\": ..., \"exit_code\": N}."),
    with_baselines: bool = typer.Option(False, "--baselines", help="Also score the teacher and naive-copy baselines."),
    eval_set: Optional[Path] = typer.Option(None, "--set", help="Evaluation set manifest (scripts/build_evalset.py)."),
    model: Optional[str] = typer.Option(None, "--model", help="Flow model checkpoint for --set (default: shipped; "
                                                           "'none' = baselines only)."),
    set_langs: Optional[str] = typer.Option(None, "--langs", help="With --set: only these languages, comma-separated."),
    limit: Optional[int] = typer.Option(None, "--limit", help="With --set: at most this many items per language."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Real performance of the dub's own audio to "
                                             "score against: Live Link Face CSV, .perf, or a video (extracted)."),
    max_lag: int = typer.Option(3, "--max-lag", help="With --reference: lag search range (frames)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Score lip sync (/p b m/ closure, jaw, lag), upper-face fidelity (FDD, correlation), source-mouth leak and
    jitter of a generated animation; with --reference, against a real performance of the same audio
    (mouth-opening r, lag, per-channel r and amplitude); with --set, of the model over the held-out set."""
    from rich.console import Console

    from ..cli import set_output_mode
    from ..errors import InputError
    from ..fileio import require_distinct_outputs, write_text_atomic

    to_stdout = json_out is not None and str(json_out) == "-"
    if to_stdout:
        set_output_mode(as_json=True)
        json_out = None
    require_distinct_outputs({"GENERATED": generated, "--dub": dub, "--phonemes": phonemes, "--source": source,
                              "--timemap": timemap, "--set": eval_set, "--model": model}, {"--json": json_out})
    console = stderr_console() if to_stdout else Console()  # with --json - stdout holds the JSON: tables on stderr
    if eval_set is not None:
        from rich.progress import Progress

        from ..evaluate import evaluate_set

        with Progress(transient=True, console=stderr_console(), disable=not show_progress(quiet)) as bar:
            task = bar.add_task("evaluating", total=None)

            def progress(k, n, item):
                bar.update(task, total=n, completed=k, description=f"evaluating {item}")

            langs = [s.strip() for s in set_langs.split(",") if s.strip()] if set_langs else None
            none = model is not None and model.lower() == "none"
            report = evaluate_set(eval_set, None if none else model, langs=langs, limit=limit, baselines_only=none,
                                  progress=progress)
        data = report.to_json()
        for lang_code, systems in report.summary.items():
            n = max((m.get("items", 0) for m in systems.values()), default=0)
            console.print(_table(f"{lang_code}: {n} line(s)", systems))
            line = _verdict_line(data["verdict"][lang_code])
            if line:
                console.print(line)
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    elif reference is not None:
        data = _score_reference(console, generated, reference, dub, max_lag)
    else:
        from ..audio import load_audio
        from ..evaluate import evaluate_line, load_phonemes_json, load_source_animation, load_timemap_file, \
            phonemes_from_text
        from ..livelink import read_csv

        if generated is None or dub is None:
            raise InputError("give GENERATED.csv and --dub dub.wav (or --set manifest.json)")
        if phonemes is None and dub_text is None:
            raise InputError("give the dub's --dub-text or a --phonemes alignment JSON")
        anim = read_csv(generated)
        dub_audio = load_audio(dub, what="dub audio")
        phones = load_phonemes_json(phonemes) if phonemes is not None else phonemes_from_text(dub_audio, dub_text, lang)
        src = load_source_animation(source) if source is not None else None
        tm = load_timemap_file(timemap) if timemap is not None else None
        if tm is not None and src is None:
            raise InputError("--timemap needs --source (the performance it maps)")
        report = evaluate_line(anim, dub_audio, phones, src, tm, with_baselines)
        data = report.to_json()
        data["inputs"].update(generated=str(generated), dub=str(dub), lang=lang)
        console.print(_table(f"{generated.name}: {anim.num_frames} frames at {anim.fps:g} fps",
                             {k: v for k, v in data["systems"].items()}))
        line = _verdict_line(data["verdict"])
        if line:
            console.print(line)
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        console.print(f"wrote {json_out}")
    if to_stdout:
        emit(True, data)
