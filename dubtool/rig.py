"""The face rig: a neutral mesh on MediaPipe's 468-vertex canonical face topology plus the 52 ARKit
blendshape deltas. It is the bridge between ARKit weights and vertex (keypoint) space for every stage:
`pose` turns weights into vertices (render, export, keypoints of generated curves), `solve` turns
tracked vertices back into weights.

Coordinates are the canonical face's: centimetres, +x = the subject's left, +y up, +z out of the face
towards a camera that looks down -z. Vertex indices are MediaPipe's, so `keypoints.UPPER_FACE_VERTICES`
and tracked landmarks index this mesh directly. The deltas are authored by scripts/build_rig.py and
shipped in models/face_rig.npz, so loading needs no model cache.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .arkit import BLENDSHAPE_NAMES, HEAD_IDX, NUM_BLENDSHAPES
from .errors import InputError, ModelError

FORMAT_VERSION = 1
NUM_VERTICES = 468
NUM_TRIANGLES = 898
RIG_PATH = Path(__file__).resolve().parent.parent / "models" / "face_rig.npz"

# Head rotations pivot about the top of the spine: below the ears, behind the face (cm, canonical).
NECK_PIVOT = np.array([0.0, -5.0, -4.0], dtype=np.float32)

# Shapes that move the same vertices in opposite directions; a solver cannot tell "both at 0.5" from
# "neither", so data (and round-trip tests) should not drive a pair together. ARKit has the same pairs.
ANTAGONIST_PAIRS = (("eyeBlinkLeft", "eyeWideLeft"), ("eyeBlinkRight", "eyeWideRight"),
                    ("eyeLookUpLeft", "eyeLookDownLeft"), ("eyeLookUpRight", "eyeLookDownRight"),
                    ("eyeLookInLeft", "eyeLookOutLeft"), ("eyeLookInRight", "eyeLookOutRight"),
                    ("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"), ("mouthFunnel", "mouthPucker"),
                    ("mouthSmileLeft", "mouthFrownLeft"), ("mouthSmileRight", "mouthFrownRight"),
                    ("browDownLeft", "browOuterUpLeft"), ("browDownRight", "browOuterUpRight"))

# Closed contours of the openings the canonical mesh triangulates over (MediaPipe indices).
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
RIGHT_EYE_CONTOUR = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_CONTOUR = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)


# --- canonical mesh from the MediaPipe bundle -------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        c = buf[i]
        i += 1
        result |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return result, i


def _fields(buf: bytes):
    """Protobuf wire-format reader: yields (field_number, wire_type, value) for one message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, wire, value


def parse_canonical_mesh(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (468,3), uvs (468,2), triangles (898,3)) from geometry_pipeline_metadata_landmarks.binarypb.

    Message layout (mediapipe/modules/face_geometry/protos): GeometryPipelineMetadata.canonical_mesh = 1
    (Mesh3d: vertex_type = 1, primitive_type = 2, vertex_buffer = 3 floats x,y,z,u,v, index_buffer = 4).
    """
    try:
        mesh = b"".join(v for n, w, v in _fields(data) if n == 1 and w == 2)
        floats: list[float] = []
        indices: list[int] = []
        for n, w, v in _fields(mesh):
            if n == 3 and w == 5:
                floats.append(struct.unpack("<f", v)[0])
            elif n == 3 and w == 2:
                floats.extend(struct.unpack(f"<{len(v) // 4}f", v))
            elif n == 4 and w == 0:
                indices.append(v)
            elif n == 4 and w == 2:
                j = 0
                while j < len(v):
                    x, j = _varint(v, j)
                    indices.append(x)
    except (ValueError, IndexError, struct.error) as e:
        raise ModelError(f"canonical face mesh is corrupt ({e}); reinstall with `dubtool setup-models`") from None
    vb = np.asarray(floats, dtype=np.float32)
    ib = np.asarray(indices, dtype=np.int32)
    if vb.size != NUM_VERTICES * 5 or ib.size != NUM_TRIANGLES * 3:
        raise ModelError(f"canonical face mesh has {vb.size // 5} vertices / {ib.size // 3} triangles, "
                         f"expected {NUM_VERTICES} / {NUM_TRIANGLES}")
    vb = vb.reshape(NUM_VERTICES, 5)
    return vb[:, :3].copy(), vb[:, 3:5].copy(), ib.reshape(NUM_TRIANGLES, 3)


def canonical_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The canonical face mesh read from the installed face_landmarker.task bundle."""
    from .assets import bundle_member

    return parse_canonical_mesh(bundle_member("geometry_pipeline_metadata_landmarks.binarypb"))


