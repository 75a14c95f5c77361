"""Import an FBX or glTF file in Blender and print what Blender made of it as one JSON line.

Runs inside Blender's Python (the `bpy` wheel from PyPI, or `blender -b --python`):

    BPY_PYTHON scripts/blender_inspect.py FILE.fbx|FILE.glb

Used by tests/test_blender.py (opt-in: set DUBTOOL_BPY_PYTHON to a Python that can `import bpy`).
"""

import json
import sys

import bpy


def main(path: str) -> dict:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if path.lower().endswith(".fbx"):
        bpy.ops.import_scene.fbx(filepath=path)
    else:
        bpy.ops.import_scene.gltf(filepath=path)
    out: dict = {"fps": bpy.context.scene.render.fps, "objects": {}}
    for ob in bpy.data.objects:
        d: dict = {"type": ob.type}
        if ob.type == "MESH":
            d["vertices"] = len(ob.data.vertices)
            d["faces"] = len(ob.data.polygons)
            sk = ob.data.shape_keys
            d["shape_keys"] = [k.name for k in sk.key_blocks[1:]] if sk else []
            curves = {}
            if sk and sk.animation_data and sk.animation_data.action:
                for fc in sk.animation_data.action.fcurves:
                    name = fc.data_path.split('"')[1] if '"' in fc.data_path else fc.data_path
                    curves[name] = [[k.co[0], k.co[1]] for k in fc.keyframe_points]
            d["shape_curves"] = curves
        if ob.animation_data and ob.animation_data.action:
            d["curves"] = sorted({fc.data_path for fc in ob.animation_data.action.fcurves})
        out["objects"][ob.name] = d
    return out


if __name__ == "__main__":
    print("BLENDER_JSON " + json.dumps(main(sys.argv[-1])))
