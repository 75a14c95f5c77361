"""Author the 52 ARKit blendshapes procedurally on MediaPipe's canonical face mesh and write
models/face_rig.npz.

    .venv/bin/python scripts/build_rig.py [-o models/face_rig.npz]

Needs the face_landmarker.task bundle (`dubtool setup-models`) once, for the canonical mesh; the npz it
writes is what `dubtool.rig.load_rig()` reads everywhere else.

Method: every shape is a displacement field. Handles (landmark vertices with a displacement) are spread
over the mesh by inverse-distance (Shepard) interpolation over *geodesic* distances, times a smooth
falloff; the geodesic graph leaves out the triangles spanning the mouth and eye openings, so upper
and lower lips (and lids) don't drag each other. Jaw shapes rigidly rotate/translate a weighted
lower-face region about a hinge below the ear line. Units: centimetres; +x = the subject's left.

The shipped neutral is MediaPipe's canonical mesh with the lips closed (`close_lips`): the canonical
mouth is parted by 5.8 mm at 13-14, which would read as a dark slit on every /p b m/. All shapes are
authored on the closed neutral.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dubtool.arkit import BLENDSHAPE_NAMES  # noqa: E402
from dubtool.fileio import atomic_path  # noqa: E402
from dubtool.rig import (FORMAT_VERSION, INNER_LIPS, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR,  # noqa: E402
                         RIG_PATH, canonical_mesh)

# MediaPipe face-mesh landmark sets (right = the subject's right = -x). Lists run from the outer corner.
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
EYE = {
    "Right": dict(upper=(33, 246, 161, 160, 159, 158, 157, 173, 133), lower=(33, 7, 163, 144, 145, 153, 154, 155, 133),
                  upper1=(247, 30, 29, 27, 28, 56, 190), lower1=(130, 25, 110, 24, 23, 22, 26, 112, 243),
                  lower2=(226, 31, 228, 229, 230, 231, 232, 233, 244),
                  brow=(70, 63, 105, 66, 107, 46, 53, 52, 65, 55), inner_brow=(107, 66, 55, 65),
                  outer_brow=(70, 63, 46, 53), cheek=117, cheek_low=205, nose_wing=129, sneer=(198, 209, 49, 48, 115),
                  corner=61, sgn=-1.0),
    "Left": dict(upper=(263, 466, 388, 387, 386, 385, 384, 398, 362), lower=(263, 249, 390, 373, 374, 380, 381, 382, 362),
                 upper1=(467, 260, 259, 257, 258, 286, 414), lower1=(359, 255, 339, 254, 253, 252, 256, 341, 463),
                 lower2=(446, 261, 448, 449, 450, 451, 452, 453, 464),
                 brow=(300, 293, 334, 296, 336, 276, 283, 282, 295, 285), inner_brow=(336, 296, 285, 295),
                 outer_brow=(300, 293, 276, 283), cheek=346, cheek_low=425, nose_wing=358, sneer=(420, 429, 279, 278, 344),
                 corner=291, sgn=1.0),
}
FOREHEAD_TOP = (10, 338, 297, 332, 284, 251, 109, 67, 103, 54, 21, 151)
FACE_SIDES = (234, 127, 162, 93, 454, 356, 389, 323)
JAW_PIVOT = np.array([0.0, 0.0, -3.0])
# Inner-lip gap left at rest (cm): the lips touch, with a hair's breadth so the two lip surfaces
# never cross when shapes are mixed.
REST_LIP_GAP_CM = 0.02
LIP_CLOSE_RADIUS_CM = 1.3  # how far into the lips (geodesic) the closing fades out


class Mesh:
    def __init__(self, vertices: np.ndarray, triangles: np.ndarray):
        self.v = vertices.astype(np.float64)
        self.tri = triangles
        inner_lips, eyes = set(INNER_LIPS), (set(LEFT_EYE_CONTOUR), set(RIGHT_EYE_CONTOUR))
        self.opening = np.array([set(t) <= inner_lips or any(set(t) <= e for e in eyes) for t in triangles.tolist()])
        kept = triangles[~self.opening]
        e = np.concatenate([kept[:, [0, 1]], kept[:, [1, 2]], kept[:, [2, 0]]])
        length = np.linalg.norm(self.v[e[:, 0]] - self.v[e[:, 1]], axis=1)
        g = coo_matrix((length, (e[:, 0], e[:, 1])), shape=(len(self.v),) * 2).tocsr()
        self.geo = dijkstra(g, directed=False)  # (468,468) geodesic distances over the surface, cm
        # The closed-up openings' own edges are left out, so e.g. 13 -> 14 must go round a mouth corner.

    def spread(self, handles: dict[int, np.ndarray], radius: float, pins=(), power: float = 2.0) -> np.ndarray:
        """Displacement field: handles keep their displacement, pins stay still, the rest blends by
        inverse geodesic distance and fades to zero `radius` cm from the nearest handle."""
        ids = list(handles) + [p for p in pins if p not in handles]
        disp = np.array([handles[i] for i in handles] + [np.zeros(3)] * (len(ids) - len(handles)))
        d = self.geo[:, ids]                                    # (V, H)
        w = 1.0 / np.maximum(d, 1e-6) ** power
        out = (w @ disp) / w.sum(1, keepdims=True)
        dmin = self.geo[:, list(handles)].min(1)
        return out * falloff(dmin / radius)[:, None]

    def region(self, centres, radius: float) -> np.ndarray:
        """Smooth 0..1 weight: 1 at the centre vertices, 0 beyond `radius` cm (geodesic)."""
        return falloff(self.geo[:, list(centres)].min(1) / radius)


def falloff(x: np.ndarray) -> np.ndarray:
    """Smooth bump: 1 at 0, 0 at >= 1, zero slope at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return (1.0 - x * x) ** 2


def smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def close_lips(mesh: Mesh) -> np.ndarray:
    """The canonical vertices with the lips closed: each inner upper/lower lip pair meets half way,
    leaving REST_LIP_GAP_CM, and the motion fades smoothly (geodesic falloff) through the lips, so the
    outer contour moves about half as far and the nose and chin stay."""
    v = mesh.v
    handles = {}
    for up, lo in zip(LIP_INNER_UPPER, LIP_INNER_LOWER):
        d = v[lo] - v[up]
        gap = float(np.linalg.norm(d))
        if gap <= REST_LIP_GAP_CM:  # the shared corners 78 / 308
            handles[up] = np.zeros(3)
            continue
        move = 0.5 * d * (1.0 - REST_LIP_GAP_CM / gap)
        handles[up], handles[lo] = move, -move
    pins = (2, 164, 1, 4, 152, 175, 199, 200) + FACE_SIDES  # nose base and chin stay
    return v + mesh.spread(handles, LIP_CLOSE_RADIUS_CM, pins=pins)


def author(mesh: Mesh) -> dict[str, np.ndarray]:
    v, geo = mesh.v, mesh.geo
    n = len(v)
    shapes: dict[str, np.ndarray] = {}
    vec = lambda x=0.0, y=0.0, z=0.0: np.array([x, y, z], dtype=np.float64)  # noqa: E731
    x = v[:, 0]

    # ---- jaw and lower-face region ----------------------------------------------------------------
    d_up = geo[:, list(LIP_INNER_UPPER[1:-1])].min(1)
    d_low = geo[:, list(LIP_INNER_LOWER[1:-1])].min(1)
    lowerness = smoothstep(0.35, 0.65, d_up / (d_up + d_low + 1e-9))   # 1 below the lip line, 0 above
    corner_y = v[[61, 291], 1].mean()
    below = smoothstep(corner_y + 1.2, corner_y - 0.8, v[:, 1])        # fades out above the mouth corners
    side = smoothstep(7.4, 5.0, np.abs(x))                              # ear-side rim barely moves
    jaw_w = np.maximum(lowerness * np.maximum(below, 0.6 * smoothstep(corner_y + 0.3, corner_y - 0.3, v[:, 1])),
                       below * smoothstep(corner_y - 0.5, corner_y - 2.0, v[:, 1])) * (0.35 + 0.65 * side)
    jaw_w[list(LIP_INNER_LOWER[1:-1]) + list(LIP_OUTER_LOWER[1:-1])] = 1.0
    lips_upper = set(LIP_INNER_UPPER[1:-1]) | set(LIP_OUTER_UPPER[1:-1])
    jaw_w[list(lips_upper)] = 0.0
    rot = rotation_x(0.16)  # positive about +x: chin (in front of the hinge) swings down
    shapes["jawOpen"] = jaw_w[:, None] * ((v - JAW_PIVOT) @ rot.T + JAW_PIVOT - v)
    shapes["jawForward"] = jaw_w[:, None] * vec(z=0.55)
    # The chin swings towards the working side about that side's condyle (the other condyle slides
    # forward). R_y(a) = [[c,0,s],[0,1,0],[-s,0,c]] takes +z to +x, so a > 0 moves the chin to +x.
    for name, s in (("jawLeft", 1.0), ("jawRight", -1.0)):
        condyle = np.array([6.5 * s, 0.0, -2.5])
        c, sn = np.cos(0.07 * s), np.sin(0.07 * s)
        ry = np.array([[c, 0, sn], [0, 1, 0], [-sn, 0, c]])  # chin (in front, +z) swings towards +x*s
        shapes[name] = jaw_w[:, None] * ((v - condyle) @ ry.T + condyle - v)

    # ---- lips -------------------------------------------------------------------------------------
    lip_ids = set(LIP_OUTER_UPPER) | set(LIP_OUTER_LOWER) | set(LIP_INNER_UPPER) | set(LIP_INNER_LOWER)
    pins_mouth = (1, 4, 5, 195, 197, 6, 168, 152, 199, 175) + FACE_SIDES  # nose and chin tip stay
    mouth_centre = v[[13, 14]].mean(0)

    def lip_field(fn, radius=2.2, pins=pins_mouth, ids=lip_ids):
        return mesh.spread({i: fn(i) for i in ids}, radius, pins)

    # mouthClose: lips meet with the jaw open (undoes jawOpen on the lips only). The neutral's lips
    # are already closed, so mouthClose == jawOpen gives the rest lip line on an open jaw.
    lower_lip_region = np.clip(mesh.region(LIP_INNER_LOWER[1:-1], 1.6) * lowerness, 0, 1)
    shapes["mouthClose"] = -shapes["jawOpen"] * lower_lip_region[:, None]

    def toward_centre(i, amount):
        d = mouth_centre - v[i]
        d[1] *= 0.35
        d[2] = 0.0
        return d / (np.linalg.norm(d) + 1e-9) * amount * min(1.0, abs(v[i, 0]) / 2.4)

    def pucker(i):
        f = 1.0 - (v[i, 0] / 2.6) ** 2
        return toward_centre(i, 0.75) + vec(z=0.35 + 0.45 * max(f, 0))

    shapes["mouthPucker"] = lip_field(pucker)

    def funnel(i):
        up = i in LIP_INNER_UPPER or i in LIP_OUTER_UPPER
        f = max(1.0 - (v[i, 0] / 2.6) ** 2, 0)
        open_ = vec(y=(0.3 if up else -0.35) * f)
        return toward_centre(i, 0.5) + vec(z=0.25 + 0.3 * f) + open_

    shapes["mouthFunnel"] = lip_field(funnel)
    # mouthLeft/Right: the mouth slides sideways; the leading corner also pulls back into the cheek.
    shapes["mouthLeft"] = lip_field(lambda i: vec(x=0.55, z=-0.25 * max(v[i, 0], 0) / 2.46), radius=2.6)
    shapes["mouthRight"] = lip_field(lambda i: vec(x=-0.55, z=-0.25 * max(-v[i, 0], 0) / 2.46), radius=2.6)

    def upper(i):
        return i in LIP_INNER_UPPER or i in LIP_OUTER_UPPER

    # roll: outer contour tucks in and back towards the inner contour
    shapes["mouthRollLower"] = lip_field(lambda i: vec(y=0.25, z=-0.4) if i in LIP_OUTER_LOWER[1:-1] else
                                         vec(y=0.08, z=-0.25) if i in LIP_INNER_LOWER[1:-1] else vec(), radius=1.5)
    shapes["mouthRollUpper"] = lip_field(lambda i: vec(y=-0.25, z=-0.4) if i in LIP_OUTER_UPPER[1:-1] else
                                         vec(y=-0.08, z=-0.25) if i in LIP_INNER_UPPER[1:-1] else vec(), radius=1.5)
    # The lower lip pushes up and out against the closed upper lip, which rides up a little with it.
    shrug_lower = lip_field(lambda i: vec() if i in (61, 291, 78, 308) else vec(y=0.3, z=0.2) if not upper(i)
                            else vec(y=0.22, z=0.08) if i in LIP_INNER_UPPER else vec(y=0.1, z=0.04), radius=2.0)
    shrug_lower += mesh.spread({i: vec(y=0.25, z=0.15) for i in (199, 200, 175, 18)}, 2.5, pins=lips_upper)
    shapes["mouthShrugLower"] = shrug_lower
    shapes["mouthShrugUpper"] = lip_field(lambda i: vec(y=0.28, z=0.18) if upper(i) else vec(y=0.05), radius=2.0)

    for side, e in EYE.items():
        s = e["sgn"]
        half = smoothstep(-0.6, 0.9, s * x)  # this side of the mouth, fading across the midline
        corner = e["corner"]

        def corner_field(d, radius=2.6, corner=corner):
            return mesh.spread({corner: d}, radius, pins=pins_mouth)

        smile = corner_field(vec(x=0.38 * s, y=0.55, z=-0.2), radius=3.2)
        smile += mesh.spread({e["cheek_low"]: vec(y=0.25, z=0.2)}, 2.5, pins=(e["nose_wing"],) + tuple(e["lower"]))
        shapes[f"mouthSmile{side}"] = smile
        shapes[f"mouthFrown{side}"] = corner_field(vec(x=0.1 * s, y=-0.5, z=-0.05), radius=3.0)
        shapes[f"mouthDimple{side}"] = corner_field(vec(x=0.28 * s, y=0.05, z=-0.35), radius=2.6)
        shapes[f"mouthStretch{side}"] = corner_field(vec(x=0.5 * s, y=-0.2, z=-0.15), radius=3.2) \
            + lip_field(lambda i: vec(y=-0.12) if not upper(i) else vec(), radius=1.8) * half[:, None]
        # Press: the closed lips squeeze together, so they thin: the outer contours move towards the
        # lip line and everything goes back a little; the inner contours stay together.
        shapes[f"mouthPress{side}"] = half[:, None] * lip_field(
            lambda i: vec() if i in (61, 291) else vec(z=-0.08) if i in LIP_INNER_UPPER or i in LIP_INNER_LOWER
            else vec(y=-0.14, z=-0.1) if upper(i) else vec(y=0.16, z=-0.1), radius=1.4)
        shapes[f"mouthLowerDown{side}"] = half[:, None] * lip_field(
            lambda i: vec(y=-0.45, z=0.05) if i in LIP_INNER_LOWER[1:-1] or i in LIP_OUTER_LOWER[1:-1] else vec(),
            radius=1.6)
        shapes[f"mouthUpperUp{side}"] = half[:, None] * lip_field(
            lambda i: vec(y=0.45, z=0.05) if i in LIP_INNER_UPPER[1:-1] or i in LIP_OUTER_UPPER[1:-1] else vec(),
            radius=1.6)

    # ---- eyes -----------------------------------------------------------------------------------------
    for side, e in EYE.items():
        s = e["sgn"]
        up, lo = np.array(e["upper"]), np.array(e["lower"])
        gap = v[lo] - v[up]                               # (9,3) upper -> lower, zero at the corners
        brow_pins = tuple(e["brow"]) + (e["cheek"], e["nose_wing"])

        def lids(upper_frac, lower_frac, extra=None, radius=1.3):
            h = {int(i): upper_frac * gap[k] for k, i in enumerate(up)}
            for k, i in enumerate(lo):
                if k not in (0, len(lo) - 1):
                    h[int(i)] = -lower_frac * gap[k]
            if extra:
                h.update(extra)
            return mesh.spread(h, radius, pins=brow_pins)

        # blink: the upper lid comes down 85% of the way, the lower rises the rest, with a little
        # forward bulge over the (absent) cornea.
        blink = lids(0.85, 0.15)
        bulge = mesh.spread({int(i): vec(z=0.12 * np.sin(np.pi * k / 8)) for k, i in enumerate(up)}, 1.0, pins=brow_pins)
        shapes[f"eyeBlink{side}"] = blink + bulge
        shapes[f"eyeSquint{side}"] = lids(0.12, 0.35, {e["cheek"]: vec(y=0.2, z=0.05)}, radius=1.6)
        # wide: the upper lid retracts up and back into the orbit
        wide = {int(i): -0.5 * gap[k] + vec(z=-0.08) for k, i in enumerate(up) if 0 < k < 8}
        wide.update({int(i): vec(y=0.12, z=-0.04) for i in e["upper1"]})   # the lid crease folds up too
        shapes[f"eyeWide{side}"] = lids(-0.5, -0.12, wide, radius=1.4)

        # Looking up/down, both lids ride with the cornea: a flat-topped profile (not the gap's), the
        # skin fold above (up) or below (down) follows, so these are not mixtures of blink and wide.
        def ride(dy_up, dy_lo, ring, ring_dy, dz):
            prof = np.sin(np.pi * np.arange(9) / 8) ** 0.4
            h = {int(i): vec(y=dy_up * prof[k], z=dz * prof[k]) for k, i in enumerate(up) if 0 < k < 8}
            h.update({int(i): vec(y=dy_lo * prof[k], z=dz * prof[k]) for k, i in enumerate(lo) if 0 < k < 8})
            h.update({int(i): vec(y=ring_dy) for i in ring})
            return mesh.spread(h, 1.6, pins=brow_pins + (int(up[0]), int(up[-1])))

        shapes[f"eyeLookUp{side}"] = ride(0.22, 0.14, e["upper1"], 0.12, 0.03)
        shapes[f"eyeLookDown{side}"] = ride(-0.36, -0.1, e["lower1"], -0.06, 0.06)
        # In = towards the nose (-s in x), Out = towards the ear. Lid margins follow the cornea sideways.
        # The lid margin over the cornea bulges most on the side the eye turns to: In (towards the nose)
        # and Out (towards the ear) are weighted to opposite halves, so they are not each other's negative.
        nasal = np.linspace(0.0, 1.0, 9)  # contour runs from the outer corner (0) to the inner one (8)
        for name, dx, prof in (("In", -s, 0.4 + 0.6 * nasal), ("Out", s, 1.0 - 0.6 * nasal)):
            h = {}
            for k in range(1, 8):
                h[int(up[k])] = vec(x=0.16 * dx * prof[k], y=0.04 * prof[k], z=0.04 * prof[k])
                h[int(lo[k])] = vec(x=0.16 * dx * prof[k], y=0.02 * prof[k], z=0.03 * prof[k])
            shapes[f"eyeLook{name}{side}"] = mesh.spread(h, 1.0, pins=brow_pins + (int(up[0]), int(up[-1])))

    # ---- brows ------------------------------------------------------------------------------------------
    all_eye = tuple(LEFT_EYE_CONTOUR) + tuple(RIGHT_EYE_CONTOUR)
    inner = {i: vec(y=0.6, z=0.05) for i in EYE["Left"]["inner_brow"] + EYE["Right"]["inner_brow"]}
    inner.update({i: vec(y=0.15) for i in EYE["Left"]["outer_brow"] + EYE["Right"]["outer_brow"]})
    inner.update({i: vec(y=0.35) for i in (9, 151)})
    shapes["browInnerUp"] = mesh.spread(inner, 3.0, pins=all_eye + (10, 338, 109))
    for side, e in EYE.items():
        s = e["sgn"]
        h = {i: vec(x=-0.15 * s, y=-0.45, z=0.05) for i in e["brow"]}
        h.update({i: vec(x=-0.25 * s, y=-0.55, z=0.1) for i in e["inner_brow"]})
        shapes[f"browDown{side}"] = mesh.spread(h, 1.9, pins=tuple(e["lower"]) + tuple(e["upper"]) + FOREHEAD_TOP + (9, 8))
        h = {i: vec(y=0.6) for i in e["outer_brow"]}
        h.update({i: vec(y=0.15) for i in e["inner_brow"]})
        shapes[f"browOuterUp{side}"] = mesh.spread(h, 2.8, pins=tuple(e["lower"]) + tuple(e["upper"]) + (9, 8, 168))

    # ---- cheeks and nose ------------------------------------------------------------------------------
    puff = np.zeros((n, 3))
    for side, e in EYE.items():
        s = e["sgn"]
        centre = int(np.argmin(np.linalg.norm(v - np.array([4.3 * s, -3.0, 3.4]), axis=1)))
        w = mesh.region([centre], 3.0)
        outward = np.array([s * 0.8, 0.0, 0.6])
        puff += w[:, None] * outward * 0.7
    puff[list(lip_ids)] *= 0.3
    shapes["cheekPuff"] = puff
    for side, e in EYE.items():
        shapes[f"cheekSquint{side}"] = mesh.spread(
            {e["cheek"]: vec(y=0.35, z=0.1), e["cheek_low"]: vec(y=0.15, z=0.05)}
            | {int(i): vec(y=0.12) for i in e["lower"][2:-2]}, 2.0, pins=tuple(e["upper"]) + (e["corner"],))
        s = e["sgn"]
        h = {e["nose_wing"]: vec(x=0.05 * s, y=0.35, z=0.05)}
        h.update({i: vec(y=0.25, z=0.05) for i in e["sneer"]})
        h.update({i: vec(y=-0.1) for i in e["inner_brow"]})
        shapes[f"noseSneer{side}"] = mesh.spread(h, 1.8, pins=(1, 4, 5, 195, 6, 168, 0, e["corner"]) + tuple(e["upper"]))

    # tongueOut: the mesh has no tongue; the tongue pushes the lower lip a little down and forward.
    shapes["tongueOut"] = lip_field(lambda i: vec(y=-0.2, z=0.15) if i in LIP_INNER_LOWER[1:-1] else
                                    vec(y=-0.1, z=0.08) if i in LIP_OUTER_LOWER[1:-1] else vec(), radius=1.5)
    return shapes


