"""Metrics for prompted tasks: interactive (click) and referring (text) segmentation.

Interactive AP follows UniSeg3D's report: every click prompt yields one mask
and a confidence; a prompt is a true positive at threshold t when its mask's
IoU with the target instance is above t. Prompts ranked by confidence give a
precision/recall curve (recall over all prompts), and AP is the area under
its monotone envelope (VOC all-points); "AP" averages t = 0.50:0.95 step 0.05.

Referring segmentation reports mean IoU over sentences and Acc@0.25 / Acc@0.5,
the fraction of sentences whose mask IoU is above 0.25 / 0.5.
"""

from __future__ import annotations

import numpy as np


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of paired masks. pred, gt: (K, N) bool -> (K,) float; empty-vs-empty counts as 0."""
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred masks {pred.shape} and gt masks {gt.shape} differ")
    inter = (pred & gt).sum(-1)
    union = (pred | gt).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def ap_at_threshold(ious: np.ndarray, confidences: np.ndarray, threshold: float) -> float:
    """VOC all-points AP of prompt predictions at one IoU threshold."""
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
    def __init__(self) -> None:
        self.ious: list[np.ndarray] = []
        self.confidences: list[np.ndarray] = []

    def add_scene(self, pred_masks: np.ndarray, gt_masks: np.ndarray, confidences: np.ndarray) -> None:
        """pred_masks, gt_masks: (K, N) bool per click; confidences: (K,)."""
        ious = mask_iou(pred_masks, gt_masks)
        conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
        if conf.shape != ious.shape:
            raise ValueError(f"confidences has {conf.shape[0]} entries for {ious.shape[0]} clicks")
        self.ious.append(ious)
        self.confidences.append(conf)

    def compute(self) -> dict:
        ious = np.concatenate(self.ious) if self.ious else np.zeros(0)
        conf = np.concatenate(self.confidences) if self.confidences else np.zeros(0)
        thresholds = np.round(np.arange(0.5, 0.951, 0.05), 2)
        return {
            "ap": float(np.mean([ap_at_threshold(ious, conf, t) for t in thresholds])) if len(ious) else
            float("nan"),
            "ap50": ap_at_threshold(ious, conf, 0.5),
            "ap25": ap_at_threshold(ious, conf, 0.25),
            "miou": float(ious.mean()) if len(ious) else float("nan"),
            "num_prompts": int(len(ious)),
        }


class ReferringEvaluator:
    def __init__(self) -> None:
        self.ious: list[np.ndarray] = []

    def add_scene(self, pred_masks: np.ndarray, gt_masks: np.ndarray) -> None:
        """pred_masks, gt_masks: (T, N) bool, one row per sentence."""
        self.ious.append(mask_iou(pred_masks, gt_masks))

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
