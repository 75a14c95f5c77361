"""glTF 2.0 export: the face rig as a mesh with 52 morph targets (named in mesh.extras.targetNames,
the convention Blender, three.js and Babylon read) and the animation as a LINEAR `weights`
sampler, plus the head rotation as quaternions on a `head` node at the neck pivot, and the eyes:
`LeftEye` / `RightEye` joint nodes (children of `head`, at the eyeball centres) whose rotation is
keyed from the eye yaw/pitch/roll channels, each with an `eyeball` mesh child (vertex-coloured sphere,
gaze +Z). Keys sit at the take's frames (k / fps s); glTF has no frame rate, so the rate is in
`extras.fps` (document and animation).

`.glb` is written as one binary container (12-byte header, JSON chunk, BIN chunk); `.gltf` as JSON
with the buffer embedded as a base64 data URI. Units: glTF uses metres, so the rig's centimetres
are scaled by 0.01; Y up, the face looks down +Z (glTF's front).
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import numpy as np

from . import __version__
from .arkit import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, Animation
from .errors import InputError
from .fileio import atomic_path

CM_TO_M = 0.01
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


class _Buffer:
    """Accumulates binary data and the bufferViews/accessors that describe it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        a = np.ascontiguousarray(array)
        comp = _UINT32 if a.dtype == np.uint32 else _FLOAT
        a = a.astype(np.uint32 if comp == _UINT32 else np.float32)
        while len(self.data) % 4:
            self.data.append(0)
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": a.nbytes}
        if target is not None:
            view["target"] = target
        self.data += a.tobytes()
        self.views.append(view)
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[kind]
        acc = {"bufferView": len(self.views) - 1, "componentType": comp, "count": int(a.size // width), "type": kind}
        if minmax:
            flat = a.reshape(-1, width)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def rotation_quaternions(yaw, pitch, roll) -> np.ndarray:
    """(T,4) xyzw quaternions of R = Ry(yaw) Rx(pitch) Rz(roll), sign-continuous for interpolation."""
    from scipy.spatial.transform import Rotation

    from .rig import head_rotation_matrix

    rot = head_rotation_matrix(yaw, pitch, roll).reshape(-1, 3, 3)
    q = Rotation.from_matrix(rot).as_quat()
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q.astype(np.float32)


def head_quaternions(values: np.ndarray) -> np.ndarray:
    """(T,4) xyzw quaternions of the head rotation channels."""
    return rotation_quaternions(values[:, 52], values[:, 53], values[:, 54])


def build_gltf(anim: Animation, rig, take_name: str = "dub") -> tuple[dict, bytes]:
    """The glTF JSON document and its binary buffer."""
    from .faceparts import eye_rotation_channels, eyeball_mesh, eyeballs
    from .rig import NECK_PIVOT, vertex_normals

    if anim.num_frames < 1:
        raise InputError("animation has no frames")
    tri = np.asarray(rig.triangles, np.int64)
    opening = getattr(rig, "opening_triangles", None)
    if opening is not None:
        tri = tri[~np.asarray(opening, bool)]
    neutral = np.asarray(rig.neutral, np.float32)
    deltas = np.asarray(rig.deltas, np.float32)
    normals = vertex_normals(neutral, tri)
    buf = _Buffer()
    pos = buf.add(neutral * CM_TO_M, "VEC3", _ARRAY_BUFFER, minmax=True)
    nrm = buf.add(normals, "VEC3", _ARRAY_BUFFER)
    uv = np.asarray(rig.uvs, np.float32).copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # glTF's texture origin is the top-left corner
    tex = buf.add(uv, "VEC2", _ARRAY_BUFFER)
    idx = buf.add(tri.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    targets = []
    for k in range(NUM_BLENDSHAPES):
        dn = vertex_normals(neutral + deltas[k], tri) - normals
        targets.append({"POSITION": buf.add(deltas[k] * CM_TO_M, "VEC3", _ARRAY_BUFFER, minmax=True),
                        "NORMAL": buf.add(dn, "VEC3", _ARRAY_BUFFER)})

    # Eyeballs: one mesh (vertex-coloured sphere, gaze +Z), shared by two eye joints.
    ball_v, ball_n, ball_t, ball_c = eyeball_mesh()
    ball_prim = {"attributes": {"POSITION": buf.add(ball_v * CM_TO_M, "VEC3", _ARRAY_BUFFER, minmax=True),
                                "NORMAL": buf.add(ball_n, "VEC3", _ARRAY_BUFFER),
                                "COLOR_0": buf.add(ball_c, "VEC3", _ARRAY_BUFFER)},
                 "indices": buf.add(ball_t.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER),
                 "mode": 4}

    # Keys at the take's frames: frame k at k / fps seconds.
    times = buf.add((np.arange(anim.num_frames) / float(anim.fps)).astype(np.float32), "SCALAR", minmax=True)
    weights = buf.add(np.clip(anim.values[:, :NUM_BLENDSHAPES], 0.0, 1.0), "SCALAR")
    quats = buf.add(head_quaternions(anim.values), "VEC4")
    pivot = np.asarray(NECK_PIVOT, np.float64)
    names = list(getattr(rig, "names", BLENDSHAPE_NAMES))
    nodes = [{"name": "head", "translation": [float(x) * CM_TO_M for x in pivot], "children": [1, 2, 4]},
             {"name": "face", "mesh": 0, "translation": [-float(x) * CM_TO_M for x in pivot]}]
    samplers = [{"input": times, "output": weights, "interpolation": "LINEAR"},
                {"input": times, "output": quats, "interpolation": "LINEAR"}]
    channels = [{"sampler": 0, "target": {"node": 1, "path": "weights"}},
                {"sampler": 1, "target": {"node": 0, "path": "rotation"}}]
    eye_rot = eye_rotation_channels(anim.values)
    for ball in eyeballs(neutral):
        joint = len(nodes)
        nodes.append({"name": ball.name, "translation": [float(x) * CM_TO_M for x in ball.centre - pivot],
                      "children": [joint + 1]})
        nodes.append({"name": ball.name + "ball", "mesh": 1})
        samplers.append({"input": times, "output": buf.add(rotation_quaternions(*eye_rot[ball.name].T), "VEC4"),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": joint, "path": "rotation"}})
    doc = {
        "asset": {"version": "2.0", "generator": f"dubtool {__version__}"},
        "scene": 0,
        "scenes": [{"name": "Scene", "nodes": [0]}],
        "nodes": nodes,
        "meshes": [{"name": "face", "primitives": [{"attributes": {"POSITION": pos, "NORMAL": nrm, "TEXCOORD_0": tex},
                                                    "indices": idx, "mode": 4, "targets": targets}],
                    "weights": [0.0] * NUM_BLENDSHAPES, "extras": {"targetNames": names}},
                   {"name": "eyeball", "primitives": [ball_prim]}],
        "animations": [{"name": take_name, "samplers": samplers, "channels": channels,
                        "extras": {"fps": float(anim.fps), "frames": int(anim.num_frames)}}],
        "extras": {"fps": float(anim.fps), "units": "metres (rig centimetres x 0.01)"},
        "bufferViews": buf.views,
        "accessors": buf.accessors,
    }
    while len(buf.data) % 4:
        buf.data.append(0)
    doc["buffers"] = [{"byteLength": len(buf.data)}]
    return doc, bytes(buf.data)


def encode_glb(doc: dict, binary: bytes) -> bytes:
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    binary += b"\x00" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(binary), b"BIN\x00") + binary)


def write_gltf(anim: Animation, path: str | os.PathLike, rig=None, take_name: str = "dub") -> Path:
    """Write `anim` on the face rig as .glb (binary) or .gltf (JSON, embedded buffer), atomically."""
    if rig is None:
        from .rig import load_rig

        rig = load_rig()
    p = Path(path)
    doc, binary = build_gltf(anim, rig, take_name)
    if p.suffix.lower() == ".gltf":
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(binary).decode("ascii")
        data = json.dumps(doc, indent=1).encode("utf-8")
    else:
        data = encode_glb(doc, binary)
    with atomic_path(p) as tmp:
        tmp.write_bytes(data)
    return p
