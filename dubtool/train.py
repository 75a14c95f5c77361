"""Training the flow generator on the corpus (KM-Speaker's recipe, scaled to a few GPU minutes).

Each step takes random fixed-length windows from the training clips and applies the paper's
disentanglement strategy: with some probability a sample's audio (or its keypoints) is exchanged
with another sample's, and the target is rebuilt from the lower-face channels of the audio's sample
(plus the emotion offset of the keypoints' sample, which carries the style) and the upper-face,
head and eye channels of the keypoints' sample. A model that read lips off the keypoints would be
wrong on every swapped sample. Conditions are dropped independently for classifier-free guidance.

`train(config, corpus_dir, out, device)` reproduces the shipped checkpoint from configs/flow_v6.json.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .arkit import BILABIAL_CLOSURE, LOWER_IDX, NUM_BLENDSHAPES, UPPER_IDX, indices
from .corpus import CorpusConfig, SPLITS, build_corpus, check_fits, load_corpus
from .errors import DubtoolError, InputError
from .generate import (SPEECH_MARGIN, Generator, ModelDimensions, RectifiedFlow, SamplerConfig, build_net,
                       save_checkpoint, speech_spectrum)
from .phonemes import VISEME_CLASSES

FLOW_CONFIG_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    steps: int = 9000
    batch_size: int = 256
    window_frames: int = 128
    lr: float = 8e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_swap_audio: float = 0.3
    p_swap_keypoints: float = 0.3
    p_swap_style: float = 0.3  # style (and the emotion's lower-face offset it carries) from a third sample
    p_drop_audio: float = 0.1
    p_drop_keypoints: float = 0.1
    p_drop_style: float = 0.15
    keypoint_noise: float = 0.05  # in units of the per-dimension keypoint std
    keypoint_scale_jitter: float = 0.15  # displacements scaled by U(1-j, 1+j) per sample
    style_noise: float = 0.05
    lip_weight: float = 5.0  # loss weight of the bilabial-closure channels (lips must close on /p b m/)
    lower_weight: float = 2.0
    closure_frame_weight: float = 3.0  # extra loss weight on frames where the target seals the lips
    lip_gap_weight: float = 0.0  # (tried at 0.2: no gain in closure rate) auxiliary loss on the rig's inner-lip gaps (mm) of the predicted x1
    # Audio augmentation on the training device, drawn afresh for every window (0 = off). The corpus
    # holds one augmented copy of each clip; without these the network memorises it (train-clip
    # closure 1.00, held-out voices 0.65).
    mel_warp_bins: float = 0.0  # shift the mel axis by U(-w, w) bins: vocal tract length / speaker
    mel_tilt: float = 0.0  # random spectral tilt, +-tilt (normalised units) at the band edges
    mel_noise: float = 0.0  # Gaussian noise, in units of the per-bin std
    mel_freq_masks: int = 0  # SpecAugment frequency masks per window
    mel_freq_mask_bins: int = 8  # widest mask, in mel bins
    mel_augment_p: float = 1.0  # share of windows that get the augmentations above
    # Room and channel (v5), applied in the power domain of the gain-normalised log-mel before the
    # augmentations above: real dialogue is recorded in rooms, over noise, through band-limited channels;
    # the corpus is close-miked and clean.
    room_reverb_p: float = 0.0  # share of windows given an exponential reverberation tail
    room_rt60_s: tuple[float, float] = (0.2, 0.9)  # its reverberation time, uniform in this range
    room_drr_db: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant ratio, uniform
    room_noise_p: float = 0.0  # share of windows given additive coloured noise
    room_snr_db: tuple[float, float] = (3.0, 30.0)  # speech loud-frame level over the noise, uniform
    room_lowpass_p: float = 0.0  # share of windows band-limited (phone, lavalier, codec)
    room_lowpass_bins: tuple[int, int] = (45, 72)  # mel bin where the roll-off starts, uniform
    # Auxiliary per-frame viseme classification from the audio features alone (needs model
    # viseme_classes = len(phonemes.VISEME_CLASSES)): the audio encoder must tell /p b m/ from its
    # neighbours on every frame, not only where the flow loss happens to weigh it.
    viseme_weight: float = 0.0
    val_every: int = 2000
    val_clips: int = 24


@dataclass(frozen=True)
class FlowConfig:
    """Everything `dubtool train` needs: model shape, sampler defaults, training and corpus recipe."""

    name: str = "dubtool_flow_v6"
    model: ModelDimensions = field(default_factory=ModelDimensions)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)


def _sub(cls, data: dict, where: str):
    names = {f.name for f in fields(cls)}
    bad = sorted(set(data) - names)
    if bad:
        raise InputError(f"{where}: unknown keys {bad}; valid keys are {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})  # JSON lists -> tuples


def load_config(path) -> FlowConfig:
    """Read a FlowConfig JSON (see configs/flow_v6.json); InputError names the file and key."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"training config not found: {p}")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file; --config takes a training config JSON (see configs/)") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: expected a JSON object")
    if raw.pop("version", FLOW_CONFIG_VERSION) != FLOW_CONFIG_VERSION:
        raise InputError(f"{p}: config version is not {FLOW_CONFIG_VERSION}")
    try:
        cfg = FlowConfig(
            name=str(raw.pop("name", "dubtool_flow_v6")),
            model=_sub(ModelDimensions, raw.pop("model", {}), f"{p} [model]"),
            sampler=_sub(SamplerConfig, raw.pop("sampler", {}), f"{p} [sampler]"),
            train=_sub(TrainConfig, raw.pop("train", {}), f"{p} [train]"),
            corpus=_sub(CorpusConfig, raw.pop("corpus", {}), f"{p} [corpus]"),
        )
    except TypeError as e:
        raise InputError(f"{p}: {e}") from None
    if raw:
        raise InputError(f"{p}: unknown top-level keys {sorted(raw)}; use name, model, sampler, train, corpus")
    return cfg


def config_dict(cfg: FlowConfig) -> dict:
    return {"version": FLOW_CONFIG_VERSION, "name": cfg.name, "model": asdict(cfg.model),
            "sampler": asdict(cfg.sampler), "train": asdict(cfg.train), "corpus": asdict(cfg.corpus)}


