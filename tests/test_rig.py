"""The face rig: sizes, shapes that do what their ARKit names say, pose -> solve round trips, head
rotation convention and the contact-sheet command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dubtool import rig as rigmod
from dubtool.arkit import BLENDSHAPE_NAMES, HEAD_IDX, index
from dubtool.errors import InputError, ModelError
from dubtool.rig import (ANTAGONIST_PAIRS, apply_head_rotation, head_rotation_matrix, load_rig, load_rig_file,
                         vertex_normals)


@pytest.fixture(scope="module")
def rig():
    return load_rig()


def posed(rig, name, weight=1.0):
    w = np.zeros(52, np.float32)
    w[index(name)] = weight
    return rig.pose(w)


def sparse_weights(rng, frames):
    """Random sparse weights: 3-6 active shapes per frame, no antagonist pair active together."""
    partner = {}
    for a, b in ANTAGONIST_PAIRS:
        partner[index(a)], partner[index(b)] = index(b), index(a)
    w = np.zeros((frames, 52), np.float32)
    for t in range(frames):
        chosen: list[int] = []
        active = int(rng.integers(3, 7))
        for k in rng.permutation(52):
            if partner.get(int(k)) not in chosen:
                chosen.append(int(k))
            if len(chosen) == active:
                break
        w[t, chosen] = rng.uniform(0.2, 1.0, len(chosen))
    return w


def random_similarity(rng, vertices):
    t = vertices.shape[0]
    rot = head_rotation_matrix(rng.normal(0, 0.35, t), rng.normal(0, 0.25, t), rng.normal(0, 0.2, t))
    scale = rng.uniform(0.7, 1.4, t)
    shift = rng.normal(0, 5.0, (t, 1, 3))
    return (scale[:, None, None] * np.einsum("tdc,tvc->tvd", rot, vertices) + shift).astype(np.float32)


def test_mesh_sizes_and_names(rig):
    assert rig.neutral.shape == (468, 3) and rig.neutral.dtype == np.float32
    assert rig.deltas.shape == (52, 468, 3) and rig.deltas.dtype == np.float32
    assert rig.triangles.shape == (898, 3) and rig.triangles.dtype == np.int32
    assert rig.uvs.shape == (468, 2)
    assert rig.names == BLENDSHAPE_NAMES
    assert set(np.unique(rig.triangles)) == set(range(468))
    # MediaPipe convention: the subject's left eye (263) is at +x, right eye (33) at -x.
    assert rig.neutral[263, 0] > 2 and rig.neutral[33, 0] < -2
    # every shape moves something visibly (>= 1.2 mm; the eye-look lid shifts are the smallest)
    motion = np.linalg.norm(rig.deltas, axis=2).max(1)
    assert all(m >= 0.12 for m in motion), [n for n, m in zip(rig.names, motion) if m < 0.12]


def test_canonical_mesh_parser_matches_bundle(rig):
    try:
        vertices, uvs, triangles = rigmod.canonical_mesh()
    except ModelError:
        pytest.skip("face_landmarker.task not installed")
    # The shipped neutral is the canonical mesh with the lips closed: only vertices near the mouth move.
    moved = np.linalg.norm(vertices - rig.neutral, axis=1) > 1e-5
    lips = vertices[list(rigmod.INNER_LIPS)]
    near_mouth = np.linalg.norm(vertices[:, None] - lips[None], axis=2).min(1) < 1.5
    assert moved[[13, 14]].all() and not (moved & ~near_mouth).any()
    np.testing.assert_array_equal(triangles, rig.triangles)
    np.testing.assert_allclose(uvs, rig.uvs, atol=1e-6)
    with pytest.raises(ModelError):
        rigmod.parse_canonical_mesh(b"\x0a\x05\x1d\x00\x00")


def test_pose_shapes_and_rotation_channels_ignored(rig):
    rng = np.random.default_rng(1)
    w61 = rng.uniform(0, 1, (5, 61)).astype(np.float32)
    out = rig.pose(w61)
    assert out.shape == (5, 468, 3)
    np.testing.assert_allclose(out, rig.pose(w61[:, :52]), atol=1e-5)
    np.testing.assert_allclose(rig.pose(w61[2, :52]), out[2], atol=1e-5)
    np.testing.assert_allclose(rig.pose(np.zeros(52)), rig.neutral)
    with pytest.raises(InputError):
        rig.pose(np.zeros(10))


def test_jaw_open_lowers_chin_and_opens_lips(rig):
    v = posed(rig, "jawOpen")
    n = rig.neutral
    assert v[152, 1] < n[152, 1] - 1.0                        # chin drops > 1 cm
    gap = lambda x: np.linalg.norm(x[13] - x[14])             # noqa: E731
    assert gap(v) > gap(n) + 0.8
    assert np.linalg.norm(v[10] - n[10]) < 1e-3               # forehead does not move


INNER_UPPER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
INNER_LOWER = (95, 88, 178, 87, 14, 317, 402, 318, 324)


def inner_lip_gaps(v):
    """Per column of the mouth, upper inner lip height above the lower one (cm; < 0 = crossed)."""
    return v[list(INNER_UPPER), 1] - v[list(INNER_LOWER), 1]


def test_lips_meet_at_rest_with_natural_outer_lips(rig):
    n = rig.neutral
    gaps = np.linalg.norm(n[list(INNER_UPPER)] - n[list(INNER_LOWER)], axis=1)
    assert gaps.max() < 0.05                                   # closed along the whole mouth, < 0.5 mm
    assert (inner_lip_gaps(n) >= 0).all()                      # and not crossed
    upper, lower = n[0, 1] - n[13, 1], n[14, 1] - n[17, 1]    # lip heights: upper 5-10 mm, lower fuller
    assert 0.5 < upper < 1.0 and upper < lower < 1.2
    assert abs(n[13, 1] - n[[61, 291], 1].mean()) < 0.2        # the lip line runs level with the corners


@pytest.mark.parametrize("pose", [dict(mouthPressLeft=1.0, mouthPressRight=1.0), dict(mouthPucker=1.0),
                                  dict(jawOpen=0.07, mouthClose=0.07, mouthPressLeft=0.35, mouthPressRight=0.35),
                                  dict(mouthSmileLeft=1.0, mouthSmileRight=1.0), dict(mouthRollLower=1.0),
                                  dict(mouthRollUpper=1.0), dict(mouthShrugLower=1.0)])
def test_sealing_shapes_keep_the_lips_together(rig, pose):
    w = np.zeros(52, np.float32)
    for k, x in pose.items():
        w[index(k)] = x
    assert inner_lip_gaps(rig.pose(w)).max() < 0.06


@pytest.mark.parametrize("pose", [dict(jawOpen=0.3), dict(mouthFunnel=1.0), dict(mouthLowerDownLeft=1.0,
                                                                                 mouthLowerDownRight=1.0)])
def test_opening_shapes_part_the_lips(rig, pose):
    w = np.zeros(52, np.float32)
    for k, x in pose.items():
        w[index(k)] = x
    assert inner_lip_gaps(rig.pose(w))[4] > 0.3               # > 3 mm at the middle of the mouth


def test_mouth_close_closes_lips_against_open_jaw(rig):
    w = np.zeros(52, np.float32)
    w[index("jawOpen")] = 1.0
    w[index("mouthClose")] = 1.0
    v = rig.pose(w)
    assert np.linalg.norm(v[13] - v[14]) < 0.1                # lips meet
    assert v[152, 1] < rig.neutral[152, 1] - 1.0              # jaw still open


def test_blink_left_closes_left_eye_only(rig):
    v, n = posed(rig, "eyeBlinkLeft"), rig.neutral
    left = lambda x: np.linalg.norm(x[386] - x[374])          # noqa: E731
    right = lambda x: np.linalg.norm(x[159] - x[145])         # noqa: E731
    assert left(v) < 0.2 * left(n)
    assert abs(right(v) - right(n)) < 1e-3
    v = posed(rig, "eyeBlinkRight")
    assert right(v) < 0.2 * right(n) and abs(left(v) - left(n)) < 1e-3


def test_smile_left_raises_left_corner(rig):
    v, n = posed(rig, "mouthSmileLeft"), rig.neutral
    assert v[291, 1] > n[291, 1] + 0.3 and v[291, 0] > n[291, 0]   # up and out, towards +x
    assert np.linalg.norm(v[61] - n[61]) < 0.02                    # right corner stays


def test_pucker_moves_lips_forward_and_narrows(rig):
    v, n = posed(rig, "mouthPucker"), rig.neutral
    assert v[0, 2] > n[0, 2] + 0.25 and v[17, 2] > n[17, 2] + 0.25   # fitted: 3.6 and 2.9 mm forward
    assert (v[291, 0] - v[61, 0]) < (n[291, 0] - n[61, 0]) - 0.8


def test_brow_inner_up_raises_inner_brows(rig):
    v, n = posed(rig, "browInnerUp"), rig.neutral
    for i in (107, 336, 55, 285):
        assert v[i, 1] > n[i, 1] + 0.4
    assert (v[70, 1] - n[70, 1]) < 0.5 * (v[107, 1] - n[107, 1])   # outer brow rises less


def test_sides_follow_arkit_convention(rig):
    """ARKit 'Left' = the subject's left = +x: left shapes move +x vertices, not -x ones."""
    for name in BLENDSHAPE_NAMES:
        if not name.endswith(("Left", "Right")) or name.startswith("jaw") or name in ("mouthLeft", "mouthRight"):
            continue
        m = np.linalg.norm(rig.deltas[index(name)], axis=1)
        x = rig.neutral[:, 0]
        own, other = (x > 1.0, x < -1.0) if name.endswith("Left") else (x < -1.0, x > 1.0)
        assert m[own].sum() > 5 * m[other].sum(), name


