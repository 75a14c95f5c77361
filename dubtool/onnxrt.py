"""The flow generator's network on ONNX Runtime: CPU inference without importing torch (its import is
~80 % of a one-shot `dubtool localize`, docs/benchmarks.md).

The two parts the sampler calls are exported beside a checkpoint MODEL.pt:
  * MODEL.encode.onnx   — conditions -> (per-frame condition, global condition), once per take;
  * MODEL.velocity.onnx — (x_t, t, conditions, attention mask) -> velocity, at every ODE step;
  * MODEL.onnx.json     — the checkpoint's config, statistics and meta (so nothing needs torch to read
    the .pt) and the SHA-256 of the .pt and of both graphs: a sidecar left from another or an older
    checkpoint is never used (`open_sidecar` says why and the caller falls back to torch).

The sampler loop itself (chunking, crossfade, guidance, the seeded noise) is `generate.OnnxGenerator`,
in numpy. `python -m dubtool.train onnx MODEL.pt` writes the sidecar for any checkpoint (needs torch
and the `onnx` package, the `dev` extra); `dubtool train` writes it when `onnx` is installed. This
module imports neither torch nor dubtool.generate at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST_FORMAT = "dubtool-flow-onnx"
MANIFEST_VERSION = 1
OPSET = 17
BACKEND_ENV = "DUBTOOL_BACKEND"  # auto (default) | torch | onnx
BACKENDS = ("auto", "torch", "onnx")


def sidecar_paths(checkpoint: str | os.PathLike) -> dict[str, Path]:
    """The three sidecar files of MODEL.pt: manifest (MODEL.onnx.json), encode and velocity graphs."""
    p = Path(checkpoint)
    stem = p.name[:-len(p.suffix)] if p.suffix else p.name
    return {"manifest": p.with_name(stem + ".onnx.json"), "encode": p.with_name(stem + ".encode.onnx"),
            "velocity": p.with_name(stem + ".velocity.onnx")}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


RANDN_BLOCK = 1 << 20  # values per block of torch_randn (a multiple of 16)


def torch_randn_stream(seed: int):
    """A function size -> float32 standard normals that continues one stream equal (to float rounding) to
    torch.randn's on a CPU `torch.Generator().manual_seed(seed)`, call after call as torch's generator
    does: torch's CPU normal sampler is a Mersenne Twister seeded with init_genrand(seed) (numpy's legacy
    RandomState seeds it the same way), 24-bit uniform floats, Box-Muller on blocks of 16 (u[0:8] radii,
    u[8:16] angles), and when a call's size is not a multiple of 16 its last 16 values redrawn from 16
    fresh uniforms. tests/test_onnx.py checks it against torch."""
    rs = np.random.RandomState(int(seed) & 0xFFFFFFFF)

    def uniform(n: int) -> np.ndarray:
        bits = rs.randint(0, 2 ** 32, size=n, dtype=np.uint32) & np.uint32((1 << 24) - 1)
        return bits.astype(np.float64) * 2.0 ** -24

    def box_muller(u: np.ndarray) -> np.ndarray:
        u = u.reshape(-1, 16)
        radius = np.sqrt(-2.0 * np.log(1.0 - u[:, :8]))
        theta = 2.0 * np.pi * u[:, 8:]
        return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1).reshape(-1)

    def draw(size: int) -> np.ndarray:
        if size < 16:  # torch draws such tiny tensors one by one with another method; the generator never does
            raise ValueError(f"torch_randn needs at least 16 values, got {size}")
        whole = size - size % 16
        out = np.empty(size, np.float32)
        for a in range(0, whole, RANDN_BLOCK):  # in blocks: an hour-long take's noise needs no float64 copy of it all
            b = min(whole, a + RANDN_BLOCK)
            out[a:b] = box_muller(uniform(b - a))
        if size % 16:
            uniform(size % 16)  # drawn (and overwritten) by torch's first pass
            out[size - 16:] = box_muller(uniform(16))
        return out

    return draw


def torch_randn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 standard normals equal (to float rounding) to `torch.randn(*shape, generator=
    torch.Generator().manual_seed(seed))` on the CPU (one draw of torch_randn_stream), so the ONNX path
    starts from the torch path's noise and both give the same animation for a seed."""
    return torch_randn_stream(seed)(int(np.prod(shape))).reshape(shape)


