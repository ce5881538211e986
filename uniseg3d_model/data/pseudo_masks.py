"""Class-agnostic pseudo masks over superpoints: the stand-in for the official SAM3D masks.

The official ``uniseg3d_infos_train.pkl`` carries, per scene, ``sam3d_pseudo_sp_masks``: masks
predicted by SAM3D (github Pointcept/SegmentAnything3D) from the RGB-D frames, as (M, S)
superpoint masks, from which every object annotated in ScanNet20 (instances and stuff) was
removed (the authors, dk-liang/UniSeg3D issue #8). ``AddSuperPointAnnotations(merge_ov=True)``
appends them to the targets flagged ``is_novel``; the criterion matches them with its own
matcher and supervises masks only (BCE + dice, weight 0.1 each; no class).

We cannot run SAM3D here (no frames, no SAM weights), so for our own preparation (raw ScanNet
layout, generated scenes included) :func:`pseudo_masks_from_objects` gives the documented
stand-in: one mask per annotated object whose NYU40 label is NOT one of the ScanNet20 classes
(e.g. ``box``, ``lamp``, ``book``: the objects the 20-class benchmark ignores), over the
superpoints more than half of whose points belong to it (the official ``scatter_mean > 0.5``
rule for superpoint masks). Like the official masks they are class-agnostic and disjoint from
the ScanNet20 objects; unlike SAM3D's they are clean. Real SAM3D masks are read from the
official pkl when present (:mod:`.official_data`).
"""

from __future__ import annotations

import numpy as np

from uniseg3d_model.data.labels import NYU40_TO_SCANNET20


def superpoint_fraction(superpoints: np.ndarray, member: np.ndarray, num_superpoints: int) -> np.ndarray:
    """(S,) share of each superpoint's points where ``member`` (N,) bool is set."""
    total = np.bincount(superpoints, minlength=num_superpoints)
    hits = np.bincount(superpoints, weights=member.astype(np.float64), minlength=num_superpoints)
    return hits / np.maximum(total, 1)


def pseudo_masks_from_objects(superpoints: np.ndarray, object_ids: np.ndarray, nyu40: np.ndarray,
                              num_superpoints: int | None = None) -> np.ndarray:
    """Stand-in pseudo masks (M, S) bool.

    superpoints (N,) int in [0, S); object_ids (N,) int, 0 = no object, else the object's id
    (the official ``instance_mask``: aggregation objectId + 1); nyu40 (N,) int NYU40 label per
    point (0 = unannotated). One row per object (ascending id) whose NYU40 label is not a
    ScanNet20 class and that covers at least one superpoint by majority.
    """
    sp = np.asarray(superpoints, np.int64)
    s = int(sp.max()) + 1 if num_superpoints is None and len(sp) else int(num_superpoints or 0)
    obj = np.asarray(object_ids, np.int64)
    lab = np.asarray(nyu40, np.int64)
    scannet20 = np.array(sorted(NYU40_TO_SCANNET20), np.int64)
    rows = []
    for oid in np.unique(obj[obj > 0]):  # objects (tens), each vectorized over the points
        member = obj == oid
        if np.isin(lab[member][0], scannet20):
            continue
        mask = superpoint_fraction(sp, member, s) > 0.5
        if mask.any():
            rows.append(mask)
    return np.stack(rows) if rows else np.zeros((0, s), bool)
