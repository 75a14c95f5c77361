"""Audio in and out: decode anything ffmpeg reads to mono float32 at a chosen rate, write WAV
atomically, and the model's front end (log-mel features at the animation frame rate).

Mel features: a numpy STFT with torch.stft's conventions (the models were trained on torch.stft's
features; the numbers agree to float32 rounding, tests/test_audio.py) + a Slaney mel filter bank (the
same matrix as librosa.filters.mel's defaults, bit for bit, computed here in numpy: importing
librosa.filters pulls scipy.signal and numba, seconds of CPU on the first line of every run). No torch:
a one-shot run on ONNX Runtime never imports it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .diskarray import DiskArray
from .errors import DependencyError, InputError, SilenceError
from .fileio import atomic_path, require_file

SAMPLE_RATE = 16_000  # everything inside dubtool runs at 16 kHz mono
MAX_AUDIO_S = 4 * 3600  # refuse absurd inputs with a clear message instead of exhausting memory


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in -1..1 at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def ffmpeg_binary() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise DependencyError("ffmpeg not found; install it (Debian/Ubuntu: apt-get install ffmpeg)")
    return exe


def ffmpeg_path(path: str | os.PathLike) -> str:
    """A file name as ffmpeg and ffprobe must get it. They read a name starting with '-' as an option
    and 'word:rest' as a protocol (concat:, http:, pipe:), and pathlib turns './-x.mp4' back into
    '-x.mp4', so such relative names get an explicit './'."""
    s = os.fspath(path)
    if s and not os.path.isabs(s) and (s.startswith("-") or ":" in s.split(os.sep, 1)[0]):
        return "." + os.sep + s
    return s


class SampleFile(DiskArray):
    """Float32 samples of a long recording kept in an unlinked temporary file and read window by window:
    len(), slices and integer-array indexing work as on the array, each reading only the samples asked
    for, so an hour of dub (230 MB of float32) is never resident. `span(a, b)` is a view of samples a..b-1.
    np.asarray() reads the whole span (the fallback for the few steps that need the recording at once)."""

    def __init__(self, file, length: int, offset: int = 0) -> None:
        super().__init__((length,), "<f4", file, offset)

    def span(self, a: int, b: int) -> "SampleFile":
        return self.view(a, b)


def sample_span(samples, a: int, b: int):
    """samples[a:b] of an array (a view) or of a SampleFile (a SampleFile view: nothing read)."""
    if isinstance(samples, SampleFile):
        return samples.span(a, b)
    return samples[a:b]


def samples_array(samples, dtype=np.float32):
    """`samples` as an array for windowed readers: a SampleFile stays as it is (read where indexed)."""
    return samples if isinstance(samples, SampleFile) else np.asarray(samples, dtype)


STREAM_AUDIO_S = 180  # load_audio(windowed=True): a recording longer than this stays on disk (SampleFile)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, what: str = "audio file",
               windowed: bool = False) -> Audio:
    """Decode the first audio stream of any media file to mono float32 at `sample_rate`
    (ffmpeg downmixes stereo and resamples). With `windowed`, a recording longer than STREAM_AUDIO_S
    is streamed to an unlinked temporary file and its samples are a SampleFile (read in windows).
    A 16-bit mono WAV already at `sample_rate` is read directly (_read_plain_wav), the same samples."""
    p = require_file(path, what)
    samples = _read_plain_wav(p, sample_rate, STREAM_AUDIO_S * sample_rate if windowed else MAX_AUDIO_S * sample_rate)
    if samples is not None:
        return Audio(samples, sample_rate)
    cmd = [ffmpeg_binary(), "-nostdin", "-v", "error", "-i", ffmpeg_path(p), "-map", "0:a:0", "-t", str(MAX_AUDIO_S + 1),
           "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    r = _run_to_buffer(cmd, spill_bytes=4 * STREAM_AUDIO_S * sample_rate if windowed else None)
    if r.returncode != 0:
        if hasattr(r.stdout, "close"):
            r.stdout.close()
        msg = r.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = msg[-1] if msg else "unknown error"
        if "matches no streams" in detail or "Stream map" in detail:
            raise InputError(f"{p}: has no audio track")
        raise InputError(f"{p}: cannot decode audio ({detail})")
    if isinstance(r.stdout, (bytes, bytearray)):
        samples = np.frombuffer(r.stdout, dtype="<f4")  # a writable view of the bytearray: no copy
    else:  # spilled to a file (cleaned of NaN/inf block by block on the way)
        samples = SampleFile(r.stdout, os.fstat(r.stdout.fileno()).st_size // 4)
    if samples.size == 0:
        raise InputError(f"{p}: audio track is empty")
    if samples.size > MAX_AUDIO_S * sample_rate:
        raise InputError(f"{p}: audio is longer than {MAX_AUDIO_S // 3600} h, dubtool's limit; cut it into parts "
                         f"(ffmpeg -ss START -t LENGTH)")
    if isinstance(samples, np.ndarray) and not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples)
    return Audio(samples, sample_rate)


def _read_plain_wav(path: Path, sample_rate: int, max_frames: int) -> np.ndarray | None:
    """The samples of a WAV that needs no conversion (16-bit PCM, mono, at `sample_rate`, 1..max_frames
    frames), read without an ffmpeg process (whose start-up was ~0.1 s of a batch line's 0.24 s); bit for
    bit what ffmpeg decodes (s16 * 2^-15, tests/test_audio.py). None for anything else (other rates,
    layouts or codecs, WAVE_FORMAT_EXTENSIBLE, a truncated or odd file): ffmpeg decodes it."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) != (1, 2, sample_rate, "NONE"):
                return None
            n = w.getnframes()
            if not 0 < n <= max_frames:
                return None
            data = w.readframes(n)
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    if len(data) != 2 * n:
        return None
    return np.frombuffer(data, "<i2").astype(np.float32) * np.float32(2.0 ** -15)


def _run_to_buffer(cmd: list[str], spill_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg with its stdout read into one growing bytearray (the decoded samples are held once,
    not as bytes plus an array copy) and its stderr in a temporary file. With `spill_bytes`, output
    past that size moves to an unlinked temporary file (returned open as stdout), NaN/inf zeroed."""
    import tempfile

    buf = bytearray()
    spill = None
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                block = proc.stdout.read(1 << 20)
                if not block:
                    break
                buf += block
                if spill_bytes is not None and (spill is not None or len(buf) > spill_bytes):
                    if spill is None:
                        spill = tempfile.TemporaryFile(prefix="dubtool-audio-")
                    whole = len(buf) - len(buf) % 4
                    x = np.frombuffer(buf, "<f4", count=whole // 4)
                    if not np.all(np.isfinite(x)):
                        x = np.nan_to_num(x)
                    spill.write(x.tobytes())
                    del x
                    del buf[:whole]
        except BaseException:
            if spill is not None:
                spill.close()
            raise
        finally:
            proc.stdout.close()
            proc.wait()
        err.seek(0)
        stderr = err.read()
    if spill is not None:
        spill.flush()
        return subprocess.CompletedProcess(cmd, proc.returncode, spill, stderr)
    return subprocess.CompletedProcess(cmd, proc.returncode, buf, stderr)


def write_wav(audio: Audio, path: str | os.PathLike) -> Path:
    """16-bit PCM WAV, written atomically. Python's own file I/O (the stdlib `wave` module), so a full
    disk is an OSError that becomes one clear line (libsndfile reports it as an opaque error)."""
    import wave

    samples = np.asarray(audio.samples, np.float32)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with atomic_path(path, suffix=".wav") as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(int(audio.sample_rate))
            step = 1 << 18  # frames per chunk: bounded extra memory for long audio
            for i in range(0, len(samples), step):
                chunk = np.clip(samples[i:i + step], -1.0, 1.0) * 32767.0
                w.writeframes(np.round(chunk).astype("<i2").tobytes())
    return Path(path)


ENERGY_BLOCK_SAMPLES = 1 << 18  # samples (16 s at 16 kHz) per block of window_energy: ~10 MB of float64 temporaries


def window_energy(samples: np.ndarray, starts: np.ndarray, win: int) -> np.ndarray:
    """Mean square of `samples` zero-padded by win // 2 in front (and win behind) over the windows
    [start, start + win) of the padded signal: cumulative sums block by block, so an hour of audio
    needs a few MB of float64 temporaries, not five copies of the recording. A recording shorter than
    a block is one block: the same arithmetic as a single cumulative sum."""
    x = samples_array(samples, None)
    lead = win // 2
    out = np.empty(len(starts), np.float64)
    i0 = 0
    while i0 < len(starts):
        i1 = int(np.searchsorted(starts, starts[i0] + ENERGY_BLOCK_SAMPLES, side="right"))
        i1 = max(i1, i0 + 1)
        p0, p1 = int(starts[i0]), int(starts[i1 - 1]) + win  # padded-signal span of these windows
        a, b = max(0, p0 - lead), max(0, min(len(x), p1 - lead))
        seg = np.zeros(p1 - p0, np.float64)
        seg[a + lead - p0:b + lead - p0] = np.asarray(x[a:b], np.float64) ** 2
        c = np.concatenate([[0.0], np.cumsum(seg)])
        rel = starts[i0:i1] - p0
        out[i0:i1] = (c[rel + win] - c[rel]) / win
        i0 = i1
    return out


def rms_envelope(samples: np.ndarray, sample_rate: int, fps: float) -> np.ndarray:
    """Frame-rate RMS energy (one value per animation frame, window = 2 frames)."""
    hop = sample_rate / fps
    n = int(np.ceil(len(samples) / hop))
    win = int(round(2 * hop))
    starts = (np.arange(n) * hop).astype(np.int64)
    e = window_energy(samples, starts, win)
    return np.sqrt(np.maximum(e, 0.0)).astype(np.float32)


def require_speech(audio: Audio, source: str, min_rms_db: float = -50.0) -> None:
    """Raise SilenceError when the loudest part of the audio is still below `min_rms_db` dBFS."""
    env = rms_envelope(audio.samples, audio.sample_rate, 50.0)
    peak_db = 20 * np.log10(max(float(np.percentile(env, 99)) if env.size else 0.0, 1e-10))
    if peak_db < min_rms_db:
        raise SilenceError(f"{source}: no speech found (loudest level {peak_db:.0f} dBFS)")


N_MELS = 80
N_FFT = 512
WIN = 400  # 25 ms at 16 kHz
MEL_FMIN, MEL_FMAX = 20.0, 7600.0

# Slaney's Auditory Toolbox mel scale (librosa's default, htk=False): linear below 1 kHz, log above.
_MEL_F_SP = 200.0 / 3
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    mel = hz / _MEL_F_SP
    log_part = _MEL_MIN_LOG_MEL + np.log(np.maximum(hz, _MEL_MIN_LOG_HZ) / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return np.where(hz >= _MEL_MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    log_part = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (np.maximum(mel, _MEL_MIN_LOG_MEL) - _MEL_MIN_LOG_MEL))
    return np.where(mel >= _MEL_MIN_LOG_MEL, log_part, _MEL_F_SP * mel)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters on the Slaney mel scale, each scaled to
    unit area ("slaney" norm): what librosa.filters.mel gives with its defaults (tests compare)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    # float32 before the area scaling, in place, as librosa rounds: the features stay bit-identical.
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights


def mel_features(samples: np.ndarray, sample_rate: int, fps: float, n_mels: int = N_MELS, subframes: int = 1
                 ) -> np.ndarray:
    """Log-mel spectrogram at the animation frame rate: a (frames, subframes * n_mels) float32 array,
    frames = round(duration * fps). The STFT hop is 10 ms (400-sample periodic Hann window centred in a
    512-point FFT, reflect-padded ends: torch.stft's conventions, which the shipped models were trained on).

    subframes = 1: the 10 ms frames are averaged into animation frames, so each row covers exactly
    its frame's time span (a 33 ms frame then blurs a 20-30 ms plosive closure into its neighbours).
    subframes = K > 1: each row stacks K log-mel vectors sampled (linear interpolation of the 10 ms
    frames) at the centres of K equal parts of its frame, earliest first, so the network sees the
    timing of closures and bursts inside a frame."""
    if subframes < 1:
        raise InputError(f"mel subframes must be >= 1, got {subframes}")
    if sample_rate != SAMPLE_RATE:
        import librosa

        samples = librosa.resample(np.asarray(samples, np.float32), orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        sample_rate = SAMPLE_RATE
    n_out = mel_frame_count(len(samples), sample_rate, fps)
    return mel_features_window(samples, sample_rate, fps, (0, n_out), n_mels, subframes)


def mel_frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """Rows of mel_features for `num_samples` samples: round(duration * fps), at least 1."""
    return max(1, int(round(num_samples / sample_rate * fps)))


@functools.lru_cache(maxsize=4)
def _mel_filterbank(sample_rate: int, n_mels: int) -> np.ndarray:
    return mel_filterbank(sample_rate, N_FFT, n_mels, MEL_FMIN, MEL_FMAX)


@functools.lru_cache(maxsize=1)
def _stft_window() -> np.ndarray:
    """torch.hann_window(WIN) (periodic) zero-padded to N_FFT, centred: what torch.stft applies."""
    w = np.zeros(N_FFT, np.float64)
    left = (N_FFT - WIN) // 2
    w[left:left + WIN] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    return w


def _log_mel(frames: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """(frames, N_FFT) samples -> (frames, n_mels) float32 log power mel (power floored at 1e-6)."""
    spec = np.abs(np.fft.rfft(frames * _stft_window(), axis=1)) ** 2
    return np.log(np.maximum(spec @ fb.T.astype(np.float64), 1e-6)).astype(np.float32)


MEL_BLOCK_STFT_FRAMES = 250  # 2.5 s of 10 ms STFT frames per FFT block in mel_features_window (temporaries ~4 MB)


def mel_features_window(samples: np.ndarray, sample_rate: int, fps: float, frames: tuple[int, int],
                        n_mels: int = N_MELS, subframes: int = 1) -> np.ndarray:
    """Rows frames[0]:frames[1] of mel_features(samples, ...) computed from the samples around them
    only, so a long recording is featurised window by window in bounded memory. Equal to the
    whole-file rows (same STFT frames, reflect padding at the file's ends, same interpolation) up to
    float rounding; tests/test_streaming.py checks it. numpy only (no torch: a one-shot run does not
    pay torch's import), the same numbers as the torch.stft front end the models were trained with
    up to float32 rounding (tests/test_audio.py)."""
    if subframes < 1:
        raise InputError(f"mel subframes must be >= 1, got {subframes}")
    if sample_rate != SAMPLE_RATE:
        raise InputError(f"windowed mel features need {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    x = samples_array(samples)
    length = len(x)
    hop = sample_rate // 100
    n_stft = 1 + length // hop  # torch.stft(center=True) frames of the whole file
    n_out = mel_frame_count(length, sample_rate, fps)
    a, b = max(0, int(frames[0])), min(n_out, int(frames[1]))
    if a >= b:
        return np.zeros((0, subframes * n_mels), np.float32)
    if subframes > 1:
        t = (np.arange(a * subframes, b * subframes, dtype=np.float64) + 0.5) / (subframes * fps)
        pos = np.clip(t * sample_rate / hop, 0, n_stft - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_stft - 1)
        j0, j1 = int(lo[0]), int(hi[-1]) + 1
    else:
        j0 = max(0, int(a * sample_rate / (hop * fps)) - 2)
        j1 = n_stft if b == n_out else min(n_stft, int(np.ceil(b * sample_rate / (hop * fps))) + 2)
    fb = _mel_filterbank(sample_rate, n_mels)
    half = N_FFT // 2
    offsets = np.arange(N_FFT)
    parts = []
    for k0 in range(j0, j1, MEL_BLOCK_STFT_FRAMES):
        k1 = min(j1, k0 + MEL_BLOCK_STFT_FRAMES)
        # Samples of the reflect-padded file that STFT frames k0..k1-1 read (center=True pads N_FFT/2).
        idx = (np.arange(k0, k1) * hop)[:, None] + offsets[None, :] - half
        idx = np.abs(idx)
        idx = np.where(idx >= length, 2 * (length - 1) - idx, idx)
        parts.append(_log_mel(x[idx].astype(np.float64), fb))
    mel = np.concatenate(parts)  # STFT frames j0..j1-1
    if subframes > 1:
        w = (pos - lo).astype(np.float32)[:, None]
        out = mel[lo - j0] * (1 - w) + mel[hi - j0] * w
        return out.reshape(b - a, subframes * n_mels)
    # Each 10 ms STFT frame goes to the animation frame it falls in (float32 arithmetic, as torch did), then average.
    idx = np.minimum((np.arange(j0, j1).astype(np.float32) * np.float32(hop / sample_rate) * np.float32(fps))
                     .astype(np.int64), n_out - 1)
    keep = (idx >= a) & (idx < b)
    out = np.zeros((b - a, n_mels), np.float32)
    np.add.at(out, idx[keep] - a, mel[keep])
    cnt = np.maximum(np.bincount(idx[keep] - a, minlength=b - a), 1).astype(np.float32)
    return out / cnt[:, None]
