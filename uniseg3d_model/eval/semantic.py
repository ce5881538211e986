"""Semantic segmentation: confusion matrix and mean IoU with an ignore label.

The rule is mmdet3d's ``evaluation/functional/seg_eval.py`` (UniSeg3D's mIoU): points whose
ground truth is the ignore label are dropped with their predictions; IoU = TP / (TP + FP + FN)
from the summed confusion matrix; a class absent from both ground truth and prediction is
NaN (0/0) and left out of the mean, a class only predicted scores 0 and stays in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uniseg3d_model.data.labels import IGNORE_INDEX


class SemanticEvaluator:
    """Accumulates a (C, C) confusion matrix over scenes.

    Points whose ground truth is ``ignore_index`` (or outside ``[0, C)``) are skipped;
    a prediction outside ``[0, C)`` on a valid point counts as wrong for that point's class.
    Per-class IoU = TP / (TP + FP + FN); classes with no ground truth and no prediction
    are NaN and left out of the mean.
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX) -> None:
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        c = len(self.class_names)
        self.confusion = np.zeros((c, c + 1), dtype=np.int64)  # last column: invalid prediction

    def add_scene(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """gt, pred: (N,) int class indices of one scene."""
        gt = np.asarray(gt).reshape(-1)
        pred = np.asarray(pred).reshape(-1)
        if gt.shape != pred.shape:
            raise ValueError(f"semantic gt and pred differ in length: {gt.shape} vs {pred.shape}")
        c = len(self.class_names)
        valid = (gt != self.ignore_index) & (gt >= 0) & (gt < c)
        g = gt[valid]
        p = pred[valid]
        p = np.where((p >= 0) & (p < c), p, c)
        self.confusion += np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)

    def compute(self) -> dict:
        c = len(self.class_names)
        tp = np.diag(self.confusion[:, :c]).astype(np.float64)
        gt_count = self.confusion.sum(1)
        pred_count = self.confusion[:, :c].sum(0)
        union = gt_count + pred_count - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        total = self.confusion.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
            "accuracy": float(tp.sum() / total) if total else float("nan"),
            "per_class": {name: float(iou[i]) for i, name in enumerate(self.class_names)},
        }