def band_mask(frames: int, window: int) -> np.ndarray:
    """(frames, frames) additive attention mask: 0 within +-window frames, -inf elsewhere (the torch
    network's boolean band mask, as scaled_dot_product_attention adds it)."""
    i = np.arange(frames)
    return np.where(np.abs(i[None, :] - i[:, None]) <= window, 0.0, -np.inf).astype(np.float32)


def backend_choice(backend: str | None) -> str:
    from .errors import InputError

    choice = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in BACKENDS:
        raise InputError(f"generator backend {choice!r} (from {BACKEND_ENV}) is not one of "
                         f"{', '.join(BACKENDS)}")
    return choice


@dataclass
class OnnxNet:
    """The two ONNX Runtime sessions; numpy float32 in and out."""

    encode_session: object
    velocity_session: object

    def encode(self, mel, keypoints, style, drop_audio):
        return self.encode_session.run(None, {"mel": mel, "keypoints": keypoints, "style": style,
                                              "drop_audio": drop_audio})

    def velocity(self, x, t, cond_frames, cond_global, mask):
        return self.velocity_session.run(None, {"x": x, "t": t, "cond_frames": cond_frames,
                                                "cond_global": cond_global, "mask": mask})[0]


def session_options(threads: int | None = None, spin: bool | None = None, level: str = "all"):
    """ORT CPU options: `threads` intra-op threads (None: ORT's default, one per physical core), no
    inter-op pool, full graph optimisation; the intra-op threads do not spin while waiting unless
    OMP_WAIT_POLICY=ACTIVE (on cores shared with other jobs a spinning thread steals the time its
    partner needs, as torch's OpenMP threads did: docs/benchmarks.md). `spin` and `level` (basic,
    extended, all) override those defaults (benchmarks/bench_onnx.py compares them)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    if spin is None:
        spin = os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE"
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3
    return so


def open_sidecar(checkpoint: str | os.PathLike, threads: int | None = None) -> tuple[dict | None, OnnxNet | None, str]:
    """(manifest, sessions, "") when MODEL.pt has an ONNX sidecar made from exactly this file and
    onnxruntime imports; else (None, None, why not). Reads the .pt's bytes only to hash them."""
    paths = sidecar_paths(checkpoint)
    if not paths["manifest"].is_file():
        return None, None, "no ONNX sidecar"
    try:
        import onnxruntime as ort
    except ImportError:
        return None, None, "onnxruntime is not installed"
    try:
        manifest = json.loads(paths["manifest"].read_text())
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("format_version") != MANIFEST_VERSION:
            return None, None, f"{paths['manifest'].name} is of another format or version"
        if manifest.get("checkpoint_sha256") != sha256_bytes(Path(checkpoint).read_bytes()):
            return None, None, f"{paths['manifest'].name} was exported from another version of {Path(checkpoint).name}"
        graphs = {}
        for part in ("encode", "velocity"):
            data = paths[part].read_bytes()
            if manifest.get(f"{part}_sha256") != sha256_bytes(data):
                return None, None, f"{paths[part].name} does not match {paths['manifest'].name}"
            graphs[part] = data
    except (OSError, ValueError, AttributeError) as e:
        return None, None, f"unreadable ONNX sidecar ({type(e).__name__})"
    so = session_options(threads)
    try:
        sessions = [ort.InferenceSession(graphs[part], so, providers=["CPUExecutionProvider"])
                    for part in ("encode", "velocity")]
    except Exception as e:  # onnxruntime raises its own exception types for invalid graphs
        return None, None, f"onnxruntime cannot open the sidecar ({type(e).__name__})"
    return manifest, OnnxNet(*sessions), ""