def compute_stats(corpus) -> dict:
    """Per-dimension normalisation statistics over the training clips (stored in the checkpoint)."""
    rows = corpus.frame_mask("train")
    def ms(x, floor):
        x = np.asarray(x[rows], np.float64)
        return x.mean(axis=0).astype(np.float32), np.maximum(x.std(axis=0), floor).astype(np.float32)
    mel_m, mel_s = ms(corpus.mel, 0.1)
    kp_m, kp_s = ms(corpus.keypoints, 0.02)
    tg_m, tg_s = ms(corpus.target, 0.02)
    st = corpus.style[corpus.split == SPLITS.index("train")].astype(np.float64)
    st_m, st_s = st.mean(axis=0).astype(np.float32), np.maximum(st.std(axis=0), 0.01).astype(np.float32)
    return {"mel_mean": mel_m, "mel_std": mel_s, "kp_mean": kp_m, "kp_std": kp_s, "style_mean": st_m,
            "style_std": st_s, "target_mean": tg_m, "target_std": tg_s, "mel_ref": corpus_speech_spectrum(corpus)}


def corpus_speech_spectrum(corpus) -> np.ndarray:
    """The mean of the training clips' speech spectra (generate.speech_spectrum, clip by clip): the colour
    a model with mel_cmn > 0 moves every take onto."""
    spectra = [speech_spectrum(corpus.mel[s:s + n].astype(np.float32))
               for s, n, sp in zip(corpus.starts, corpus.lengths, corpus.split) if sp == SPLITS.index("train") and n]
    return np.mean(spectra, axis=0).astype(np.float32)


def _device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DubtoolError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}; use cpu or cuda")
    return name