def test_deltas_are_local(rig):
    """Upper-face shapes leave the mouth and chin alone; lower-face shapes leave brows and forehead."""
    y = rig.neutral[:, 1]
    lower_face, upper_face = y < -2.5, y > 3.5
    for k, name in enumerate(rig.names):
        m = np.linalg.norm(rig.deltas[k], axis=1)
        if name.startswith(("eye", "brow")):
            far = lower_face
        elif name.startswith(("jaw", "mouth", "tongue", "cheekPuff")):
            far = upper_face
        else:
            continue
        assert (m[far] > 0.05).mean() < 0.05, name


def test_solve_round_trip_under_similarity_transform(rig):
    rng = np.random.default_rng(7)
    w = sparse_weights(rng, 300)
    vertices = random_similarity(rng, rig.pose(w))
    solved = rig.solve(vertices)
    assert solved.shape == (300, 52) and solved.min() >= 0 and solved.max() <= 1
    err = np.abs(solved - w)
    assert err.mean() < 0.02
    assert err[w > 0].mean() < 0.06       # active shapes recovered, not just zeros matched
    # a single frame works too, and tracked 478-point frames (with iris) are accepted
    one = rig.solve(np.concatenate([vertices[0], np.zeros((10, 3), np.float32) + vertices[0, :10]]))
    assert one.shape == (1, 52) and np.abs(one[0] - solved[0]).max() < 1e-3


