"""Metrics for prompted tasks: interactive (click) and referring (text) segmentation.

Both follow UniSeg3D's ``uniseg3d/unified_metric.py`` (``PromptSupportedUnifiedSegMetric``):

- a prompt's IoU is ``|pred & gt| / (|pred | gt| + eps)`` over points (``get_iou``, eps 1e-8
  in the official protocol);
- interactive AP at threshold t (``cal_ap_thr``): every click of the split is one detection,
  true when its IoU is strictly above t, ranked by its confidence; precision/recall with
  recall over all clicks, then the VOC all-points area under the monotone precision envelope;
  "AP" averages the ten thresholds ``0.5 + 0.05 * i``, i = 0..9 (0.95 included, ``cal_ap``);
  mIoU is the plain mean IoU over clicks;
- referring: mean IoU over sentences and Acc@0.25 / Acc@0.5, the fraction of sentences with
  IoU strictly above 0.25 / 0.5.

Which masks enter (superpoint-level ground truth, the click, the confidence) is the
protocol's choice: see :mod:`uniseg3d_model.eval.prompt_protocol`.
"""

from __future__ import annotations

import numpy as np

#: interactive AP thresholds, as ``cal_ap`` builds them (float values bit for bit)
INTERACTIVE_THRESHOLDS: tuple[float, ...] = tuple(0.5 + 0.05 * i for i in range(10))


def mask_iou(pred: np.ndarray, gt: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """IoU of paired masks. pred, gt: (K, N) bool -> (K,) float; empty-vs-empty counts as 0.
    ``eps`` > 0 divides by ``union + eps`` as the official ``get_iou``."""
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred masks {pred.shape} and gt masks {gt.shape} differ")
    inter = (pred & gt).sum(-1)
    union = (pred | gt).sum(-1)
    if eps > 0:
        return inter / (union + eps)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def ap_at_threshold(ious: np.ndarray, confidences: np.ndarray, threshold: float) -> float:
    """VOC all-points AP of prompt predictions at one IoU threshold (``cal_ap_thr``). Ties in
    confidence keep their input order (stable sort; the official numpy quicksort leaves it open)."""
    ious = np.asarray(ious, dtype=np.float64)
    if len(ious) == 0:
        return float("nan")
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    hit = ious[order] > threshold
    tp = np.cumsum(hit)
    fp = np.cumsum(~hit)
    precision = tp / (tp + fp)
    recall = tp / len(hit)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    return float(np.sum((mrec[1:] - mrec[:-1]) * mpre[1:]))


class InteractiveEvaluator:
    """``eps``: IoU denominator term (official 1e-8, ours 0)."""

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = float(eps)
        self.ious: list[np.ndarray] = []
        self.confidences: list[np.ndarray] = []

    def add_scene(self, pred_masks: np.ndarray, gt_masks: np.ndarray, confidences: np.ndarray) -> None:
        """pred_masks, gt_masks: (K, N) bool per click; confidences: (K,)."""
        ious = mask_iou(pred_masks, gt_masks, self.eps)
        conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
        if conf.shape != ious.shape:
            raise ValueError(f"confidences has {conf.shape[0]} entries for {ious.shape[0]} clicks")
        self.ious.append(ious)
        self.confidences.append(conf)

    def compute(self) -> dict:
        ious = np.concatenate(self.ious) if self.ious else np.zeros(0)
        conf = np.concatenate(self.confidences) if self.confidences else np.zeros(0)
        return {
            "ap": float(np.mean([ap_at_threshold(ious, conf, t) for t in INTERACTIVE_THRESHOLDS]))
            if len(ious) else float("nan"),
            "ap50": ap_at_threshold(ious, conf, 0.5),
            "ap25": ap_at_threshold(ious, conf, 0.25),
            "miou": float(ious.mean()) if len(ious) else float("nan"),
            "num_prompts": int(len(ious)),
        }


class ReferringEvaluator:
    """``eps``: IoU denominator term (official 1e-8, ours 0)."""

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = float(eps)
        self.ious: list[np.ndarray] = []

    def add_scene(self, pred_masks: np.ndarray, gt_masks: np.ndarray) -> None:
        """pred_masks, gt_masks: (T, N) bool, one row per sentence."""
        self.ious.append(mask_iou(pred_masks, gt_masks, self.eps))

    def compute(self) -> dict:
        ious = np.concatenate(self.ious) if self.ious else np.zeros(0)
        if not len(ious):
            return {"miou": float("nan"), "acc25": float("nan"), "acc50": float("nan"), "num_sentences": 0}
        return {
            "miou": float(ious.mean()),
            "acc25": float((ious > 0.25).mean()),
            "acc50": float((ious > 0.5).mean()),
            "num_sentences": int(len(ious)),
        }
