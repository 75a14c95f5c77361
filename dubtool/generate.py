"""The keypoint-conditioned flow generator (after KM-Speaker): dub speech + upper-face keypoints +
a global style context -> 61-channel ARKit animation.

Pieces, each small and testable alone (as in facebookresearch/flow_matching):
  * `RectifiedFlow` — the straight probability path x_t = (1-t) x0 + t x1 and its velocity target;
  * `FlowNet` — the velocity network: conv audio front end, keypoint and style encoders, and a
    compact transformer whose self-attention is banded (local) so long takes run in overlapping
    chunks batched together;
  * `solve_ode` — Euler / midpoint integration from noise (t=0) to data (t=1);
  * `Generator` — the loaded checkpoint: normalisation stats, config, `generate()`.

Lip/jaw motion comes from the audio alone and the upper face from the keypoints: training swaps
audio and keypoints between samples (see train.py), so the network cannot read lips off keypoints.
Classifier-free guidance scales the full condition against the all-dropped one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .arkit import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, NUM_CHANNELS, Animation, index
from .errors import DependencyError, InputError, ModelError

FORMAT = "dubtool-flow"
FORMAT_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "dubtool_flow_v6.pt"
STYLE_DIM = 2 * NUM_CHANNELS
# Chunks per network call: bounds the activations (attention maps) whatever the take's length. 32 holds a
# line of up to ~2 minutes (with guidance's doubled batch) in one call.
MAX_CHUNK_BATCH = 32
# The ONNX backend's calls: ORT keeps the largest call's activations in its arena for the rest of the run, so
# smaller calls (the same numbers: each chunk row is computed alone) keep the arena the size of a short line's.
ENCODE_CHUNK_BATCH = 8  # chunks per encode call (~1 MB of activations a chunk)
VELOCITY_CHUNK_BATCH = 16  # chunk rows per velocity call (~4 MB of activations a row)
# Long takes are sampled in groups of chunks (Generator.generate): GROUP_CHUNKS chunks kept per group, plus a
# margin on each side that is sampled and thrown away. A takes of up to GROUP_CHUNKS + 2 margins chunks (about
# 3 minutes at the default 4 steps) is one group: exactly the whole-take sampling.
GROUP_CHUNKS = 32
MEL_WINDOW_FRAMES = 1024  # frames of mel features computed at a time for a group (its temporaries ~10 MB)
STYLE_Z_LIMIT = 3.0  # style context is clipped to +-3 std of the training corpus's (see normalize_inputs)


@dataclass(frozen=True)
class ModelDimensions:
    """Network shape; stored in the checkpoint (whisper-style) so `load_model` rebuilds it exactly."""

    n_mels: int = 80
    n_keypoints: int = 174
    n_channels: int = NUM_CHANNELS
    style_dim: int = STYLE_DIM
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: int = 3
    conv_kernel: int = 5
    attn_window: int = 24  # each frame attends to +-attn_window frames (0.8 s at 30 fps)
    dropout: float = 0.1  # training only
    audio_blocks: int = 0  # residual dilated conv blocks in the audio front end (0: 3 plain convs)
    audio_width: int = 0  # channels of the audio front end (0: d_model)
    audio_subframes: int = 1  # log-mel vectors stacked per animation frame (audio.mel_features)
    viseme_classes: int = 0  # >0: a linear viseme classifier on the audio features (training-only auxiliary loss)
    fps: float = 30.0
    # Speaker/channel equalisation of the audio features (0 = off): each take's long-term speech spectrum
    # (`speech_spectrum`) is moved this far (1 = all the way) onto the training corpus's (stats "mel_ref"),
    # so a voice or microphone the corpus never heard reaches the network with the corpus's average colour.
    mel_cmn: float = 0.0
    # What the network hears: "mel" (log-mel, n_mels bands) or speech_features.NAME (a pretrained multilingual
    # speech encoder's features, projected onto n_mels axes; no gain, room or spectrum handling needed)
    audio_features: str = "mel"

    @property
    def mel_width(self) -> int:
        """Audio features per frame the network reads: n_mels x audio_subframes."""
        return self.n_mels * self.audio_subframes


@dataclass(frozen=True)
class SamplerConfig:
    """Inference defaults: ODE steps and method, guidance, and the chunking of long takes."""

    steps: int = 4
    method: str = "euler"  # "euler" | "midpoint"
    guidance: float = 1.0  # 1.0 = plain conditional sampling (no extra unconditional pass)
    chunk_frames: int = 160
    overlap_frames: int = 32
    temperature: float = 1.0  # scale of the starting noise; < 1 samples closer to the mode


def style_context(values61: np.ndarray) -> np.ndarray:
    """Global style of a whole performance: per-channel mean and standard deviation of the 61
    channels (STYLE_DIM float32). A smiling actor has a high mouthSmile mean; a lively one high
    brow/head std."""
    v = np.asarray(values61, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != NUM_CHANNELS or v.shape[0] == 0:
        raise InputError(f"style context needs frames x {NUM_CHANNELS} values, got shape {v.shape}")
    return np.concatenate([v.mean(axis=0), v.std(axis=0)]).astype(np.float32)


def normalize_mel(mel: np.ndarray) -> np.ndarray:
    """Gain-invariant log-mel: subtract the utterance's loud-frame level (95th percentile of the
    frame means), so a quiet and a loud recording of the same speech look alike."""
    m = np.asarray(mel, dtype=np.float32)
    level = float(np.percentile(m.mean(axis=1), 95)) if m.size else 0.0
    return m - level


def audio_input(samples: np.ndarray, sample_rate: int, fps: float, features: str = "mel", n_mels: int = 80,
                subframes: int = 1, frames: tuple[int, int] | None = None) -> np.ndarray:
    """What the network reads of a take's audio, per frame, before standardising: (frames, n_mels * subframes)
    float32. "mel": gain-normalised log-mel (normalize_mel; whole takes only); speech_features.NAME: the speech
    encoder's projected features (rows frames[0]:frames[1] if given)."""
    if features == "mel":
        from .audio import mel_features

        if frames is not None:
            raise ModelError("log-mel input is normalised over the whole take: no frame range")
        return normalize_mel(mel_features(samples, sample_rate, fps, n_mels, subframes))
    from . import speech_features

    if features != speech_features.NAME:
        raise ModelError(f"unknown audio features {features!r} (this dubtool reads 'mel' and "
                         f"{speech_features.NAME!r}); update dubtool")
    out = speech_features.feature_rows(samples, sample_rate, fps, frames, subframes)
    if out.shape[1] != n_mels * subframes:
        raise ModelError(f"speech features are {out.shape[1]} wide, the model reads {n_mels} x {subframes}: "
                         f"models/speech_pca.npz does not belong to this checkpoint")
    return out


