"""Superpoint-level training targets built from a labelled :class:`SceneSample`.

``mask_rule="majority"`` (ours): a superpoint takes the majority label of its points: the
majority instance (points with no instance vote for "none") decides instance membership, the
majority of the *labelled* points decides its semantic class. ``mask_rule="half"`` (official,
transforms_3d.py ``AddSuperPointAnnotations`` ~355-372): a superpoint belongs to an instance /
class when MORE than half of all its points do (``scatter_mean > 0.5``), else to none / ignore.
Targets for the unified queries are the thing instances plus one segment per stuff class
present (Mask2Former-style panoptic targets; ``stuff_ids=[]`` gives the official instance-only
targets, stuff being the semantic head's job).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uniseg3d_model.data.labels import IGNORE_INDEX
from uniseg3d_model.structures import SceneSample


@dataclass
class SceneTargets:
    """masks (G, S) float {0, 1}; labels (G,) int64 vocabulary index; instance_to_target (I,)
    int64 row of each scene instance in ``masks`` (-1 when it covers no superpoint);
    sp_semantic (S,) int64 majority class per superpoint (IGNORE_INDEX when unlabelled)."""

    masks: torch.Tensor
    labels: torch.Tensor
    instance_to_target: torch.Tensor
    sp_semantic: torch.Tensor

    @property
    def num_targets(self) -> int:
        return int(self.masks.shape[0])


def _majority(sp: torch.Tensor, labels: torch.Tensor, num_sp: int, num_labels: int) -> torch.Tensor:
    """(S,) argmax of the label histogram per superpoint; labels must be in [0, num_labels)."""
    hist = torch.bincount(sp * num_labels + labels, minlength=num_sp * num_labels).view(num_sp, num_labels)
    return hist.argmax(dim=1)


def build_targets(
    scene: SceneSample, num_superpoints: int, num_classes: int, stuff_ids: list[int], device: torch.device,
    mask_rule: str = "majority",
) -> SceneTargets:
    """Targets of one scene. ``num_classes`` is the vocabulary size V (labels must be < V);
    ``stuff_ids`` are the vocabulary indices of stuff classes; ``mask_rule``: see module doc."""
    if mask_rule not in ("majority", "half"):
        raise ValueError(f"mask_rule must be 'majority' or 'half', got {mask_rule!r}")
    if scene.instance is None or scene.instance_class is None or scene.semantic is None:
        raise ValueError(f"scene {scene.scene_id!r}: training needs semantic, instance and instance_class")
    sp = torch.as_tensor(np.asarray(scene.superpoints), dtype=torch.long, device=device)
    inst = torch.as_tensor(np.asarray(scene.instance), dtype=torch.long, device=device)
    sem = torch.as_tensor(np.asarray(scene.semantic), dtype=torch.long, device=device)
    inst_cls = torch.as_tensor(np.asarray(scene.instance_class), dtype=torch.long, device=device).reshape(-1)
    n_inst = len(inst_cls)
    s = num_superpoints

    bad = (inst != IGNORE_INDEX) & ((inst < 0) | (inst >= n_inst))
    if bool(bad.any()):
        raise ValueError(f"scene {scene.scene_id!r}: instance ids must be in [0, {n_inst}) or {IGNORE_INDEX}")
    bad = (sem != IGNORE_INDEX) & ((sem < 0) | (sem >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"scene {scene.scene_id!r}: semantic labels must be in [0, {num_classes}) or ignore")
    if n_inst and (int(inst_cls.min()) < 0 or int(inst_cls.max()) >= num_classes):
        raise ValueError(f"scene {scene.scene_id!r}: instance_class values must be in [0, {num_classes})")

    # instance membership: column 0 = "no instance"
    inst_col = torch.where(inst == IGNORE_INDEX, 0, inst + 1)
    sp_inst = _majority(sp, inst_col, s, n_inst + 1) - 1  # (S,)
    # semantic: column num_classes = unlabelled, which only wins when no point is labelled
    sem_col = torch.where(sem == IGNORE_INDEX, num_classes, sem)
    hist = torch.bincount(sp * (num_classes + 1) + sem_col, minlength=s * (num_classes + 1))
    hist = hist.view(s, num_classes + 1)
    labelled = hist[:, :num_classes]
    sp_sem = torch.where(
        labelled.sum(1) > 0, labelled.argmax(1), torch.full_like(labelled[:, 0], IGNORE_INDEX)
    )
    if mask_rule == "half":  # more than half of ALL the superpoint's points, else none / ignore
        size = torch.bincount(sp, minlength=s).clamp_min(1)
        ihist = torch.bincount(sp * (n_inst + 1) + inst_col, minlength=s * (n_inst + 1)).view(s, n_inst + 1)
        best = ihist[:, 1:].max(1) if n_inst else None
        sp_inst = torch.full_like(sp_inst, -1) if best is None else torch.where(
            2 * best.values > size, best.indices, torch.full_like(sp_inst, -1))
        top = labelled.max(1)
        sp_sem = torch.where(2 * top.values > size, top.indices, torch.full_like(sp_sem, IGNORE_INDEX))

    inst_masks = sp_inst[None, :] == torch.arange(n_inst, device=device)[:, None]  # (I, S)
    keep = inst_masks.any(dim=1)
    instance_to_target = torch.full((n_inst,), -1, dtype=torch.long, device=device)
    instance_to_target[keep] = torch.arange(int(keep.sum()), device=device)
    masks = [inst_masks[keep]]
    labels = [inst_cls[keep]]
    for c in stuff_ids:
        m = sp_sem == c
        if bool(m.any()):
            masks.append(m[None])
            labels.append(torch.tensor([c], dtype=torch.long, device=device))
    return SceneTargets(
        masks=torch.cat(masks).float(),
        labels=torch.cat(labels),
        instance_to_target=instance_to_target,
        sp_semantic=sp_sem,
    )