def test_solve_ignores_rigid_motion(rig):
    rng = np.random.default_rng(3)
    frames = np.repeat(rig.neutral[None], 20, axis=0)
    solved = rig.solve(random_similarity(rng, frames))
    assert solved.max() < 0.02


def test_solve_against_actor_neutral(rig):
    """Identity shape cancels when the actor's own neutral is given."""
    rng = np.random.default_rng(5)
    actor = rig.neutral + rng.normal(0, 0.15, rig.neutral.shape).astype(np.float32)
    w = np.zeros((1, 52), np.float32)
    w[0, index("jawOpen")] = 0.7
    w[0, index("browInnerUp")] = 0.5
    frame = actor + (rig.pose(w)[0] - rig.neutral)
    solved = rig.solve(random_similarity(rng, frame[None]), neutral=actor)
    assert abs(solved[0, index("jawOpen")] - 0.7) < 0.05 and abs(solved[0, index("browInnerUp")] - 0.5) < 0.05


def test_solve_rejects_bad_input(rig):
    with pytest.raises(InputError):
        rig.solve(np.zeros((4, 100, 3)))
    bad = np.repeat(rig.neutral[None], 2, axis=0)
    bad[1, 5, 0] = np.nan
    with pytest.raises(InputError):
        rig.solve(bad)