def stable_vertices(deltas: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Vertices that no shape moves by more than 0.5 mm: the rigid anchor for alignment."""
    motion = np.linalg.norm(deltas, axis=2).max(0)
    idx = np.flatnonzero(motion < 0.05)
    return idx


# ---- fitting the shapes to tracked real faces (dubtool.rigfit) ----------------------------------------
# Chosen on validation clips held out of the training clips (see docs/rig.md): prior strength in
# frames at weight 1, membrane smoothness of the correction, weight of the (noisy, monocular) depth.
FIT_LAMBDA = 10.0
FIT_MU = 2.0
FIT_Z_WEIGHT = 0.5
MIN_ACTIVITY = 0.02      # shapes above 0.1 in fewer than 2% of frames stay procedural
SUPPORT_CM = 1.5         # a correction may reach this far (geodesic) beyond the procedural shape's support
UNSIDED = ("jawLeft", "jawRight", "mouthLeft", "mouthRight")   # move the whole jaw/mouth, not one side
SEALING = ("mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
           "mouthShrugLower", "mouthShrugUpper", "mouthDimpleLeft", "mouthDimpleRight")
TUCKING = ("mouthRollLower", "mouthRollUpper")
# Kept procedural whatever the data say: a blink closes the eye by definition, but the tracker's lid
# landmarks never quite meet (fitted, eyeBlink 1 left the lids 23% open), and mouthClose is
# re-derived from the fitted jawOpen so that mouthClose == jawOpen seals the lips.
KEEP_PROCEDURAL = ("eyeBlinkLeft", "eyeBlinkRight", "mouthClose")


def correction_masks(mesh: Mesh, prior: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """(52,V) where each shape's correction may act: its procedural support (moved > 0.3 mm) grown by
    SUPPORT_CM, on its own side for Left/Right shapes; zero for shapes that stay procedural."""
    x = mesh.v[:, 0]
    masks = np.zeros(prior.shape[:2])
    for k, name in enumerate(BLENDSHAPE_NAMES):
        if fixed[k]:
            continue
        support = np.flatnonzero(np.linalg.norm(prior[k], axis=1) > 0.03)
        m = mesh.region(support, SUPPORT_CM) if len(support) else np.zeros(len(x))
        if name.endswith(("Left", "Right")) and name not in UNSIDED:
            s = 1.0 if name.endswith("Left") else -1.0
            m = m * smoothstep(-1.0, 0.5, s * x)
        masks[k] = m
    return masks


def inner_lip_pairs():
    return list(zip(LIP_INNER_UPPER[1:-1], LIP_INNER_LOWER[1:-1]))


def mouth_close_from_jaw(mesh: Mesh, jaw: np.ndarray) -> np.ndarray:
    """mouthClose (ARKit: lips closed against an open jaw): the lower lip rides back up with the
    upper lip, so mouthClose == jawOpen leaves the rest lip line; the chin stays down."""
    handles = {}
    for (up, lo), olo in zip(inner_lip_pairs(), LIP_OUTER_LOWER[1:-1]):
        handles[lo] = jaw[up] - jaw[lo]
        handles[olo] = jaw[up] - jaw[olo]
    for i in (61, 291, 78, 308) + LIP_INNER_UPPER[1:-1] + LIP_OUTER_UPPER[1:-1]:
        handles[i] = np.zeros(3)
    return mesh.spread(handles, 1.6, pins=(152, 175, 199, 200, 148, 377))


def seal(mesh: Mesh, delta: np.ndarray, tuck: bool) -> np.ndarray:
    """Keep a lip-sealing shape sealed: inner lip pairs get one displacement (their mean), or, for a
    lip roll (`tuck`, one lip tucked behind the other), only the upper lip never rises above the lower
    one. The difference is spread through each lip smoothly."""
    handles = {}
    for up, lo in inner_lip_pairs():
        diff = delta[up] - delta[lo]
        if tuck:
            diff = np.array([0.0, max(diff[1], 0.0), 0.0])
        handles[up], handles[lo] = -0.5 * diff, 0.5 * diff
    for i in (61, 291, 78, 308):
        handles[i] = np.zeros(3)
    return delta + mesh.spread(handles, 1.0, pins=(1, 4, 152, 175))


def fit_to_clips(mesh: Mesh, prior: np.ndarray, clips, lam=FIT_LAMBDA, mu=FIT_MU, z_weight=FIT_Z_WEIGHT,
                 min_activity=MIN_ACTIVITY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fitted deltas, activity per shape, fixed mask): the regularised, mirrored fit, then exact
    symmetrisation, mouthClose re-derived from the fitted jaw and the sealing shapes kept sealed."""
    from dubtool import rigfit

    vmap = rigfit.mirror_vertex_map(mesh.v)
    smap = rigfit.mirror_shape_map()
    act = rigfit.activity(clips, smap)
    fixed = act < min_activity
    fixed[[BLENDSHAPE_NAMES.index(n) for n in KEEP_PROCEDURAL]] = True
    masks = correction_masks(mesh, prior, fixed)
    masks = 0.5 * (masks + masks[smap][:, vmap])                  # symmetric masks
    g, b = rigfit.normal_equations(clips, vmap, smap, z_weight)
    lap = rigfit.graph_laplacian(mesh.tri[~mesh.opening], len(mesh.v))
    deltas = rigfit.fit_deltas(g, b, prior, masks, np.full(len(prior), lam), lap, mu, z_weight)
    deltas = rigfit.symmetrize(deltas, vmap, smap)
    k = BLENDSHAPE_NAMES.index
    deltas[k("mouthClose")] = mouth_close_from_jaw(mesh, deltas[k("jawOpen")])
    for name in SEALING + TUCKING:
        if not fixed[k(name)]:
            deltas[k(name)] = seal(mesh, deltas[k(name)], tuck=name in TUCKING)
    deltas = rigfit.symmetrize(deltas, vmap, smap)
    return deltas, act, fixed


def build(clips=()) -> dict[str, np.ndarray]:
    vertices, uvs, triangles = canonical_mesh()
    vertices = close_lips(Mesh(vertices, triangles))
    mesh = Mesh(vertices, triangles)
    shapes = author(mesh)
    missing = set(BLENDSHAPE_NAMES) - set(shapes)
    if missing:
        raise SystemExit(f"shapes not authored: {sorted(missing)}")
    deltas = np.stack([shapes[n] for n in BLENDSHAPE_NAMES])
    if clips:
        deltas = fit_to_clips(mesh, deltas, clips)[0]
    deltas = deltas.astype(np.float32)
    return dict(format_version=np.int32(FORMAT_VERSION), names=np.array(BLENDSHAPE_NAMES),
                neutral=vertices.astype(np.float32), deltas=deltas, triangles=triangles.astype(np.int32),
                uvs=uvs.astype(np.float32), stable_vertices=stable_vertices(deltas, vertices).astype(np.int32),
                opening_triangles=mesh.opening)


def load_clips(paths, hold_out=()) -> tuple[list, list]:
    """(training clips, held-out clips) from .perf files (`dubtool extract` output); a clip is held
    out when its file name contains one of `hold_out`."""
    from dubtool.performance import load_performance
    from dubtool.rigfit import clip_samples

    train, test = [], []
    for p in paths:
        perf = load_performance(p)
        clip = clip_samples(Path(p).stem, perf.landmarks_canonical, perf.animation.values, perf.face_found)
        (test if any(h in Path(p).name for h in hold_out) else train).append(clip)
    return train, test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default=str(RIG_PATH))
    ap.add_argument("--fit", nargs="+", metavar="PERF", default=[],
                    help="tracked real clips (.perf from `dubtool extract`) to fit the shapes to; "
                         "without them the rig is the procedural one")
    ap.add_argument("--hold-out", nargs="*", default=[], metavar="NAME",
                    help="clips (file name contains NAME) left out of the fit and scored instead")
    args = ap.parse_args()
    train, test = load_clips(args.fit, args.hold_out)
    if args.fit and not train:
        raise SystemExit("every clip is held out: nothing to fit")
    data = build(train)
    if test:
        from dubtool import rigfit

        prior = build()["deltas"]
        for label, d in (("procedural", prior), ("fitted", data["deltas"])):
            e = rigfit.reconstruction_error_mm(d, test)
            print(f"held-out ({len(test)} clips) {label:10s} error mm: " + ", ".join(f"{k} {v:.3f}" for k, v in e.items()))
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **data)
    print(f"wrote {args.out}: {len(data['names'])} shapes ({'fitted to %d clips' % len(train) if train else 'procedural'}), "
          f"{len(data['stable_vertices'])} stable vertices, {int(data['opening_triangles'].sum())} opening triangles")


if __name__ == "__main__":
    main()
