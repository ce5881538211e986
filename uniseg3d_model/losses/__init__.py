"""Training losses for UniSeg3D: Hungarian matching, mask/class/score losses, prompt
supervision, inter-task knowledge distillation and vision-text contrastive learning."""

from uniseg3d_model.losses.criterion import LossConfig, UniSeg3DCriterion, build_criterion
from uniseg3d_model.losses.matcher import hungarian_match
from uniseg3d_model.losses.targets import SceneTargets, build_targets

__all__ = ["LossConfig", "SceneTargets", "UniSeg3DCriterion", "build_criterion", "build_targets",
           "hungarian_match"]
