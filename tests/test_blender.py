"""Blender itself reads dubtool's FBX and glTF: 52 ARKit shape keys in order, one animation curve per
key whose values are the CSV's weights, the head's rotation curves, 30 fps.

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


def _blender(path: Path) -> dict:
    r = subprocess.run([BPY, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=300)
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
    v[:, :52] += rng.uniform(0, 0.05, (90, 52))
    return Animation(np.clip(v, -1, 1), 30.0)


def test_blender_reads_the_fbx_shape_keys_curves_and_head(anim, tmp_path):
    p = tmp_path / "face.fbx"
    export_animation(anim, fbx=p)
    b = _blender(p)
    assert b["fps"] == 30
    meshes = [o for o in b["objects"].values() if o["type"] == "MESH"]
    assert len(meshes) == 1 and meshes[0]["vertices"] == 468
    m = meshes[0]
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
    b = _blender(p)
    meshes = [o for o in b["objects"].values() if o["type"] == "MESH"]
    assert len(meshes) == 1 and meshes[0]["shape_keys"] == list(arkit.BLENDSHAPE_NAMES)
    keys = np.array(meshes[0]["shape_curves"]["jawOpen"])
    # glTF keys are in seconds; Blender lays them on its scene rate. Values must be the weights.
    assert len(keys) >= anim.num_frames - 1
    assert abs(keys[:, 1].max() - anim.values[:, arkit.index("jawOpen")].max()) < 1e-3
