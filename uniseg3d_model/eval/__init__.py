"""Evaluation metrics for all six UniSeg3D tasks (pure numpy).

- :class:`InstanceAPEvaluator` -- ScanNet benchmark instance AP / AP50 / AP25
  (also used for open-vocabulary AP on ScanNet200 classes, see :func:`split_ap`);
- :class:`SemanticEvaluator` -- mIoU with an ignore label;
- :class:`PanopticEvaluator` -- PQ / SQ / RQ for all, things and stuff;
- :class:`InteractiveEvaluator` -- click-prompt AP as UniSeg3D reports it;
- :class:`ReferringEvaluator` -- referring mIoU and Acc@0.25 / Acc@0.5.
"""

from uniseg3d_model.eval.instance_ap import IOU_THRESHOLDS, InstanceAPEvaluator, split_ap
from uniseg3d_model.eval.panoptic import PanopticEvaluator
from uniseg3d_model.eval.prompts import InteractiveEvaluator, ReferringEvaluator, ap_at_threshold, mask_iou
from uniseg3d_model.eval.semantic import SemanticEvaluator

__all__ = [
    "IOU_THRESHOLDS",
    "InstanceAPEvaluator",
    "InteractiveEvaluator",
    "PanopticEvaluator",
    "ReferringEvaluator",
    "SemanticEvaluator",
    "ap_at_threshold",
    "mask_iou",
    "split_ap",
]
