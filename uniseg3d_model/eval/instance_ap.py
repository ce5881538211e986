"""ScanNet benchmark instance-segmentation AP.

Follows the ScanNet benchmark's definition (``BenchmarkScripts/3d_evaluation/
evaluate_semantic_instance.py``, copied into UniSeg3D as ``uniseg3d/evaluate_semantic_instance.py``):
for every class and every IoU threshold of ``np.append(np.arange(0.5, 0.95, 0.05), 0.25)``
(0.50:0.05:0.90, nine values, plus 0.25; "AP" averages the nine: 0.95 is not one of them):

- ground-truth instances with fewer than ``min_region_size`` (100) points are not evaluated;
  predicted masks with fewer are dropped (distance thresholds are inf/-inf: no-ops);
- each ground-truth instance takes, in prediction order, the first not yet taken prediction
  of its class with IoU strictly above the threshold; every further prediction over the
  threshold on the same instance is a false positive scored min(its, the match's) confidence
  while the match keeps the max (such a prediction stays free for other instances);
- an unmatched prediction (IoU above the threshold with no instance of its class, small
  ones included) is a false positive unless the fraction of its points on void (not on an
  instance of an evaluated class) or on too-small instances of its class exceeds the threshold;
- AP: predictions sorted by confidence, one precision/recall point per distinct confidence
  (recall counts unmatched instances as false negatives), an artificial point of recall 0 /
  precision 1, and the step integration ``dot(precision, convolve(recall, [-.5, 0, .5]))``;
- "ap" is the nan-mean over classes and thresholds (without 0.25); a class with ground truth
  and no prediction scores 0, a class without ground truth is NaN (left out).

Inputs are per scene, over the scene's N points:

- ``gt_instance``  (N,) int: instance index, negative for "no instance";
- ``gt_class``     dict or array: class index of each ground-truth instance;
- ``gt_void``      optional (N,) bool: extra points to treat as unannotated. As in the
  benchmark, every point that is not on a ground-truth instance of an evaluated class
  (walls, floors, unlabelled space) already counts as void;
- predictions: ``masks`` (M, N) bool, ``classes`` (M,) int, ``scores`` (M,).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: the benchmark's overlaps, bit for bit (get_options: ``np.append(np.arange(0.5, 0.95, 0.05), 0.25)``)
OFFICIAL_OVERLAPS: tuple[float, ...] = tuple(float(x) for x in np.append(np.arange(0.5, 0.95, 0.05), 0.25))
#: our earlier choice (COCO-like 0.50:0.95, ten values, plus 0.25); ``--protocol ours`` only
OURS_OVERLAPS: tuple[float, ...] = tuple(float(x) for x in np.round(np.arange(0.5, 0.951, 0.05), 2)) + (0.25,)
IOU_THRESHOLDS = OFFICIAL_OVERLAPS


@dataclass
class _ClassAccumulator:
    """Per (class, threshold) running lists over scenes."""

    y_true: list[np.ndarray] = field(default_factory=list)
    y_score: list[np.ndarray] = field(default_factory=list)
    hard_false_negatives: int = 0
    has_gt: bool = False
    has_pred: bool = False


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_fn: int) -> tuple[float, float, float]:
    """Benchmark-style AP from matched/unmatched predictions (y_true in {0, 1}), with the
    precision and recall of the curve point of best F1 (the benchmark's prec/rec columns)."""
    order = np.argsort(y_score, kind="stable")
    y_score_sorted = y_score[order]
    y_true_sorted = y_true[order]
    cumsum = np.cumsum(y_true_sorted)
    _, unique_idx = np.unique(y_score_sorted, return_index=True)
    num_examples = len(y_score_sorted)
    num_true = cumsum[-1] if num_examples else 0
    cumsum = np.append(cumsum, 0)
    precision = np.zeros(len(unique_idx) + 1)
    recall = np.zeros(len(unique_idx) + 1)
    for i, idx in enumerate(unique_idx):
        below = cumsum[idx - 1]  # true positives ranked below this score (index -1 -> the appended 0)
        tp = num_true - below
        fp = num_examples - idx - tp
        fn = below + hard_fn
        precision[i] = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall[i] = tp / (tp + fn) if tp + fn > 0 else 0.0
    precision[-1] = 1.0  # the artificial first point of the curve: recall 0, precision 1
    recall[-1] = 0.0
    best = int(np.argmax(2 * precision * recall / (precision + recall + 1e-4)))
    padded = np.concatenate([[recall[0]], recall, [0.0]])
    step_widths = np.convolve(padded, [-0.5, 0.0, 0.5], "valid")
    return float(np.dot(precision, step_widths)), float(precision[best]), float(recall[best])


class InstanceAPEvaluator:
    """Accumulates scenes, then reports AP, AP50, AP25 per class and mean.

    Args:
        class_names: names of the evaluated (thing) classes; class indices in
            inputs index into this list, others are ignored.
        min_region_size: ScanNet uses 100 mesh vertices (``min_region_sizes``).
        overlaps: IoU thresholds; :data:`OFFICIAL_OVERLAPS` (default) or :data:`OURS_OVERLAPS`.
            Must contain 0.5 and 0.25; "ap" averages all but 0.25.
    """

    def __init__(self, class_names: Sequence[str], min_region_size: int = 100,
                 overlaps: Sequence[float] = OFFICIAL_OVERLAPS) -> None:
        self.class_names = list(class_names)
        self.min_region_size = int(min_region_size)
        self.overlaps = tuple(float(t) for t in overlaps)
        if not (np.isclose(self.overlaps, 0.5).any() and np.isclose(self.overlaps, 0.25).any()):
            raise ValueError(f"overlaps must contain 0.5 and 0.25, got {self.overlaps}")
        self._acc = {
            (c, t): _ClassAccumulator() for c in range(len(self.class_names)) for t in self.overlaps
        }
        self.num_scenes = 0

    def add_scene(
        self,
        gt_instance: np.ndarray,
        gt_class: np.ndarray | dict,
        pred_masks: np.ndarray,
        pred_classes: np.ndarray,
        pred_scores: np.ndarray,
        gt_void: np.ndarray | None = None,
    ) -> None:
        gt_instance = np.asarray(gt_instance)
        n = gt_instance.shape[0]
        pred_masks = np.asarray(pred_masks, dtype=bool).reshape(-1, n)
        pred_classes = np.asarray(pred_classes).reshape(-1)
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if not (len(pred_masks) == len(pred_classes) == len(pred_scores)):
            raise ValueError(
                f"pred_masks/pred_classes/pred_scores disagree: {len(pred_masks)}, "
                f"{len(pred_classes)}, {len(pred_scores)}"
            )
        extra_void = np.zeros(n, bool) if gt_void is None else np.asarray(gt_void, bool)
        if extra_void.shape != (n,):
            raise ValueError(f"gt_void must be ({n},), got {extra_void.shape}")
        gt_ids = np.unique(gt_instance[gt_instance >= 0])
        if isinstance(gt_class, dict):
            classes_of_gt = np.array([gt_class[int(i)] for i in gt_ids], dtype=np.int64)
        else:
            classes_of_gt = np.asarray(gt_class, dtype=np.int64)[gt_ids] if len(gt_ids) else np.zeros(0, int)
        gt_masks = gt_instance[None, :] == gt_ids[:, None]  # (G, N)
        evaluated = (classes_of_gt >= 0) & (classes_of_gt < len(self.class_names))
        void = extra_void | ~gt_masks[evaluated].any(0)
        gt_sizes = gt_masks.sum(1)

        keep = pred_masks.sum(1) >= self.min_region_size
        pred_masks, pred_classes, pred_scores = pred_masks[keep], pred_classes[keep], pred_scores[keep]
        pred_sizes = pred_masks.sum(1)
        # float32 BLAS matmul: counts stay exact below 2**24 points
        inter = (pred_masks.astype(np.float32) @ gt_masks.T.astype(np.float32)).astype(np.int64)  # (M, G)
        void_inter = pred_masks[:, void].sum(1)
        self.num_scenes += 1

        for c in range(len(self.class_names)):
            g_sel = np.flatnonzero(classes_of_gt == c)
            p_sel = np.flatnonzero(pred_classes == c)
            g_valid = g_sel[gt_sizes[g_sel] >= self.min_region_size]
            for thr in self.overlaps:
                acc = self._acc[(c, thr)]
                acc.has_gt |= len(g_valid) > 0
                acc.has_pred |= len(p_sel) > 0
                self._match(
                    acc, thr, g_valid, g_sel, p_sel, inter, gt_sizes, pred_sizes, pred_scores, void_inter
                )

    def _match(self, acc, thr, g_valid, g_all, p_sel, inter, gt_sizes, pred_sizes, pred_scores, void_inter):
        cur_true = np.ones(len(g_valid))
        cur_score = np.full(len(g_valid), -np.inf)
        cur_match = np.zeros(len(g_valid), bool)
        extra_true, extra_score = [], []
        visited = np.zeros(len(pred_scores), bool)
        for gi, g in enumerate(g_valid):
            found = False
            for p in p_sel:
                if visited[p] or inter[p, g] == 0:
                    continue
                iou = inter[p, g] / (gt_sizes[g] + pred_sizes[p] - inter[p, g])
                if iou > thr:  # strict, as the benchmark
                    conf = pred_scores[p]
                    if cur_match[gi]:
                        # a second prediction on a matched instance: keep the best, count the other false
                        extra_true.append(0.0)
                        extra_score.append(min(cur_score[gi], conf))
                        cur_score[gi] = max(cur_score[gi], conf)
                    else:
                        found = True
                        cur_match[gi] = True
                        cur_score[gi] = conf
                        visited[p] = True
            if not found:
                acc.hard_false_negatives += 1
        y_true = list(cur_true[cur_match]) + extra_true
        y_score = list(cur_score[cur_match]) + extra_score
        small = g_all[gt_sizes[g_all] < self.min_region_size]
        for p in p_sel:
            # any instance of the class counts here, small ones included (as the benchmark)
            ious = inter[p, g_all] / np.maximum(gt_sizes[g_all] + pred_sizes[p] - inter[p, g_all], 1)
            if np.any(ious > thr):
                continue
            ignored = void_inter[p] + inter[p, small].sum()
            if ignored / pred_sizes[p] <= thr:  # not mostly ignored space: a false positive
                y_true.append(0.0)
                y_score.append(pred_scores[p])
        acc.y_true.append(np.asarray(y_true, dtype=np.float64))
        acc.y_score.append(np.asarray(y_score, dtype=np.float64))

    def compute(self) -> dict:
        """Returns {"ap", "ap50", "ap25", "prec50", "rec50", "per_class": {name: {...}}}; NaN where
        a class has no ground truth (compute_averages: nanmean over classes and thresholds)."""
        shape = (len(self.class_names), len(self.overlaps))
        table, prec, rec = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
        for (c, t), acc in self._acc.items():
            j = self.overlaps.index(t)
            if acc.has_gt and acc.has_pred:
                table[c, j], prec[c, j], rec[c, j] = _average_precision(
                    np.concatenate(acc.y_true), np.concatenate(acc.y_score), acc.hard_false_negatives
                )
            elif acc.has_gt:
                table[c, j] = prec[c, j] = rec[c, j] = 0.0
        thr = np.asarray(self.overlaps)
        i50 = int(np.flatnonzero(np.isclose(thr, 0.5))[0])
        i25 = int(np.flatnonzero(np.isclose(thr, 0.25))[0])
        but25 = ~np.isclose(thr, 0.25)
        # a class row is all-NaN or NaN-free (has_gt/has_pred do not depend on the threshold)
        per_class_ap = table[:, but25].mean(1)

        def _mean(values: np.ndarray) -> float:
            values = values[~np.isnan(values)]
            return float(values.mean()) if len(values) else float("nan")

        per_class = {
            name: {"ap": float(per_class_ap[c]), "ap50": float(table[c, i50]), "ap25": float(table[c, i25]),
                   "prec50": float(prec[c, i50]), "rec50": float(rec[c, i50])}
            for c, name in enumerate(self.class_names)
        }
        return {
            "ap": _mean(table[:, but25].ravel()),
            "ap50": _mean(table[:, i50]),
            "ap25": _mean(table[:, i25]),
            "prec50": _mean(prec[:, i50]),
            "rec50": _mean(rec[:, i50]),
            "per_class": per_class,
        }


def split_ap(result: dict, splits: dict[str, Sequence[str]]) -> dict[str, float]:
    """Mean AP over named subsets of classes, e.g. ScanNet200's head / common / tail.

    ``result`` is :meth:`InstanceAPEvaluator.compute`'s output; classes absent from it
    or with NaN AP are skipped.
    """
    out = {}
    for split, names in splits.items():
        values = [result["per_class"][n]["ap"] for n in names if n in result["per_class"]]
        values = [v for v in values if not np.isnan(v)]
        out[split] = float(np.mean(values)) if values else float("nan")
    return out
