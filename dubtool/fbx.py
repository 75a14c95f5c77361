"""Binary FBX 7.4 writer: the face rig with its 52 ARKit blendshapes and the animation, so Blender,
Maya and Unreal import a file an animator can retarget by channel name. No Autodesk SDK.

Binary layout (FBX 7.4, version 7400; 32-bit record headers; documented by the Blender FBX add-on
and ufbx): the magic `Kaydara FBX Binary  \\0\\x1a\\0`, uint32 version, then node records
[uint32 end_offset, uint32 num_properties, uint32 property_bytes, uint8 name_len, name,
properties, child records, 13 zero bytes closing a child list], a 13-zero top-level terminator and
the footer. Properties are typed by one letter (I int32, L int64, D double, S string, R raw, C bool;
lowercase = array, written zlib-compressed with encoding 1).

Scene: Model `head` (Null, at the neck pivot, Lcl Rotation animated in degrees, Euler XYZ) ->
Model `face` (Mesh) -> Geometry (Vertices, PolygonVertexIndex with the last index of each polygon
stored as -(i+1), normals and UVs) <- Deformer BlendShape <- 52 SubDeformer BlendShapeChannel named
exactly as ARKit names them (`jawOpen`, ...) <- Geometry Shape (sparse Indexes/Vertices/Normals
deltas). Each channel's DeformPercent (0..100) is keyed per frame by an AnimationCurve in
AnimationStack `dub` / AnimationLayer `BaseLayer`. The eyes: Models `LeftEye` / `RightEye` (Null
joints at the eyeball centres, children of `head`, Lcl Rotation keyed from the eye yaw/pitch/roll
channels), each with a Mesh child `LeftEyeball` / `RightEyeball` (a vertex-coloured sphere, gaze +Z).
Units are centimetres, Y up, the face looks down +Z (front axis +Z); GlobalSettings carry the frame
rate (TimeMode, CustomFrameRate) and the take's span (TimeSpanStart/Stop = first/last frame), as do
the AnimationStack (LocalStart/Stop) and the Take (LocalTime/ReferenceTime).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import __version__
from .arkit import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, Animation
from .fileio import atomic_path

FBX_VERSION = 7400
KTIME_PER_SECOND = 46186158000  # FBX time unit ("ticks") per second
_MAGIC = b"Kaydara FBX Binary  \x00\x1a\x00"
_SENTINEL = b"\x00" * 13
# Fixed file id / creation time / footer id, as other non-SDK writers use (readers check nothing
# more than their presence; the SDK ties them together, so they are written as one known set).
_FILE_ID = bytes.fromhex("28b32aebb624ccc2bfc8b02aa92bfcf1")
_CREATION_TIME = b"1970-01-01 10:00:00:000"
_FOOT_ID = bytes.fromhex("fabcab09d0c8d466b176fb831cf7267e")
_FOOT_MAGIC = bytes.fromhex("f85a8c6adef5d97eece90ce3758f290b")
# FbxAnimCurveDef: interpolation linear (0x4). Key data: right/next-left slopes 0, default weights.
_KEY_FLAGS_LINEAR = 0x00000004
_KEY_DATA_WEIGHTS = struct.unpack("<f", struct.pack("<I", 0x0D050D05))[0]
# GlobalSettings TimeMode (FbxTime::EMode) for the rates that have one; others use eCustom (14).
_TIME_MODES = {120.0: 1, 100.0: 2, 60.0: 3, 50.0: 4, 48.0: 5, 30.0: 6, 29.97: 9, 25.0: 10, 24.0: 11,
               23.976: 13, 96.0: 15, 72.0: 16, 59.94: 17}
_ARRAY_CODES = {"i": "<i4", "l": "<i8", "f": "<f4", "d": "<f8", "b": "u1"}


class Node:
    """One FBX node record: a name, typed properties and child nodes."""

    __slots__ = ("name", "props", "children")

    def __init__(self, name: str, *props, children=()):
        self.name = name
        self.props: list[tuple[str, object]] = list(props)
        self.children: list[Node] = list(children)

    def add(self, name: str, *props) -> "Node":
        child = Node(name, *props)
        self.children.append(child)
        return child


# Typed property constructors.
def I(v: int):  # noqa: E743 - FBX type letters
    return ("I", int(v))


def L(v: int):
    return ("L", int(v))


def D(v: float):
    return ("D", float(v))


def S(v: str | bytes):
    return ("S", v.encode("utf-8") if isinstance(v, str) else v)


def C(v: bool):
    return ("C", bool(v))


def R(v: bytes):
    return ("R", v)


def arr(code: str, values) -> tuple[str, np.ndarray]:
    return (code, np.ascontiguousarray(values, dtype=_ARRAY_CODES[code]).reshape(-1))


def _encode_prop(code: str, value) -> bytes:
    if code == "I":
        return b"I" + struct.pack("<i", value)
    if code == "L":
        return b"L" + struct.pack("<q", value)
    if code == "D":
        return b"D" + struct.pack("<d", value)
    if code == "C":
        return b"C" + struct.pack("<?", value)
    if code in "SR":
        return code.encode() + struct.pack("<I", len(value)) + value
    raw = value.tobytes()
    if len(raw) > 128:  # small arrays stay raw (encoding 0), as the SDK does
        data = zlib.compress(raw, 6)
        return code.encode() + struct.pack("<III", value.size, 1, len(data)) + data
    return code.encode() + struct.pack("<III", value.size, 0, len(raw)) + raw


# These node kinds need the child-list terminator even without children (the SDK's habit,
# which some importers rely on).
_ALWAYS_TERMINATED = {"AnimationStack", "AnimationLayer"}


def _write_node(node: Node, out: bytearray) -> None:
    start = len(out)
    props = b"".join(_encode_prop(c, v) for c, v in node.props)
    name = node.name.encode("ascii")
    out += b"\x00" * 12
    out += bytes((len(name),)) + name + props
    if node.children:
        for child in node.children:
            _write_node(child, out)
        out += _SENTINEL
    elif not node.props or node.name in _ALWAYS_TERMINATED:
        out += _SENTINEL
    struct.pack_into("<III", out, start, len(out), len(node.props), len(props))


def encode(nodes: list[Node], version: int = FBX_VERSION) -> bytes:
    """The bytes of a binary FBX file holding these top-level nodes."""
    out = bytearray(_MAGIC + struct.pack("<I", version))
    for n in nodes:
        _write_node(n, out)
    out += _SENTINEL
    out += _FOOT_ID + b"\x00" * 4
    pad = (16 - len(out) % 16) or 16
    out += b"\x00" * pad
    out += struct.pack("<I", version) + b"\x00" * 120 + _FOOT_MAGIC
    return bytes(out)


# ---------------------------------------------------------------- scene building


def _name(name: str, cls: str) -> tuple[str, bytes]:
    # Object names in binary FBX are "Name\x00\x01Class".
    return S(name.encode("utf-8") + b"\x00\x01" + cls.encode("ascii"))


def _p(name: str, ptype: str, label: str, flags: str, *values) -> Node:
    return Node("P", S(name), S(ptype), S(label), S(flags), *values)


def _props70(*ps: Node) -> Node:
    return Node("Properties70", children=ps)


def _geometry(geom_id: int, name: str, vertices, polygon_vertex_index, normals, layer: Node) -> Node:
    """A mesh Geometry: vertices, polygons, per-vertex normals and one more layer element (UVs or colours)."""
    return Node("Geometry", L(geom_id), _name(name, "Geometry"), S("Mesh"), children=[
        Node("Properties70"),
        Node("GeometryVersion", I(124)),
        Node("Vertices", arr("d", vertices)),
        Node("PolygonVertexIndex", arr("i", polygon_vertex_index)),
        Node("LayerElementNormal", I(0), children=[
            Node("Version", I(101)), Node("Name", S("")), Node("MappingInformationType", S("ByVertice")),
            Node("ReferenceInformationType", S("Direct")), Node("Normals", arr("d", normals))]),
        layer,
        Node("Layer", I(0), children=[
            Node("Version", I(100)),
            Node("LayerElement", children=[Node("Type", S("LayerElementNormal")), Node("TypedIndex", I(0))]),
            Node("LayerElement", children=[Node("Type", S(layer.name)), Node("TypedIndex", I(0))])]),
    ])


def euler_xyz_degrees(rot: np.ndarray) -> np.ndarray:
    """(T,3,3) rotation matrices -> (T,3) FBX Euler XYZ angles in degrees (R = Rz @ Ry @ Rx),
    unwrapped so curves don't jump by 360."""
    r = np.asarray(rot, np.float64)
    y = np.arcsin(np.clip(-r[:, 2, 0], -1.0, 1.0))
    x = np.arctan2(r[:, 2, 1], r[:, 2, 2])
    z = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    return np.degrees(np.unwrap(np.stack([x, y, z], 1), axis=0))


