"""What the official protocol feeds the prompt metrics: clicks, ground truth, confidences.

UniSeg3D's evaluation (``uniseg3d/transforms_3d.py`` ``PointPromptTest`` mode ``agile``,
``AddSuperPointAnnotations``, ``TextPromptTest``; ``uniseg3d/uniseg3d.py`` ``predict``):

- one click per ground-truth thing instance, at the instance point farthest from the
  background: the scene is quantized to 5 cm voxels (one representative point per occupied
  voxel), and among the instance's representatives the click is the one whose Euclidean
  distance to the nearest non-instance representative is largest (first on ties); an
  instance with no representative gets no click (:func:`farthest_from_background_clicks`);
- prompt ground truth is superpoint-level: a superpoint belongs to the target when more than
  half of its points do (``scatter_mean > 0.5``), and the mask is lifted back to points
  (:func:`superpoint_majority_masks`); both the click targets and the ScanRefer objects;
- a click's confidence is the softmax probability (over the classes and "no object", the
  latter then dropped) of the target's ground-truth class (:func:`gt_class_confidence`).

Not reproducible bit for bit: MinkowskiEngine's ``sparse_quantize`` picks the representative
of each voxel by its own hashing; here it is the lowest-index point of the voxel.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

#: PointPromptTest quantization size (metres)
CLICK_VOXEL = 0.05


def voxel_representatives(points: np.ndarray, voxel: float = CLICK_VOXEL) -> np.ndarray:
    """(N, 3) metres -> (V,) sorted indices: the lowest-index point of each occupied voxel
    (voxel coordinates ``floor(p / voxel)``)."""
    keys = np.floor(np.asarray(points, np.float64) / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def farthest_from_background_clicks(
    points: np.ndarray, instance: np.ndarray, targets: np.ndarray | None = None, voxel: float = CLICK_VOXEL
) -> tuple[np.ndarray, np.ndarray]:
    """One click per target instance at its point farthest from the background.

    points (N, 3) metres; instance (N,) int, negative for none; targets (I',) instance ids
    (default: every id present, ascending). Returns ``(point index (K,), target (K,))`` int64,
    K <= I' (targets without a voxel representative are skipped, as the official transform).
    """
    points = np.asarray(points, np.float64)
    instance = np.asarray(instance)
    if targets is None:
        targets = np.unique(instance[instance >= 0])
    reps = voxel_representatives(points, voxel)
    rep_pts, rep_inst = points[reps], instance[reps]
    clicks, kept = [], []
    for t in np.asarray(targets, np.int64):
        fg = np.flatnonzero(rep_inst == t)
        if len(fg) == 0:
            continue
        bg = rep_inst != t
        if bg.any():
            dist, _ = cKDTree(rep_pts[bg]).query(rep_pts[fg], k=1)
            best = int(np.argmax(dist))
        else:  # the instance fills the scene: no background to measure from
            best = 0
        clicks.append(reps[fg[best]])
        kept.append(t)
    return np.asarray(clicks, np.int64), np.asarray(kept, np.int64)


def superpoint_majority_masks(point_masks: np.ndarray, superpoints: np.ndarray) -> np.ndarray:
    """(K, N) bool point masks -> (K, N) bool: each point takes its superpoint's majority
    (more than half of the superpoint's points in the mask)."""
    point_masks = np.asarray(point_masks, bool)
    sp = np.asarray(superpoints, np.int64)
    if point_masks.ndim != 2 or point_masks.shape[1] != len(sp):
        raise ValueError(f"point_masks must be (K, {len(sp)}), got {point_masks.shape}")
    if point_masks.shape[0] == 0:
        return point_masks.copy()
    s = int(sp.max()) + 1
    sizes = np.bincount(sp, minlength=s)
    counts = np.stack([np.bincount(sp, weights=m, minlength=s) for m in point_masks])  # (K, S)
    return (counts / np.maximum(sizes, 1) > 0.5)[:, sp]


def gt_class_confidence(class_logits: torch.Tensor | np.ndarray, classes: np.ndarray) -> np.ndarray:
    """class_logits (K, C + 1) with "no object" last; classes (K,) ground-truth class index in
    [0, C) -> (K,) float64 softmax probability of that class."""
    logits = torch.as_tensor(class_logits, dtype=torch.float64).detach().cpu()
    classes = torch.as_tensor(np.asarray(classes, np.int64))
    if logits.ndim != 2 or logits.shape[0] != len(classes):
        raise ValueError(f"class_logits {tuple(logits.shape)} do not match {len(classes)} classes")
    if len(classes) and (classes.min() < 0 or classes.max() >= logits.shape[1] - 1):
        raise ValueError(f"classes must lie in [0, {logits.shape[1] - 1}), got {classes.tolist()}")
    prob = logits.softmax(-1)[:, :-1]
    return prob.gather(1, classes[:, None]).squeeze(1).numpy()
