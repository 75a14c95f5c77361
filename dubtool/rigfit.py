"""Fitting the rig's 52 blendshape deltas to tracked real faces (used by scripts/build_rig.py).

A tracked take gives, per frame, 468 canonical-space landmarks and MediaPipe's 52 ARKit scores.
With each frame similarity-aligned onto the actor's own neutral (`keypoints.neutral_from_track`) and
both landmarks and scores centred per clip (so identity shape and resting offsets cancel), the rig
model is  D_t ~= sum_k w_tk Delta_k.  The fit solves, for all shapes at once,

    min  sum_t |D_t - W_t Delta|^2  +  sum_k lam_k ( |c_k|^2 + mu c_k^T L c_k ),
    Delta_k = P_k + m_k * c_k,

where P_k is the procedural shape (the prior), c_k the correction, L the mesh's graph Laplacian
(membrane smoothness of the correction), m_k a 0..1 per-vertex mask (the shape's own support and,
for Left/Right shapes, its own side) and lam_k the prior strength. Shapes the data barely exercise
get m_k = 0 and stay procedural. Left/right symmetry: every frame is also used mirrored (landmarks
through MediaPipe's symmetric vertex map, x negated, Left/Right scores swapped), and the result is
symmetrised exactly, so mouthSmileRight is the mirror image of mouthSmileLeft.

Pure math: arrays in, arrays out; reading .perf files is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arkit import BLENDSHAPE_NAMES, NUM_BLENDSHAPES
from .extract import STABLE_VERTICES
from .keypoints import neutral_from_track
from .rig import NUM_VERTICES, similarity_align

# Landmark sets the held-out error is reported on (MediaPipe indices).
LIP_VERTICES = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
                78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402, 318, 324)
JAW_VERTICES = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 175, 199, 200, 18, 83, 313,
                201, 421, 208, 428, 32, 262)


@dataclass(frozen=True)
class ClipSamples:
    """One tracked clip ready for fitting: displacements D (T,468,3) from the clip mean after alignment
    onto the actor's neutral, and the scores W (T,52) minus their clip mean."""

    name: str
    displacements: np.ndarray
    weights: np.ndarray
    raw_weights: np.ndarray   # (T,52) the tracked scores themselves (0..1)
    neutral: np.ndarray       # (468,3) the actor's neutral (median frame) the frames were aligned to


def clip_samples(name: str, canonical: np.ndarray, weights: np.ndarray,
                 face_found: np.ndarray | None = None) -> ClipSamples:
    """Align a tracked clip's canonical landmarks (T,>=468,3) onto its own neutral on the skull-fixed
    vertices (extract.STABLE_VERTICES) and centre landmarks and scores (T,>=52) per clip."""
    x = np.asarray(canonical, np.float64)[:, :NUM_VERTICES]
    w = np.asarray(weights, np.float64)[:, :NUM_BLENDSHAPES]
    if face_found is not None and face_found.any():
        x, w = x[face_found], w[face_found]
    neutral = neutral_from_track(x)
    idx = np.asarray(STABLE_VERTICES)
    s, r, t = similarity_align(x[:, idx], neutral[idx], np.ones(len(idx)))
    aligned = s[:, None, None] * np.einsum("tdc,tvc->tvd", r, x) + t[:, None, :]
    return ClipSamples(name, aligned - aligned.mean(0), w - w.mean(0), w, neutral)


def mirror_vertex_map(vertices: np.ndarray, tolerance_cm: float = 0.05) -> np.ndarray:
    """(V,) index of each vertex's mirror image (x -> -x) on a left/right symmetric mesh such as
    MediaPipe's canonical face; ValueError if the mesh is not symmetric to `tolerance_cm`."""
    v = np.asarray(vertices, np.float64)
    m = v * np.array([-1.0, 1.0, 1.0])
    d = np.linalg.norm(v[None, :, :] - m[:, None, :], axis=2)
    vmap = d.argmin(1)
    if d[np.arange(len(v)), vmap].max() > tolerance_cm or not np.array_equal(vmap[vmap], np.arange(len(v))):
        raise ValueError("mesh is not left/right symmetric")
    return vmap


def mirror_shape_map(names=BLENDSHAPE_NAMES) -> np.ndarray:
    """(52,) index of each shape's mirror partner (eyeBlinkLeft <-> eyeBlinkRight, jawLeft <-> jawRight);
    shapes without a side map to themselves."""
    out = []
    for n in names:
        if n.endswith("Left"):
            out.append(names.index(n[:-4] + "Right"))
        elif n.endswith("Right"):
            out.append(names.index(n[:-5] + "Left"))
        else:
            out.append(names.index(n))
    return np.asarray(out)


def mirror_field(d: np.ndarray, vmap: np.ndarray) -> np.ndarray:
    """Mirror vertex displacements (..., V, 3) through the vertex map: x negated."""
    return d[..., vmap, :] * np.array([-1.0, 1.0, 1.0])


def symmetrize(deltas: np.ndarray, vmap: np.ndarray, smap: np.ndarray) -> np.ndarray:
    """Average each shape with its partner's mirror image: the result is exactly left/right symmetric."""
    return 0.5 * (deltas + mirror_field(deltas[smap], vmap))


