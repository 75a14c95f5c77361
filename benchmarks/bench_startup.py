"""Start-up and one-shot speed of the `dubtool` command: `--help`, a command's `--help`, error paths
(bad option, missing file) and a one-shot `dubtool localize` of a 3 s line from a .perf and from a
video, each run as a fresh process the way a script or CI calls it. Medians of several runs of wall
time and of CPU time (user + sys of the child: less sensitive to other jobs on a shared machine).

    python benchmarks/bench_startup.py [--runs 5] [--before /path/to/old/checkout] [--only help,perf]

--before runs the same commands with another checkout's code (PYTHONPATH) in the same loop,
alternating old and new per run, so both see the same machine load; it prints both and the ratio.
BENCH_BEFORE_PYTHONPATH / BENCH_NEW_PYTHONPATH prepend extra paths for one tree only (e.g. a folder
holding another typer release, installed with `pip install --target`).

Material: the bundled examples/actor_en.mp4 (its .perf is extracted once into a temp folder) and
Debian's asterisk French prompt "agent-pass" (2.97 s) as the dub."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUB_3S = Path("/usr/share/asterisk/sounds/fr_CA_f_June/agent-pass.wav")  # the fr-ca voice (fr/ may hold other prompts)
HEAVY = ("torch", "librosa", "scipy", "numba", "mediapipe", "matplotlib", "pydantic", "numpy")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dubtool_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("dubtool")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dubtool"]


def run_once(argv: list[str], pythonpath: str) -> tuple[float, float, int]:
    """(wall s, child CPU s, exit code) of one fresh process."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_utime + ru.ru_stime, p.returncode


def heavy_imports(argv: list[str], pythonpath: str) -> list[str]:
    """Which heavy packages the command imported (python -X importtime, top-level names)."""
    cmd = [sys.executable, "-X", "importtime", "-m", "dubtool", *argv[len(dubtool_cmd()):]]
    # cwd outside any checkout: `python -m` puts the cwd first on sys.path, ahead of PYTHONPATH
    r = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=pythonpath), capture_output=True, text=True,
                       cwd=tempfile.gettempdir())
    names = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines()
             if line.startswith("import time:")}
    return sorted(names & set(HEAVY))


def cases(tmp: Path, perf: Path | None, only: set[str] | None) -> list[tuple[str, list[str]]]:
    d = dubtool_cmd()
    out = [
        ("help", "dubtool --help", d + ["--help"]),
        ("help", "dubtool localize --help", d + ["localize", "--help"]),
        ("error", "bad option (localize --bogus)", d + ["localize", "--bogus"]),
        ("error", "missing file (localize)", d + ["localize", str(tmp / "nope.perf"), str(DUB_3S), "--lang", "fr",
                                                  "-o", str(tmp / "x.csv")]),
        ("error", "missing file (render)", d + ["render", str(tmp / "nope.csv"), "-o", str(tmp / "x.mp4")]),
        ("error", "missing file (extract)", d + ["extract", str(tmp / "nope.mp4"), "-o", str(tmp / "x.perf")]),
    ]
    if perf is not None:
        out.append(("perf", "one-shot localize, 3 s line from a .perf",
                    d + ["localize", str(perf), str(DUB_3S), "--lang", "fr", "-o", str(tmp / "perf.csv")]))
    out.append(("video", "one-shot localize, 3 s line from a video",
                d + ["localize", str(ROOT / "examples" / "actor_en.mp4"), str(DUB_3S), "--lang", "fr",
                     "-o", str(tmp / "video.csv")]))
    return [(name, argv) for kind, name, argv in out if only is None or kind in only]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", help="an older checkout to time beside this one")
    ap.add_argument("--only", help="comma list of help,error,perf,video")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    def path_for(tree: Path, extra: str) -> str:
        return os.pathsep.join(p for p in (extra, str(tree.resolve())) if p)

    trees = {"new": path_for(ROOT, os.environ.get("BENCH_NEW_PYTHONPATH", ""))}
    if args.before:
        trees = {"old": path_for(Path(args.before), os.environ.get("BENCH_BEFORE_PYTHONPATH", "")), **trees}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        perf = None
        if only is None or "perf" in only:
            perf = tmp / "actor_en.perf"
            subprocess.run(dubtool_cmd() + ["extract", str(ROOT / "examples" / "actor_en.mp4"), "-o", str(perf)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, capture_output=True)
        print(f"# start-up: {args.runs} runs each, median wall / median CPU (user+sys); load average "
              f"{os.getloadavg()[0]:.1f} at start")
        for name, argv in cases(tmp, perf, only):
            res: dict[str, list[tuple[float, float, int]]] = {k: [] for k in trees}
            for _ in range(args.runs):
                for k, pp in trees.items():
                    res[k].append(run_once(argv, pp))
            parts = []
            for k in trees:
                walls = [r[0] for r in res[k]]
                cpus = [r[1] for r in res[k]]
                rc = res[k][-1][2]
                parts.append(f"{k} {statistics.median(walls):.2f} s wall ({min(walls):.2f}-{max(walls):.2f}) / "
                             f"{statistics.median(cpus):.2f} s CPU, exit {rc}")
            line = f"{name}: " + "; ".join(parts)
            if len(trees) == 2:
                o, n = (statistics.median(r[0] for r in res[k]) for k in ("old", "new"))
                line += f"; old/new {o / n:.1f}x"
            print(line, flush=True)
            if name.startswith(("dubtool --help", "missing file (localize)", "one-shot localize, 3 s line from a .perf")):
                for k, pp in trees.items():
                    print(f"  {k} imports: {', '.join(heavy_imports(argv, pp)) or 'none of ' + '/'.join(HEAVY)}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