def time_mode(fps: float) -> int:
    for rate, mode in _TIME_MODES.items():
        if abs(fps - rate) < 1e-3:
            return mode
    return 14


class _Ids:
    def __init__(self) -> None:
        self._next = 1_000_000

    def __call__(self) -> int:
        self._next += 1
        return self._next


def _curve(ids: _Ids, key_times: np.ndarray, values: np.ndarray) -> tuple[int, Node]:
    cid = ids()
    n = len(key_times)
    node = Node("AnimationCurve", L(cid), _name("", "AnimCurve"), S(""), children=[
        Node("Default", D(float(values[0]) if n else 0.0)),
        Node("KeyVer", I(4008)),
        Node("KeyTime", arr("l", key_times)),
        Node("KeyValueFloat", arr("f", values)),
        Node("KeyAttrFlags", arr("i", [_KEY_FLAGS_LINEAR])),
        Node("KeyAttrDataFloat", arr("f", [0.0, 0.0, _KEY_DATA_WEIGHTS, 0.0])),
        Node("KeyAttrRefCount", arr("i", [n])),
    ])
    return cid, node


def build_scene(anim: Animation, rig, take_name: str = "dub") -> list[Node]:
    """Top-level FBX nodes for the rig mesh, its 52 blendshapes and `anim`."""
    from .faceparts import eye_rotation_channels, eyeball_mesh, eyeballs
    from .rig import NECK_PIVOT, head_rotation_matrix, vertex_normals

    ids = _Ids()
    fps = float(anim.fps)
    n = anim.num_frames
    key_times = np.round(np.arange(n) * (KTIME_PER_SECOND / fps)).astype(np.int64)
    stop = int(key_times[-1]) if n else 0

    tri = np.asarray(rig.triangles, np.int64)
    opening = getattr(rig, "opening_triangles", None)
    if opening is not None:
        tri = tri[~np.asarray(opening, bool)]  # the lips and eyelids must be free to part
    neutral = np.asarray(rig.neutral, np.float64)
    deltas = np.asarray(rig.deltas, np.float64)
    normals = vertex_normals(neutral, tri).astype(np.float64)
    pvi = tri.copy()
    pvi[:, 2] = -pvi[:, 2] - 1  # last index of each polygon is stored negated minus one
    uvs = np.asarray(rig.uvs, np.float64)

    header = Node("FBXHeaderExtension", children=[
        Node("FBXHeaderVersion", I(1003)), Node("FBXVersion", I(FBX_VERSION)), Node("EncryptionType", I(0)),
        Node("CreationTimeStamp", children=[Node("Version", I(1000)), Node("Year", I(1970)), Node("Month", I(1)),
                                            Node("Day", I(1)), Node("Hour", I(10)), Node("Minute", I(0)),
                                            Node("Second", I(0)), Node("Millisecond", I(0))]),
        Node("Creator", S(f"dubtool {__version__}")),
    ])
    global_settings = Node("GlobalSettings", children=[Node("Version", I(1000)), _props70(
        _p("UpAxis", "int", "Integer", "", I(1)), _p("UpAxisSign", "int", "Integer", "", I(1)),
        _p("FrontAxis", "int", "Integer", "", I(2)), _p("FrontAxisSign", "int", "Integer", "", I(1)),
        _p("CoordAxis", "int", "Integer", "", I(0)), _p("CoordAxisSign", "int", "Integer", "", I(1)),
        _p("OriginalUpAxis", "int", "Integer", "", I(1)), _p("OriginalUpAxisSign", "int", "Integer", "", I(1)),
        _p("UnitScaleFactor", "double", "Number", "", D(1.0)),
        _p("OriginalUnitScaleFactor", "double", "Number", "", D(1.0)),
        _p("AmbientColor", "ColorRGB", "Color", "", D(0), D(0), D(0)),
        _p("DefaultCamera", "KString", "", "", S("Producer Perspective")),
        _p("TimeMode", "enum", "", "", I(time_mode(fps))),
        _p("TimeProtocol", "enum", "", "", I(2)),
        _p("SnapOnFrameMode", "enum", "", "", I(0)),
        _p("TimeSpanStart", "KTime", "Time", "", L(0)),
        _p("TimeSpanStop", "KTime", "Time", "", L(stop)),
        _p("CustomFrameRate", "double", "Number", "", D(fps)),
        _p("CurrentTimeMarker", "int", "Integer", "", I(-1)),
    )])
    doc_id = ids()
    documents = Node("Documents", children=[Node("Count", I(1)), Node(
        "Document", L(doc_id), S("Scene"), S("Scene"), children=[
            _props70(_p("SourceObject", "object", "", ""), _p("ActiveAnimStackName", "KString", "", "", S(take_name))),
            Node("RootNode", L(0))])])

    objects = Node("Objects")
    conns = Node("Connections")

    def oo(child: int, parent: int) -> None:
        conns.add("C", S("OO"), L(child), L(parent))

    def op(child: int, parent: int, prop: str) -> None:
        conns.add("C", S("OP"), L(child), L(parent), S(prop))

    # Models: head (Null at the neck pivot) -> face (Mesh, offset back so vertices stay in rig space).
    head_id, face_id = ids(), ids()
    pivot = np.asarray(NECK_PIVOT, np.float64)
    objects.children.append(Node("Model", L(head_id), _name("head", "Model"), S("Null"), children=[
        Node("Version", I(232)),
        _props70(_p("Lcl Translation", "Lcl Translation", "", "A", *(D(x) for x in pivot)),
                 _p("Lcl Rotation", "Lcl Rotation", "", "A", D(0), D(0), D(0))),
        Node("Shading", C(True)), Node("Culling", S("CullingOff"))]))
    objects.children.append(Node("Model", L(face_id), _name("face", "Model"), S("Mesh"), children=[
        Node("Version", I(232)),
        _props70(_p("Lcl Translation", "Lcl Translation", "", "A", *(D(-x) for x in pivot)),
                 _p("DefaultAttributeIndex", "int", "Integer", "", I(0))),
        Node("Shading", C(True)), Node("Culling", S("CullingOff"))]))
    oo(head_id, 0)
    oo(face_id, head_id)

    geom_id = ids()
    objects.children.append(_geometry(geom_id, "face", neutral, pvi, normals, Node("LayerElementUV", I(0), children=[
        Node("Version", I(101)), Node("Name", S("UVMap")), Node("MappingInformationType", S("ByPolygonVertex")),
        Node("ReferenceInformationType", S("IndexToDirect")), Node("UV", arr("d", uvs)),
        Node("UVIndex", arr("i", tri))])))
    oo(geom_id, face_id)

    blend_id = ids()
    objects.children.append(Node("Deformer", L(blend_id), _name("face", "Deformer"), S("BlendShape"),
                                 children=[Node("Version", I(100))]))
    oo(blend_id, geom_id)

    stack_id, layer_id = ids(), ids()
    objects.children.append(Node("AnimationStack", L(stack_id), _name(take_name, "AnimStack"), S(""), children=[
        _props70(_p("LocalStart", "KTime", "Time", "", L(0)), _p("LocalStop", "KTime", "Time", "", L(stop)),
                 _p("ReferenceStart", "KTime", "Time", "", L(0)), _p("ReferenceStop", "KTime", "Time", "", L(stop)))]))
    objects.children.append(Node("AnimationLayer", L(layer_id), _name("BaseLayer", "AnimLayer"), S("")))
    oo(layer_id, stack_id)

    percent = np.clip(anim.values[:, :NUM_BLENDSHAPES], 0.0, 1.0) * 100.0
    for k, name in enumerate(rig.names if hasattr(rig, "names") else BLENDSHAPE_NAMES):
        d = deltas[k]
        moved = np.nonzero(np.linalg.norm(d, axis=1) > 1e-6)[0]
        if moved.size == 0:
            moved = np.array([0])
        shape_normals = vertex_normals(neutral + d, tri).astype(np.float64) - normals
        shape_id, chan_id = ids(), ids()
        objects.children.append(Node("Geometry", L(shape_id), _name(name, "Geometry"), S("Shape"), children=[
            Node("Version", I(100)),
            Node("Indexes", arr("i", moved)),
            Node("Vertices", arr("d", d[moved])),
            Node("Normals", arr("d", shape_normals[moved]))]))
        objects.children.append(Node("Deformer", L(chan_id), _name(name, "SubDeformer"), S("BlendShapeChannel"),
                                     children=[
            Node("Version", I(100)), Node("DeformPercent", D(0.0)), Node("FullWeights", arr("d", [100.0])),
            _props70(_p("DeformPercent", "Number", "", "A", D(0.0)))]))
        oo(chan_id, blend_id)
        oo(shape_id, chan_id)
        cn_id = ids()
        objects.children.append(Node("AnimationCurveNode", L(cn_id), _name("DeformPercent", "AnimCurveNode"), S(""),
                                     children=[_props70(_p("d|DeformPercent", "Number", "", "A",
                                                           D(float(percent[0, k]) if n else 0.0)))]))
        oo(cn_id, layer_id)
        op(cn_id, chan_id, "DeformPercent")
        curve_id, curve = _curve(ids, key_times, percent[:, k])
        objects.children.append(curve)
        op(curve_id, cn_id, "d|DeformPercent")

    def rotation_curves(model_id: int, rot: np.ndarray) -> None:
        # (T,3,3) rotations -> the model's Lcl Rotation keyed as FBX Euler XYZ degrees.
        euler = euler_xyz_degrees(rot.reshape(-1, 3, 3)) if n else np.zeros((0, 3))
        rn_id = ids()
        objects.children.append(Node("AnimationCurveNode", L(rn_id), _name("R", "AnimCurveNode"), S(""), children=[
            _props70(*(_p(f"d|{ax}", "Number", "", "A", D(float(euler[0, i]) if n else 0.0))
                       for i, ax in enumerate("XYZ")))]))
        oo(rn_id, layer_id)
        op(rn_id, model_id, "Lcl Rotation")
        for i, ax in enumerate("XYZ"):
            curve_id, curve = _curve(ids, key_times, euler[:, i])
            objects.children.append(curve)
            op(curve_id, rn_id, f"d|{ax}")

    rotation_curves(head_id, head_rotation_matrix(anim.values[:, 52], anim.values[:, 53], anim.values[:, 54]))

    # Eyes: a joint (Null) per eye at the eyeball centre, child of the head, its Lcl Rotation keyed from
    # the eye channels (R = Ry(yaw) Rx(pitch) Rz(roll), head-relative); an eyeball mesh (gaze +Z,
    # vertex-coloured sclera/iris/pupil) as the joint's child.
    ball_v, ball_n, ball_t, ball_c = eyeball_mesh()
    ball_pvi = ball_t.copy()
    ball_pvi[:, 2] = -ball_pvi[:, 2] - 1
    rgba = np.concatenate([ball_c, np.ones((len(ball_c), 1))], 1)
    eye_rot = eye_rotation_channels(anim.values)
    for ball in eyeballs(neutral):
        joint_id, mesh_id, eye_geom_id = ids(), ids(), ids()
        objects.children.append(Node("Model", L(joint_id), _name(ball.name, "Model"), S("Null"), children=[
            Node("Version", I(232)),
            _props70(_p("Lcl Translation", "Lcl Translation", "", "A", *(D(x) for x in ball.centre - pivot)),
                     _p("Lcl Rotation", "Lcl Rotation", "", "A", D(0), D(0), D(0))),
            Node("Shading", C(True)), Node("Culling", S("CullingOff"))]))
        objects.children.append(Node("Model", L(mesh_id), _name(ball.name + "ball", "Model"), S("Mesh"), children=[
            Node("Version", I(232)),
            _props70(_p("DefaultAttributeIndex", "int", "Integer", "", I(0))),
            Node("Shading", C(True)), Node("Culling", S("CullingOff"))]))
        objects.children.append(_geometry(eye_geom_id, ball.name + "ball", ball_v, ball_pvi, ball_n,
                                          Node("LayerElementColor", I(0), children=[
            Node("Version", I(101)), Node("Name", S("Col")), Node("MappingInformationType", S("ByPolygonVertex")),
            Node("ReferenceInformationType", S("IndexToDirect")), Node("Colors", arr("d", rgba)),
            Node("ColorIndex", arr("i", ball_t))])))
        oo(joint_id, head_id)
        oo(mesh_id, joint_id)
        oo(eye_geom_id, mesh_id)
        yaw, pitch, roll = eye_rot[ball.name].T
        rotation_curves(joint_id, head_rotation_matrix(yaw, pitch, roll))

    counts: dict[str, int] = {}
    for o in objects.children:
        counts[o.name] = counts.get(o.name, 0) + 1
    definitions = Node("Definitions", children=[Node("Version", I(100)), Node("Count", I(sum(counts.values()) + 1)),
                                                Node("ObjectType", S("GlobalSettings"), children=[Node("Count", I(1))])]
                       + [Node("ObjectType", S(k), children=[Node("Count", I(v))]) for k, v in counts.items()])
    takes = Node("Takes", children=[Node("Current", S(take_name)), Node("Take", S(take_name), children=[
        Node("FileName", S(f"{take_name}.tak")), Node("LocalTime", L(0), L(stop)),
        Node("ReferenceTime", L(0), L(stop))])])
    return [header, Node("FileId", R(_FILE_ID)), Node("CreationTime", S(_CREATION_TIME)),
            Node("Creator", S(f"dubtool {__version__}")), global_settings, documents, Node("References"),
            definitions, objects, conns, takes]


def write_fbx(anim: Animation, path: str | os.PathLike, rig=None, take_name: str = "dub") -> Path:
    """Write `anim` on the face rig as a binary FBX 7.4 file (atomically)."""
    if rig is None:
        from .rig import load_rig

        rig = load_rig()
    data = encode(build_scene(anim, rig, take_name))
    with atomic_path(path, suffix=".fbx") as tmp:
        tmp.write_bytes(data)
    return Path(path)


__all__ = ["write_fbx", "build_scene", "encode", "Node", "KTIME_PER_SECOND", "FBX_VERSION", "euler_xyz_degrees"]
