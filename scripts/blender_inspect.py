"""Import an FBX or glTF file in Blender and print what Blender made of it as one JSON line.

Runs inside Blender's Python (the `bpy` wheel from PyPI, or `blender -b --python`):

    BPY_PYTHON scripts/blender_inspect.py FILE.fbx|FILE.glb [FRAME,FRAME,...]

Reports the scene's rate and frame range, each object's type, parent, shape keys and their curves,
animated paths and action frame range, and, at each FRAME given, every object's world rotation
(3x3, Blender's Z-up world) so callers can check where the head and the eyes point.

Used by tests/test_blender.py (opt-in: set DUBTOOL_BPY_PYTHON to a Python that can `import bpy`).
"""

import json
import sys

import bpy


def main(path: str, frames: list[float]) -> dict:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if path.lower().endswith(".fbx"):
        bpy.ops.import_scene.fbx(filepath=path)
    else:
        bpy.ops.import_scene.gltf(filepath=path)
    scene = bpy.context.scene
    out: dict = {"fps": scene.render.fps / scene.render.fps_base, "frame_range": [scene.frame_start, scene.frame_end],
                 "objects": {}}
    for ob in bpy.data.objects:
        d: dict = {"type": ob.type, "parent": ob.parent.name if ob.parent else None}
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
            d["color_attributes"] = [a.name for a in getattr(ob.data, "color_attributes", [])]
        if ob.animation_data and ob.animation_data.action:
            act = ob.animation_data.action
            d["curves"] = sorted({fc.data_path for fc in act.fcurves})
            d["action_range"] = list(act.frame_range)
        out["objects"][ob.name] = d
    for f in frames:
        scene.frame_set(int(f), subframe=f - int(f))
        for ob in bpy.data.objects:
            rot = ob.matrix_world.to_3x3().normalized()
            out["objects"][ob.name].setdefault("world_rotation", {})[str(f)] = [list(r) for r in rot]
    return out


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    frames = [float(x) for x in args[1].split(",")] if len(args) > 1 else []
    print("BLENDER_JSON " + json.dumps(main(args[0], frames)))