def test_head_rotation_convention(rig):
    # positive yaw turns the nose (vertex 1) towards +x, the subject's left
    r = head_rotation_matrix(0.3, 0.0, 0.0)
    assert (rig.neutral[1] @ r.T)[0] > 1.0
    # positive pitch tips the nose down; positive roll tilts the head top towards -x
    assert (rig.neutral[1] @ head_rotation_matrix(0.0, 0.3, 0.0).T)[1] < rig.neutral[1, 1] - 1.0
    assert (rig.neutral[10] @ head_rotation_matrix(0.0, 0.0, 0.3).T)[0] < -1.0
    rs = head_rotation_matrix(np.array([0.1, -0.2]), np.array([0.3, 0.0]), np.array([0.0, 0.5]))
    assert rs.shape == (2, 3, 3)
    np.testing.assert_allclose(rs @ np.transpose(rs, (0, 2, 1)), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-9)


def test_apply_head_rotation_about_neck(rig):
    vals = np.zeros((3, 61), np.float32)
    vals[1, HEAD_IDX[0]] = 0.4
    out = apply_head_rotation(rig.pose(vals), vals)
    np.testing.assert_allclose(out[0], rig.neutral, atol=1e-5)
    assert out[1, 1, 0] > rig.neutral[1, 0] + 1.0
    # rigid: distances between vertices are kept
    d = lambda x: np.linalg.norm(x[10] - x[152])  # noqa: E731
    assert abs(d(out[1]) - d(rig.neutral)) < 1e-4
    single = apply_head_rotation(rig.neutral, vals[1])
    np.testing.assert_allclose(single, out[1], atol=1e-5)


