"""dubtool export --fbx: files that independent readers (ufbx, Assimp) import with the mesh, 52
ARKit-named blendshape channels and the keyed animation at the right values and times."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dubtool.arkit import BLENDSHAPE_NAMES, Animation, index
from dubtool.livelink import write_csv

FPS = 30.0
N = 31


def _values():
    t = np.arange(N) / FPS
    v = np.zeros((N, 61), np.float32)
    v[:, index("jawOpen")] = np.linspace(0, 1, N)
    v[:, index("eyeBlinkRight")] = (t > 0.5).astype(np.float32)
    v[:, index("mouthSmileLeft")] = 0.25
    v[:, index("HeadYaw")] = np.linspace(0, 0.4, N)
    v[:, index("LeftEyeYaw")] = np.linspace(0, 0.5, N)    # left eye turns to her left
    v[:, index("RightEyeYaw")] = -0.3                       # right eye to her right
    v[:, index("RightEyePitch")] = np.linspace(0, 0.25, N)  # and down
    return v


@pytest.fixture(scope="module")
def fbx(tmp_path_factory):
    d = tmp_path_factory.mktemp("fbx")
    csv = d / "anim.csv"
    write_csv(Animation(_values(), FPS, 0.0), csv)
    out = d / "anim.fbx"
    r = subprocess.run([sys.executable, "-m", "dubtool", "export", str(csv), "--fbx", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def _run_isolated(code: str, *args) -> dict:
    # Readers run in a child process: the ufbx binding can crash the interpreter while freeing a
    # scene at exit, which must not take the test session with it. The child prints JSON and exits.
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    line = [s for s in r.stdout.splitlines() if s.startswith("{")]
    assert line, r.stderr[-2000:]
    return json.loads(line[-1])


def test_binary_fbx_7400_header_and_footer(fbx):
    data = fbx.read_bytes()
    assert data[:23] == b"Kaydara FBX Binary  \x00\x1a\x00"
    assert int.from_bytes(data[23:27], "little") == 7400
    assert data[-16:] == bytes.fromhex("f85a8c6adef5d97eece90ce3758f290b")


# ufbx 0.0.5's Python binding hands out views into the scene that dangle once another element
# or `scene.anim` is fetched, so each child process reads one thing, holding every object it uses.
_UFBX_INFO = """
    import json, os, sys, ufbx
    sc = ufbx.load_file(sys.argv[1])
    channels = sc.blend_channels
    names = [c.name for c in channels]
    meshes = sc.meshes
    mesh = meshes[0]
    settings = sc.settings
    stacks = sc.anim_stacks
    out = {"names": names, "meshes": len(meshes), "verts": mesh.num_vertices, "faces": mesh.num_faces,
           "fps": settings.frames_per_second, "unit_m": settings.unit_meters, "stacks": [s.name for s in stacks]}
    print(json.dumps(out)); sys.stdout.flush(); os._exit(0)
    """
_UFBX_WEIGHTS = """
    import json, os, sys, ufbx
    sc = ufbx.load_file(sys.argv[1])
    anim = sc.anim
    channels = sc.blend_channels
    chan = [c for c in channels if c.name == sys.argv[2]][0]
    keys = chan.keyframes
    shape = keys[0].shape
    offsets = shape.num_offsets
    w = [ufbx.evaluate_blend_weight(anim, chan, float(t)) for t in sys.argv[3:]]
    print(json.dumps({"weights": w, "offsets": offsets})); sys.stdout.flush(); os._exit(0)
    """
_UFBX_HEAD = """
    import json, os, sys, ufbx
    sc = ufbx.load_file(sys.argv[1])
    anim = sc.anim
    head = sc.find_node("head")
    tr = ufbx.evaluate_transform(anim, head, float(sys.argv[2]))
    q = tr.rotation
    print(json.dumps({"q": [q.x, q.y, q.z, q.w]})); sys.stdout.flush(); os._exit(0)
    """


def test_ufbx_reads_mesh_channels_and_settings(fbx):
    pytest.importorskip("ufbx")
    res = _run_isolated(_UFBX_INFO, fbx)
    assert res["names"] == list(BLENDSHAPE_NAMES)
    assert res["meshes"] == 3 and res["verts"] == 468 and res["faces"] > 800  # face + two eyeballs
    assert res["fps"] == pytest.approx(FPS) and res["unit_m"] == pytest.approx(0.01)
    assert res["stacks"] == ["dub"]


@pytest.mark.parametrize("channel,times,expected", [
    ("jawOpen", (0.0, 0.5, 1.0), (0.0, 0.5, 1.0)),
    ("eyeBlinkRight", (0.3, 0.8), (0.0, 1.0)),
    ("mouthSmileLeft", (0.4,), (0.25,)),
])
def test_ufbx_evaluates_animated_weights(fbx, channel, times, expected):
    pytest.importorskip("ufbx")
    res = _run_isolated(_UFBX_WEIGHTS, fbx, channel, *times)
    assert res["weights"] == pytest.approx(list(expected), abs=1e-3)
    assert res["offsets"] > 10  # sparse shape holds the moving vertices


def test_ufbx_evaluates_head_rotation(fbx):
    pytest.importorskip("ufbx")
    q = _run_isolated(_UFBX_HEAD, fbx, 1.0)["q"]
    assert 2 * np.degrees(np.arcsin(q[1])) == pytest.approx(np.degrees(0.4), abs=0.2)  # HeadYaw about +Y
    assert abs(q[0]) < 1e-6 and abs(q[2]) < 1e-6


_UFBX_NODE = """
    import json, os, sys, ufbx
    sc = ufbx.load_file(sys.argv[1])
    anim = sc.anim
    node = sc.find_node(sys.argv[2])
    parent = node.parent
    pname = parent.name
    mesh = node.mesh
    nverts = mesh.num_vertices if mesh is not None else 0
    qs = []
    for t in sys.argv[3:]:
        tr = ufbx.evaluate_transform(anim, node, float(t))
        q = tr.rotation
        p = tr.translation
        qs.append([q.x, q.y, q.z, q.w, p.x, p.y, p.z])
    print(json.dumps({"parent": pname, "verts": nverts, "tr": qs})); sys.stdout.flush(); os._exit(0)
    """
_UFBX_TIME = """
    import json, os, sys, ufbx
    sc = ufbx.load_file(sys.argv[1])
    settings = sc.settings
    fps = settings.frames_per_second
    mode = int(settings.time_mode)
    stacks = sc.anim_stacks
    stack = stacks[0]
    print(json.dumps({"fps": fps, "mode": mode, "span": [stack.time_begin, stack.time_end]}))
    sys.stdout.flush(); os._exit(0)
    """


@pytest.mark.parametrize("side", ["LeftEye", "RightEye"])
def test_ufbx_eye_joint_under_head_with_eyeball_keyed_by_the_eye_channels(fbx, side):
    pytest.importorskip("ufbx")
    from scipy.spatial.transform import Rotation

    from dubtool.rig import NECK_PIVOT, load_rig
    frames = (0, 12, 30)
    joint = _run_isolated(_UFBX_NODE, fbx, side, *(f / FPS for f in frames))
    assert joint["parent"] == "head"  # head rotation carries the eyes
    ball = _run_isolated(_UFBX_NODE, fbx, side + "ball", 0.0)
    assert ball["parent"] == side and ball["verts"] > 100
    v = _values()
    corners = load_rig().neutral[[263, 362] if side == "LeftEye" else [33, 133]]
    for (qx, qy, qz, qw, *pos), f in zip(joint["tr"], frames):
        centre = np.asarray(pos) + NECK_PIVOT  # joint sits at the eyeball centre (rig cm)
        assert centre[:2] == pytest.approx(corners.mean(0)[:2], abs=0.4) and centre[2] < corners[:, 2].max() - 0.8
        yaw, pitch = v[f, index(side + "Yaw")], v[f, index(side + "Pitch")]
        gaze = Rotation.from_quat([qx, qy, qz, qw]).apply([0.0, 0.0, 1.0])
        want = [np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)]
        assert gaze == pytest.approx(want, abs=1e-4), (side, f)


# FbxTime::EMode (ufbx_time_mode uses the same numbers): eFrames24 11, ePAL 10, eFrames30 6, eFrames50 4,
# eCustom 14 (the rate is then read from CustomFrameRate).
@pytest.mark.parametrize("fps,mode", [(24.0, 11), (25.0, 10), (30.0, 6), (50.0, 4), (15.0, 14)])
def test_frame_rate_and_take_span_are_the_takes(tmp_path, fps, mode):
    """Importers open the scene at the take's rate and length: frames 0 .. n-1 at its fps."""
    pytest.importorskip("ufbx")
    from dubtool.fbx import write_fbx
    n = 40
    out = write_fbx(Animation(np.zeros((n, 61), np.float32), fps), tmp_path / "t.fbx")
    res = _run_isolated(_UFBX_TIME, out)
    assert res["fps"] == pytest.approx(fps) and res["mode"] == mode
    assert res["span"] == pytest.approx([0.0, (n - 1) / fps], abs=1e-6)