def export(net, checkpoint: str | os.PathLike, config: dict) -> list[Path]:
    """Write MODEL.pt's sidecar (atomically, manifest last) from its torch network `net` (eval mode, CPU)
    and `config` (dims, sampler, stats, meta: what the manifest carries). Needs torch and `onnx`."""
    import io

    import torch

    from .errors import DependencyError
    from .fileio import atomic_path

    try:
        import onnx  # noqa: F401  (torch.onnx.export serialises through it)
    except ImportError:
        raise DependencyError("exporting to ONNX needs the onnx package: pip install 'onnx>=1.17,<1.23'") from None
    net = net.to("cpu").eval()
    dims = config["dims"]

    class Encode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, mel, keypoints, style, drop_audio):
            return self.net.encode(mel, keypoints, style, drop_audio)

    class Velocity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t, cond_frames, cond_global, mask):
            return self.net.velocity(x, t, cond_frames, cond_global, mask)

    # Example shapes unlike any real one (batch 3, 37 frames), so nothing shape-specific is traced in.
    b, n = 3, 37
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(b, n, dims["n_mels"] * dims["audio_subframes"], generator=g)
    kp = torch.randn(b, n, dims["n_keypoints"], generator=g)
    st = torch.randn(b, dims["style_dim"], generator=g)
    drop = torch.tensor([False, True, False])
    with torch.inference_mode():
        cf, cg = net.encode(mel, kp, st, drop)
    x = torch.randn(b, n, dims["n_channels"], generator=g)
    t = torch.full((b,), 0.25)
    mask = torch.as_tensor(band_mask(n, dims["attn_window"]))
    graphs = {}
    specs = {
        "encode": (Encode(), (mel, kp, st, drop), ["mel", "keypoints", "style", "drop_audio"],
                   ["cond_frames", "cond_global"],
                   {"mel": {0: "batch", 1: "frames"}, "keypoints": {0: "batch", 1: "frames"}, "style": {0: "batch"},
                    "drop_audio": {0: "batch"}, "cond_frames": {0: "batch", 1: "frames"}, "cond_global": {0: "batch"}}),
        "velocity": (Velocity(), (x, t, cf.clone(), cg.clone(), mask), ["x", "t", "cond_frames", "cond_global", "mask"],
                     ["velocity"],
                     {"x": {0: "batch", 1: "frames"}, "t": {0: "batch"}, "cond_frames": {0: "batch", 1: "frames"},
                      "cond_global": {0: "batch"}, "mask": {0: "frames", 1: "frames_k"},
                      "velocity": {0: "batch", 1: "frames"}}),
    }
    import warnings

    for part, (module, args, inputs, outputs, axes) in specs.items():
        module.eval()  # export restores the wrapper's mode afterwards: it must be eval, or dropout comes back on
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic; the test checks other shapes
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
        graphs[part] = buf.getvalue()
    net.eval()
    paths = sidecar_paths(checkpoint)
    manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "checkpoint": Path(checkpoint).name,
                "checkpoint_sha256": sha256_bytes(Path(checkpoint).read_bytes()),
                "encode_sha256": sha256_bytes(graphs["encode"]), "velocity_sha256": sha256_bytes(graphs["velocity"]),
                "opset": OPSET, "exported_with": f"torch {torch.__version__}",
                **{k: config[k] for k in ("dims", "sampler", "meta")},
                "stats": {k: np.asarray(v, np.float32).tolist() for k, v in config["stats"].items()}}
    for part in ("encode", "velocity"):
        with atomic_path(paths[part], suffix=".onnx") as tmp:
            Path(tmp).write_bytes(graphs[part])
    with atomic_path(paths["manifest"], suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n")
    return [paths["encode"], paths["velocity"], paths["manifest"]]
