"""Peak memory of long jobs: `dubtool localize` on 60 s / 600 s / 3600 s dubs (one 60 s source take) and
`dubtool extract` on 60 s / 600 s / 3600 s of video. Each job is its own child process; the figure is that
child's peak resident set (ru_maxrss from wait4), so start-up (torch, the model) is included and the
growth with length is the difference between rows. Goal (issue 15): flat from 60 s to 1 h (long dubs and
takes stream through temporary files: the hour needs ~0.3 GB (dub) / ~1.3 GB (video) free in $TMPDIR).

Material: a minute of Debian's asterisk prompts chained with pauses (benchmarks/bench_localize.chain, real
speech), repeated to each dub's length; video: examples/actor_en.mp4 looped by ffmpeg (-stream_loop).
Usage: bench_memory.py [--dubs 60,600] [--videos 10,60] [--keep DIR]. The defaults fit run_all.sh's 900 s
per script; the hour: `bench_memory.py --dubs 60,600,3600 --videos 60,600,3600` (~60 min on 2 cores)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DUBTOOL = [sys.executable, "-m", "dubtool"]


# The job runs under a small Python process that forks it and prints its ru_maxrss. Started straight from
# this process it would report at least this process's own peak: Linux carries the peak RSS of the address
# space a vfork()ed child borrows (subprocess uses vfork) into the child's ru_maxrss, and this process
# built an hour of dub (that made every job after the 1 h dub read ~270 MB before 2026-12-02 06:30).
_MEASURE = ("import os, sys\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
            "    os.execvp(sys.argv[1], sys.argv[1:])\n"
            "_, status, usage = os.wait4(pid, 0)\n"
            "print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))\n")


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS of the job in MB, wall seconds); raises if the command fails."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True)
    maxrss_kib, code = (int(x) for x in proc.stdout.split())
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {proc.stderr.decode(errors='replace')[-500:]}")
    return maxrss_kib / 1024, time.perf_counter() - t  # Linux: ru_maxrss in KiB


def looped_video(src: Path, seconds: float, out: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds),
                    "-c", "copy", str(out)], check=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dubs", default="60,600", help="dub lengths (s) for localize (3600: the hour)")
    ap.add_argument("--videos", default="10,60", help="video lengths (s) for extract")
    ap.add_argument("--keep", default=None, help="work in this folder (kept)")
    args = ap.parse_args()
    from bench_localize import chain, model_path, performance_for

    import numpy as np

    from dubtool.audio import Audio, write_wav
    from dubtool.performance import save_performance

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench_memory_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        model, what = model_path(tmp)
        print(f"model: {what}; peak RSS of each child process (start-up and model included)")
        src = tmp / "src.perf"
        save_performance(performance_for(chain("en_US_f_Allison", 60.0)), src)
        base = chain("fr_CA_f_June", 60.0).samples  # a minute of prompts, repeated to length
        for seconds in [float(s) for s in args.dubs.split(",") if s.strip()]:
            dub = tmp / f"dub_{seconds:g}.wav"
            n = int(seconds * 16000)
            write_wav(Audio(np.tile(base, -(-n // len(base)))[:n], 16000), dub)
            mb, wall = peak_rss_mb([*DUBTOOL, "localize", str(src), str(dub), "--lang", "fr", "--model-path", model,
                                    "-o", str(tmp / f"out_{seconds:g}.csv"), "--quiet"])
            print(f"localize {seconds:g} s dub (60 s source): peak RSS {mb:.0f} MB ({wall:.0f} s wall)", flush=True)
            dub.unlink()
        for seconds in [float(s) for s in args.videos.split(",") if s.strip()]:
            video = looped_video(ROOT / "examples" / "actor_en.mp4", seconds, tmp / f"video_{seconds:g}.mp4")
            mb, wall = peak_rss_mb([*DUBTOOL, "extract", str(video), "-o", str(tmp / f"video_{seconds:g}.perf"),
                                    "--quiet"])
            print(f"extract {seconds:g} s video: peak RSS {mb:.0f} MB ({wall:.0f} s wall)", flush=True)
            video.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