class _Batcher:
    """Random training windows with audio/keypoint swaps, built on the training device."""

    def __init__(self, corpus, stats: dict, cfg: TrainConfig, device: str, seed: int, n_mels: int = 80,
                 fps: float = 30.0, mel_cmn: float = 0.0):
        import torch

        self.torch = torch
        self.cfg, self.device, self.n_mels, self.fps = cfg, device, n_mels, float(fps)
        self.mel_cmn = float(mel_cmn)
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=device)
        self.mel = t(corpus.mel)
        self.target = t(corpus.target)
        self.offset = t(corpus.offset)
        self.kp = t(corpus.keypoints)
        self.viseme = torch.as_tensor(np.asarray(corpus.viseme, np.int64), device=device)
        self.style = t(corpus.style)
        self.stats = {k: t(v) for k, v in stats.items()}
        ok = (corpus.split == SPLITS.index("train")) & (corpus.lengths >= cfg.window_frames)
        if not ok.any():
            raise InputError(f"no training clip is at least {cfg.window_frames} frames long; rebuild the corpus")
        self.clips = torch.as_tensor(np.flatnonzero(ok), device=device)
        self.starts = torch.as_tensor(corpus.starts, device=device)
        self.lengths = torch.as_tensor(corpus.lengths, device=device)
        self.clip_p = (self.lengths[self.clips] - cfg.window_frames + 1).float()
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.lower = torch.as_tensor(LOWER_IDX, device=device)
        self.ndisp = corpus.keypoints.shape[1] - 9
        press = indices(("mouthPressLeft", "mouthPressRight"))
        self.press = torch.as_tensor(press, device=device)
        self.press_lower = torch.as_tensor([int(np.flatnonzero(LOWER_IDX == i)[0]) for i in press], device=device)

    def rand(self, *shape):
        return self.torch.rand(*shape, generator=self.gen, device=self.device)

    def __call__(self, b: int):
        torch, cfg, w = self.torch, self.cfg, self.cfg.window_frames
        pick = self.clips[torch.multinomial(self.clip_p, b, replacement=True, generator=self.gen)]
        off = (self.rand(b) * (self.lengths[pick] - w + 1).float()).long()
        rows = (self.starts[pick] + off)[:, None] + torch.arange(w, device=self.device)[None]
        mel, target, offset, kp, vis = self.mel[rows], self.target[rows], self.offset[rows], self.kp[rows], self.viseme[rows]
        style = self.style[pick]
        # Disentanglement (KM-Speaker): exchange audio or keypoints with the next sample in the batch.
        nxt = torch.roll(torch.arange(b, device=self.device), 1)
        ar = torch.arange(b, device=self.device)
        a_src = torch.where(self.rand(b) < cfg.p_swap_audio, nxt, ar)
        k_src = torch.where(self.rand(b) < cfg.p_swap_keypoints, nxt, ar)
        s_src = torch.where(self.rand(b) < cfg.p_swap_style, torch.roll(ar, 2), k_src)
        y = target[k_src].clone()
        y[:, :, self.lower] = target[a_src][:, :, self.lower] - offset[a_src] + offset[s_src]
        mel, kp, style, vis = mel[a_src], kp[k_src].clone(), style[s_src], vis[a_src]
        press = target[a_src][:, :, self.press].mean(dim=-1) - offset[a_src][:, :, self.press_lower].mean(dim=-1)
        frame_w = 1 + cfg.closure_frame_weight * (press / 0.3).clamp(0, 1)
        # Keypoint robustness: actor scale jitter and tracker-like noise.
        j = cfg.keypoint_scale_jitter
        kp[:, :, :self.ndisp] *= (1 - j + 2 * j * self.rand(b, 1, 1))
        s = self.stats
        kp = (kp - s["kp_mean"]) / s["kp_std"] + cfg.keypoint_noise * torch.randn(kp.shape, generator=self.gen,
                                                                                  device=self.device)
        mel = self.augment_mel(mel)
        style = (style - s["style_mean"]) / s["style_std"] + cfg.style_noise * torch.randn(
            style.shape, generator=self.gen, device=self.device)
        y = (y - s["target_mean"]) / s["target_std"]
        drops = [self.rand(b) < p for p in (cfg.p_drop_audio, cfg.p_drop_keypoints, cfg.p_drop_style)]
        return mel, kp, style, y, drops, frame_w, vis

    def _uniform(self, b: int, lo_hi, *shape):
        lo, hi = lo_hi
        return lo + (hi - lo) * self.rand(b, *shape)

    def augment_room(self, x):
        """Reverberation, additive noise and band-limiting on gain-normalised log-mel windows
        x (B, T, subframes, n_mels); each window drawn afresh, then re-levelled like `normalize_mel`
        (loud-frame level back to where it was) so the network sees what inference would give it."""
        torch, cfg = self.torch, self.cfg
        b, t, sub, m = x.shape
        seq = x.reshape(b, t * sub, m)  # subframes are evenly spaced: one time axis at fps * sub
        rate = self.fps * sub
        level = torch.quantile(seq.mean(dim=2), 0.95, dim=1)  # (B,) as normalize_mel measures it
        out = seq
        if cfg.room_reverb_p > 0:
            # Power-domain exponential tail h[k] = g * 10^(-6 k / (rate * RT60)), k >= 1, causal.
            k = min(int(rate * cfg.room_rt60_s[1]), t * sub - 1)
            if k >= 1:
                rt60 = self._uniform(b, cfg.room_rt60_s, 1)
                drr = self._uniform(b, cfg.room_drr_db, 1)
                lags = torch.arange(1, k + 1, device=self.device, dtype=torch.float32)[None]
                decay = torch.pow(10.0, -6.0 * lags / (rate * rt60))
                kern = decay / decay.sum(dim=1, keepdim=True) * torch.pow(10.0, -drr / 10.0)  # tail energy vs direct
                power = torch.exp(out).transpose(1, 2).reshape(1, b * m, t * sub)
                w = kern.repeat_interleave(m, dim=0).flip(1)[:, None, :]  # (B*m, 1, k), conv1d correlates
                tail = torch.nn.functional.conv1d(torch.nn.functional.pad(power, (k, 0))[..., :-1], w, groups=b * m)
                wet = torch.log(power + tail).reshape(b, m, t * sub).transpose(1, 2)
                out = torch.where((self.rand(b) < cfg.room_reverb_p)[:, None, None], wet, out)
        if cfg.room_noise_p > 0:
            # Coloured stationary noise: a random tilt (white .. brown) and a slow bumpy spectrum, with
            # a little level wander over time, at the drawn SNR below the speech's loud-frame level.
            snr = self._uniform(b, cfg.room_snr_db, 1, 1)
            bins = torch.linspace(-1, 1, m, device=self.device)
            tilt = self._uniform(b, (-3.0, 0.5), 1, 1) * bins
            bumps = torch.nn.functional.interpolate(torch.randn(b, 1, 6, generator=self.gen, device=self.device),
                                                    size=m, mode="linear", align_corners=True)[:, 0][:, None, :]
            wander = 0.3 * torch.nn.functional.interpolate(
                torch.randn(b, 1, 4, generator=self.gen, device=self.device), size=t * sub, mode="linear",
                align_corners=True)[:, 0][:, :, None]
            floor = level[:, None, None] - snr / 10.0 * np.log(10.0) + tilt - tilt.mean(dim=2, keepdim=True)
            noise = floor + 0.7 * bumps + wander + 0.5 * torch.randn(out.shape, generator=self.gen, device=self.device)
            out = torch.where((self.rand(b) < cfg.room_noise_p)[:, None, None], torch.logaddexp(out, noise), out)
        if cfg.room_lowpass_p > 0:
            start = self._uniform(b, cfg.room_lowpass_bins, 1, 1).floor()
            over = (torch.arange(m, device=self.device)[None, None] - start).clamp(min=0)
            low = torch.minimum(out.amin(dim=(1, 2), keepdim=True), level[:, None, None] - 12.0)  # the silence floor
            limited = torch.maximum(out - 1.5 * over, low)
            out = torch.where((self.rand(b) < cfg.room_lowpass_p)[:, None, None], limited, out)
        new_level = torch.quantile(out.mean(dim=2), 0.95, dim=1)
        out = out - (new_level - level)[:, None, None]
        return out.reshape(b, t, sub, m)

    def equalize(self, x):
        """generate.equalize_spectrum on windows x (B, T, subframes, n_mels), each window its own take: its
        speech spectrum (frames within SPEECH_MARGIN of its loud-frame level) moved onto stats mel_ref."""
        b, t, sub, m = x.shape
        flat = x.reshape(b, t, sub * m)
        means = flat.mean(dim=2)
        keep = (means >= self.torch.quantile(means, 0.95, dim=1, keepdim=True) - SPEECH_MARGIN).float()[..., None]
        spectrum = (flat * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        shift = self.mel_cmn * (spectrum - self.stats["mel_ref"])
        return x - shift.view(b, 1, sub, m)

    def augment_mel(self, mel):
        """Raw log-mel windows (B, T, subframes * n_mels) -> normalised and augmented."""
        torch, cfg, m = self.torch, self.cfg, self.n_mels
        b, t, width = mel.shape
        x = mel.reshape(b, t, width // m, m)
        if cfg.mel_warp_bins > 0:
            pos = (torch.arange(m, device=self.device)[None] + (2 * self.rand(b, 1) - 1) * cfg.mel_warp_bins).clamp(0, m - 1)
            lo = pos.floor().long()
            hi = (lo + 1).clamp(max=m - 1)
            w = (pos - lo)[:, None, None, :]
            pick = lambda i: torch.gather(x, 3, i[:, None, None, :].expand_as(x))
            x = pick(lo) * (1 - w) + pick(hi) * w
        if cfg.room_reverb_p > 0 or cfg.room_noise_p > 0 or cfg.room_lowpass_p > 0:
            x = self.augment_room(x)
        s = self.stats
        if self.mel_cmn > 0:
            x = self.equalize(x)
        x = (x - s["mel_mean"].view(width // m, m)) / s["mel_std"].view(width // m, m)
        bins = torch.arange(m, device=self.device)
        if cfg.mel_tilt > 0:
            x = x + ((2 * self.rand(b, 1) - 1) * cfg.mel_tilt * torch.linspace(-1, 1, m, device=self.device))[:, None, None]
        if cfg.mel_noise > 0:
            x = x + cfg.mel_noise * torch.randn(x.shape, generator=self.gen, device=self.device)
        for _ in range(cfg.mel_freq_masks):
            start = (self.rand(b, 1) * (m - cfg.mel_freq_mask_bins)).long()
            size = (self.rand(b, 1) * (cfg.mel_freq_mask_bins + 1)).long()
            band = (bins[None] >= start) & (bins[None] < start + size)
            x = torch.where(band[:, None, None, :], torch.zeros((), device=self.device), x)
        x = x.reshape(b, t, width)
        if cfg.mel_augment_p < 1.0:
            plain = self.equalize(mel.reshape(b, t, width // m, m)).reshape(b, t, width) if self.mel_cmn > 0 else mel
            plain = (plain - s["mel_mean"]) / s["mel_std"]
            x = torch.where((self.rand(b) < cfg.mel_augment_p)[:, None, None], x, plain)
        return x


def channel_weights(cfg: TrainConfig) -> np.ndarray:
    w = np.ones(61, np.float32)
    w[LOWER_IDX] = cfg.lower_weight
    w[indices(BILABIAL_CLOSURE)] = cfg.lip_weight
    return w / w.mean()


def flow_loss(net, batch, tc: TrainConfig, weights, gen, lip_gap=None):
    """The training objective on one batch from `_Batcher`: channel- and closure-weighted rectified-flow
    velocity error, plus the auxiliary viseme and lip-gap losses where `tc` turns them on
    (`lip_gap` = (gap basis, target mean, target std) as tensors, needed only then)."""
    import torch

    mel, kp, style, y, (da, dk, ds), frame_w, vis = batch
    x0 = torch.randn(y.shape, generator=gen, device=y.device)
    t = RectifiedFlow.sample_time(y.shape[0], gen, y.device)
    xt = RectifiedFlow.interpolate(x0, y, t)
    if tc.viseme_weight > 0:
        v, logits = net(xt, t, mel, kp, style, da, dk, ds, viseme=True)
    else:
        v = net(xt, t, mel, kp, style, da, dk, ds)
    err = ((v - RectifiedFlow.target_velocity(x0, y)) ** 2) * weights
    loss = (err * frame_w[:, :, None]).sum() / (frame_w.sum() * err.shape[-1])
    if tc.viseme_weight > 0:
        loss = loss + tc.viseme_weight * torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), vis.reshape(-1))
    if tc.lip_gap_weight > 0:
        # x1 predicted from this velocity (straight path): x1 = x_t + (1 - t) v; compare the
        # rig's inner-lip gaps with the target's, where lip closures are decided.
        gap_basis, t_mean, t_std = lip_gap
        x1 = xt + (1 - t)[:, None, None] * v
        w_pred = (x1 * t_std + t_mean)[:, :, :52]
        w_true = (y * t_std + t_mean)[:, :, :52]
        gap_err = ((w_pred - w_true) @ gap_basis) ** 2
        loss = loss + tc.lip_gap_weight * (gap_err.mean(-1) * frame_w).sum() / frame_w.sum()
    return loss


def warmup_cosine(total: int, warmup_steps: int):
    """Learning-rate factor per step: linear warm-up, then a cosine decay to 0 at `total`."""
    return lambda i: min(1.0, (i + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(i, total) / total))


def ema_update(ema, net, step: int, decay: float) -> None:
    """Exponential moving average of the weights, with a short ramp so early steps are not frozen."""
    import torch

    with torch.no_grad():
        d = min(decay, (1 + step) / (10 + step))
        for pe, pn in zip(ema.parameters(), net.parameters()):
            pe.lerp_(pn, 1 - d)


def optimizer_step(loss, net, ema, opt, sched, step: int, grad_clip: float, ema_decay: float) -> None:
    """One update: backward, gradient clipping, optimizer and schedule step, then the EMA weights."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    sched.step()
    ema_update(ema, net, step, ema_decay)


# Inner-lip vertex pairs (MediaPipe mesh: upper, lower) whose vertical gap the auxiliary loss matches.
LIP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))


def lip_gap_basis(device):
    """(52, P) per-blendshape change of each inner-lip pair's vertical gap (mm) and the rest gaps (P,):
    the rig is linear, so gap(w) = rest + w @ basis."""
    import torch

    from .rig import load_rig

    rig = load_rig()
    up, lo = [p[0] for p in LIP_PAIRS], [p[1] for p in LIP_PAIRS]
    basis = (rig.deltas[:, up, 1] - rig.deltas[:, lo, 1]) * 10.0
    rest = (rig.neutral[up, 1] - rig.neutral[lo, 1]) * 10.0
    return torch.as_tensor(basis, dtype=torch.float32, device=device), torch.as_tensor(rest, dtype=torch.float32, device=device)


def validate(gen: Generator, corpus, split: str, n_clips: int, seed: int = 0) -> dict:
    """Sample whole held-out clips and compare with their targets: lower/upper-face mean absolute
    error (weights) and, where the metrics module can run, the bilabial closure rate and the share of
    open-vowel frames whose lips are sealed (a false closure)."""
    ids = np.flatnonzero(corpus.split == SPLITS.index(split))[:n_clips]
    if len(ids) == 0:
        return {}
    lower, upper, closures = [], [], []
    open_closed = [0, 0]  # open-vowel frames with the lips sealed, open-vowel frames
    for i in ids:
        s, n = int(corpus.starts[i]), int(corpus.lengths[i])
        mel = corpus.mel[s:s + n].astype(np.float32)
        kp = corpus.keypoints[s:s + n].astype(np.float32)
        tgt = corpus.target[s:s + n].astype(np.float32)
        m, k, st = gen.normalize_inputs(gen.equalize(mel), kp, corpus.style[i].astype(np.float32))
        x = gen.sample(m[None], k[None], st[None], steps=gen.sampler.steps, guidance=gen.sampler.guidance,
                       seed=seed + int(i))
        pred = gen.denormalize(x[0]).float().cpu().numpy()
        pred[:, :52] = np.clip(pred[:, :52], 0, 1)
        lower.append(np.abs(pred[:, LOWER_IDX] - tgt[:, LOWER_IDX]).mean())
        upper.append(np.abs(pred[:, UPPER_IDX] - tgt[:, UPPER_IDX]).mean())
        phon = corpus.clips[i].get("phonemes")
        if phon:
            try:
                from .metrics import bilabial_closure_rate, open_vowel_false_closures
                from .phonemes import Phoneme

                ph = [Phoneme(p, a, b) for p, a, b in phon]
                r = bilabial_closure_rate(pred, ph, gen.fps)
                if r is not None and np.isfinite(r):
                    closures.append(float(r))
                c, t = open_vowel_false_closures(pred, ph, gen.fps)
                open_closed[0] += c
                open_closed[1] += t
            except Exception:  # metrics needs the rig; validation goes on without this figure
                pass
    out = {"lower_mae": float(np.mean(lower)), "upper_mae": float(np.mean(upper))}
    if closures:
        out["bilabial_closure"] = float(np.mean(closures))
    if open_closed[1]:
        out["open_vowel_closed"] = open_closed[0] / open_closed[1]
    return out


def _clip_arrays(corpus, i, n=None):
    s, m = int(corpus.starts[i]), int(corpus.lengths[i])
    n = m if n is None else min(n, m)
    f = lambda a: a[s:s + n].astype(np.float32)
    return f(corpus.mel), f(corpus.keypoints), f(corpus.target)


def _lag_frames(a: np.ndarray, b: np.ndarray, max_lag: int = 6) -> int:
    """Lag (frames) maximising the correlation of a[t + lag] with b[t]; positive = a late."""
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        x, y = a[max(lag, 0): n + min(lag, 0)], b[max(-lag, 0): n - max(lag, 0)]
        c = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))
        if c > best + 1e-9 or (abs(c - best) <= 1e-9 and abs(lag) < abs(best_lag)):
            best, best_lag = c, lag
    return best_lag


def heldout_report(gen: Generator, corpus, n_clips: int = 24, seed: int = 0) -> dict:
    """The model card's figures on the held-out splits: LVE vs the teacher target, bilabial closure
    rate (generated and teacher), lip lag vs the teacher and vs the audio's energy (mel), FDD and
    upper-face correlation vs the conditioning performance, jitter, and the swap test (audio or
    keypoints exchanged between clip pairs: mean change of lower vs upper channels)."""
    from . import metrics
    from .phonemes import Phoneme

    def run(mel, kp, style, s):
        m, k, st = gen.normalize_inputs(gen.equalize(mel), kp, style)
        x = gen.sample(m[None], k[None], st[None], steps=gen.sampler.steps, guidance=gen.sampler.guidance, seed=s)
        p = gen.denormalize(x[0]).float().cpu().numpy()
        p[:, :52] = np.clip(p[:, :52], 0, 1)
        return p

    report = {}
    for split in SPLITS[1:]:
        ids = np.flatnonzero(corpus.split == SPLITS.index(split))[:n_clips]
        rows = {k: [] for k in ("lve", "closure", "closure_teacher", "lag_vs_teacher", "lag_vs_audio",
                                "lag_teacher_vs_audio", "fdd", "upper_corr", "jitter", "jitter_teacher",
                                "audio_swap_lower", "audio_swap_upper", "kp_swap_lower", "kp_swap_upper")}
        for j, i in enumerate(ids):
            mel, kp, tgt = _clip_arrays(corpus, i)
            pred = run(mel, kp, corpus.style[i], seed + j)
            ph = [Phoneme(*p) for p in corpus.clips[i].get("phonemes", [])]
            rows["lve"].append(metrics.lip_vertex_error(pred, tgt))
            r, rt = metrics.bilabial_closure_rate(pred, ph, gen.fps), metrics.bilabial_closure_rate(tgt, ph, gen.fps)
            if r is not None and np.isfinite(r):
                rows["closure"].append(r)
                rows["closure_teacher"].append(rt)
            env = np.log(np.exp(mel).sum(axis=1))
            mo, mt = metrics.mouth_opening(pred), metrics.mouth_opening(tgt)
            rows["lag_vs_teacher"].append(_lag_frames(mo, mt))
            rows["lag_vs_audio"].append(_lag_frames(mo, env))
            rows["lag_teacher_vs_audio"].append(_lag_frames(mt, env))
            rows["fdd"].append(metrics.fdd(pred, tgt, gen.fps))
            uc = metrics.upper_face_correlation(pred, tgt)
            if np.isfinite(uc):
                rows["upper_corr"].append(uc)
            rows["jitter"].append(metrics.jitter(pred))
            rows["jitter_teacher"].append(metrics.jitter(tgt))
            o = ids[(j + 1) % len(ids)]  # swap partner
            n = min(int(corpus.lengths[i]), int(corpus.lengths[o]))
            mel_o, kp_o, _ = _clip_arrays(corpus, o, n)
            base = pred[:n] if n == len(pred) else run(mel[:n], kp[:n], corpus.style[i], seed + j)
            sa = metrics.swap_sensitivity(base, run(mel_o, kp[:n], corpus.style[i], seed + j))
            sk = metrics.swap_sensitivity(base, run(mel[:n], kp_o, corpus.style[i], seed + j))
            rows["audio_swap_lower"].append(sa.lower)
            rows["audio_swap_upper"].append(sa.upper)
            rows["kp_swap_lower"].append(sk.lower)
            rows["kp_swap_upper"].append(sk.upper)
        report[split] = {"clips": int(len(ids)), **{k: round(float(np.mean(v)), 4) for k, v in rows.items() if v}}
    report.update(clean_speech_report(gen, corpus.meta.get("config", {})))
    return report


def clean_speech_report(gen: Generator, corpus_cfg: dict) -> dict:
    """Closure rate, LVE and lip-audio lag on clean (unaugmented) espeak speech of the held-out
    languages spoken by held-out variants, against the teacher on the same phonemes."""
    from . import metrics
    from .espeak import synthesize
    from .generate import style_context
    from .keypoints import keypoints_from_curves
    from .teacher import lower_face_from_phonemes
    from .upperface import procedural_upper_face

    langs = corpus_cfg.get("val_languages", ("it", "pt"))
    variants = corpus_cfg.get("val_variants", ("m7", "f4"))
    rows = {k: [] for k in ("closure", "closure_teacher", "lve", "lag_vs_audio", "lag_teacher_vs_audio")}
    for li, lang in enumerate(langs):
        from .corpus import load_sentences
        from .lang import voice_for

        for si, text in enumerate(load_sentences(lang)[:10]):
            syn = synthesize(text, voice_for(lang), 165, 50, 50, variants[(li + si) % len(variants)])
            dur = syn.audio.duration_s
            up = procedural_upper_face(dur, gen.fps, np.random.default_rng(si), emotion="neutral").animation.values
            pred = gen.generate(syn.audio, keypoints_from_curves(up), style_context(up), seed=si).values
            teach = lower_face_from_phonemes(syn.phonemes, dur, gen.fps).values
            r = metrics.bilabial_closure_rate(pred, syn.phonemes, gen.fps)
            if np.isfinite(r):
                rows["closure"].append(r)
                rows["closure_teacher"].append(metrics.bilabial_closure_rate(teach, syn.phonemes, gen.fps))
            rows["lve"].append(metrics.lip_vertex_error(pred, teach))
            rows["lag_vs_audio"].append(metrics.lip_audio_lag(pred, syn.audio.samples, 16000, gen.fps))
            rows["lag_teacher_vs_audio"].append(metrics.lip_audio_lag(teach, syn.audio.samples, 16000, gen.fps))
    return {"clean_heldout_lang": {"clips": len(rows["lve"]),
                                   **{k: round(float(np.mean(v)), 4) for k, v in rows.items() if v}}}


def train(cfg: FlowConfig, corpus_dir, out, device: str = "cpu", steps: int | None = None,
          progress: bool = True, log=print, time_limit_s: float | None = None) -> Path:
    """Train from scratch and write the checkpoint to `out` (atomically). Builds the corpus in
    `corpus_dir` first when it is missing. `time_limit_s` is a safety net: training stops early
    (and says so in the checkpoint's meta) when the wall clock runs past it."""
    import torch

    device = _device(device)
    tc = cfg.train
    total = int(steps if steps is not None else tc.steps)
    if total < 1:
        raise InputError(f"training steps must be >= 1, got {total}")
    if time_limit_s is not None and not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise InputError(f"--time-limit must be a positive number of seconds, got {time_limit_s}")
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "corpus.npz").is_file():
        log(f"corpus not found in {corpus_dir}: building it (CPU, espeak-ng)")
        build_corpus(cfg.corpus, corpus_dir, progress=progress, log=log)
    corpus = load_corpus(corpus_dir)
    if tc.viseme_weight > 0 and cfg.model.viseme_classes != len(VISEME_CLASSES):
        raise InputError(f"train viseme_weight > 0 needs model viseme_classes = {len(VISEME_CLASSES)} "
                         f"(got {cfg.model.viseme_classes})")
    check_fits(corpus, cfg.model, corpus_dir)
    torch.manual_seed(tc.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    stats = compute_stats(corpus)
    net = build_net(cfg.model).to(device)
    ema = build_net(cfg.model).to(device)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, tc.warmup_steps))
    batch = _Batcher(corpus, stats, tc, device, tc.seed, cfg.model.n_mels, cfg.model.fps, cfg.model.mel_cmn)
    weights = torch.as_tensor(channel_weights(tc), device=device)
    gap_basis, _ = lip_gap_basis(device)
    t_mean, t_std = (torch.as_tensor(stats[k], device=device) for k in ("target_mean", "target_std"))
    gen_ema = Generator(ema, cfg.model, cfg.sampler, stats, {"name": cfg.name}, device)
    history = []
    t0 = time.time()

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), disable=not progress)
    loss_avg = None
    with bar:
        task = bar.add_task("train", total=total, loss=float("nan"))
        for step in range(1, total + 1):
            net.train()
            loss = flow_loss(net, batch(tc.batch_size), tc, weights, batch.gen, (gap_basis, t_mean, t_std))
            optimizer_step(loss, net, ema, opt, sched, step, tc.grad_clip, tc.ema_decay)
            lv = float(loss.detach()) if step % 25 == 0 or step == total else None
            if lv is not None:
                loss_avg = lv if loss_avg is None else 0.9 * loss_avg + 0.1 * lv
            bar.update(task, advance=1, loss=loss_avg if loss_avg is not None else float("nan"))
            over_time = time_limit_s is not None and time.time() - t0 > time_limit_s
            if step % tc.val_every == 0 or step == total or over_time:
                ema.eval()
                row = {"step": step, "loss": loss_avg, "elapsed_s": round(time.time() - t0, 1)}
                for split in SPLITS[1:]:
                    for k, val in validate(gen_ema, corpus, split, tc.val_clips).items():
                        row[f"{split}/{k}"] = round(val, 4)
                history.append(row)
                log(json.dumps(row))
            if over_time:
                log(f"time limit reached: stopping at step {step} of {total}")
                total = step
                break
    meta = {"name": cfg.name, "config": config_dict(cfg), "corpus": corpus.meta, "history": history,
            "train_steps": total, "device": device, "train_seconds": round(time.time() - t0, 1),
            "torch": torch.__version__}
    return save_checkpoint(out, ema, cfg.model, cfg.sampler, stats, meta, onnx=True)


def distill_guidance(teacher_path, corpus_dir, out, device: str = "cpu", steps: int = 3000, batch_size: int = 256,
                     lr: float = 2e-4, time_limit_s: float | None = None, log=print, onnx: bool = True) -> Path:
    """Guidance distillation (Meng et al. 2023, stage one): a student with the teacher's weights learns to
    give in one network pass the velocity the teacher gives with classifier-free guidance in two
    (v_audio-free + g (v_audio - v_audio-free), g = the teacher's sampler guidance), so sampling costs half.
    The states it learns on are the ones inference visits: the teacher's own guided Euler path from
    temperature-scaled noise (its sampler's steps and temperature), plus one random point of the training
    interpolant per window (other --steps still work). Writes a checkpoint whose sampler guidance is 1.0;
    meta keeps the teacher's articulation gains and names the teacher."""
    import copy

    import torch

    from .generate import load_model

    device = _device(device)
    teacher = load_model(teacher_path, device=device, backend="torch")
    g, sc = float(teacher.sampler.guidance), teacher.sampler
    if g == 1.0:
        raise InputError(f"{teacher_path}: sampler guidance is already 1.0; there is nothing to distil")
    corpus = load_corpus(corpus_dir)
    tc = _sub(TrainConfig, teacher.meta.get("config", {}).get("train", {}), f"{teacher_path}: meta config train")
    tc = replace(tc, p_drop_audio=0.0, p_drop_keypoints=0.0, p_drop_style=0.0)
    stats = teacher.stats()
    t_net = teacher.net.eval().requires_grad_(False)
    net = copy.deepcopy(t_net).train().requires_grad_(True)
    ema = copy.deepcopy(t_net)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, 100))
    batch = _Batcher(corpus, stats, tc, device, tc.seed + 7, teacher.dims.n_mels, teacher.fps, teacher.dims.mel_cmn)
    weights = torch.as_tensor(channel_weights(tc), device=device)
    history, t0, total = [], time.time(), steps

    def guided(x, t, cf, cg, uf, ug):
        vc, vu = t_net.velocity(x, t, cf, cg), t_net.velocity(x, t, uf, ug)
        return vu + g * (vc - vu)

    for step in range(1, total + 1):
        mel, kp, style, y, _drops, frame_w, _vis = batch(batch_size)
        b = y.shape[0]
        with torch.no_grad():
            cf, cg = t_net.encode(mel, kp, style)
            uf, ug = t_net.encode(mel, kp, style, torch.ones(b, dtype=torch.bool, device=device))
            xs, ts, vs = [], [], []
            x = sc.temperature * torch.randn(y.shape, generator=batch.gen, device=device)
            for i in range(sc.steps):  # the teacher's sampling path
                t = torch.full((b,), i / sc.steps, device=device)
                v = guided(x, t, cf, cg, uf, ug)
                xs.append(x), ts.append(t), vs.append(v)
                x = x + v / sc.steps
            t = RectifiedFlow.sample_time(b, batch.gen, device)  # and a point of the training interpolant
            x = RectifiedFlow.interpolate(torch.randn(y.shape, generator=batch.gen, device=device), y, t)
            xs.append(x), ts.append(t), vs.append(guided(x, t, cf, cg, uf, ug))
        x, t, target = torch.cat(xs), torch.cat(ts), torch.cat(vs)
        n = len(xs)
        pred = net(x, t, mel.repeat(n, 1, 1), kp.repeat(n, 1, 1), style.repeat(n, 1))
        err = ((pred - target) ** 2) * weights
        fw = frame_w.repeat(n, 1)
        loss = (err * fw[:, :, None]).sum() / (fw.sum() * err.shape[-1])
        optimizer_step(loss, net, ema, opt, sched, step, 1.0, 0.999)
        over_time = time_limit_s is not None and time.time() - t0 > time_limit_s
        if step % 500 == 0 or step == total or over_time:
            row = {"step": step, "loss": round(float(loss.detach()), 5), "elapsed_s": round(time.time() - t0, 1)}
            history.append(row)
            log(json.dumps(row))
        if over_time:
            log(f"time limit reached: stopping at step {step} of {total}")
            total = step
            break
    meta = copy.deepcopy(teacher.meta)
    meta.update({"name": f"{teacher.meta.get('name', 'dubtool_flow')}_distilled",
                 "distilled": {"teacher": Path(teacher_path).name, "teacher_guidance": g, "steps": total,
                               "seconds": round(time.time() - t0, 1), "history": history, "device": device,
                               "torch": torch.__version__}})
    return save_checkpoint(out, ema.eval(), teacher.dims, replace(teacher.sampler, guidance=1.0), stats, meta,
                           onnx=onnx)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning a trained generator on a small set of real takes (`dubtool train --captures`), sized
    for minutes on a 2-core CPU: small batches, a low learning rate, a fast EMA, and a pull back
    to the base model so it does not forget what the real takes do not show. By default it fits the
    lower face and the rig's lip gap of takes brought to the base model's mouth range (tracked
    upper-face offsets and press noise are not learnt); picked on a validation split, docs/captures.md."""

    steps: int = 300
    batch_size: int = 16
    window_frames: int = 128  # cut to the shortest training take when that is shorter
    min_window_frames: int = 30
    lr: float = 2e-4
    warmup_steps: int = 20
    ema_decay: float = 0.99
    grad_clip: float = 1.0
    l2_base: float = 0.1  # L2-SP (Li et al. 2018): + l2_base x sum of squared changes of the weights from the base's (picked on the select split: 0.01 / 0.1 / 1.0, docs/captures.md)
    base_share: float = 0.125  # share of each batch from the base corpus (2 of 16 windows; picked on the select split over 3 seeds: 0 / 0.125 / 0.25, docs/captures.md)
    base_weights: str = "recipe"  # loss weights of the base-corpus windows: "recipe" (the base recipe's closure-channel and sealed-frame weights: the teacher's /p b m/ seals stay taught) or "capture" (the fine-tune's, as for the takes)
    eval_windows: int = 32  # fixed windows on which the loss is measured before and after
    time_limit_s: float = 480.0  # default safety net: the whole job stays within 10 minutes on a 2-core CPU
    upper_weight: float = 0.0  # loss weight of the upper-face and head channels relative to the recipe's (0: fit the lower face only)
    lip_gap_weight: float = 0.5  # auxiliary loss on the rig's inner-lip gaps (mm) of the predicted curves vs the take's
    lip_weight: float | None = 1.0  # loss weight of the closure channels (None: the base recipe's 5; a tracker's press/roll are noisy)
    closure_frame_weight: float | None = 0.0  # extra weight on frames where the take presses its lips (None: the recipe's 12)
    freeze_audio: bool = False  # keep the audio front end at the base's weights
    amplitude: str = "shipped"  # lower-face amplitude of the targets: "tracked" (as captured), "takes" (every take scaled to the takes' median lip-gap std), "shipped" (each take scaled to the base model's lip-gap std on its audio)
    cpu_threads: int = 1  # torch threads on CPU: 2 threads on 2 busy cores ran 4x slower per step than 1
    seed: int = 0


def finetune_loss_configs(cfg: FinetuneConfig, recipe: TrainConfig, window: int) -> tuple[TrainConfig, TrainConfig]:
    """(the takes' objective, the base-corpus windows' objective) of a fine-tune: the base recipe's swaps,
    drops and audio augmentation, no viseme loss (real takes have no phoneme labels), the fine-tune's
    lip-gap loss. The takes get the fine-tune's closure weights (a tracker's press/roll are noisy); the
    base corpus's teacher curves seal the lips exactly on /p b m/, so with base_weights "recipe" its
    windows keep the recipe's closure-channel and sealed-frame weights: the seals the takes do not show."""
    if cfg.base_weights not in ("recipe", "capture"):
        raise InputError(f"base_weights must be 'recipe' or 'capture', got {cfg.base_weights!r}")
    base = replace(recipe, window_frames=window, batch_size=cfg.batch_size, lr=cfg.lr, viseme_weight=0.0,
                   lip_gap_weight=cfg.lip_gap_weight, seed=cfg.seed)
    takes = replace(base, **{k: getattr(cfg, k) for k in ("lip_weight", "closure_frame_weight") if getattr(cfg, k) is not None})
    return takes, (base if cfg.base_weights == "recipe" else takes)