# --- geometry helpers --------------------------------------------------------------------------------

def head_rotation_matrix(yaw, pitch, roll) -> np.ndarray:
    """Rotation matrix R = Ry(yaw) @ Rx(pitch) @ Rz(roll), angles in radians (scalars -> (3,3),
    arrays of shape S -> S+(3,3)).

    Axes: yaw about +y (positive turns the nose towards +x, the subject's left), pitch about +x
    (positive tips the nose down: +z turns towards -y), roll about +z (positive tilts the top of the
    head towards -x, the subject's right). The camera looks at the face down -z.
    """
    y, p, r = (np.asarray(a, dtype=np.float64) for a in (yaw, pitch, roll))
    y, p, r = np.broadcast_arrays(y, p, r)
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    one, zero = np.ones_like(y), np.zeros_like(y)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                   np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                   np.stack([zero, sp, cp], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return ry @ rx @ rz


def apply_head_rotation(vertices: np.ndarray, values61: np.ndarray, pivot: np.ndarray = NECK_PIVOT) -> np.ndarray:
    """Rotate posed vertices (V,3) or (T,V,3) by the HeadYaw/HeadPitch/HeadRoll channels of values61
    ((61,) or (T,61)) about the neck pivot."""
    v = np.asarray(vertices, dtype=np.float32)
    vals = np.asarray(values61, dtype=np.float32)
    if vals.shape[-1] != 61:
        raise InputError(f"head rotation needs 61-channel values, got shape {vals.shape}")
    rot = head_rotation_matrix(vals[..., HEAD_IDX[0]], vals[..., HEAD_IDX[1]], vals[..., HEAD_IDX[2]])
    rot = rot.astype(np.float32)
    local = v - pivot
    if v.ndim == 2 and vals.ndim == 1:
        return local @ rot.T + pivot
    if v.ndim == 2:
        local = np.broadcast_to(local, (vals.shape[0],) + local.shape)
    return np.einsum("tvc,tdc->tvd", local, rot) + pivot


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals for (V,3) or (T,V,3) vertices; they point out of the face (+z)."""
    v = np.asarray(vertices, dtype=np.float32)
    tri = np.ascontiguousarray(triangles, dtype=np.int64)
    num_v = v.shape[-2]
    vv = np.ascontiguousarray(np.moveaxis(v, -2, 0)).reshape(num_v, -1, 3)   # vertex-major: row gathers
    a, b, c = vv[tri[:, 0]], vv[tri[:, 1]], vv[tri[:, 2]]                    # (F,B,3)
    e1, e2 = b - a, c - a
    face_n = np.stack([e1[..., 1] * e2[..., 2] - e1[..., 2] * e2[..., 1],     # cross product; its length
                       e1[..., 2] * e2[..., 0] - e1[..., 0] * e2[..., 2],     # (2 x area) is the weighting
                       e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]], -1)
    inc = _incidence(tri.tobytes(), num_v)                                    # (V,F) sparse 0/1
    n = np.asarray(inc @ face_n.reshape(tri.shape[0], -1)).reshape(vv.shape)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return np.moveaxis(n.reshape((num_v,) + v.shape[:-2] + (3,)), 0, -2)


@lru_cache(maxsize=4)
def _incidence(tri_bytes: bytes, num_vertices: int):
    """Sparse (V,F) vertex-triangle incidence: 3 nonzeros per column."""
    from scipy.sparse import csr_matrix

    tri = np.frombuffer(tri_bytes, dtype=np.int64).reshape(-1, 3)
    cols = np.repeat(np.arange(tri.shape[0]), 3)
    return csr_matrix((np.ones(tri.size, np.float32), (tri.ravel(), cols)), shape=(num_vertices, tri.shape[0]))


def similarity_align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched weighted Umeyama: scale s (T,), rotation R (T,3,3), translation t (T,3) with
    s * R @ src + t ~= dst on the weighted points. src (T,N,3), dst (N,3), weights (N,)."""
    w = (weights / weights.sum()).astype(np.float64)
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s = np.einsum("n,tnc->tc", w, src)
    mu_d = w @ dst
    xs = src - mu_s[:, None, :]
    xd = dst - mu_d
    cov = np.einsum("n,nd,tnc->tdc", w, xd, xs)  # (T,3,3): sum w * xd xs^T
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((src.shape[0], 3))
    fix[:, 2] = d
    rot = u @ (fix[:, :, None] * vt)
    var_s = np.einsum("n,tnc->t", w, xs ** 2)
    scale = (sig * fix).sum(1) / np.maximum(var_s, 1e-12)
    trans = mu_d - scale[:, None] * np.einsum("tdc,tc->td", rot, mu_s)
    return scale, rot, trans


# --- the rig ------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FaceRig:
    """Neutral mesh + 52 ARKit blendshape deltas on MediaPipe's canonical face topology (cm)."""

    neutral: np.ndarray      # (468,3) float32
    deltas: np.ndarray       # (52,468,3) float32, in arkit.BLENDSHAPE_NAMES order
    triangles: np.ndarray    # (898,3) int32, counter-clockwise seen from +z
    uvs: np.ndarray          # (468,2) float32, MediaPipe's texture coordinates
    names: tuple[str, ...] = BLENDSHAPE_NAMES
    stable_vertices: np.ndarray = field(default=None)  # indices no blendshape moves (rigid alignment)
    opening_triangles: np.ndarray = field(default=None)  # (898,) bool: triangles over mouth/eye openings
    _cache: dict = field(default_factory=dict, repr=False)

    def _basis(self) -> np.ndarray:
        b = self._cache.get("basis")
        if b is None:
            b = self.deltas.reshape(NUM_BLENDSHAPES, -1)
            self._cache["basis"] = b
        return b

    def pose(self, weights: np.ndarray) -> np.ndarray:
        """Vertices for blendshape weights (52,) -> (468,3), or (T,52)/(T,61) -> (T,468,3).
        Channels past 52 (head/eye rotations) are ignored; see `apply_head_rotation`."""
        w = np.asarray(weights, dtype=np.float32)
        if w.ndim not in (1, 2) or w.shape[-1] < NUM_BLENDSHAPES:
            raise InputError(f"rig weights must be (52,), (T,52) or (T,61), got shape {w.shape}")
        single = w.ndim == 1
        w2 = np.atleast_2d(w)[:, :NUM_BLENDSHAPES]
        out = (w2 @ self._basis()).reshape(-1, NUM_VERTICES, 3) + self.neutral
        return out[0] if single else out

    def _solver(self, l2: float) -> tuple[np.ndarray, np.ndarray, float]:
        key = ("solver", l2)
        s = self._cache.get(key)
        if s is None:
            a = self._basis().astype(np.float64)              # (52, 1404)
            h = a @ a.T
            h += l2 * np.trace(h) / NUM_BLENDSHAPES * np.eye(NUM_BLENDSHAPES)
            lip = float(np.linalg.eigvalsh(h)[-1])
            s = (a, h, lip)
            self._cache[key] = s
        return s

    def align(self, vertices: np.ndarray, neutral: np.ndarray | None = None) -> np.ndarray:
        """Similarity-align each frame (T,V,3) onto the neutral using the stable vertices."""
        ref = self.neutral if neutral is None else np.asarray(neutral, dtype=np.float32)[:NUM_VERTICES]
        idx = self.stable_vertices
        s, r, t = similarity_align(vertices[:, idx], ref[idx], np.ones(len(idx)))
        return (s[:, None, None] * np.einsum("tdc,tvc->tvd", r, vertices) + t[:, None, :]).astype(np.float32)

    def solve(self, vertices: np.ndarray, neutral: np.ndarray | None = None, *, align: bool = True,
              l2: float = 1e-4, l1: float = 1e-3, iterations: int = 400) -> np.ndarray:
        """Blendshape weights (T,52) in 0..1 that best reproduce vertices (T,>=468,3) (or one (468,3) frame).

        Each frame is first similarity-aligned onto the neutral (or `neutral`, an actor's own rest face,
        e.g. keypoints.neutral_from_track) on the stable vertices; then a bounded least-squares problem
        min |A w - d|^2 + l2 |w|^2 + l1 sum(w), 0 <= w <= 1 is solved for all frames at once by
        accelerated projected gradient (FISTA) on the 52x52 normal equations. l2 and l1 are relative
        to the mean squared delta norm.
        """
        v = np.asarray(vertices, dtype=np.float32)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[1] < NUM_VERTICES or v.shape[2] != 3:
            raise InputError(f"solve needs vertices (T,468,3) or (468,3), got shape {np.shape(vertices)}")
        if not np.all(np.isfinite(v)):
            raise InputError("solve got NaN/inf vertices; drop frames without a tracked face first")
        v = v[:, :NUM_VERTICES]
        ref = self.neutral if neutral is None else np.asarray(neutral, dtype=np.float32)[:NUM_VERTICES]
        if align:
            v = self.align(v, ref)
        d = (v - ref).reshape(v.shape[0], -1).astype(np.float64)
        a, h, lip = self._solver(l2)
        g = d @ a.T - l1 * np.trace(h) / NUM_BLENDSHAPES   # linear term (T,52)
        step = 1.0 / lip
        w = np.clip(np.linalg.solve(h, g.T).T, 0.0, 1.0)   # unconstrained solution, projected: warm start
        y, t = w.copy(), 1.0
        for _ in range(iterations):
            w_new = np.clip(y - step * (y @ h - g), 0.0, 1.0)
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = w_new + ((t - 1.0) / t_new) * (w_new - w)
            w, t = w_new, t_new
        return w.astype(np.float32)


def _validate(data, path: Path) -> FaceRig:
    try:
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise ModelError(f"{path} is rig format {version}, this dubtool reads format {FORMAT_VERSION}; "
                             "rebuild it with `python scripts/build_rig.py`")
        names = tuple(str(n) for n in data["names"])
        neutral = np.asarray(data["neutral"], dtype=np.float32)
        deltas = np.asarray(data["deltas"], dtype=np.float32)
        triangles = np.asarray(data["triangles"], dtype=np.int32)
        uvs = np.asarray(data["uvs"], dtype=np.float32)
        stable = np.asarray(data["stable_vertices"], dtype=np.int64)
        opening = np.asarray(data["opening_triangles"], dtype=bool)
    except KeyError as e:
        raise ModelError(f"{path} lacks {e.args[0]!r}; rebuild it with `python scripts/build_rig.py`") from None
    if names != BLENDSHAPE_NAMES:
        raise ModelError(f"{path} blendshape names differ from ARKit's 52; rebuild it")
    shapes = {"neutral": (neutral.shape, (NUM_VERTICES, 3)), "deltas": (deltas.shape, (52, NUM_VERTICES, 3)),
              "triangles": (triangles.shape, (NUM_TRIANGLES, 3)), "uvs": (uvs.shape, (NUM_VERTICES, 2)),
              "opening_triangles": (opening.shape, (NUM_TRIANGLES,))}
    for key, (got, want) in shapes.items():
        if got != want:
            raise ModelError(f"{path}: {key} has shape {got}, expected {want}; rebuild it")
    if not (np.all(np.isfinite(neutral)) and np.all(np.isfinite(deltas))) or triangles.min() < 0 \
            or triangles.max() >= NUM_VERTICES or len(stable) < 4:
        raise ModelError(f"{path} holds invalid values; rebuild it with `python scripts/build_rig.py`")
    for arr in (neutral, deltas, triangles, uvs, stable, opening):
        arr.setflags(write=False)
    return FaceRig(neutral, deltas, triangles, uvs, names, stable, opening)


def load_rig_file(path: str | Path) -> FaceRig:
    """Load and check a face_rig.npz; ModelError if missing, corrupt or of another format version."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"face rig not found: {p}; rebuild it with `python scripts/build_rig.py`")
    try:
        with np.load(p, allow_pickle=False) as data:
            return _validate(data, p)
    except ModelError:
        raise
    except Exception as e:  # zip/npy parse errors of every kind
        raise ModelError(f"{p} is corrupt ({type(e).__name__}); rebuild it with `python scripts/build_rig.py`") from None


@lru_cache(maxsize=1)
def load_rig() -> FaceRig:
    """The shipped face rig (models/face_rig.npz), loaded once per process."""
    return load_rig_file(RIG_PATH)


# --- contact sheet ----------------------------------------------------------------------------------

def draw_face(ax, rig: FaceRig, vertices: np.ndarray, motion: np.ndarray | None = None, yaw: float = 0.35,
              pitch: float = 0.0, motion_scale_cm: float = 0.5) -> None:
    """Lambert-shaded orthographic drawing of one posed mesh on a matplotlib Axes; vertices that moved
    are tinted red (by `motion`, cm) so small shapes read at thumbnail size."""
    from matplotlib.collections import PolyCollection

    rot = head_rotation_matrix(yaw, pitch, 0.0).astype(np.float32)
    v = vertices @ rot.T
    tri = rig.triangles
    p = v[tri]                                                   # (F,3,3)
    fn = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    light = np.array([-0.35, 0.45, 1.0], dtype=np.float32)
    light /= np.linalg.norm(light)
    lambert = np.clip(fn @ light, 0.0, 1.0)
    shade = 0.25 + 0.75 * lambert
    skin = np.array([0.93, 0.80, 0.70])
    heat = np.zeros(len(tri)) if motion is None else np.clip(motion[tri].mean(1) / motion_scale_cm, 0, 1)
    base = skin[None, :] * (1 - 0.6 * heat[:, None]) + np.array([0.85, 0.15, 0.1])[None, :] * 0.6 * heat[:, None]
    colors = base * shade[:, None]
    if rig.opening_triangles is not None:
        colors[rig.opening_triangles] = np.array([0.25, 0.05, 0.05]) * (0.5 + 0.5 * shade[rig.opening_triangles, None])
    visible = fn[:, 2] > -0.05
    order = np.argsort(p[:, :, 2].mean(1))                       # painter's algorithm, far first
    order = order[visible[order]]
    ax.add_collection(PolyCollection(p[order][:, :, :2], facecolors=colors[order], edgecolors=colors[order],
                                     linewidths=0.2))
    ax.set_xlim(-9, 9)
    ax.set_ylim(-10.5, 9.0)
    ax.set_aspect("equal")
    ax.axis("off")


def contact_sheet(out_path: str | Path, rig: FaceRig | None = None, names: tuple[str, ...] | None = None,
                  weight: float = 1.0, columns: int = 8, region: str = "face", dpi: int = 110) -> Path:
    """Write a PNG grid of the neutral and each blendshape at `weight`. region: face | mouth | eyes
    (close-up crops for small shapes). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    rig = rig or load_rig()
    names = tuple(names) if names else rig.names
    unknown = [n for n in names if n not in rig.names]
    if unknown:
        raise InputError(f"unknown blendshape {unknown[0]!r}; names are ARKit's, e.g. jawOpen, eyeBlinkLeft")
    limits = {"face": ((-9, 9), (-10.5, 9.0)), "mouth": ((-4.5, 4.5), (-8.0, -1.0)),
              "eyes": ((-6.5, 6.5), (0.5, 6.5))}
    if region not in limits:
        raise InputError(f"unknown region {region!r}; use face, mouth or eyes")
    panels = [("neutral", None)] + [(n, rig.names.index(n)) for n in names]
    rows = (len(panels) + columns - 1) // columns
    xl, yl = limits[region]
    aspect = (yl[1] - yl[0]) / (xl[1] - xl[0])
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 1.7 * aspect + 0.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, k) in zip(axes.ravel(), panels):
        w = np.zeros(NUM_BLENDSHAPES, np.float32)
        if k is not None:
            w[k] = weight
        if label == "mouthClose":  # ARKit's mouthClose closes the lips against an open jaw
            w[rig.names.index("jawOpen")] = weight
            label = "mouthClose (+jawOpen)"
        verts = rig.pose(w)
        motion = np.linalg.norm(verts - rig.neutral, axis=1)
        draw_face(ax, rig, verts, motion, yaw=0.0 if region != "face" else 0.15)
        ax.set_xlim(*xl)
        ax.set_ylim(*yl)
        ax.set_title(label, fontsize=8)
    fig.suptitle(f"dubtool face rig: ARKit blendshapes at weight {weight:g} (red = moved vertices)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out_path)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out