def graph_laplacian(triangles: np.ndarray, num_vertices: int = NUM_VERTICES):
    """Sparse uniform graph Laplacian (degree - adjacency) of the triangle mesh."""
    from scipy.sparse import coo_matrix, diags

    t = np.asarray(triangles)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices,) * 2)
    adj = (adj + adj.T).tocsr()
    return (diags(np.asarray(adj.sum(1)).ravel()) - adj).tocsr()


def activity(clips: list[ClipSamples], smap: np.ndarray, level: float = 0.1) -> np.ndarray:
    """(52,) fraction of frames in which each shape (or its mirror partner, pooled) exceeds `level`."""
    raw = np.concatenate([c.raw_weights for c in clips])
    frac = (raw > level).mean(0)
    return 0.5 * (frac + frac[smap])


def normal_equations(clips: list[ClipSamples], vmap: np.ndarray, smap: np.ndarray,
                     z_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(G (52,52), B (52,V*3)) = W^T W and W^T D over all frames and their mirror images; the z
    coordinate is weighted by z_weight (monocular depth is the noisiest)."""
    g = np.zeros((NUM_BLENDSHAPES, NUM_BLENDSHAPES))
    b = np.zeros((NUM_BLENDSHAPES, NUM_VERTICES * 3))
    cw = np.array([1.0, 1.0, z_weight])
    for c in clips:
        for w, d in ((c.weights, c.displacements), (c.weights[:, smap], mirror_field(c.displacements, vmap))):
            g += w.T @ w
            b += w.T @ (d * cw).reshape(len(d), -1)
    return g, b


def fit_deltas(g: np.ndarray, b: np.ndarray, prior: np.ndarray, mask: np.ndarray, lam: np.ndarray,
               laplacian, mu: float, z_weight: float = 1.0, tol: float = 1e-7, maxiter: int = 3000) -> np.ndarray:
    """Solve the regularised least-squares fit (module docstring) by preconditioned conjugate gradients.
    g, b: normal equations; prior (52,V,3); mask (52,V) in 0..1; lam (52,) prior strength in frames at
    weight 1; mu: membrane smoothness of the correction. Returns the deltas (52,V,3)."""
    from scipy.sparse.linalg import LinearOperator, cg

    k, v = prior.shape[:2]
    cw = np.array([1.0, 1.0, z_weight])
    gram = np.diag(g)
    m = mask[:, :, None] * np.ones(3)                                    # (K,V,3)
    lam3 = lam[:, None, None]
    deg = np.asarray(laplacian.diagonal())[None, :, None]

    def data_op(c):                                                       # G acting on the shape axis
        return (g @ (m * c).reshape(k, -1)).reshape(k, v, 3) * cw

    def matvec(x):
        c = x.reshape(k, v, 3)
        smooth = np.stack([laplacian @ c[:, :, j].T for j in range(3)], -1).transpose(1, 0, 2)
        return (m * data_op(c) + lam3 * (c + mu * smooth)).ravel()

    rhs = (m * (b.reshape(k, v, 3) - (g @ prior.reshape(k, -1)).reshape(k, v, 3) * cw)).ravel()
    diag = (m ** 2 * gram[:, None, None] * cw + lam3 * (1.0 + mu * deg)).ravel()
    op = LinearOperator((rhs.size,) * 2, matvec=matvec, dtype=np.float64)
    pre = LinearOperator((rhs.size,) * 2, matvec=lambda x: x / diag, dtype=np.float64)
    c, info = cg(op, rhs, M=pre, rtol=tol, maxiter=maxiter)
    if info > 0:
        raise RuntimeError(f"rig fit did not converge in {maxiter} iterations")
    return prior + m * c.reshape(k, v, 3)


def reconstruction_error_mm(deltas: np.ndarray, clips: list[ClipSamples],
                            regions: dict[str, tuple[int, ...]] | None = None) -> dict[str, float]:
    """Mean per-landmark distance (mm) between each clip's aligned, centred landmarks and the rig posed
    with the clip's centred scores (the per-clip mean, i.e. the actor's identity and rest offsets, is
    the only thing taken from the clip itself). Keys: 'all', each region, and 'still' (the same error
    for a rig that never moves, the scale of the motion to be explained)."""
    regions = regions if regions is not None else {"lips": LIP_VERTICES, "jaw": JAW_VERTICES}
    basis = np.asarray(deltas, np.float64).reshape(NUM_BLENDSHAPES, -1)
    err = {"all": [], "still": []} | {r: [] for r in regions}
    for c in clips:
        pred = (c.weights @ basis).reshape(c.displacements.shape)
        e = np.linalg.norm(c.displacements - pred, axis=2) * 10.0         # (T,V) mm
        err["all"].append(e)
        err["still"].append(np.linalg.norm(c.displacements, axis=2) * 10.0)
        for r, idx in regions.items():
            err[r].append(e[:, list(idx)])
    return {key: float(np.concatenate(v).mean()) for key, v in err.items()}