def fine_tune(gen: Generator, corpus, cfg: FinetuneConfig = FinetuneConfig(), *, base_corpus=None,
              train_cfg: TrainConfig | None = None, heldout=None, steps: int | None = None,
              time_limit_s: float | None = None, device: str = "cpu", progress: bool = True, log=print):
    """Fine-tune `gen` (a loaded Generator) on the 'train' clips of `corpus` (laid out like the training
    corpus, normalised with the checkpoint's own statistics) with the training objective of `flow_loss`.
    `base_corpus` (the training corpus) supplies `cfg.base_share` of every batch when given; the
    L2-SP term always pulls the weights to the base's. Returns (fine-tuned Generator (the EMA
    weights), report dict: steps, seconds, losses on fixed capture/held-out/base windows before and after)."""
    import torch

    device = _device(device)
    total = int(cfg.steps if steps is None else steps)
    if total < 1:
        raise InputError(f"fine-tuning steps must be >= 1, got {total}")
    time_limit_s = cfg.time_limit_s if time_limit_s is None else time_limit_s
    if time_limit_s is not None and not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise InputError(f"--time-limit must be a positive number of seconds, got {time_limit_s}")
    train_rows = corpus.split == SPLITS.index("train")
    if not train_rows.any():
        raise InputError("no capture to fine-tune on")
    shortest = int(corpus.lengths[train_rows].min())
    window = min(cfg.window_frames, shortest)
    if window < cfg.min_window_frames:
        raise InputError(f"the shortest training take has {shortest} frames; fine-tuning needs {cfg.min_window_frames}")
    tc, tc_base = finetune_loss_configs(cfg, train_cfg or TrainConfig(), window)
    threads = torch.get_num_threads()
    if device == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _fine_tune(gen, corpus, cfg, tc, tc_base, window, total, base_corpus, heldout, time_limit_s, device,
                          progress, log)
    finally:
        torch.set_num_threads(threads)


