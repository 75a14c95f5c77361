"""dubtool export --gltf: a .glb that the Khronos validator passes, and pygltflib / Assimp read
with 52 ARKit-named morph targets and the weights animation at the input values."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubtool.arkit import BLENDSHAPE_NAMES, Animation, index
from dubtool.livelink import write_csv

FPS = 25.0
N = 26
VALIDATOR = Path(os.environ.get("GLTF_VALIDATOR", Path.home() / ".cache/dubtool-dev/gltfv/node_modules/gltf-validator"))


@pytest.fixture(scope="module")
def values():
    v = np.zeros((N, 61), np.float32)
    v[:, index("jawOpen")] = np.linspace(0, 1, N)
    v[:, index("browInnerUp")] = 0.6
    v[:, index("HeadPitch")] = np.linspace(0, 0.3, N)
    v[:, index("LeftEyeYaw")] = v[:, index("RightEyeYaw")] = np.linspace(0, 0.4, N)  # gaze to her left
    v[:, index("LeftEyePitch")] = v[:, index("RightEyePitch")] = 0.2                  # looking down
    return v


@pytest.fixture(scope="module")
def glb(tmp_path_factory, values):
    d = tmp_path_factory.mktemp("gltf")
    csv = d / "anim.csv"
    write_csv(Animation(values, FPS, 0.0), csv)
    out = d / "anim.glb"
    r = subprocess.run([sys.executable, "-m", "dubtool", "export", str(csv), "--gltf", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_pygltflib_reads_targets_and_weights_animation(glb, values):
    pygltflib = pytest.importorskip("pygltflib")
    g = pygltflib.GLTF2().load(str(glb))
    mesh = g.meshes[0]
    assert mesh.extras["targetNames"] == list(BLENDSHAPE_NAMES)
    assert len(mesh.primitives[0].targets) == 52
    anim = g.animations[0]
    by_node = {g.nodes[ch.target.node].name: (ch.target.path, anim.samplers[ch.sampler]) for ch in anim.channels}
    assert {k: p for k, (p, _) in by_node.items()} == {"face": "weights", "head": "rotation",
                                                      "LeftEye": "rotation", "RightEye": "rotation"}
    samplers = {"weights": by_node["face"][1], "rotation": by_node["head"][1]}
    assert samplers["weights"].interpolation == "LINEAR"
    blob = g.binary_blob()

    def read(acc_index, width):
        acc = g.accessors[acc_index]
        view = g.bufferViews[acc.bufferView]
        start = view.byteOffset + (acc.byteOffset or 0)
        return np.frombuffer(blob[start:start + acc.count * width * 4], np.float32).reshape(acc.count, width)

    times = read(samplers["weights"].input, 1)[:, 0]
    assert times == pytest.approx(np.arange(N) / FPS, abs=1e-6)
    w = read(samplers["weights"].output, 1).reshape(N, 52)
    assert w[:, index("jawOpen")] == pytest.approx(values[:, index("jawOpen")], abs=1e-6)
    assert w[:, index("browInnerUp")] == pytest.approx(0.6, abs=1e-6)
    q = read(samplers["rotation"].output, 4)
    assert 2 * np.degrees(np.arcsin(q[-1, 0])) == pytest.approx(np.degrees(0.3), abs=0.1)  # pitch about +X
    jaw_target = read(mesh.primitives[0].targets[index("jawOpen")]["POSITION"], 3)
    assert jaw_target[:, 1].min() < -0.005  # jawOpen moves the chin down by more than 5 mm (metres)


def _read_accessor(g, acc_index, width):
    blob = g.binary_blob()
    acc = g.accessors[acc_index]
    view = g.bufferViews[acc.bufferView]
    start = view.byteOffset + (acc.byteOffset or 0)
    return np.frombuffer(blob[start:start + acc.count * width * 4], np.float32).reshape(acc.count, width)


def test_eye_joints_carry_eyeballs_and_the_eye_rotation_channels(glb, values):
    """Each eye is a joint under the head, at the eye socket, with an eyeball mesh; its rotation keys
    are R = Ry(yaw) Rx(pitch) of the channel values, so gaze to her left turns the eye's +Z to +X."""
    pygltflib = pytest.importorskip("pygltflib")
    from scipy.spatial.transform import Rotation

    from dubtool.rig import NECK_PIVOT, load_rig
    g = pygltflib.GLTF2().load(str(glb))
    names = [n.name for n in g.nodes]
    head = g.nodes[names.index("head")]
    neutral = load_rig().neutral
    anim = g.animations[0]
    for side, contour in (("LeftEye", (263, 362)), ("RightEye", (33, 133))):
        joint = g.nodes[names.index(side)]
        assert names.index(side) in head.children
        # Centre (rig cm) between the eye corners in x/y, behind the lids.
        centre = (np.asarray(joint.translation) / 0.01) + NECK_PIVOT
        corners = neutral[list(contour)]
        assert centre[:2] == pytest.approx(corners.mean(0)[:2], abs=0.4)
        assert centre[2] < corners[:, 2].max() - 0.8
        ball = g.nodes[joint.children[0]]
        assert ball.name == side + "ball" and ball.mesh is not None
        pos = _read_accessor(g, g.meshes[ball.mesh].primitives[0].attributes.POSITION, 3)
        assert np.linalg.norm(pos, axis=1) == pytest.approx(0.012, abs=1e-4)  # 1.2 cm eyeball, metres
        assert g.meshes[ball.mesh].primitives[0].attributes.COLOR_0 is not None  # iris painted
        ch = [c for c in anim.channels if c.target.node == names.index(side)][0]
        assert ch.target.path == "rotation"
        times = _read_accessor(g, anim.samplers[ch.sampler].input, 1)[:, 0]
        assert times == pytest.approx(np.arange(N) / FPS, abs=1e-6)  # keys on the take's frames
        q = _read_accessor(g, anim.samplers[ch.sampler].output, 4)
        yaw, pitch = values[:, index(side + "Yaw")], values[:, index(side + "Pitch")]
        gaze = Rotation.from_quat(q).apply([0.0, 0.0, 1.0])
        want = np.stack([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)], 1)
        assert gaze == pytest.approx(want, abs=1e-5)
        assert gaze[-1, 0] > 0.3 and gaze[0, 1] < -0.15  # last frame: toward +x (her left); looking down
    assert g.animations[0].extras["fps"] == FPS


