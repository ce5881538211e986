"""Evaluation metrics for all six UniSeg3D tasks (pure numpy), as the official code computes them.

- :class:`InstanceAPEvaluator` -- ScanNet benchmark instance AP / AP50 / AP25
  (also used for open-vocabulary AP on ScanNet200 classes, see :func:`split_ap`);
- :class:`SemanticEvaluator` -- mIoU with an ignore label (mmdet3d ``seg_eval``);
- :class:`PanopticEvaluator` -- PQ / SQ / RQ for all, things and stuff (mmdet3d
  ``panoptic_seg_eval``; COCO rule as an option);
- :class:`InteractiveEvaluator` -- click-prompt AP as UniSeg3D's ``unified_metric.py``;
- :class:`ReferringEvaluator` -- referring mIoU and Acc@0.25 / Acc@0.5;
- :mod:`.prompt_protocol` -- the official clicks, superpoint-level prompt ground truth and
  click confidence.

docs/evaluation.md maps each metric to its official source.
"""

from uniseg3d_model.eval.instance_ap import (
    IOU_THRESHOLDS,
    OFFICIAL_OVERLAPS,
    OURS_OVERLAPS,
    InstanceAPEvaluator,
    split_ap,
)
from uniseg3d_model.eval.panoptic import PanopticEvaluator
from uniseg3d_model.eval.prompt_protocol import (
    farthest_from_background_clicks,
    gt_class_confidence,
    superpoint_majority_masks,
)
from uniseg3d_model.eval.prompts import (
    INTERACTIVE_THRESHOLDS,
    InteractiveEvaluator,
    ReferringEvaluator,
    ap_at_threshold,
    mask_iou,
)
from uniseg3d_model.eval.semantic import SemanticEvaluator

__all__ = [
    "INTERACTIVE_THRESHOLDS",
    "IOU_THRESHOLDS",
    "OFFICIAL_OVERLAPS",
    "OURS_OVERLAPS",
    "InstanceAPEvaluator",
    "InteractiveEvaluator",
    "PanopticEvaluator",
    "ReferringEvaluator",
    "SemanticEvaluator",
    "ap_at_threshold",
    "farthest_from_background_clicks",
    "gt_class_confidence",
    "mask_iou",
    "split_ap",
    "superpoint_majority_masks",
]