def _fine_tune(gen, corpus, cfg, tc, tc_base, window, total, base_corpus, heldout, time_limit_s, device, progress, log):
    import copy

    import torch

    torch.manual_seed(cfg.seed)
    stats = gen.stats()
    net = copy.deepcopy(gen.net).to(device)
    ema = copy.deepcopy(net)
    ema.requires_grad_(False)
    base_params = [p.detach().clone() for p in net.parameters()]
    n_params = sum(p.numel() for p in base_params)
    def loss_weights(c):
        w = channel_weights(c)
        w[np.setdiff1d(np.arange(len(w)), LOWER_IDX)] *= cfg.upper_weight
        return torch.as_tensor(w, device=device)

    weights, base_weights = loss_weights(tc), loss_weights(tc_base)
    lip_gap = None
    if cfg.lip_gap_weight > 0:
        t_mean, t_std = (torch.as_tensor(np.asarray(stats[k], np.float32), device=device)
                         for k in ("target_mean", "target_std"))
        lip_gap = (lip_gap_basis(device)[0], t_mean, t_std)
    if cfg.freeze_audio:
        net.audio.requires_grad_(False)
    n_mels = gen.dims.n_mels
    n_base = int(round(cfg.batch_size * cfg.base_share)) if base_corpus is not None else 0
    n_cap = max(1, cfg.batch_size - n_base)
    cap_batch = _Batcher(corpus, stats, tc, device, cfg.seed, n_mels, gen.fps, gen.dims.mel_cmn)
    base_batch = (_Batcher(base_corpus, stats, tc_base, device, cfg.seed + 1, n_mels, gen.fps, gen.dims.mel_cmn)
                  if n_base else None)

    def fixed(c, seed):  # the same windows, noise and flow times before and after
        if c is None:
            return None
        try:
            b = _Batcher(c, stats, replace(tc, window_frames=min(window, int(c.lengths.min()))), device, seed, n_mels,
                         gen.fps, gen.dims.mel_cmn)
        except InputError:
            return None
        return b(cfg.eval_windows), torch.Generator(device=device).manual_seed(seed)

    probes = {"capture": fixed(corpus, 1000), "heldout": fixed(heldout, 1001), "base_corpus": fixed(base_corpus, 1002)}

    def probe_losses(model) -> dict:
        model.eval()
        out = {}
        with torch.no_grad():
            for name, pr in probes.items():
                if pr is not None:
                    batch, g = pr
                    g = torch.Generator(device=device).manual_seed(int(g.initial_seed()))
                    out[name] = round(float(flow_loss(model, batch, tc, weights, g, lip_gap)), 5)
        return out

    before = probe_losses(net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, cfg.warmup_steps))
    t0 = time.time()
    losses = []
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.console import Console

    bar = Progress(TextColumn("[bold]fine-tune"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), disable=not progress,
                   console=Console(stderr=True))  # stdout keeps the results (--json)
    done, stopped = 0, False
    with bar:
        task = bar.add_task("fine-tune", total=total, loss=float("nan"))
        for step in range(1, total + 1):
            net.train()
            loss = flow_loss(net, cap_batch(n_cap), tc, weights, cap_batch.gen, lip_gap)
            if base_batch is not None:  # each source under its own weights, mixed by its share of the batch
                base_loss = flow_loss(net, base_batch(n_base), tc_base, base_weights, cap_batch.gen, lip_gap)
                loss = (n_cap * loss + n_base * base_loss) / (n_cap + n_base)
            if cfg.l2_base > 0:
                loss = loss + cfg.l2_base * sum(((p - p0) ** 2).sum() for p, p0 in zip(net.parameters(), base_params))
            optimizer_step(loss, net, ema, opt, sched, step, cfg.grad_clip, cfg.ema_decay)
            losses.append(float(loss.detach()))
            done = step
            bar.update(task, advance=1, loss=float(np.mean(losses[-25:])))
            if time_limit_s is not None and time.time() - t0 > time_limit_s and step < total:
                log(f"time limit reached: stopping at step {step} of {total}")
                stopped = True
                break
    seconds = time.time() - t0
    after = probe_losses(ema)
    with torch.no_grad():
        drift = float(sum(((p - p0) ** 2).sum() for p, p0 in zip(ema.parameters(), base_params)) / n_params) ** 0.5
    # The base's articulation gains calibrate its raw output; the fine-tuned network learnt the takes' own
    # range (or the base's calibrated one, amplitude "shipped"), so none are applied on top.
    tuned_meta = {k: v for k, v in gen.meta.items() if k not in ("articulation_gain", "articulation_calibration")}
    tuned = Generator(ema.eval(), gen.dims, gen.sampler, stats, tuned_meta, device)
    report = {"steps": done, "steps_asked": total, "stopped_by_time_limit": stopped, "seconds": round(seconds, 1),
              "window_frames": window, "batch": {"capture": n_cap, "base_corpus": n_base},
              "loss_first_25": round(float(np.mean(losses[:25])), 5), "loss_last_25": round(float(np.mean(losses[-25:])), 5),
              "probe_loss_before": before, "probe_loss_after": after,
              "weight_drift_rms": round(drift, 6), "config": asdict(cfg), "device": device}
    return tuned, report


