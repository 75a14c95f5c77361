"""Parts the face rig's mesh does not have: eyeballs (drawn by `render`, exported as joints + meshes by
the FBX and glTF writers), teeth and a tongue (drawn by `render`), and the jaw's rigid motion read
off a posed mesh so that the lower teeth and the tongue follow whatever the rig's jaw shapes do.

Pure geometry in the rig's space (centimetres, +x = the subject's left, +y up, +z out of the face).
Eye rotations follow docs/conventions.md: R = Ry(yaw) Rx(pitch) Rz(roll) about the eyeball centre,
yaw positive = toward the subject's left, pitch positive = down, head-relative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rig import INNER_LIPS, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR

EYEBALL_RADIUS_CM = 1.2
EYEBALL_LID_GAP_CM = 0.05  # front of the ball sits this far behind the most forward lid vertex
# Angular radii (from the gaze axis) of the pupil and the iris, as cosines: iris 0.90 = 25.8 deg,
# i.e. a 1.04 cm iris on a 1.2 cm ball; pupil 0.975 = 12.8 deg.
IRIS_COS, PUPIL_COS = 0.90, 0.975
SCLERA_RGB = (0.92, 0.90, 0.86)
IRIS_RGB = (0.30, 0.20, 0.12)
PUPIL_RGB = (0.02, 0.02, 0.02)

# Jaw: chin and jaw-line vertices (MediaPipe indices) that move with the mandible and that the lip
# shapes leave alone; their rigid motion is the jaw's.
JAW_VERTICES = (152, 148, 377, 176, 400, 149, 378, 150, 379, 136, 365, 172, 397, 175)


@dataclass(frozen=True)
class Eyeball:
    name: str            # "LeftEye" / "RightEye": the subject's side, as the rotation channels
    centre: np.ndarray   # (3,) rig space, cm
    radius: float


def eyeballs(neutral: np.ndarray, radius: float = EYEBALL_RADIUS_CM) -> tuple[Eyeball, Eyeball]:
    """Left and right eyeballs set behind the neutral eye openings: centred on the eye contour
    (MediaPipe 263/362 left, 33/133 right), front just behind the lids."""
    out = []
    for name, loop in (("LeftEye", LEFT_EYE_CONTOUR), ("RightEye", RIGHT_EYE_CONTOUR)):
        pts = np.asarray(neutral, np.float64)[list(loop)]
        c = pts.mean(0)
        c[2] = pts[:, 2].max() - radius - EYEBALL_LID_GAP_CM
        out.append(Eyeball(name, c.astype(np.float32), float(radius)))
    return out[0], out[1]


def eyeball_mesh(radius: float = EYEBALL_RADIUS_CM, n_lon: int = 24):
    """A sphere centred at the origin, gaze along +z: (vertices (V,3), normals (V,3), triangles (F,3),
    colours (V,3)) with rings on the pupil and iris edges so vertex colours draw a sharp iris.
    Triangles are counter-clockwise seen from outside."""
    pupil, iris = np.arccos(PUPIL_COS), np.arccos(IRIS_COS)
    # Polar angles of the rings (0 = front pole); each colour edge gets two close rings.
    theta = np.concatenate([[0.0, 0.6 * pupil, pupil - 0.01, pupil + 0.01, iris - 0.01, iris + 0.01],
                            np.linspace(iris + 0.25, np.pi, 9)])
    ring_rgb = [PUPIL_RGB, PUPIL_RGB, PUPIL_RGB, IRIS_RGB, IRIS_RGB] + [SCLERA_RGB] * (len(theta) - 5)
    phi = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    normals = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    colours = np.repeat(np.asarray(ring_rgb, np.float64), n_lon, axis=0)
    tris = []
    for i in range(len(theta) - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tris += [(a, c, b), (b, c, d)]
    tris = np.asarray(tris, np.int64)
    # Rings 0 and the last are the poles (all n_lon copies at one point): drop their degenerate halves.
    verts = normals * radius
    area = np.linalg.norm(np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]]), axis=1)
    tris = tris[area > 1e-9]
    # Orient outward.
    centroid = verts[tris].mean(1)
    fn = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    flip = (fn * centroid).sum(1) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return verts, normals, tris, colours


def eye_rotation_channels(values: np.ndarray) -> dict[str, np.ndarray]:
    """{'LeftEye': (T,3) yaw/pitch/roll, 'RightEye': ...} radians from (T,61) values."""
    from .arkit import index

    v = np.atleast_2d(np.asarray(values, np.float64))
    return {side: v[:, index(f"{side}Yaw"):index(f"{side}Yaw") + 3] for side in ("LeftEye", "RightEye")}


# ---------------------------------------------------------------- mouth interior

@dataclass(frozen=True)
class MouthParts:
    """Static meshes of the mouth interior in rig space, and the pivot data that moves them.
    Upper teeth ride the head; lower teeth and tongue ride the jaw (see `jaw_transform`)."""

    upper_teeth: tuple[np.ndarray, np.ndarray, np.ndarray]   # vertices, normals, triangles
    lower_teeth: tuple[np.ndarray, np.ndarray, np.ndarray]
    tongue_centre: np.ndarray   # (3,)
    tongue_radii: np.ndarray    # (3,) half-sizes of the tongue ellipsoid
    tongue_out_cm: float        # how far tongueOut = 1 pushes the tongue forward


# Where tooth crowns meet along the arch (|x|, cm from the midline): central incisor, lateral, canine.
TOOTH_EDGES_CM = (0.0, 0.85, 1.5, 2.2)
TOOTH_SEAM_CM = 0.03  # half-width of the shaded seam between two crowns


def _teeth_band(front_z: float, top_y: float, bottom_y: float, half_width: float, curve: float,
                n: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A curved band (the dental arch seen from the front): z = front_z - curve * x^2,
    normals pointing out of the arch, with columns on each crown seam (see `tooth_seam`).
    Counter-clockwise seen from the front."""
    seams = [e + d for e in TOOTH_EDGES_CM for d in (-TOOTH_SEAM_CM, 0.0, TOOTH_SEAM_CM)]
    x = np.linspace(-half_width, half_width, n + 1)
    x = np.unique(np.concatenate([x, [sx for e in seams for sx in (e, -e) if abs(sx) < half_width]]))
    n = len(x) - 1
    z = front_z - curve * x * x
    top = np.stack([x, np.full_like(x, top_y), z], 1)
    bot = np.stack([x, np.full_like(x, bottom_y), z], 1)
    verts = np.concatenate([top, bot])
    nrm = np.stack([2 * curve * x, np.zeros_like(x), np.ones_like(x)], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    normals = np.concatenate([nrm, nrm])
    m = n + 1
    tris = []
    for i in range(n):
        tris += [(i + m, i + 1 + m, i + 1), (i + m, i + 1, i)]
    return verts.astype(np.float32), normals.astype(np.float32), np.asarray(tris, np.int32)


def tooth_shade(x: np.ndarray, half_width: float) -> np.ndarray:
    """Brightness 0..1 along the arch: darker on the seams between crowns and toward the arch's sides
    (which recede into the mouth's shadow)."""
    ax = np.abs(np.asarray(x, np.float64))
    seam = np.ones_like(ax)
    for e in TOOTH_EDGES_CM:
        seam = np.minimum(seam, 1.0 - 0.3 * (np.abs(ax - e) < 0.5 * TOOTH_SEAM_CM))
    side = np.clip(ax / half_width, 0.0, 1.0)
    return (seam * (1.0 - 0.55 * side * side)).astype(np.float32)


def mouth_parts(neutral: np.ndarray) -> MouthParts:
    """Teeth and tongue placed from the neutral inner lips (13 upper middle, 14 lower middle,
    78/308 corners): incisal edges near the lip line, the arch ~6 mm behind the inner lips, as wide
    as the mouth."""
    n = np.asarray(neutral, np.float64)
    upper_lip, lower_lip = n[13], n[14]
    half_w = 0.95 * float(np.abs(n[[INNER_LIPS[0], INNER_LIPS[10]], 0]).max())
    front = float(min(upper_lip[2], lower_lip[2])) - 0.55
    lip_y = float(upper_lip[1] + lower_lip[1]) / 2
    curve = 1.3 / max(half_w, 1e-3) ** 2  # the arch's ends are 1.3 cm behind its front
    upper_edge = lip_y - 0.15   # upper incisors show ~1.5 mm below the upper lip
    upper = _teeth_band(front, upper_edge + 1.0, upper_edge, half_w, curve)
    lower = _teeth_band(front - 0.12, upper_edge + 0.15, upper_edge + 0.15 - 0.9, 0.92 * half_w, curve / 0.92 ** 2)
    radii = np.array([0.8 * half_w, 0.45, 2.0])
    centre = np.array([0.0, upper_edge - 0.6, front - 0.2 - radii[2]])  # top 3 mm under the lower teeth
    return MouthParts(upper, lower, centre.astype(np.float32), radii.astype(np.float32), 1.7)


def rigid_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 rigid transform (rotation + translation, Kabsch) taking points src (N,3) onto dst (N,3)."""
    ms, md = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((dst - md).T @ (src - ms))
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    m = np.eye(4, dtype=np.float32)
    m[:3, :3] = r
    m[:3, 3] = md - r @ ms
    return m


class JawMotion:
    """The jaw's rigid motion as a function of the 52 blendshape weights, fast enough to run per frame:
    each shape's motion of the chin and jaw-line vertices is fitted once (least squares) by a small
    rigid twist (rotation vector w_k, translation v_k about their centroid); a frame's twist is the
    weighted sum, turned into a rotation by Rodrigues' formula. Agrees with `jaw_transform` (the exact
    per-frame Kabsch fit) to a fraction of a millimetre on the teeth (tests/test_render.py)."""

    def __init__(self, neutral: np.ndarray, deltas: np.ndarray):
        idx = list(JAW_VERTICES)
        pts = np.asarray(neutral, np.float64)[idx]
        self.centre = pts.mean(0)
        r = pts - self.centre
        # d_i = w x r_i + v  ->  [-[r_i]x | I] [w; v] = d_i, stacked over the jaw vertices.
        a = np.zeros((len(idx), 3, 6))
        a[:, 0, 1], a[:, 0, 2] = r[:, 2], -r[:, 1]
        a[:, 1, 0], a[:, 1, 2] = -r[:, 2], r[:, 0]
        a[:, 2, 0], a[:, 2, 1] = r[:, 1], -r[:, 0]
        a[:, :, 3:] = np.eye(3)
        d = np.asarray(deltas, np.float64)[:, idx].reshape(len(deltas), -1)  # (52, 3N)
        self.basis = np.linalg.lstsq(a.reshape(-1, 6), d.T, rcond=None)[0].T.astype(np.float32)  # (52, 6)

    def transform(self, weights: np.ndarray) -> np.ndarray:
        """4x4 rig-space motion of the mandible for blendshape weights (52,)."""
        wx, wy, wz, vx, vy, vz = (float(x) for x in np.asarray(weights, np.float32)[:len(self.basis)] @ self.basis)
        th = math.sqrt(wx * wx + wy * wy + wz * wz)
        m = np.eye(4, dtype=np.float32)
        if th > 1e-9:
            kx, ky, kz = wx / th, wy / th, wz / th
            c, s, t = math.cos(th), math.sin(th), 1.0 - math.cos(th)
            m[:3, :3] = [[c + kx * kx * t, kx * ky * t - kz * s, kx * kz * t + ky * s],
                         [ky * kx * t + kz * s, c + ky * ky * t, ky * kz * t - kx * s],
                         [kz * kx * t - ky * s, kz * ky * t + kx * s, c + kz * kz * t]]
        m[:3, 3] = self.centre + (vx, vy, vz) - m[:3, :3] @ self.centre
        return m


def jaw_transform(neutral: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """The mandible's rigid motion (4x4, rig space) from the neutral to a posed mesh, fitted on the
    chin and jaw-line vertices."""
    idx = list(JAW_VERTICES)
    return rigid_fit(np.asarray(neutral, np.float64)[idx], np.asarray(posed, np.float64)[idx])


__all__ = ["Eyeball", "eyeballs", "eyeball_mesh", "eye_rotation_channels", "MouthParts", "mouth_parts",
           "JawMotion", "jaw_transform", "rigid_fit", "tooth_shade", "EYEBALL_RADIUS_CM"]
