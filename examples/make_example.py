"""Make the bundled example: examples/actor_en.mp4 (the astronaut "speaking" an English line, mouth
driven by the speech envelope, with blinks, a brow raise and a head turn) and examples/dub_fr.wav
(the same line in French). Speech is synthesised with the espeak-ng command line.

    .venv/bin/python examples/make_example.py          # rewrites the files in examples/
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from dubtool import testmedia as tm  # noqa: E402
from dubtool.audio import Audio, load_audio, write_wav  # noqa: E402

FPS = 25.0
SIZE = (640, 480)
LEAD_S, TAIL_S = 0.4, 0.5  # silence around the line (the actor settles, then speaks)
LINE_EN = ("Good evening. I have waited a long time for this moment. "
           "Tonight, we finally begin the journey together.")
LINE_FR = ("Bonsoir. J'ai attendu ce moment pendant très longtemps. "
           "Ce soir, nous commençons enfin le voyage ensemble.")


def espeak(text: str, voice: str, speed_wpm: int) -> Audio:
    with tempfile.TemporaryDirectory() as td:
        wav = Path(td) / "line.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(wav), text], check=True)
        a = load_audio(wav)
    x = a.samples / max(float(np.abs(a.samples).max()), 1e-6) * 0.7
    pad = lambda s: np.zeros(int(s * a.sample_rate), np.float32)  # noqa: E731
    return Audio(np.concatenate([pad(LEAD_S), x, pad(TAIL_S)]).astype(np.float32), a.sample_rate)


def bump(t: np.ndarray, center: float, width: float) -> np.ndarray:
    """Smooth 0..1..0 pulse of total `width` seconds."""
    x = np.clip(1 - np.abs(t - center) / (width / 2), 0, 1)
    return x * x * (3 - 2 * x)


def ramp(t: np.ndarray, start: float, end: float) -> np.ndarray:
    x = np.clip((t - start) / (end - start), 0, 1)
    return x * x * (3 - 2 * x)


def motion_for(audio: Audio) -> tm.Motion:
    n = int(round(audio.duration_s * FPS))
    t = np.arange(n) / FPS
    jaw = tm.jaw_from_audio(audio, FPS, n)
    jaw = np.convolve(jaw, [0.25, 0.5, 0.25], mode="same") * 0.85
    blink = sum(bump(t, c, 0.24) for c in (1.1, 3.4, 5.6, 6.9) if c < t[-1])
    brow = 0.9 * bump(t, 2.3, 1.4)  # raised on "a long time"
    yaw = 0.22 * (ramp(t, 3.8, 4.5) - ramp(t, 5.4, 6.2))  # turns to the subject's left and back
    pitch = 0.06 * np.sin(2 * np.pi * t / 3.1)
    roll = 0.04 * np.sin(2 * np.pi * t / 4.3 + 1.0)
    return tm.Motion(jaw=jaw, blink_left=blink, blink_right=blink, brow=brow, yaw=yaw, pitch=pitch, roll=roll)


def main() -> None:
    en = espeak(LINE_EN, "en-us", 165)
    fr = espeak(LINE_FR, "fr", 140)  # a dub usually runs a little longer than its source
    tm.make_face_video(ROOT / "actor_en.mp4", motion_for(en), FPS, SIZE, audio=en, face_fraction=0.42, crf=30)
    write_wav(fr, ROOT / "dub_fr.wav")
    (ROOT / "line_en.txt").write_text(LINE_EN + "\n", encoding="utf-8")
    (ROOT / "line_fr.txt").write_text(LINE_FR + "\n", encoding="utf-8")
    for f in ("actor_en.mp4", "dub_fr.wav", "line_en.txt", "line_fr.txt"):
        print(f"{f}: {(ROOT / f).stat().st_size / 1024:.0f} KiB")
    print(f"english {en.duration_s:.2f} s, french {fr.duration_s:.2f} s")


if __name__ == "__main__":
    main()