def test_vertex_normals_point_out_of_face(rig):
    n = vertex_normals(rig.neutral, rig.triangles)
    assert n.shape == (468, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert n[1, 2] > 0.8 and n[10, 2] > 0.5 and n[263, 0] > -0.5
    batch = vertex_normals(np.stack([rig.neutral, posed(rig, "jawOpen")]), rig.triangles)
    np.testing.assert_allclose(batch[0], n, atol=1e-5)


def test_load_rig_errors(tmp_path, rig):
    with pytest.raises(ModelError, match="not found"):
        load_rig_file(tmp_path / "missing.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="corrupt"):
        load_rig_file(bad)
    with np.load(rigmod.RIG_PATH) as data:
        fields = dict(data)
    fields["format_version"] = np.int32(99)
    old = tmp_path / "old.npz"
    np.savez(old, **fields)
    with pytest.raises(ModelError, match="format 99"):
        load_rig_file(old)


def test_rig_sheet_command(tmp_path):
    out = tmp_path / "sheet.png"
    cmd = [sys.executable, "-m", "dubtool", "rig-sheet", "-o", str(out), "--shape", "jawOpen",
           "--shape", "eyeBlinkLeft", "--region", "mouth"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "dubtool", "rig-sheet", "-o", str(tmp_path / "x.png"),
                          "--shape", "jawOpn"], capture_output=True, text=True)
    assert bad.returncode != 0 and "jawOpn" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.png").exists()
    assert not list(tmp_path.glob(".x.png*"))


def test_jaw_left_moves_chin_to_subject_left(rig):
    """ARKit jawLeft = the jaw moves to the subject's left (+x), like mouthLeft; jawRight to -x."""
    n = rig.neutral
    assert posed(rig, "jawLeft")[152, 0] > n[152, 0] + 0.3
    assert posed(rig, "jawRight")[152, 0] < n[152, 0] - 0.3
    assert posed(rig, "mouthLeft")[0, 0] > n[0, 0] + 0.3


def test_jaw_open_opens_the_mouth_like_a_real_face(rig):
    """Fitted to tracked talking faces: jawOpen 1 parts the inner lips by ~3.3 cm and drops the chin
    ~2.4 cm (the procedural rig: 1.5 cm and 1.0 cm, a quarter of the real opening beside the video)."""
    v, n = posed(rig, "jawOpen"), rig.neutral
    assert 2.5 < np.linalg.norm(v[13] - v[14]) < 4.5
    assert v[152, 1] < n[152, 1] - 1.8
    half = posed(rig, "jawOpen", 0.5)
    assert 1.2 < np.linalg.norm(half[13] - half[14]) < 2.2


def test_rig_is_left_right_symmetric(rig):
    from dubtool.rigfit import mirror_field, mirror_shape_map, mirror_vertex_map

    vmap = mirror_vertex_map(rig.neutral)
    assert vmap[263] == 33 and vmap[291] == 61 and vmap[13] == 13
    mirrored = mirror_field(rig.deltas[mirror_shape_map()], vmap)
    assert np.abs(mirrored - rig.deltas).max() < 1e-4


def _synthetic_clip(rng, rig, truth, frames, active):
    """A tracked-like clip: an actor neutral (identity noise), sparse scores on `active` shapes,
    landmark noise and a random similarity transform per frame."""
    from dubtool.rigfit import clip_samples

    actor = rig.neutral + rng.normal(0, 0.1, rig.neutral.shape)
    w = np.zeros((frames, 52))
    w[:, active] = rng.uniform(0, 1, (frames, len(active))) * (rng.uniform(0, 1, (frames, len(active))) < 0.4)
    x = actor + np.einsum("tk,kvc->tvc", w, truth) + rng.normal(0, 0.03, (frames, 468, 3))
    return clip_samples("synthetic", random_similarity(rng, x.astype(np.float32)), w)


def test_fit_recovers_real_shapes_from_tracked_frames(rig):
    """rigfit on a synthetic 'real face' whose jawOpen opens 1.8x the prior's and whose smile differs:
    held-out landmark error drops below the prior's, jawOpen's magnitude is recovered, a shape the clips
    never exercise stays exactly the prior, Left/Right stay mirror images."""
    from dubtool import rigfit

    rng = np.random.default_rng(0)
    prior = rig.deltas.astype(np.float64)
    truth = prior.copy()
    jaw, smile_l, smile_r = index("jawOpen"), index("mouthSmileLeft"), index("mouthSmileRight")
    truth[jaw] *= 1.8
    truth[smile_l] *= 1.5
    truth[smile_r] *= 1.5
    active = [jaw, smile_l, smile_r, index("browInnerUp"), index("eyeBlinkLeft"), index("eyeBlinkRight")]
    train = [_synthetic_clip(rng, rig, truth, 120, active) for _ in range(3)]
    test = [_synthetic_clip(rng, rig, truth, 120, active)]
    vmap, smap = rigfit.mirror_vertex_map(rig.neutral), rigfit.mirror_shape_map()
    g, b = rigfit.normal_equations(train, vmap, smap)
    mask = (np.linalg.norm(prior, axis=2) > 0.003).astype(float)
    never = index("cheekPuff")
    mask[never] = 1.0                                        # free, but never exercised by the clips
    lap = rigfit.graph_laplacian(rig.triangles)
    fitted = rigfit.symmetrize(rigfit.fit_deltas(g, b, prior, mask, np.full(52, 10.0), lap, 2.0), vmap, smap)
    before, after = rigfit.reconstruction_error_mm(prior, test), rigfit.reconstruction_error_mm(fitted, test)
    assert after["lips"] < 0.5 * before["lips"] and after["all"] < before["all"]
    gap = lambda d: np.linalg.norm(d[13] - d[14])            # noqa: E731
    # the prior opens 0.56 of the truth; the fit gets most of the way (the prior strength, 10 frames at
    # weight 1 against ~50 here, keeps it a little short)
    assert 0.85 < gap(fitted[jaw]) / gap(truth[jaw]) < 1.05
    np.testing.assert_allclose(fitted[never], prior[never], atol=1e-6)
    np.testing.assert_allclose(fitted[smile_r], rigfit.mirror_field(fitted[smile_l], vmap), atol=1e-9)