def test_assimp_info_lists_mesh_and_animation(fbx, assimp_info):
    stats = assimp_info(fbx)
    # Assimp shares the two identical eyeball meshes: face + eyeball; nodes: root, head, face, 2 eye joints,
    # 2 eyeballs; rotation channels: head and both eyes.
    assert stats["Meshes"] == 2 and stats["Nodes"] == 7
    assert stats["Animations"] == 1 and stats["Animation Channels"] == 3
    assert stats["Faces"] > 800


def test_assimp_library_reads_morph_targets_and_keys(fbx):
    pytest.importorskip("pyassimp")
    res = _run_isolated("""
        import json, os, sys, pyassimp
        with pyassimp.load(sys.argv[1]) as s:
            m = [x.contents for x in s.meshes if x.contents.mName.data == b"face"][0]
            names = [m.mAnimMeshes[i].contents.mName.data.decode() for i in range(m.mNumAnimMeshes)]
            a = s.animations[0].contents
            ch = a.mMorphMeshChannels[0].contents
            keys = []
            for k in (0, 15, 30):
                key = ch.mKeys[k]
                w = {int(key.mValues[i]): key.mWeights[i] for i in range(key.mNumValuesAndWeights)}
                keys.append([key.mTime, w[17], w[7]])
            out = {"names": names, "morph_channels": a.mNumMorphMeshChannels, "num_keys": ch.mNumKeys,
                   "ticks_per_s": a.mTicksPerSecond, "keys": keys}
        print(json.dumps(out)); sys.stdout.flush(); os._exit(0)
        """, fbx)
    assert res["names"] == list(BLENDSHAPE_NAMES)
    assert res["morph_channels"] == 1 and res["num_keys"] == N
    # key k at frame k: jawOpen (index 17) ramps 0..1, eyeBlinkRight (index 7) steps after 0.5 s.
    for (t, jaw, blink), frame in zip(res["keys"], (0, 15, 30)):
        assert t / res["ticks_per_s"] == pytest.approx(frame / FPS, abs=1e-3)
        assert jaw == pytest.approx(frame / (N - 1), abs=1e-3)
        assert blink == pytest.approx(float(frame / FPS > 0.5), abs=1e-3)


def test_bad_csv_gives_line_error_and_no_fbx(tmp_path):
    csv = tmp_path / "bad.csv"
    write_csv(Animation(_values(), FPS, 0.0), csv)
    lines = csv.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[0], "00:00:00:00.000", 1)  # timecode goes backwards
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bad.fbx"
    r = subprocess.run([sys.executable, "-m", "dubtool", "export", str(csv), "--fbx", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "line 6" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".bad*"))
