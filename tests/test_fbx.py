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
    assert res["meshes"] == 1 and res["verts"] == 468 and res["faces"] > 800
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


def test_assimp_info_lists_mesh_and_animation(fbx, assimp_info):
    stats = assimp_info(fbx)
    assert stats["Meshes"] == 1 and stats["Animations"] == 1 and stats["Animation Channels"] == 1
    assert stats["Faces"] > 800


def test_assimp_library_reads_morph_targets_and_keys(fbx):
    pytest.importorskip("pyassimp")
    res = _run_isolated("""
        import json, os, sys, pyassimp
        with pyassimp.load(sys.argv[1]) as s:
            m = s.meshes[0].contents
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
