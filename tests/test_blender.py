"""Blender itself reads dubtool's FBX and glTF: 52 ARKit shape keys in order, one animation curve per
key whose values are the CSV's weights, the head's rotation curves, the take's rate (FBX) and length,
eye joints under the head with eyeball meshes whose world gaze follows the eye rotation channels.

Opt-in (Blender's `bpy` wheel is a ~350 MB install, not part of CI): set DUBTOOL_BPY_PYTHON to a
Python that can `import bpy`, e.g. `python3.11 -m venv /tmp/bpy && /tmp/bpy/bin/pip install "bpy==4.2.*"`."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dubtool import arkit
from dubtool.arkit import Animation
from dubtool.export import export_animation

BPY = os.environ.get("DUBTOOL_BPY_PYTHON")
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "blender_inspect.py"
pytestmark = pytest.mark.skipif(not BPY, reason="set DUBTOOL_BPY_PYTHON to a Python with bpy (Blender) to run")


def _blender(path: Path, frames=()) -> dict:
    cmd = [BPY, str(SCRIPT), str(path)] + ([",".join(f"{f:g}" for f in frames)] if frames else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    line = [x for x in r.stdout.splitlines() if x.startswith("BLENDER_JSON ")]
    assert r.returncode == 0 and line, r.stderr[-2000:]
    return json.loads(line[0][len("BLENDER_JSON "):])


@pytest.fixture(scope="module")
def anim():
    rng = np.random.default_rng(0)
    v = np.zeros((90, arkit.NUM_CHANNELS), np.float32)
    v[:, arkit.index("jawOpen")] = 0.5 * (1 + np.sin(np.arange(90) / 5)) / 2
    v[:, arkit.index("eyeBlinkLeft")] = (np.arange(90) % 30 < 4).astype(np.float32)
    v[:, arkit.index("HeadYaw")] = np.deg2rad(20) * np.sin(np.arange(90) / 15)
    for side in ("LeftEye", "RightEye"):  # at rest on frame 0, then a glance to her left and down
        v[:, arkit.index(side + "Yaw")] = 0.5 * np.sin(np.arange(90) / 20)
        v[:, arkit.index(side + "Pitch")] = 0.3 * np.sin(np.arange(90) / 30)
    v[:, :52] += rng.uniform(0, 0.05, (90, 52))
    return Animation(np.clip(v, -1, 1), 30.0)


SAMPLE_FRAMES = (0, 25, 60, 89)  # take frames; frame 0 is the rest pose (no head or eye rotation)


def _expected_gaze(anim, side, k):
    """World gaze of an eye at take frame k in Blender's Z-up axes: head R . eye R . +Z (rig), then
    rig (x, y, z) -> Blender (x, -z, y)."""
    from dubtool.rig import head_rotation_matrix
    v = anim.values[k]
    i = arkit.index(side + "Yaw")
    g = head_rotation_matrix(*v[52:55]) @ head_rotation_matrix(*v[i:i + 3]) @ np.array([0.0, 0.0, 1.0])
    return np.array([g[0], -g[2], g[1]])


def _check_eyes(b, anim, blender_frames):
    for side in ("LeftEye", "RightEye"):
        joint = b["objects"][side]
        assert joint["parent"] == "head" and any("rotation" in c for c in joint["curves"])
        ball = b["objects"][side + "ball"]
        assert ball["type"] == "MESH" and ball["parent"] == side and ball["color_attributes"]
        rest = np.array(joint["world_rotation"][f"{float(blender_frames[0])}"])
        for k, f in zip(SAMPLE_FRAMES, blender_frames):
            rot = np.array(joint["world_rotation"][f"{float(f)}"])
            gaze = rot @ rest.T @ np.array([0.0, -1.0, 0.0])  # Blender's front is -Y; frame 0 looks straight ahead
            np.testing.assert_allclose(gaze, _expected_gaze(anim, side, k), atol=2e-3, err_msg=f"{side} frame {k}")


def test_blender_reads_the_fbx_shape_keys_curves_and_head(anim, tmp_path):
    p = tmp_path / "face.fbx"
    export_animation(anim, fbx=p)
    frames = [k + 1 for k in SAMPLE_FRAMES]  # Blender's FBX import puts FBX time 0 on frame 1
    b = _blender(p, frames)
    assert b["fps"] == 30
    # The take's length: every animated object is keyed over frames 1 .. n. (Blender 4.2's FBX importer
    # sets the scene rate from the file but never its frame range, which stays 1-250.)
    for name in ("head", "LeftEye", "RightEye"):
        assert b["objects"][name]["action_range"] == [1.0, float(anim.num_frames)]
    _check_eyes(b, anim, frames)
    meshes = [o for o in b["objects"].values() if o["type"] == "MESH"]
    assert len(meshes) == 3 and b["objects"]["face"]["vertices"] == 468  # face + two eyeballs
    m = b["objects"]["face"]
    assert m["shape_keys"] == list(arkit.BLENDSHAPE_NAMES)
    for name in ("jawOpen", "eyeBlinkLeft"):
        keys = np.array(m["shape_curves"][name])
        assert len(keys) == anim.num_frames
        np.testing.assert_allclose(keys[:, 1], anim.values[:, arkit.index(name)], atol=1e-3)
    head = [o for o in b["objects"].values() if any("rotation" in c for c in o.get("curves", []))]
    assert head, "no object carries the head rotation"


def test_blender_reads_the_glb_morph_targets_and_weights(anim, tmp_path):
    p = tmp_path / "face.glb"
    export_animation(anim, gltf=p)
    # glTF times are seconds; Blender's glTF import lays them on its own scene rate from frame 0.
    scene_fps = 24.0
    frames = [k / anim.fps * scene_fps for k in SAMPLE_FRAMES]
    b = _blender(p, frames)
    assert b["fps"] == scene_fps
    _check_eyes(b, anim, frames)
    for name in ("head", "LeftEye", "RightEye"):
        assert b["objects"][name]["action_range"] == pytest.approx([0.0, (anim.num_frames - 1) / anim.fps * scene_fps])
    meshes = [o for o in b["objects"].values() if o["type"] == "MESH"]
    assert len(meshes) == 3 and b["objects"]["face"]["shape_keys"] == list(arkit.BLENDSHAPE_NAMES)
    keys = np.array(b["objects"]["face"]["shape_curves"]["jawOpen"])
    # glTF keys are in seconds; Blender lays them on its scene rate. Values must be the weights.
    assert len(keys) >= anim.num_frames - 1
    assert abs(keys[:, 1].max() - anim.values[:, arkit.index("jawOpen")].max()) < 1e-3
