"""Speed figures of `dubtool keyframes`: one line per figure, median of several runs.

    .venv/bin/python benchmarks/bench_keyframes.py
"""

import statistics
import subprocess
import sys

from timing import timed  # benchmarks/timing.py

SCRIPT = "\n".join([
    "Context: she has just found out her brother lied to her.",
    "(surprised) Wait, you knew?! [angry] You KNEW all this time!",
    "(sighs) I guess it doesn't matter now... *nods* Fine.",
    "Are you even listening to me? (glances left) Someone's coming.",
    "[whispering] We can't talk here. *blinks* Later, okay?",
] * 2)


def main():
    from dubtool.keyframes import KeyframeTrack, PlanOptions, keyframe_curves, plan_offline

    opts = PlanOptions(use_embedding=False)
    track = plan_offline(SCRIPT, options=opts)
    print(f"offline plan (lexicon), {len(track.words)}-word script: {timed(lambda: plan_offline(SCRIPT, options=opts)).median * 1e3:.1f} ms")
    long = KeyframeTrack(60.0, 30.0, tuple(k for k in track.keyframes), blinks_per_min=17.0)
    print(f"keyframe_curves, 60 s at 30 fps, {len(track.keyframes)} keys: {timed(lambda: keyframe_curves(long, 30.0, 60.0)).median * 1e3:.1f} ms")
    # Scaling: the whole plan + curves for a script of N lines (issue: 100/400/1600 lines took 1.6/5.1/52.6 s).
    import time

    lines = SCRIPT.splitlines()[1:] + ["She opens the letter, gasps in shock, then frowns angrily.",
                                       "ANNA: (not angry, slightly tired) The train leaves at five."]
    for n in (100, 400, 1600):
        text = "\n".join(lines[i % len(lines)] for i in range(n))
        t0 = time.perf_counter()
        tr = plan_offline(text, options=opts)
        t1 = time.perf_counter()
        keyframe_curves(tr, 30.0, tr.duration_s)
        t2 = time.perf_counter()
        print(f"{n} lines ({tr.duration_s:.0f} s, {len(tr.keyframes)} keys): plan {t1 - t0:.2f} s, curves {t2 - t1:.2f} s")
    code = ("import time;t=time.perf_counter();from dubtool.expressions import load_embedder;"
            "load_embedder().encode(['x']);print(time.perf_counter()-t)")
    loads = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout) for _ in range(3)]
    print(f"embedding model import+load (fresh process): {statistics.median(loads):.1f} s")
    from dubtool.expressions import PrototypeMatcher

    m = PrototypeMatcher()
    m.nearest("warm up")
    print(f"embedding match per cue (warm): {timed(lambda: m.nearest('seething with quiet fury'), 9).median * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
