"""review: the static review page of a dubbed batch. A real small batch (espeak dubs on the bundled
actor's voice, a tiny untrained flow model, one failing line) -> `dubtool review` -> the page in
headless Chromium from file://: every line listed, sort, filter, a video playing in sync, a mark by
keyboard kept across a reload, the marks CSV downloaded and re-run through `localize --manifest`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dubtool.arkit import NUM_CHANNELS, Animation, index
from dubtool.audio import Audio, load_audio, write_wav
from dubtool.batch import read_manifest, run_manifest, write_results
from dubtool.localize import LocalizeOptions
from dubtool.performance import Performance, save_performance
from dubtool.review import (Thresholds, build_html, decode_curve, encode_curve, line_flags, load_batch,
                            record_from_report, write_review)

ROOT = Path(__file__).resolve().parent.parent
ACTOR = ROOT / "examples" / "actor_en.mp4"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FR_TEXT = "Bonsoir, mon ami. Merci beaucoup."
COMMENT = 'lips late on "merci", try --model teacher'  # quotes and a comma: the CSV must quote it


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dubtool", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_model):
    """A 3-line batch run by `localize --manifest`: fr, a slow es dub (stretched), a missing dub (fails). The source take is the bundled actor's voice (first 2.6 s) with a
    tracking gap held still, and its .perf points at the actor video (the page plays it)."""
    from dubtool.espeak import synthesize

    d = tmp_path_factory.mktemp("batch")
    voice = load_audio(ACTOR)
    sr = voice.sample_rate
    src = Audio(voice.samples[: int(2.6 * sr)], sr)
    fps, n = 25.0, int(2.6 * 25)
    t = np.arange(n) / fps
    v = np.zeros((n, NUM_CHANNELS), np.float32)
    v[:, index("browInnerUp")] = np.clip(1 - np.abs(t - 1.0) / 0.4, 0, 1)
    found = np.ones(n, bool)
    found[40:52] = False  # 0.48 s untracked: longer than extract's max gap, so "held"
    gaps = [{"start_frame": 40, "end_frame": 52, "start_s": 1.6, "end_s": 2.08, "duration_s": 0.48, "filled": "held"}]
    z = np.zeros((n, 478, 3), np.float32)
    perf = Performance(z, z.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), Animation(v, fps), found,
                       found.astype(np.float32), src, {"source": str(ACTOR), "face_found_ratio": float(found.mean()),
                                                       "gaps": gaps, "long_gaps": 1})
    (d / "takes").mkdir()
    save_performance(perf, d / "takes" / "actor.perf")
    (d / "dubs").mkdir()
    write_wav(synthesize(FR_TEXT, "fr-fr", rate_wpm=170).audio, d / "dubs" / "a_fr.wav")
    write_wav(synthesize("Buenas noches, amigo.", "es", rate_wpm=80).audio, d / "dubs" / "b_es.wav")
    # (no dub_text: timing a transcript costs ~10 s a line here; closure is checked on a report below)
    rows = ["source,dub,lang,output",
            "takes/actor.perf,dubs/a_fr.wav,fr,out/a_fr.csv",
            "takes/actor.perf,dubs/b_es.wav,es,out/b_es.csv",
            "takes/actor.perf,dubs/missing.wav,fr,out/c_fr.csv"]
    (d / "lines.csv").write_text("\n".join(rows) + "\n")
    # in-process (torch is loaded already); the CLI's --review wiring is checked with the bad inputs
    results = run_manifest(d / "lines.csv", LocalizeOptions(model_path=tiny_model))
    assert [r.status for r in results] == ["done", "done", "failed"], results
    write_results(results, d / "lines.csv")
    return d


def test_records_carry_each_lines_figures_and_flags(batch):
    recs = load_batch(batch).records
    assert [(r.line, Path(r.id).name, r.status) for r in recs] == [
        (2, "a_fr.csv", "done"), (3, "b_es.csv", "done"), (4, "c_fr.csv", "failed")]
    fr, es, bad = recs
    assert "missing.wav" in bad.message and line_flags(bad) == ["failed"]
    for rec in (fr, es):
        rep = json.loads((batch / "out" / (Path(rec.id).stem + ".report.json")).read_text())
        assert rep["metrics"]["jitter"] > 0 and rep["source_tracking"]["long_gaps"] == 1  # localize reports them
        assert rec.lang == rep["lang"] and rec.duration_s == pytest.approx(rep["dub_duration_s"])
        assert rec.jitter == pytest.approx(rep["metrics"]["jitter"])
        assert rec.lag_frames == rep["metrics"]["lip_audio_lag_frames"]
        factors = [(p["dub"][1] - p["dub"][0]) / (p["source"][1] - p["source"][0]) for p in rep["timemap"]["phrases"]]
        assert rec.phrase_stretch == pytest.approx(max(max(f, 1 / f) for f in factors))
        assert rec.align_cost == pytest.approx(max(p["cost"] for p in rep["timemap"]["phrases"]))
        assert rec.gaps == 1 and rec.long_gaps == 1 and "tracking" in line_flags(rec)  # the held gap
        assert rec.source_video == str(ACTOR)
        # the embedded curves are the CSV's, to the page's 1/63 resolution
        from dubtool.livelink import read_csv

        jaw = read_csv(rec.id).values[:, index("jawOpen")]
        assert np.abs(decode_curve(rec.curves["jawOpen"]) - jaw).max() <= 0.5 / 63 + 1e-6
    assert es.closure is None and "bilabials" not in line_flags(es)  # no transcript: not judged
    # a line localized with a transcript: its closure decides the flag
    rep = json.loads((batch / "out" / "a_fr.report.json").read_text())
    for rate, flagged in ((0.5, True), (0.8, False)):
        rep["metrics"].update(bilabial_closure_rate=rate, bilabials=6)
        rec = record_from_report(2, fr.id, "done", report=rep)
        assert rec.closure == rate and ("bilabials" in line_flags(rec)) == flagged
    assert "stretch" in line_flags(es, Thresholds(max_stretch=es.phrase_stretch - 0.01))
    assert "stretch" not in line_flags(es, Thresholds(max_stretch=es.phrase_stretch + 0.01))


def test_page_is_self_contained_and_escapes_text(batch, tmp_path):
    recs = load_batch(batch).records
    evil = recs[2].__class__(**{**recs[2].__dict__, "message": "</script><script>alert(1)</script>"})
    html = build_html([recs[0], evil], "lines", "k", batch)
    assert html.count("<script") == 2 and "alert(1)</script>" not in html
    for ref in ("http://", "https://", "<link", "src=\"/"):
        assert ref not in html
    x = np.linspace(0, 1, 200)
    assert np.abs(decode_curve(encode_curve(x)) - x).max() <= 0.5 / 63 + 1e-9 and len(encode_curve(x)) == 200
    assert list(decode_curve(encode_curve(np.array([-1.0, 2.0, np.nan])))) == [0.0, 1.0, 0.0]  # clamped


def test_marks_csv_review_column_is_checked(tmp_path):
    from dubtool.errors import InputError

    (tmp_path / "m.csv").write_text("source,dub,lang,output,review,comment\na.perf,a.wav,fr,a.csv,flag,\n"
                                    "b.perf,b.wav,fr,b.csv,maybe,hm\n")
    with pytest.raises(InputError, match="line 3: review must be approve or flag"):
        read_manifest(tmp_path / "m.csv")


def test_review_cli_bad_input_one_line_no_file(batch, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [(["review", str(tmp_path / "nope"), "-o", "p.html"], "not found"),
             (["review", str(tmp_path / "empty"), "-o", "p.html"], "not a batch folder"),
             (["review", str(batch), "-o", str(tmp_path / "afile" / "p.html")], "not a folder"),
             (["review", str(batch), "-o", "p.txt"], ".html"),
             (["localize", "--manifest", str(batch / "lines.csv"), "--review", "p.txt"], ".html")]
    for args, words in cases:
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("*.html")) and not list(tmp_path.rglob(".p.html*"))


def _browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium not installed (scripts/setup.sh --dev installs it)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_page_in_headless_chromium_marks_export_and_rerun(batch, tiny_model, tmp_path):
    playwright = _browser()
    r = _cli("review", str(batch), "-o", "review.html", "--previews", "--json", cwd=batch)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["lines"] == 3 and summary["previews"] == 2 and summary["failed"] == 1
    page_url = (batch / "review.html").resolve().as_uri()
    with playwright as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda req: req.failure == "net::ERR_ABORTED"  # left a line mid-load
                or errors.append(f"request failed: {req.url} {req.failure}"))
        page.goto(page_url)
        page.wait_for_selector("html[data-ready='1']")
        rows = lambda: page.eval_on_selector_all("#list tbody tr td.c-name", "els => els.map(e => e.textContent)")
        assert rows() == ["a_fr", "b_es", "c_fr"]
        # sort by the worst phrase stretch, largest first (unknown last), then back by line
        stretch = {Path(rec.id).stem: rec.phrase_stretch for rec in load_batch(batch).records}
        page.click("#list th[data-k=pstretch]")
        assert rows() == sorted(["a_fr", "b_es"], key=lambda k: -stretch[k]) + ["c_fr"]
        page.click("#list th[data-k=pstretch]")
        assert rows() == sorted(["a_fr", "b_es"], key=lambda k: stretch[k]) + ["c_fr"]
        page.click("#list th[data-k=line]")
        # filter by language, by flag, by figure
        page.select_option("#flang", "es")
        assert rows() == ["b_es"]
        page.select_option("#flang", "")
        page.select_option("#fflag", "failed")
        assert rows() == ["c_fr"]
        page.select_option("#fflag", "")
        page.select_option("#ffig", "pstretch")
        page.fill("#fval", f"{stretch['b_es'] - 0.001:.3f}")
        assert rows() == ["b_es"]
        page.fill("#fval", "")
        page.keyboard.press("Escape")  # leave the field: keys go to the page again
        # keyboard: first line, play: the dub preview and the time-mapped source video both advance
        page.keyboard.press("j")
        assert page.text_content("#detail .dhead b") == "#2 a_fr"
        page.keyboard.press(" ")
        deadline = time.monotonic() + 15  # (polled from here: the page's CSP forbids wait_for_function's eval)
        while page.evaluate("dubv.currentTime") < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        times = page.evaluate("[dubv.currentTime, srcv.currentTime, srcv.paused]")
        assert times[0] >= 0.5 and not times[2], times
        # the source plays where the time map puts the dub's clock
        knots = np.array(load_batch(batch).records[0].knots)
        assert abs(times[1] - np.interp(times[0], knots[:, 1], knots[:, 0])) < 0.3, times
        page.keyboard.press(" ")
        # flag with a comment (f, type, Enter moves on), approve the next (a)
        page.keyboard.press("f")
        page.keyboard.type(COMMENT)
        page.keyboard.press("Enter")
        assert page.text_content("#detail .dhead b") == "#3 b_es"
        page.keyboard.press("a")
        marks = json.loads(page.evaluate("localStorage.getItem('dubtool-review:' + %s)"
                                         % json.dumps(str((batch / 'lines.csv').resolve()))))
        assert {Path(k).name: v["mark"] for k, v in marks.items()} == {"a_fr.csv": "flag", "b_es.csv": "approve"}
        page.reload()
        page.wait_for_selector("html[data-ready='1']")
        assert "✓ 1" in page.text_content("#markcount") and "⚑ 1" in page.text_content("#markcount")
        with page.expect_download() as dl:
            page.keyboard.press("e")
        marks_csv = tmp_path / "marks.csv"
        dl.value.save_as(marks_csv)
        rows_ = read_manifest(marks_csv)
        assert [(Path(r.output).name, r.review) for r in rows_] == [("a_fr.csv", "flag"), ("b_es.csv", "approve")]
        assert rows_[0].comment == COMMENT and rows_[0].source == str((batch / "takes" / "actor.perf").resolve())
        with open(marks_csv, newline="") as fh:
            assert next(csv.reader(fh))[:4] == ["source", "dub", "lang", "output"]
        # the marks CSV is a manifest: the flagged line is redone, the approved one left alone
        before = {n: (batch / "out" / n).stat().st_mtime_ns for n in ("a_fr.csv", "b_es.csv")}
        again = run_manifest(marks_csv, LocalizeOptions(model_path=tiny_model))
        assert [x.status for x in again] == ["done", "skipped"] and again[1].message == "approved in review"
        assert (batch / "out" / "a_fr.csv").stat().st_mtime_ns != before["a_fr.csv"]
        assert (batch / "out" / "b_es.csv").stat().st_mtime_ns == before["b_es.csv"]
        # the page made again: the marks are still there, the re-run line is found as "re-run since marked"
        write_review(batch, batch / "review.html")
        page.reload()
        page.wait_for_selector("html[data-ready='1']")
        page.select_option("#fmark", "stale")
        assert rows() == ["a_fr"]
        browser.close()
    assert not errors, errors
