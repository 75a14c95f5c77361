"""Frame-level keypoints that carry the upper-face performance into the generator (KM-Speaker's
keypoint conditioning).

Keypoints are a fixed subset of the canonical face mesh vertices (MediaPipe topology: the same
indices in tracked landmarks and in the rig), taken in head-pose-free canonical space and expressed
as displacement from the actor's neutral face, so identity shape cancels and only motion remains.
Only brow, eyelid and glabella points are used: no lip or jaw point reaches the model, which is
what keeps lip motion coming from the audio alone. Head and eye rotations (radians) are appended.
"""

from __future__ import annotations

import numpy as np

from .arkit import EYE_ROT_IDX, HEAD_IDX

# MediaPipe face-mesh indices (subject's right = image left).
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
GLABELLA = (9, 8, 151)
UPPER_FACE_VERTICES: tuple[int, ...] = RIGHT_BROW + LEFT_BROW + RIGHT_EYE + LEFT_EYE + GLABELLA
NUM_KEYPOINTS = len(UPPER_FACE_VERTICES)
KEYPOINT_DIM = NUM_KEYPOINTS * 3 + 6 + 3  # xyz displacements + eye rotations + head rotations

# Displacements are in canonical units (~cm); scaled so typical brow raises are O(1) for the network.
DISPLACEMENT_SCALE = 4.0


def neutral_from_track(canonical: np.ndarray, face_found: np.ndarray | None = None) -> np.ndarray:
    """Per-actor neutral: the per-vertex median over tracked frames (actors rest most of a take)."""
    pts = canonical if face_found is None or not face_found.any() else canonical[face_found]
    return np.median(pts, axis=0)


def keypoint_features(canonical: np.ndarray, neutral: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(T, KEYPOINT_DIM) float32 conditioning from canonical vertices (T, >=468, 3), the actor's neutral
    (>=468, 3) and the 61-channel values (T, 61) whose head/eye rotations are appended."""
    idx = np.asarray(UPPER_FACE_VERTICES)
    disp = (canonical[:, idx, :] - neutral[None, idx, :]) * DISPLACEMENT_SCALE
    t = canonical.shape[0]
    return np.concatenate([disp.reshape(t, -1), rotations[:, EYE_ROT_IDX], rotations[:, HEAD_IDX]],
                          axis=1).astype(np.float32)


def keypoints_from_curves(values61: np.ndarray, rig=None, neutral: np.ndarray | None = None) -> np.ndarray:
    """(T, KEYPOINT_DIM) keypoints made by posing the rig with the upper-face channels of `values61`
    (T, 61) — lower-face channels are ignored, so no lip motion can reach the model.

    This is how tracked source curves or keyframe curves become conditioning without a tracker/rig
    domain gap. `rig` is anything with `.neutral (468,3)` and `.deltas (52,468,3)` (default: the
    shipped rig); `neutral` (>=468,3) is an actor's neutral face: the rig's deltas are scaled by its
    size relative to the rig's neutral, since a bigger face moves its brows further."""
    from .arkit import NUM_CHANNELS, UPPER_IDX
    from .errors import InputError

    v = np.asarray(values61, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != NUM_CHANNELS:
        raise InputError(f"curves must be frames x {NUM_CHANNELS}, got shape {v.shape}")
    if rig is None:
        from .rig import load_rig

        rig = load_rig()
    idx = np.asarray(UPPER_FACE_VERTICES)
    deltas = np.asarray(rig.deltas, np.float32)[UPPER_IDX][:, idx, :]  # (n_upper, K, 3)
    if neutral is not None:
        deltas = deltas * _face_scale(np.asarray(neutral, np.float32), np.asarray(rig.neutral, np.float32))
    disp = np.tensordot(v[:, UPPER_IDX], deltas, axes=(1, 0)) * DISPLACEMENT_SCALE  # (T, K, 3)
    return np.concatenate([disp.reshape(len(v), -1), v[:, EYE_ROT_IDX], v[:, HEAD_IDX]], axis=1).astype(np.float32)


def _face_scale(neutral: np.ndarray, reference: np.ndarray) -> float:
    """Ratio of RMS distances to the centroid (face size) of two neutral meshes, over the first 468 vertices."""
    def size(m):
        m = m[:468]
        return float(np.sqrt(((m - m.mean(axis=0)) ** 2).sum(axis=1).mean()))

    return size(neutral) / max(size(reference), 1e-6)