SPEECH_MARGIN = 4.0  # log-mel units (natural log of power, ~17 dB) under the loud-frame level that count as speech


def speech_spectrum(mel: np.ndarray) -> np.ndarray:
    """The take's long-term speech spectrum: the per-column mean of the frames within SPEECH_MARGIN of the
    loud-frame level (95th percentile of the frame means), silence and pauses left out."""
    m = np.asarray(mel, dtype=np.float32)
    if not len(m):
        return np.zeros(m.shape[1:], np.float32)
    means = m.mean(axis=1)
    return m[means >= np.percentile(means, 95) - SPEECH_MARGIN].mean(axis=0)


def equalize_spectrum(mel: np.ndarray, spectrum: np.ndarray, ref: np.ndarray, amount: float) -> np.ndarray:
    """Move the take's speech spectrum `amount` of the way onto `ref` (a per-column offset, new array)."""
    return np.subtract(mel, np.float32(amount) * (np.asarray(spectrum, np.float32) - ref), dtype=np.float32)


def _torch():
    import torch

    return torch


# ----------------------------------------------------------------------------------------------
# Network


def _build_net_classes():
    """Define the torch modules lazily so importing dubtool.generate does not import torch."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        """Pre-norm transformer block with a depthwise conv (local position) and adaLN modulation
        from the global vector (flow time + style)."""

        def __init__(self, d: int, heads: int, ff_mult: int, kernel: int, dropout: float = 0.0):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.heads = heads
            self.norm_conv = nn.LayerNorm(d)
            self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
            self.norm_attn = nn.LayerNorm(d, elementwise_affine=False)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.norm_ff = nn.LayerNorm(d, elementwise_affine=False)
            self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
            self.mod = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

        def forward(self, h, g, mask):
            b, t, d = h.shape
            h = h + self.conv(self.norm_conv(h).transpose(1, 2)).transpose(1, 2)
            s1, b1, g1, s2, b2, g2 = self.mod(g)[:, None, :].chunk(6, dim=-1)
            x = self.norm_attn(h) * (1 + s1) + b1
            q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            h = h + (1 + g1) * self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
            x = self.norm_ff(h) * (1 + s2) + b2
            return h + (1 + g2) * self.drop(self.ff(x))

    class ResConv(nn.Module):
        """Residual pair of (dilated) 1-D convolutions for the audio front end."""

        def __init__(self, w: int, kernel: int, dilation: int):
            super().__init__()
            self.a = nn.Conv1d(w, w, kernel, padding=dilation * (kernel // 2), dilation=dilation)
            self.b = nn.Conv1d(w, w, kernel, padding=kernel // 2)

        def forward(self, x):
            return x + self.b(F.gelu(self.a(F.gelu(x))))

    class FlowNet(nn.Module):
        """Velocity network v(x_t, t | audio, keypoints, style). Conditions are encoded once per
        sample (`encode`) and reused at every ODE step (`velocity`)."""

        def __init__(self, dims: ModelDimensions):
            super().__init__()
            self.dims = dims
            d, k = dims.d_model, dims.conv_kernel
            w = dims.audio_width or d
            n_in = dims.mel_width
            if dims.audio_blocks == 0:
                self.audio = nn.Sequential(
                    nn.Conv1d(n_in, w, k, padding=k // 2), nn.GELU(),
                    nn.Conv1d(w, w, k, padding=k // 2), nn.GELU(),
                    nn.Conv1d(w, d, k, padding=k // 2))
            else:  # runs once per take (not per ODE step), so it can afford depth
                self.audio = nn.Sequential(
                    nn.Conv1d(n_in, w, k, padding=k // 2), nn.GELU(),
                    *[ResConv(w, k, 1 + (i % 2)) for i in range(dims.audio_blocks)],
                    nn.GELU(), nn.Conv1d(w, d, 1))
            self.viseme = nn.Linear(d, dims.viseme_classes) if dims.viseme_classes > 0 else None
            self.keypoints = nn.Sequential(nn.Linear(dims.n_keypoints, d), nn.GELU(), nn.Linear(d, d))
            self.style = nn.Sequential(nn.Linear(dims.style_dim, d), nn.GELU(), nn.Linear(d, d))
            self.null_audio = nn.Parameter(torch.zeros(d))
            self.null_keypoints = nn.Parameter(torch.zeros(d))
            self.null_style = nn.Parameter(torch.zeros(d))
            self.time = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
            self.inp = nn.Linear(dims.n_channels, d)
            self.blocks = nn.ModuleList(
                Block(d, dims.n_heads, dims.ff_mult, k, dims.dropout) for _ in range(dims.n_layers))
            self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
            self.mod_out = nn.Linear(d, 2 * d)
            self.out = nn.Linear(d, dims.n_channels)
            for m in (self.mod_out, self.out):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

        def encode(self, mel, keypoints, style, drop_audio=None, drop_keypoints=None, drop_style=None,
                   viseme: bool = False):
            """mel (B,T,n_mels*audio_subframes), keypoints (B,T,n_kp), style (B,style_dim); drop_* (B,) bool replace
            that condition by its learned null embedding (classifier-free guidance). With `viseme`, also
            the viseme logits (B,T,viseme_classes) read from the audio features alone."""
            a = self.audio(mel.transpose(1, 2)).transpose(1, 2)
            logits = self.viseme(a) if viseme else None
            kp = self.keypoints(keypoints)
            st = self.style(style)
            if drop_audio is not None:
                a = torch.where(drop_audio[:, None, None], self.null_audio.to(a.dtype), a)
            if drop_keypoints is not None:
                kp = torch.where(drop_keypoints[:, None, None], self.null_keypoints.to(kp.dtype), kp)
            if drop_style is not None:
                st = torch.where(drop_style[:, None], self.null_style.to(st.dtype), st)
            return (a + kp, st, logits) if viseme else (a + kp, st)

        def time_embedding(self, t):
            half = self.dims.d_model // 2
            freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
            ang = (t.float()[:, None] * 1000.0) * freqs[None]
            return self.time(torch.cat([ang.sin(), ang.cos()], dim=-1).to(t.dtype if t.is_floating_point() else torch.float32))

        def band_mask(self, t: int, device):
            i = torch.arange(t, device=device)
            return (i[None, :] - i[:, None]).abs() <= self.dims.attn_window

        def velocity(self, x, t, cond_frames, cond_global, mask=None):
            """x (B,T,C) at flow time t (B,) -> velocity (B,T,C)."""
            if mask is None:
                mask = self.band_mask(x.shape[1], x.device)
            g = self.time_embedding(t).to(x.dtype) + cond_global
            h = self.inp(x) + cond_frames
            for blk in self.blocks:
                h = blk(h, g, mask)
            s, b = self.mod_out(g)[:, None, :].chunk(2, dim=-1)
            return self.out(self.norm_out(h) * (1 + s) + b)

        def forward(self, x, t, mel, keypoints, style, drop_audio=None, drop_keypoints=None, drop_style=None,
                    viseme: bool = False):
            """Velocity (B,T,C); with `viseme`, (velocity, viseme logits) for the auxiliary loss."""
            if viseme:
                cf, cg, logits = self.encode(mel, keypoints, style, drop_audio, drop_keypoints, drop_style, True)
                return self.velocity(x, t, cf, cg), logits
            cf, cg = self.encode(mel, keypoints, style, drop_audio, drop_keypoints, drop_style)
            return self.velocity(x, t, cf, cg)

    return FlowNet


_NET = None


def build_net(dims: ModelDimensions):
    global _NET
    if _NET is None:
        _NET = _build_net_classes()
    return _NET(dims)


# ----------------------------------------------------------------------------------------------
# Path, loss and solver


class RectifiedFlow:
    """Straight-line path from noise x0 (t=0) to data x1 (t=1) (Liu et al., rectified flow)."""

    @staticmethod
    def interpolate(x0, x1, t):
        tt = t.view(-1, *([1] * (x1.dim() - 1)))
        return (1 - tt) * x0 + tt * x1

    @staticmethod
    def target_velocity(x0, x1):
        return x1 - x0

    @staticmethod
    def sample_time(n: int, generator=None, device="cpu"):
        """Logit-normal flow times: more weight mid-path, where few-step sampling errs most."""
        torch = _torch()
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))


def solve_ode(velocity_fn, x0, steps: int, method: str = "euler"):
    """Integrate dx/dt = velocity_fn(x, t) from t=0 to 1 with `steps` fixed steps."""
    torch = _torch()
    if steps < 1:
        raise InputError(f"sampling steps must be >= 1, got {steps}")
    if method not in ("euler", "midpoint"):
        raise InputError(f"unknown ODE method {method!r}; use euler or midpoint")
    x = x0
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, dtype=x.dtype, device=x.device)
        v = velocity_fn(x, t)
        if method == "midpoint":
            v = velocity_fn(x + 0.5 * dt * v, t + 0.5 * dt)
        x = x + dt * v
    return x


def _chunk_starts(n: int, chunk: int, overlap: int) -> list[int]:
    if n <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, n - chunk, hop)) + [n - chunk]
    return sorted(set(starts))


def _chunk_weights(n: int, chunk: int, starts: list[int], overlap: int) -> np.ndarray:
    """(len(starts), chunk) crossfade weights: linear ramps over the overlaps (none at the take's
    ends), normalised so the weights of every frame sum to 1."""
    c = min(chunk, n)
    i = np.arange(c, dtype=np.float64)
    w = np.ones((len(starts), c))
    ramp = max(overlap, 1) + 1
    for j, s in enumerate(starts):
        if s > 0:
            w[j] = np.minimum(w[j], (i + 1) / ramp)
        if s + c < n:
            w[j] = np.minimum(w[j], (c - i) / ramp)
    total = np.zeros(n)
    for j, s in enumerate(starts):
        total[s:s + c] += w[j]
    for j, s in enumerate(starts):
        w[j] /= total[s:s + c]
    return w.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The loaded model


class Generator:
    """A trained flow model plus its normalisation statistics and sampling defaults."""

    def __init__(self, net, dims: ModelDimensions, sampler: SamplerConfig, stats: dict, meta: dict | None = None,
                 device: str = "cpu"):
        self.net = net.eval()
        self.dims = dims
        self.sampler = sampler
        self.meta = dict(meta or {})
        self.device = device
        torch = _torch()
        self._stats = {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in stats.items()}

    @property
    def fps(self) -> float:
        return float(self.dims.fps)

    def stats(self) -> dict:
        """The normalisation statistics as numpy arrays (what `save_checkpoint` stores)."""
        return {k: v.detach().cpu().numpy() for k, v in self._stats.items()}

    # -- conditioning preparation (numpy in, normalised torch out)

    def _prepare(self, audio, keypoints: np.ndarray, style: np.ndarray):
        n = int(round(audio.duration_s * self.fps))
        if n < 1:
            raise InputError("audio is too short to animate (under one frame)")
        kp, st = self._check_conditioning(keypoints, style, n)
        d = self.dims
        mel = audio_input(audio.samples, audio.sample_rate, self.fps, d.audio_features, d.n_mels, d.audio_subframes)
        mel = _fit_length(mel, n, "audio features", tolerance=n)
        return self.normalize_inputs(self.equalize(mel), kp, st)

    def equalize(self, mel: np.ndarray, spectrum: np.ndarray | None = None) -> np.ndarray:
        """Gain-normalised log-mel -> what the network reads before standardising: the take's speech
        spectrum (`spectrum`, or measured on `mel` itself) moved onto the corpus's, where the checkpoint
        asks for it (dims.mel_cmn > 0); otherwise `mel` unchanged."""
        amount = float(self.dims.mel_cmn)
        if amount <= 0:
            return mel
        spectrum = speech_spectrum(mel) if spectrum is None else spectrum
        return equalize_spectrum(mel, spectrum, self.stats_ref(), amount)

    def stats_ref(self) -> np.ndarray:
        ref = self.stats().get("mel_ref")
        if ref is None:
            raise ModelError("checkpoint sets mel_cmn but stores no mel_ref statistic")
        return np.asarray(ref, np.float32)

    def _check_conditioning(self, keypoints: np.ndarray, style: np.ndarray, n: int):
        kp = np.asarray(keypoints, np.float32)
        if kp.ndim != 2 or kp.shape[1] != self.dims.n_keypoints:
            raise InputError(f"keypoints must be frames x {self.dims.n_keypoints}, got shape {kp.shape}")
        kp = _fit_length(kp, n, "keypoints", tolerance=2)
        st = np.asarray(style, np.float32).reshape(-1)
        if st.shape[0] != self.dims.style_dim:
            raise InputError(f"style context must have {self.dims.style_dim} values, got {st.shape[0]}")
        if not (np.all(np.isfinite(kp)) and np.all(np.isfinite(st))):
            raise InputError("keypoints or style context hold NaN/inf values")
        return kp, st

    def normalize_inputs(self, mel: np.ndarray, kp: np.ndarray, st: np.ndarray):
        torch = _torch()
        s = self._stats
        mel_t = (torch.as_tensor(mel, device=self.device) - s["mel_mean"]) / s["mel_std"]
        kp_t = (torch.as_tensor(kp, device=self.device) - s["kp_mean"]) / s["kp_std"]
        st_t = (torch.as_tensor(st, device=self.device) - s["style_mean"]) / s["style_std"]
        # A real take's style (MediaPipe- or iPhone-tracked) sits up to ~6 std outside the corpus's on
        # some channels (tracked blink and gaze baselines, tracked mouthPress); the network never saw
        # such values and extrapolates (v4 pressed the lips 2.4x as much as real speakers).
        return mel_t, kp_t, st_t.clamp(-STYLE_Z_LIMIT, STYLE_Z_LIMIT)

    def denormalize(self, x):
        return x * self._stats["target_std"] + self._stats["target_mean"]

    def _values(self, x) -> np.ndarray:
        """Denormalised float32 numpy values of sampled frames x (T,61)."""
        return self.denormalize(x).float().cpu().numpy()

    # -- sampling

    def sample(self, mel, kp, st, *, steps: int, guidance: float, seed: int, method: str | None = None, x0=None):
        """Batched sampling on normalised tensors: mel (B,T,n_mels*audio_subframes), kp (B,T,174), st (B,S) -> (B,T,61)
        normalised. Long sequences are cut into overlapping chunks, batched, and their velocities
        crossfaded into one global field at every ODE step, so chunk seams stay consistent. `x0`: the
        starting noise (B,T,61) (default: drawn from `seed`)."""
        torch = _torch()
        _release_freed_memory()  # the inputs' temporaries, before the sampling's own peak
        b, n = mel.shape[0], mel.shape[1]
        sc = self.sampler
        chunk = min(sc.chunk_frames, n)
        starts = _chunk_starts(n, chunk, sc.overlap_frames)
        weights = torch.as_tensor(_chunk_weights(n, chunk, starts, sc.overlap_frames), device=self.device)
        idx = torch.as_tensor(np.stack([np.arange(s, s + chunk) for s in starts]), device=self.device)  # (K,c)
        k = len(starts)

        def chunks(x):  # (B,T,D) -> (B*K, c, D)
            return x[:, idx].reshape(b * k, chunk, x.shape[-1])

        if x0 is None:
            x0 = self._noise(b, n, seed)
        def encode(drop=None):  # in slices of MAX_CHUNK_BATCH chunks, like the velocity
            mc, kc, sc_ = chunks(mel), chunks(kp), st.repeat_interleave(k, dim=0)
            parts = [self.net.encode(mc[i:i + MAX_CHUNK_BATCH], kc[i:i + MAX_CHUNK_BATCH], sc_[i:i + MAX_CHUNK_BATCH],
                                     None if drop is None else drop[i:i + MAX_CHUNK_BATCH])
                     for i in range(0, b * k, MAX_CHUNK_BATCH)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

        with torch.inference_mode():
            cf, cg = encode()
            if guidance != 1.0:
                # Guidance pushes away from the audio-free prediction: it sharpens what the audio
                # drives (lips) and leaves the keypoint-driven upper face as it is.
                uf, ug = encode(torch.ones(b * k, dtype=torch.bool, device=self.device))
                cf, cg = torch.cat([cf, uf]), torch.cat([cg, ug])
            mask = self.net.band_mask(chunk, self.device)

            def net_velocity(xc, tc):  # in slices of MAX_CHUNK_BATCH chunks
                return torch.cat([self.net.velocity(xc[i:i + MAX_CHUNK_BATCH], tc[i:i + MAX_CHUNK_BATCH],
                                                    cf[i:i + MAX_CHUNK_BATCH], cg[i:i + MAX_CHUNK_BATCH], mask)
                                  for i in range(0, xc.shape[0], MAX_CHUNK_BATCH)])

            def velocity(x, t):
                xc = chunks(x)
                tc = t[:1].expand(xc.shape[0])
                if guidance != 1.0:
                    vc, vu = net_velocity(torch.cat([xc, xc]), torch.cat([tc, tc])).chunk(2)
                    v = vu + guidance * (vc - vu)
                else:
                    v = net_velocity(xc, tc)
                v = v.view(b, k, chunk, -1) * weights[None, :, :, None]
                out = torch.zeros_like(x)
                out.index_add_(1, idx.reshape(-1), v.reshape(b, k * chunk, -1))
                return out

            return solve_ode(velocity, x0, steps, method or sc.method)

    def _sample_group(self, inputs, *, x0, steps: int, guidance: float, seed: int):
        """`sample` of one group of a long take on the normalised (mel, kp, st) that `inputs()` returns;
        a backend may drop them once encoded (OnnxGenerator does)."""
        mel, kp, st = inputs()
        return self.sample(mel[None], kp[None], st[None], steps=steps, guidance=guidance, seed=seed, x0=x0)

    def _noise(self, b: int, n: int, seed: int):
        torch = _torch()
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        return self.sampler.temperature * torch.randn(b, n, self.dims.n_channels, generator=gen).to(self.device)

    def _noise_source(self, seed: int):
        """m -> (1, m, channels) standard normals continuing one seeded torch CPU stream (_NoiseStream)."""
        torch = _torch()
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        return lambda m: torch.randn(1, m, self.dims.n_channels, generator=gen)

    @staticmethod
    def _concat_frames(pieces):
        torch = _torch()
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1).clone()

    def _scaled_noise(self, x):
        return (self.sampler.temperature * x).to(self.device)

    def generate(self, audio, keypoints: np.ndarray, style: np.ndarray, *, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0) -> Animation:
        """Animate `audio` (dubtool.audio.Audio) with the upper face given by `keypoints` (T,174)
        and the global `style` context. T = round(audio.duration_s * fps); keypoints a frame or two
        off are padded/trimmed. Deterministic for a fixed seed.

        A long take is sampled group by group (bounded memory whatever its length, see
        generate_blocks); up to about 3 minutes it is one group."""
        steps = self.sampler.steps if steps is None else int(steps)
        guidance = self.sampler.guidance if guidance is None else float(guidance)
        blocks = [v for _, v in self.generate_blocks(audio, keypoints, style, steps=steps, guidance=guidance,
                                                      seed=seed)]
        values = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return Animation(values, self.fps, meta={"generator": self.meta.get("name", "dubtool_flow"),
                                                 "steps": steps, "guidance": guidance, "seed": seed})

    def generate_blocks(self, audio, keypoints, style: np.ndarray, *, steps: int | None = None,
                        guidance: float | None = None, seed: int = 0):
        """`generate`'s frames as (first frame, values (frames, 61)) blocks in order, for callers that
        stream them on (localize writes an hour of dub in flat memory). `keypoints` is a (T,174) array
        or a function (a, b) -> keypoints of frames a..b-1, asked for each group's frames only. A take
        of up to about 3 minutes is one block; longer ones are sampled group by group (_generate_grouped)."""
        steps = self.sampler.steps if steps is None else int(steps)
        guidance = self.sampler.guidance if guidance is None else float(guidance)
        n = int(round(audio.duration_s * self.fps))
        sc = self.sampler
        starts = _chunk_starts(n, min(sc.chunk_frames, n), sc.overlap_frames) if n >= 1 else [0]
        # Information crosses one chunk per velocity evaluation (the crossfade couples neighbours only):
        # a group's chunks further than that from its edges sample as in the whole take.
        margin = steps * (2 if sc.method == "midpoint" else 1) + 2
        group = max(GROUP_CHUNKS, 4 * margin)
        if len(starts) <= group + 2 * margin:
            kp = keypoints(0, max(n, 1)) if callable(keypoints) else keypoints
            mel, kp, st = self._prepare(audio, kp, style)
            x = self.sample(mel[None], kp[None], st[None], steps=steps, guidance=guidance, seed=seed)
            yield 0, self._finish(self._values(x[0]))
            return
        kp_of = keypoints if callable(keypoints) else (lambda a, b: np.asarray(keypoints)[a:b])
        if not callable(keypoints):
            self._check_conditioning(keypoints, style, n)
        for a, values in self._generate_grouped(audio, kp_of, style, n, starts, group, margin, steps, guidance, seed):
            yield a, self._finish(values)

    def _finish(self, values: np.ndarray) -> np.ndarray:
        """The network's denormalised output made an animation's values, frame by frame (so blocks of a
        take give the whole take's values): the checkpoint's articulation gains, then the weights' range."""
        values = apply_articulation_gain(values, self.meta.get("articulation_gain"))
        values[:, :NUM_BLENDSHAPES] = np.clip(values[:, :NUM_BLENDSHAPES], 0.0, 1.0)
        return values

    def _generate_grouped(self, audio, keypoints_of, style, n: int, starts: list[int], group: int, margin: int,
                          steps: int, guidance: float, seed: int):
        """The whole-take sampling in groups of `group` chunks, each sampled with `margin` extra chunks on
        both sides (thrown away), on mel features and keypoints (`keypoints_of(a, b)`) computed for its
        frames only and the whole take's starting noise, drawn as it is needed: memory holds one group,
        not the take. Yields (first frame, values) per group. Equal to sampling the take at once up to
        float rounding (tests/test_streaming.py)."""
        from .audio import mel_features_window

        if audio.sample_rate != 16000:
            raise InputError(f"the generator needs 16 kHz audio, got {audio.sample_rate} Hz")
        fps, dims = self.fps, self.dims
        chunk = self.sampler.chunk_frames

        step = MEL_WINDOW_FRAMES

        def mel_rows(a: int, b: int) -> np.ndarray:  # window by window into one array: small temporaries
            if dims.audio_features != "mel":  # computed in fixed windows of absolute time already
                return audio_input(audio.samples, audio.sample_rate, fps, dims.audio_features, dims.n_mels,
                                   dims.audio_subframes, (a, b))
            out = np.empty((b - a, dims.mel_width), np.float32)
            for w in range(a, b, step):
                out[w - a:min(b, w + step) - a] = mel_features_window(
                    audio.samples, audio.sample_rate, fps, (w, min(b, w + step)), dims.n_mels,
                    dims.audio_subframes)
            return out

        # normalize_mel's loud-frame level over the whole take, from the frame means only (first pass)
        level = 0.0
        if dims.audio_features == "mel":
            means = np.concatenate([mel_rows(a, min(n, a + step)).mean(axis=1) for a in range(0, n, step)])
            level = float(np.percentile(means, 95))
        spectrum = None
        if dims.mel_cmn > 0:  # speech_spectrum over the whole take (second pass)
            total, count = np.zeros(dims.mel_width, np.float64), 0
            for a in range(0, n, step):
                rows = mel_rows(a, min(n, a + step))
                keep = rows[rows.mean(axis=1) >= level - SPEECH_MARGIN]
                total += keep.sum(axis=0)
                count += len(keep)
            spectrum = (total / max(count, 1)).astype(np.float32) - level
        noise = _NoiseStream(self, n, seed)
        k = len(starts)
        for c0 in range(0, k, group):
            c1 = min(k, c0 + group)
            lo, hi = max(0, c0 - margin), min(k, c1 + margin)
            fa, fb = starts[lo], starts[hi - 1] + chunk

            def inputs(fa=fa, fb=fb):  # the group's normalised conditioning (nothing else keeps it)
                kp, st = self._check_conditioning(keypoints_of(fa, fb), style, fb - fa)
                mel = mel_rows(fa, fb)
                mel -= level
                return self.normalize_inputs(self.equalize(mel, spectrum), kp, st)

            x = self._sample_group(inputs, x0=noise.frames(fa, fb), steps=steps, guidance=guidance, seed=seed)
            keep_a = starts[c0] if c0 > 0 else 0
            keep_b = starts[c1] if c1 < k else n
            values = self._values(x[0, keep_a - fa:keep_b - fa])
            del x
            _release_freed_memory()
            yield keep_a, values


class _NoiseStream:
    """The whole take's starting noise (Generator._noise(1, n, seed)) drawn in pieces as the groups need
    it, frames before the current group dropped. torch's CPU normal sampler fills in blocks of 16 values
    from one uniform stream, so pieces of a multiple of 16 values continue the one draw exactly (and
    its last piece redraws its tail as the one draw does); the ONNX backend's numpy replica of that
    sampler (onnxrt.torch_randn_stream) does the same. tests/test_streaming.py checks it."""

    PIECE = 1024  # frames drawn at a time (x 61 channels: a multiple of 16 values)

    def __init__(self, generator: "Generator", n: int, seed: int) -> None:
        self._g, self._n = generator, n
        self._draw = generator._noise_source(seed)  # m frames -> (1, m, channels) standard normals
        self._base, self._drawn = 0, None

    def frames(self, a: int, b: int):
        if a < self._base:
            raise ValueError("noise frames must be asked for in increasing order")
        pieces = [] if self._drawn is None else [self._drawn[:, a - self._base:]]
        self._base = a
        have = a + (0 if self._drawn is None else pieces[0].shape[1])
        while have < b:
            m = min(self.PIECE, self._n - have)
            pieces.append(self._draw(m))
            have += m
        self._drawn = self._g._concat_frames(pieces)
        return self._g._scaled_noise(self._drawn[:, :b - a])


# The lips count as sealed below this channel-level gap (metrics.channel_lip_gap, in jawOpen units; the
# closure threshold, 0.2 of a typical open mouth, is ~0.1 there). The calibration's multipliers act on frames
# whose lips are open: none up to SEAL_GAP, rising to full strength at 2 x SEAL_GAP. So they amplify how far
# the mouth opens and never open a seal or a near-seal (scaling those would push them past the threshold).
SEAL_GAP = 0.1


def apply_articulation_gain(values: np.ndarray, gains: dict | None) -> np.ndarray:
    """Scale the named channels of (T, 61) weights by their multipliers (about the neutral face, 0), in
    place: a checkpoint's calibration to real ARKit speech (meta["articulation_gain"], written by
    scripts/calibrate_articulation.py), faded out where the lips are sealed or nearly (see SEAL_GAP)."""
    if not gains:
        return values
    from .metrics import channel_lip_gap

    openness = np.clip(channel_lip_gap(values) / SEAL_GAP - 1.0, 0.0, 1.0)
    for name, gain in gains.items():
        values[:, index(name)] *= 1.0 + (float(gain) - 1.0) * openness
    return values


def _release_freed_memory() -> None:
    """Hand the heap freed by a group back to the OS (glibc malloc_trim): otherwise fragmentation lets the
    resident size creep up group after group (measured: +90 MB over three groups without it)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def _fit_length(x: np.ndarray, n: int, what: str, tolerance: int) -> np.ndarray:
    """Pad (edge) or trim x to n frames when it is at most `tolerance` frames off."""
    m = x.shape[0]
    if m == n:
        return x
    if abs(m - n) > tolerance:
        raise InputError(f"{what} have {m} frames but the audio needs {n}; they must cover the same time span")
    if m > n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - m, axis=0)], axis=0)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _dataclass_from(cls, data: dict, path: Path):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ModelError(f"{path}: checkpoint config has unknown fields {sorted(unknown)}; update dubtool")
    return cls(**data)


def save_checkpoint(path, net, dims: ModelDimensions, sampler: SamplerConfig, stats: dict, meta: dict,
                    half: bool = True, onnx: bool = False) -> Path:
    """Write a checkpoint atomically: weights (fp16 by default), configs, stats and format version.
    An ONNX sidecar of an earlier file at `path` is removed (it no longer matches); with `onnx`, a new
    one is exported when the `onnx` package is installed (`export_onnx`)."""
    torch = _torch()
    from .fileio import atomic_path

    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "dims": asdict(dims),
               "sampler": asdict(sampler), "stats": {k: np.asarray(v, np.float32) for k, v in stats.items()},
               "meta": meta, "state_dict": state}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    from .onnxrt import sidecar_paths

    for stale in sidecar_paths(path).values():
        stale.unlink(missing_ok=True)
    if onnx:
        try:
            export_onnx(path)
        except DependencyError:
            pass  # no onnx package: the checkpoint runs on torch
        except Exception as e:  # never lose a trained checkpoint to the exporter: it runs on torch then
            import warnings

            warnings.warn(f"{path}: ONNX export failed ({type(e).__name__}: {str(e)[:200]}); it runs on torch",
                          stacklevel=2)
    return Path(path)


def export_onnx(path) -> list[Path]:
    """Write the ONNX sidecar of checkpoint `path` (dubtool.onnxrt) from its weights as stored, so ONNX
    Runtime runs exactly the network torch loads. Needs torch and the `onnx` package."""
    from .onnxrt import export

    gen = load_model(path, backend="torch")
    return export(gen.net, path, {"dims": asdict(gen.dims), "sampler": asdict(gen.sampler), "stats": gen.stats(),
                                  "meta": gen.meta})


STAT_KEYS = ("mel_mean", "mel_std", "kp_mean", "kp_std", "style_mean", "style_std", "target_mean", "target_std")
OPTIONAL_STAT_KEYS = ("mel_ref",)  # speech_spectrum of the training corpus (models with mel_cmn > 0)


def identity_stats(dims: ModelDimensions) -> dict:
    """Normalisation statistics that change nothing (mean 0, std 1) in the shapes `dims` needs: for
    untrained checkpoints in tests and benchmarks."""
    sizes = {"mel": dims.mel_width, "kp": dims.n_keypoints, "style": dims.style_dim, "target": dims.n_channels}
    return {f"{name}_{stat}": np.full(n, 0.0 if stat == "mean" else 1.0, np.float32)
            for name, n in sizes.items() for stat in ("mean", "std")}


def load_model(path: str | None = None, device: str = "cpu", backend: str | None = None) -> Generator:
    """Load a generator checkpoint (default models/dubtool_flow_v6.pt). Raises ModelError when the
    file is missing, corrupt, of another format version or of mismatched shapes.

    `backend` (default: $DUBTOOL_BACKEND, else "auto"): "auto" runs a CPU model on ONNX Runtime
    (`OnnxGenerator`, no torch import) when the checkpoint has an ONNX sidecar exported from exactly
    this file (dubtool.onnxrt) and onnxruntime imports, else on torch; "torch" always torch; "onnx"
    fails when the sidecar cannot be used."""
    from .onnxrt import backend_choice, open_sidecar

    p = Path(path) if path is not None else DEFAULT_MODEL
    if not p.is_file():
        raise ModelError(f"generator checkpoint not found: {p} (train one with `dubtool train`)")
    choice = backend_choice(backend)
    if choice != "torch" and device == "cpu":
        manifest, runtime, why = open_sidecar(p, _THREADS)
        if runtime is not None:
            try:
                return OnnxGenerator.from_manifest(runtime, manifest, p)
            except (KeyError, TypeError, ValueError) as e:
                why = f"its manifest is missing {e}"
        if choice == "onnx":
            raise ModelError(f"{p}: cannot run on ONNX Runtime: {why} (export it: python -m dubtool.train onnx {p})")
        if why != "no ONNX sidecar" and why != "onnxruntime is not installed":
            import warnings

            warnings.warn(f"{p}: ONNX sidecar not used ({why}); running on torch. Re-export it: "
                          f"python -m dubtool.train onnx {p}", stacklevel=2)
    elif choice == "onnx":
        raise ModelError(f"the ONNX Runtime backend runs on the CPU only, not --device {device}")
    torch = _torch()
    if _THREADS:
        torch.set_num_threads(_THREADS)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for truncated/garbage files
        raise ModelError(f"{p}: not a readable generator checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{p}: not a dubtool generator checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{p}: checkpoint format version {ckpt.get('format_version')} is not supported "
                         f"(this dubtool reads version {FORMAT_VERSION}); retrain or update dubtool")
    try:
        dims = _dataclass_from(ModelDimensions, ckpt["dims"], p)
        sampler = _dataclass_from(SamplerConfig, ckpt["sampler"], p)
        stats = {k: np.asarray(ckpt["stats"][k], np.float32) for k in STAT_KEYS}
        stats.update({k: np.asarray(ckpt["stats"][k], np.float32) for k in OPTIONAL_STAT_KEYS if k in ckpt["stats"]})
        state = ckpt["state_dict"]
    except (KeyError, TypeError) as e:
        raise ModelError(f"{p}: checkpoint is missing {e}") from None
    if dims.n_channels != NUM_CHANNELS or dims.style_dim != STYLE_DIM:
        raise ModelError(f"{p}: checkpoint is for {dims.n_channels} channels / style {dims.style_dim}, "
                         f"expected {NUM_CHANNELS} / {STYLE_DIM}")
    expect = {"mel_mean": dims.mel_width, "kp_mean": dims.n_keypoints, "style_mean": dims.style_dim,
              "target_mean": dims.n_channels}
    for k, size in expect.items():
        for key in (k, k.replace("mean", "std")):
            if stats[key].shape != (size,):
                raise ModelError(f"{p}: statistic {key} has shape {stats[key].shape}, expected ({size},)")
    net = build_net(dims)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise ModelError(f"{p}: weights do not match the stored config ({first})") from None
    net = net.to(device)
    meta = ckpt.get("meta", {})
    _check_meta(meta, p)
    return Generator(net, dims, sampler, stats, meta, device)


def _check_meta(meta, p: Path) -> None:
    """The checkpoint meta's articulation gains, when there are any, name blendshapes and are sane
    (both backends read them: Generator.generate applies them)."""
    gains = meta.get("articulation_gain") if isinstance(meta, dict) else None
    if gains is not None:
        bad = [k for k, v in gains.items() if k not in BLENDSHAPE_NAMES or not 0.0 < float(v) < 10.0] \
            if isinstance(gains, dict) else ["(not a mapping)"]
        if bad:
            raise ModelError(f"{p}: articulation_gain has invalid entries {bad[:3]}")


# ----------------------------------------------------------------------------------------------
# The same model on ONNX Runtime (CPU, no torch)

_THREADS: int | None = None  # inference threads for models loaded from now on (None: the library's default)


def set_num_threads(n: int | None) -> None:
    """Inference threads for the generators loaded after this call (ONNX Runtime sessions) and for torch
    if it is loaded: batch workers run one thread each. Does not import torch."""
    import sys

    global _THREADS
    _THREADS = int(n) if n else None
    if _THREADS and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_THREADS)


class OnnxGenerator(Generator):
    """The generator run by ONNX Runtime from the sidecar dubtool.onnxrt exports beside its checkpoint:
    `Generator.sample` in numpy around two ONNX graphs (encode, velocity), the same seeded noise
    (onnxrt.torch_randn). The same animation as the torch Generator up to float rounding
    (tests/test_onnx.py). torch is imported only if `.net`, the torch module (fine-tuning), is asked for."""

    def __init__(self, runtime, dims: ModelDimensions, sampler: SamplerConfig, stats: dict, meta: dict | None,
                 checkpoint: Path):
        self.runtime = runtime
        self.dims = dims
        self.sampler = sampler
        self.meta = dict(meta or {})
        self.device = "cpu"
        self.checkpoint = Path(checkpoint)
        self._stats = {k: np.asarray(v, np.float32) for k, v in stats.items()}
        self._net = None
        self._mask = {}

    @classmethod
    def from_manifest(cls, runtime, manifest: dict, checkpoint: Path) -> "OnnxGenerator":
        dims = _dataclass_from(ModelDimensions, manifest["dims"], checkpoint)
        sampler = _dataclass_from(SamplerConfig, manifest["sampler"], checkpoint)
        stats = {k: np.asarray(manifest["stats"][k], np.float32) for k in STAT_KEYS}
        stats.update({k: np.asarray(manifest["stats"][k], np.float32) for k in OPTIONAL_STAT_KEYS
                      if k in manifest["stats"]})
        meta = manifest.get("meta", {})
        _check_meta(meta, checkpoint)
        return cls(runtime, dims, sampler, stats, meta, checkpoint)

    @property
    def net(self):
        """The torch network of the same checkpoint, loaded on first use."""
        if self._net is None:
            self._net = load_model(self.checkpoint, backend="torch").net
        return self._net

    def stats(self) -> dict:
        return {k: v.copy() for k, v in self._stats.items()}

    def normalize_inputs(self, mel: np.ndarray, kp: np.ndarray, st: np.ndarray):
        s = self._stats
        mel_n = np.subtract(mel, s["mel_mean"], dtype=np.float32)  # then divided in place: one array, not two
        mel_n /= s["mel_std"]
        kp_n = np.subtract(kp, s["kp_mean"], dtype=np.float32)
        kp_n /= s["kp_std"]
        st_n = (np.asarray(st, np.float32) - s["style_mean"]) / s["style_std"]
        return mel_n, kp_n, np.clip(st_n, -STYLE_Z_LIMIT, STYLE_Z_LIMIT)

    def denormalize(self, x):
        return x * self._stats["target_std"] + self._stats["target_mean"]

    def _values(self, x) -> np.ndarray:
        return np.asarray(self.denormalize(x), np.float32)

    def _noise(self, b: int, n: int, seed: int) -> np.ndarray:
        from .onnxrt import torch_randn

        return np.float32(self.sampler.temperature) * torch_randn((b, n, self.dims.n_channels), seed)

    def _noise_source(self, seed: int):
        from .onnxrt import torch_randn_stream

        draw = torch_randn_stream(seed)
        return lambda m: draw(m * self.dims.n_channels).reshape(1, m, self.dims.n_channels)

    @staticmethod
    def _concat_frames(pieces):
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)

    def _scaled_noise(self, x):
        return np.float32(self.sampler.temperature) * x

    def sample(self, mel, kp, st, *, steps: int, guidance: float, seed: int, method: str | None = None, x0=None):
        """`Generator.sample` on numpy arrays: the same chunks, crossfade, guidance and ODE steps."""
        method = self._check_method(steps, method)
        b, n = np.shape(mel)[0], np.shape(mel)[1]
        if x0 is None:
            x0 = self._noise(b, n, seed)
        return self._integrate(self._conditions(mel, kp, st, guidance), x0, steps=steps, guidance=guidance,
                               method=method)

    def _sample_group(self, inputs, *, x0, steps: int, guidance: float, seed: int):
        # The group's mel features and keypoints are only needed by the encoder: dropped before the ODE steps.
        method = self._check_method(steps, None)
        return self._integrate(self._conditions(*(a[None] for a in inputs()), guidance), x0, steps=steps,
                               guidance=guidance, method=method)

    def _check_method(self, steps: int, method: str | None) -> str:
        method = method or self.sampler.method
        if steps < 1:
            raise InputError(f"sampling steps must be >= 1, got {steps}")
        if method not in ("euler", "midpoint"):
            raise InputError(f"unknown ODE method {method!r}; use euler or midpoint")
        return method

    def _chunking(self, n: int):
        sc = self.sampler
        chunk = min(sc.chunk_frames, n)
        starts = _chunk_starts(n, chunk, sc.overlap_frames)
        return chunk, starts, np.stack([np.arange(s, s + chunk) for s in starts])  # idx (K,c)

    # Each network call gets its rows of the chunked arrays (under guidance the [conditional; unconditional]
    # rows), gathered when it runs: a group of chunks holds its frames once, not once per chunk view.
    @staticmethod
    def _chunk_rows(x, idx, rows: int, r0: int, r1: int):
        """Rows r0..r1-1 of x[:, idx].reshape(b * k, chunk, D), row indices taken modulo rows (b * k)."""
        k = idx.shape[0]
        r = np.arange(r0, r1) % rows
        return x[(r // k)[:, None], idx[r % k]]

    def _conditions(self, mel, kp, st, guidance: float):
        """The encoder's (b, n, per-frame conditions, global conditions) of every chunk row, the
        unconditional rows after the conditional ones under guidance."""
        mel, kp, st = (np.asarray(a, np.float32) for a in (mel, kp, st))
        b, n = mel.shape[0], mel.shape[1]
        chunk, starts, idx = self._chunking(n)
        rows = b * len(starts)
        total = rows * (2 if guidance != 1.0 else 1)
        stc = np.repeat(st, len(starts), axis=0)
        e = ENCODE_CHUNK_BATCH
        cf = cg = None
        # Conditional rows then the audio-free ones, in calls of e rows: a short line's two encodings are one
        # batch-2 call (as the velocity's passes).
        for i in range(0, total, e):
            j = min(total, i + e)
            r = np.arange(i, j)
            f, g = self.runtime.encode(self._chunk_rows(mel, idx, rows, i, j), self._chunk_rows(kp, idx, rows, i, j),
                                       stc[r % rows], r >= rows)
            if cf is None:  # (total, chunk, d) and (total, d), filled slice by slice
                cf = np.empty((total, *f.shape[1:]), f.dtype)
                cg = np.empty((total, *g.shape[1:]), g.dtype)
            cf[i:j], cg[i:j] = f, g
        return b, n, cf, cg

    def _integrate(self, conditions, x0, *, steps: int, guidance: float, method: str):
        from .onnxrt import band_mask

        b, n, cf, cg = conditions
        _release_freed_memory()  # what the inputs, the encoder and the caller's last block freed, before the peak
        chunk, starts, idx = self._chunking(n)
        weights = _chunk_weights(n, chunk, starts, self.sampler.overlap_frames)[None, :, :, None]
        k = len(starts)
        rows, total = b * k, cf.shape[0]
        guided = guidance != 1.0
        m = VELOCITY_CHUNK_BATCH
        if chunk not in self._mask:
            self._mask[chunk] = band_mask(chunk, self.dims.attn_window)
        mask = self._mask[chunk]
        v = np.empty((total, chunk, self.dims.n_channels), np.float32)  # the batch's velocities, reused
        tc = np.empty(m, np.float32)

        def velocity(x, t):
            tc.fill(t)
            for i in range(0, total, m):
                j = min(total, i + m)
                v[i:j] = self.runtime.velocity(self._chunk_rows(x, idx, rows, i, j), tc[:j - i], cf[i:j], cg[i:j], mask)
            vk = v[:rows]
            if guided:  # vu + guidance * (vc - vu), in place
                np.subtract(vk, v[rows:], out=vk)
                vk *= np.float32(guidance)
                vk += v[rows:]
            vk = vk.reshape(b, k, chunk, -1)
            vk *= weights
            out = np.zeros_like(x)
            for j, s in enumerate(starts):
                out[:, s:s + chunk] += vk[:, j]
            return out

        x = np.array(x0, np.float32)  # a copy: x0 may be the noise stream's buffer
        dt = 1.0 / steps
        for i in range(steps):
            t = np.float32(i * dt)
            vel = velocity(x, t)
            if method == "midpoint":
                vel = velocity(x + np.float32(0.5 * dt) * vel, t + np.float32(0.5 * dt))
            vel *= np.float32(dt)
            x += vel
            del vel
        return x
