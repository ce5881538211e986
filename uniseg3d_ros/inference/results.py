"""Result structures of the inference engine, pure numpy: instances with their geometry.

All geometry is in the map's fixed frame, metres. ``point_indices`` index the rows of the
map snapshot a query ran on (``QueryResult.points``), which are also the rows of the
segmented cloud built from the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InstanceInfo", "QueryResult", "instance_stats", "majority_class", "rank_by_overlap"]


@dataclass
class InstanceInfo:
    """One segmented object. ``point_indices`` (K,) int64 rows of the snapshot, ascending;
    ``centroid``, ``bbox_min``, ``bbox_max`` (3,) float64 [m] in the fixed frame; ``object_id``
    filled by the node from its persistent object map."""

    id: int
    class_id: int
    label: str
    score: float
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    point_indices: np.ndarray
    object_id: int = -1  # the persistent object it hits (uniseg3d_ros.inference.objects), -1 none

    @property
    def point_count(self) -> int:
        return len(self.point_indices)


@dataclass
class QueryResult:
    """Outcome of one query. On failure only ``success``, ``message`` and ``query`` are meaningful.

    ``points`` (N, 3) float32 / ``colors`` (N, 3) float32 [0, 1]: the snapshot the indices refer to;
    ``semantic`` (N,) int64 class index per point (-1 unknown) when the query computed one.
    """

    success: bool
    message: str
    instances: list[InstanceInfo] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    semantic: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    query: str = ""
    map_version: int = -1
    latency_ms: float = 0.0
    cached: bool = False

    @classmethod
    def failure(cls, message: str, query: str) -> QueryResult:
        return cls(False, message, query=query)

    def point_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-point (label (N,) int32 class index, instance (N,) int32 instance id), -1 for none.

        Points inside an instance take its class; others the semantic label (if any).
        Where instances overlap, the earlier (better ranked) one wins."""
        n = len(self.points)
        label = np.full(n, -1, dtype=np.int32)
        if self.semantic is not None and len(self.semantic) == n:
            label[:] = self.semantic
        instance = np.full(n, -1, dtype=np.int32)
        for inst in reversed(self.instances):
            instance[inst.point_indices] = inst.id
            label[inst.point_indices] = inst.class_id
        return label, instance


def instance_stats(
    points: np.ndarray, masks: np.ndarray, classes: Any, scores: Any, labels: list[str], first_id: int = 0
) -> list[InstanceInfo]:
    """masks (M, N) bool over ``points`` (N, 3) -> M :class:`InstanceInfo` with ids first_id.. in order.
    Empty masks get zero centroid/bounds and no indices."""
    pts = np.asarray(points)  # rows are cast to float64 per instance (no copy of the whole cloud)
    masks = np.asarray(masks, dtype=bool).reshape(-1, len(pts))
    if not (len(masks) == len(classes) == len(scores) == len(labels)):
        raise ValueError(
            f"masks/classes/scores/labels lengths differ: {len(masks)}, {len(classes)}, "
            f"{len(scores)}, {len(labels)}"
        )
    out = []
    for k, mask in enumerate(masks):
        idx = np.flatnonzero(mask)
        sel = pts[idx].astype(np.float64)
        zero = np.zeros(3)
        out.append(
            InstanceInfo(
                id=first_id + k,
                class_id=int(classes[k]),
                label=str(labels[k]),
                score=float(scores[k]),
                centroid=sel.mean(0) if len(idx) else zero,
                bbox_min=sel.min(0) if len(idx) else zero,
                bbox_max=sel.max(0) if len(idx) else zero,
                point_indices=idx.astype(np.int64),
            )
        )
    return out


def majority_class(semantic: np.ndarray, mask: np.ndarray) -> int:
    """Most frequent non-negative class of ``semantic`` (N,) inside ``mask`` (N,) bool; -1 if none."""
    vals = np.asarray(semantic)[np.asarray(mask, dtype=bool)]
    vals = vals[vals >= 0]
    return int(np.bincount(vals).argmax()) if len(vals) else -1


def rank_by_overlap(
    mask: np.ndarray, masks: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` masks (M, N) with the highest IoU against ``mask`` (N,) (IoU > 0 only),
    and their ranking scores IoU * score."""
    masks = np.asarray(masks, dtype=bool).reshape(-1, len(mask))
    if k <= 0 or len(masks) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    inter = (masks & mask[None]).sum(1)
    union = (masks | mask[None]).sum(1)
    return rank_by_iou(inter / np.maximum(union, 1), scores, k)


def rank_by_iou(iou: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` candidates with the highest ``iou * scores`` (IoU > 0 only, ties in
    order) and those ranking scores."""
    rank = np.asarray(iou, dtype=np.float64) * np.asarray(scores, dtype=np.float64)
    order = np.argsort(-rank, kind="stable")
    order = order[np.asarray(iou)[order] > 0][:k]
    return order, rank[order]
