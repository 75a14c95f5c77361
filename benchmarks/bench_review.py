"""The review page at scale: a synthetic 1,000-line batch on disk (manifest, results, per-line
reports and Live Link CSVs of 3-12 s, 2% failed lines), then
  * `write_review` (read the batch + build + write the page): seconds;
  * page weight (bytes);
  * in headless Chromium from file://: load-to-interactive (the page's own ready mark, ms since
    navigation start), and the latency of a sort, a filter and opening a line;
each the median of 3. Prints one line per figure.

  benchmarks/bench_review.py [--lines 1000] [--keep DIR]
  benchmarks/bench_review.py --shot PAGE.html OUT.png   (the screenshot in docs/: line 1 approved,
                                                         line 2 flagged and played 1.5 s)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dubtool.arkit import NUM_CHANNELS, Animation, index  # noqa: E402
from dubtool.livelink import write_csv  # noqa: E402
from dubtool.review import write_review  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LANGS = ("fr", "es", "de", "it", "pt-br", "ja")


def synthetic_batch(d: Path, n: int, seed: int = 0) -> Path:
    """n lines: CSVs copied from 10 templates (3-12 s at 30 fps), reports with varied figures."""
    rng = np.random.default_rng(seed)
    (d / "out").mkdir(parents=True)
    (d / "dubs").mkdir()
    templates = {}
    for k, dur in enumerate(np.linspace(3, 12, 10)):
        frames = int(dur * 30)
        t = np.arange(frames) / 30
        v = np.zeros((frames, NUM_CHANNELS), np.float32)
        v[:, index("jawOpen")] = np.clip(0.35 + 0.3 * np.sin(2 * np.pi * 3.1 * t) * np.sin(np.pi * t / dur), 0, 1)
        v[:, index("browInnerUp")] = 0.4 * np.exp(-((t - dur / 3) / 0.5) ** 2)
        v[:, index("eyeBlinkLeft")] = np.exp(-((t % 3.3 - 1.5) / 0.07) ** 2)
        p = d / f"template_{k}.csv"
        write_csv(Animation(v, 30.0), p)
        templates[k] = (p, float(dur))
    rows = ["source,dub,lang,output,dub_text"]
    results = []
    for i in range(n):
        lang = LANGS[i % len(LANGS)]
        name = f"line_{i:04d}_{lang}"
        k = int(rng.integers(10))
        src_csv, dur = templates[k]
        rows.append(f"takes/take_{i:04d}.mp4,dubs/{name}.wav,{lang},out/{name}.csv,\"Texte numéro {i}, assez court.\"")
        if rng.random() < 0.02:
            results.append({"line": i + 2, "output": f"out/{name}.csv", "status": "failed", "seconds": 0.1,
                            "message": f"dub audio not found: dubs/{name}.wav", "frames": None})
            continue
        shutil.copyfile(src_csv, d / "out" / f"{name}.csv")
        src_dur = dur / rng.uniform(0.8, 1.3)
        cuts = np.sort(rng.uniform(0.1, 0.9, 3))
        knots = [[0.0, 0.0]] + [[round(c * src_dur, 3), round(c * dur * rng.uniform(0.9, 1.1), 3)] for c in cuts] \
            + [[round(src_dur, 3), round(dur, 3)]]
        knots = [knots[0]] + sorted(knots[1:-1]) + [knots[-1]]
        phrases = [{"source": [knots[j][0], knots[j + 1][0]], "dub": [knots[j][1], knots[j + 1][1]],
                    "source_segments": 1, "dub_segments": 1, "cost": round(float(rng.gamma(2, 0.25)), 4)}
                   for j in range(len(knots) - 1)]
        report = {"version": 1, "lang": lang, "model": "flow", "source_duration_s": round(src_dur, 4),
                  "dub_duration_s": round(dur, 4), "span_s": [0.0, round(dur, 4)], "fps": 30.0,
                  "frames": int(dur * 30),
                  "timemap": {"version": 1, "source_duration_s": src_dur, "dub_duration_s": dur, "knots": knots,
                              "phrases": phrases, "method": "phrase-dp", "notes": []},
                  "metrics": {"lip_audio_lag_frames": int(rng.integers(-3, 4)),
                              "bilabial_closure_rate": round(float(rng.beta(8, 1.5)), 3), "bilabials": 6,
                              "brow_inner_up_corr": 1.0, "jitter": round(float(rng.uniform(0.004, 0.01)), 5)},
                  "source_tracking": {"face_found_ratio": round(float(1 - rng.beta(1, 60)), 4),
                                      "gaps": int(rng.poisson(0.3)), "long_gaps": int(rng.random() < 0.03),
                                      "untracked_s": 0.0, "video": None},
                  "warnings": ["dub (9.0 s) is 3.1x longer than the source"] if rng.random() < 0.01 else [],
                  "outputs": {"csv": f"out/{name}.csv"}}
        (d / "out" / f"{name}.report.json").write_text(json.dumps(report))
        results.append({"line": i + 2, "output": f"out/{name}.csv", "status": "done", "seconds": 1.0,
                        "message": "", "frames": report["frames"]})
    (d / "lines.csv").write_text("\n".join(rows) + "\n")
    (d / "lines.results.json").write_text(json.dumps({"manifest": str(d / "lines.csv"), "rows": results}))
    return d


def browser_figures(page_path: Path, runs: int = 3) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"ready": [], "load": [], "sort": [], "filter": [], "open": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("html[data-ready='1']")
            out["ready"].append(page.evaluate("window.dubtoolReviewReady"))
            out["load"].append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            out["sort"].append(page.evaluate("(() => { const t = performance.now(); "
                                             "document.querySelector('#list th[data-k=cost]').click(); "
                                             "return performance.now() - t; })()"))
            out["filter"].append(page.evaluate("(() => { const t = performance.now(); const s = "
                                               "document.getElementById('fflag'); s.value = 'bilabials'; "
                                               "s.dispatchEvent(new Event('input')); return performance.now() - t; })()"))
            out["open"].append(page.evaluate("(() => { const t = performance.now(); "
                                             "document.querySelector('#list tbody tr[data-v]').click(); "
                                             "return performance.now() - t; })()"))
            page.close()
        browser.close()
    return {k: statistics.median(v) for k, v in out.items()}


def screenshot(page_path: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(page_path.resolve().as_uri())
        page.evaluate("localStorage.clear()")
        page.reload()
        page.wait_for_selector("html[data-ready='1']")
        page.keyboard.press("j")
        page.keyboard.press("a")  # approve line 1, on to line 2
        page.keyboard.press("f")
        page.keyboard.type("brow raise lands late; retry with --seed 1")
        page.keyboard.press("Escape")
        page.keyboard.press(" ")
        time.sleep(1.5)
        page.keyboard.press(" ")
        page.screenshot(path=str(png))
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--keep", help="build the synthetic batch in this folder (kept)")
    ap.add_argument("--shot", nargs=2, metavar=("PAGE", "PNG"), help="only take the docs screenshot of PAGE")
    a = ap.parse_args()
    if a.shot:
        screenshot(Path(a.shot[0]), Path(a.shot[1]))
        return
    tmp = None
    if a.keep:
        d = Path(a.keep)
    else:
        tmp = tempfile.TemporaryDirectory()
        d = Path(tmp.name) / "batch"
    t = time.perf_counter()
    synthetic_batch(d, a.lines)
    print(f"synthetic batch: {a.lines} lines written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    page = d / "review.html"
    w = timed(lambda: write_review(d, page), runs=3)
    s = w.result
    print(f"review page, {s['lines']} lines ({s['failed']} failed; flagged: "
          + ", ".join(f"{k} {v}" for k, v in sorted(s["flags"].items())) + ")")
    print(f"write_review (read {s['lines']} reports + CSVs, build, write): {w.median:.2f} s "
          f"(median of 3, range {w.low:.2f}-{w.high:.2f})")
    print(f"page weight: {s['bytes'] / 1e6:.2f} MB ({s['bytes'] / s['lines'] / 1e3:.2f} kB a line)")
    if not Path(CHROMIUM).is_file():
        print("headless Chromium: skipped (no /usr/bin/chromium)")
        return
    b = browser_figures(page)
    print(f"headless Chromium, file://: interactive {b['ready'] / 1e3:.2f} s, load event {b['load'] / 1e3:.2f} s "
          f"(median of 3; target <= 2 s)")
    print(f"headless Chromium: sort {b['sort']:.0f} ms, filter {b['filter']:.0f} ms, open a line {b['open']:.0f} ms")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
