"""Speed of the speech stage: espeak synthesis, the teacher, procedural upper face, phone alignment;
plus the word-start agreement of the two alignment methods on Debian's asterisk prompts.
Prints one line per figure (median of several runs)."""

import gzip
from pathlib import Path

import numpy as np

from dubtool import espeak, phonealign, teacher
from dubtool.audio import load_audio
from dubtool.upperface import procedural_upper_face
from timing import timed  # benchmarks/timing.py

TEXT = ("Thank you for calling. If you know your party's extension, you may dial it at any time. "
        "To speak with a customer advocate, press two. For a company directory, press four.")


def main():
    espeak.synthesize("warm up")
    for voice in ("en-us", "fr-fr"):
        t = timed(lambda: espeak.synthesize(TEXT, voice=voice))
        dt, s = t.median, t.result
        print(f"espeak synthesize {voice}: {s.audio.duration_s / dt:.0f}x real time ({s.audio.duration_s:.1f} s audio)")
    s = espeak.synthesize(TEXT)
    t = timed(lambda: teacher.lower_face_from_phonemes(s.phonemes, s.audio.duration_s, 30.0))
    dt, a = t.median, t.result
    print(f"teacher lower face: {a.num_frames / dt:.0f} frames/s ({s.audio.duration_s / dt:.0f}x real time at 30 fps)")
    dt = timed(lambda: procedural_upper_face(60.0, 30.0, np.random.default_rng(0))).median
    print(f"procedural upper face: {60.0 / dt:.0f}x real time at 30 fps")

    tr = {}
    for line in gzip.open("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "rt", errors="replace"):
        if ":" in line and not line.startswith(";"):
            k, v = line.split(":", 1)
            tr[k.strip()] = v.strip()
    names = ["agent-pass", "auth-incorrect", "all-circuits-busy-now", "agent-newlocation", "conf-onlyperson",
             "queue-thankyou", "conf-getpin", "vm-nobodyavail", "vm-password", "vm-goodbye", "pbx-transfer"]
    names = [n for n in names if n in tr and Path(f"/usr/share/asterisk/sounds/en/{n}.wav").exists()]
    audios = {n: load_audio(f"/usr/share/asterisk/sounds/en/{n}.wav") for n in names}
    phonealign.align(audios[names[0]], tr[names[0]], "en", "dtw")  # JIT warm-up
    total = sum(a.duration_s for a in audios.values())
    for method in ("dtw", "pocketsphinx"):
        dt = timed(lambda: [phonealign.align(audios[n], tr[n], "en", method) for n in names], runs=3).median
        print(f"phonealign {method}: {total / dt:.0f}x real time ({len(names)} prompts, {total:.0f} s)")
    diffs = []
    import difflib
    for n in names:
        a = phonealign.align(audios[n], tr[n], "en", "dtw").words
        b = phonealign.align(audios[n], tr[n], "en", "pocketsphinx").words
        na = [w.text.lower().strip(".,!?") for w in a]
        nb = [w.text.lower() for w in b]
        for blk in difflib.SequenceMatcher(a=na, b=nb, autojunk=False).get_matching_blocks():
            diffs += [abs(a[blk.a + k].start_s - b[blk.b + k].start_s) for k in range(blk.size)]
    d = np.array(diffs) * 1000
    print(f"word-start disagreement dtw vs pocketsphinx: median {np.median(d):.0f} ms, "
          f"p90 {np.percentile(d, 90):.0f} ms ({len(d)} words, {len(names)} prompts)")

    # Other languages: pocketsphinx with espeak's IPA mapped to the en-us phones, against DTW.
    from dubtool.corpus import asterisk_training_prompts

    fr = [(t, load_audio(w)) for t, w in asterisk_training_prompts("fr")[:11]]
    total = sum(a.duration_s for _, a in fr)
    for method in ("dtw", "pocketsphinx"):
        def run():
            out = []
            for t, a in fr:
                try:
                    out.append(phonealign.align(a, t, "fr", method).method)
                except Exception:
                    out.append("failed")
            return out
        r = timed(run, runs=3)
        print(f"phonealign fr {method}: {total / r.median:.0f}x real time ({len(fr)} prompts, {total:.0f} s; "
              f"{sum(m == 'pocketsphinx-ipa' for m in r.result)} by pocketsphinx-ipa)")


if __name__ == "__main__":
    main()