def main(argv=None) -> None:
    """`python -m dubtool.train CONFIG CORPUS OUT DEVICE [STEPS|-] [TIME_LIMIT_S]`: the entry the GPU machine uses
    (it imports nothing of the CLI's other commands)."""
    import sys

    a = list(sys.argv[1:] if argv is None else argv)
    if a and a[0] == "report":  # python -m dubtool.train report MODEL CORPUS
        from .generate import load_model

        print(json.dumps(heldout_report(load_model(a[1], backend="torch"), load_corpus(a[2])), indent=1))
        return
    if a and a[0] == "onnx":  # python -m dubtool.train onnx MODEL.pt [MODEL.pt ...]: write their ONNX sidecars
        from .generate import export_onnx

        for path in a[1:]:
            print("\n".join(str(p) for p in export_onnx(path)))
        return
    if a and a[0] == "distill":  # python -m dubtool.train distill TEACHER.pt CORPUS OUT.pt DEVICE [STEPS] [TIME_LIMIT_S]
        distill_guidance(a[1], a[2], a[3], a[4], int(a[5]) if len(a) > 5 else 3000,
                         time_limit_s=float(a[6]) if len(a) > 6 else None)
        return
    cfg = load_config(a[0])
    train(cfg, a[1], a[2], a[3], int(a[4]) if len(a) > 4 and a[4] != "-" else None, progress=False,
          time_limit_s=float(a[5]) if len(a) > 5 else None)


if __name__ == "__main__":
    main()