def test_khronos_validator_reports_no_errors(glb):
    if not shutil.which("node") or not VALIDATOR.exists():
        pytest.skip("Khronos gltf-validator (npm) not installed; set GLTF_VALIDATOR")
    script = ("const v=require(process.argv[1]);const fs=require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2]))).then(r=>"
              "console.log(JSON.stringify(r.issues)))")
    r = subprocess.run(["node", "-e", script, str(VALIDATOR), str(glb)], capture_output=True, text=True, timeout=120)
    issues = json.loads(r.stdout)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:5]


def test_assimp_reads_the_glb(glb, assimp_info):
    stats = assimp_info(glb)
    # face + one eyeball mesh (shared by both eye nodes); head, face, two eye joints, two eyeballs;
    # rotation channels: head and both eyes.
    assert stats["Meshes"] == 2 and stats["Nodes"] == 6 and stats["Animations"] == 1 and stats["Faces"] > 800
    assert stats["Animation Channels"] == 3


def test_gltf_json_variant_embeds_buffer(tmp_path, values):
    from dubtool.gltf import write_gltf
    out = write_gltf(Animation(values, FPS), tmp_path / "a.gltf")
    doc = json.loads(out.read_text())
    assert doc["buffers"][0]["uri"].startswith("data:application/octet-stream;base64,")
    assert doc["meshes"][0]["extras"]["targetNames"][17] == "jawOpen"


def test_wrong_extension_is_refused_and_nothing_written(tmp_path, values):
    csv = tmp_path / "a.csv"
    write_csv(Animation(values, FPS, 0.0), csv)
    r = subprocess.run([sys.executable, "-m", "dubtool", "export", str(csv), "--gltf", str(tmp_path / "a.obj")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and ".glb" in r.stderr
    assert not (tmp_path / "a.obj").exists()
