"""Reference of the official UniSeg3D post-processing (``predict`` path, eval), tests only.

Official sources (dk-liang/UniSeg3D @ c272954):
- mask_matrix_nms.py:6-122 (mmdet's matrix NMS on (n, m) masks; called with the SOFT masks,
  i.e. sigmoid probabilities, uniseg3d.py:139-140; filter_thr, nms_pre, max_num all -1).
- uniseg3d.py:93-158 ``predict_by_feat_instance``; :160-175 ``predict_by_feat_semantic``;
  :177-224 ``predict_by_feat_panoptic``; :33-60 click / text masks; :62-91 ``predict_by_feat``.
- config test_cfg: topk_insts 600, inst_score_thr 0.0, pan_score_thr 0.5, npoint_thr 100,
  obj_normalization True, sp_score_thr 0.4, nms True, matrix_nms_kernel 'linear',
  stuff_classes [0, 1]; model inst_test_iou False, pano_test_iou True.

Ties: the official code breaks ties by torch's own ``topk(sorted=False)`` / ``sort`` /
``max`` order; this reference calls the same torch functions in the same order, so with equal
inputs it returns the same order. Exact score ties between different (query, class) pairs do
not occur with continuous random weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class OfficialTestCfg:
    topk_insts: int = 600
    inst_score_thr: float = 0.0
    pan_score_thr: float = 0.5
    npoint_thr: int = 100
    obj_normalization: bool = True
    sp_score_thr: float = 0.4
    nms: bool = True
    matrix_nms_kernel: str = "linear"
    stuff_classes: tuple[int, ...] = field(default=(0, 1))
    inst_test_iou: bool = False
    pano_test_iou: bool = True
    num_classes: int = 18


def matrix_nms(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
               kernel: str = "linear", sigma: float = 2.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """masks (n, m) float, labels (n,), scores (n,) -> decayed scores, labels, masks, kept input
    indices, all sorted by decayed score (descending)."""
    if len(labels) == 0:
        return scores.new_zeros(0), labels.new_zeros(0), masks.new_zeros(0, masks.shape[-1]), \
            labels.new_zeros(0)
    area = masks.sum(1).float()
    scores, order = torch.sort(scores, descending=True)
    keep = order
    masks, area, labels = masks[order], area[order], labels[order]
    n = len(labels)
    flat = masks.reshape(n, -1).float()
    inter = flat @ flat.T
    area_rows = area.expand(n, n)
    iou = (inter / (area_rows + area_rows.T - inter)).triu(diagonal=1)
    same = (labels.expand(n, n) == labels.expand(n, n).T).triu(diagonal=1)
    decay_iou = iou * same
    comp = decay_iou.max(0)[0].expand(n, n).T
    if kernel == "linear":
        coef = ((1 - decay_iou) / (1 - comp)).min(0)[0]
    elif kernel == "gaussian":
        coef = (torch.exp(-sigma * decay_iou ** 2) / torch.exp(-sigma * comp ** 2)).min(0)[0]
    else:
        raise ValueError(f"kernel {kernel!r}")
    scores = scores * coef
    scores, order = torch.sort(scores, descending=True)
    return scores, labels[order], masks[order], keep[order]


def instances(out: dict, superpoints: torch.Tensor, cfg: OfficialTestCfg, score_thr: float,
              use_iou: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """predict_by_feat_instance. out: unified-query ``cls_preds`` (Q, 19), ``masks`` (Q, S),
    ``preds_iou`` (Q, 1). Returns masks (n, N points) bool, labels (n,), scores (n,).
    Like the official code, raises RuntimeError when Q * 18 < topk_insts (600), i.e. a scene
    with fewer than 34 superpoints."""
    cls_preds, pred_masks = out["cls_preds"], out["masks"]
    scores = cls_preds.softmax(-1)[:, :-1]
    if use_iou:
        scores = scores * out["preds_iou"]
    labels = torch.arange(cfg.num_classes).unsqueeze(0).repeat(len(cls_preds), 1).flatten(0, 1)
    scores, idx = scores.flatten(0, 1).topk(cfg.topk_insts, sorted=False)
    labels = labels[idx]
    idx = torch.div(idx, cfg.num_classes, rounding_mode="floor")
    logits = pred_masks[idx]
    probs = logits.sigmoid()
    if cfg.obj_normalization:
        pos = logits > 0
        scores = scores * (probs * pos).sum(1) / (pos.sum(1) + 1e-6)
    if cfg.nms:
        scores, labels, probs, _ = matrix_nms(probs, labels, scores, kernel=cfg.matrix_nms_kernel)
    masks = probs[:, superpoints] > cfg.sp_score_thr
    keep = scores > score_thr
    scores, labels, masks = scores[keep], labels[keep], masks[keep]
    keep = masks.sum(1) > cfg.npoint_thr
    return masks[keep], labels[keep], scores[keep]


def semantic(out: dict, superpoints: torch.Tensor, classes: list[int] | None = None
             ) -> torch.Tensor:
    """predict_by_feat_semantic: (N,) argmax over ``classes`` (default all but background) of
    the unified queries' sem_preds (query i = superpoint i)."""
    sem = out["sem_preds"]
    classes = list(range(sem.shape[1] - 1)) if classes is None else list(classes)
    return sem[:, classes].argmax(dim=1)[superpoints]


def panoptic(out: dict, superpoints: torch.Tensor, cfg: OfficialTestCfg
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """predict_by_feat_panoptic -> (semantic (N,), instance (N,)): stuff points carry their
    stuff class in both maps; thing points class + n_stuff and instance index + n_stuff."""
    sem_map = semantic(out, superpoints, list(cfg.stuff_classes))
    masks, labels, scores = instances(out, superpoints, cfg, cfg.pan_score_thr,
                                      cfg.pano_test_iou)
    if masks.shape[0] == 0:
        return sem_map, sem_map
    scores, order = scores.sort()
    labels, masks = labels[order], masks[order]
    n_stuff = len(cfg.stuff_classes)
    ids = torch.arange(n_stuff, masks.shape[0] + n_stuff).view(-1, 1)
    inst_mask, winner = (ids * masks).max(axis=0)
    sem_things = labels[winner] + n_stuff
    uniq, counts = inst_mask.unique(return_counts=True)
    for inst, pts in zip(uniq, counts):
        if pts <= cfg.npoint_thr and inst != 0:
            inst_mask[inst_mask == inst] = 0
    sem_things[inst_mask == 0] = 0
    sem_map[inst_mask != 0] = 0
    inst_map = sem_map.clone() + inst_mask
    return sem_map + sem_things, inst_map


def prompt_masks(masks: torch.Tensor, superpoints: torch.Tensor, cfg: OfficialTestCfg
                 ) -> torch.Tensor:
    """Click / text query masks (M, S) logits -> (M, N points) bool (uniseg3d.py:33-60)."""
    return masks.sigmoid()[:, superpoints] > cfg.sp_score_thr


def predict(out: dict, superpoints: torch.Tensor, cfg: OfficialTestCfg | None = None) -> dict:
    """The official ``predict`` results for one scene from reference decoder outputs (see
    tests/official_reference.py ``forward``)."""
    cfg = cfg or OfficialTestCfg()
    unified = out["unified"]
    inst_masks, inst_labels, inst_scores = instances(unified, superpoints, cfg,
                                                     cfg.inst_score_thr, cfg.inst_test_iou)
    pan_sem, pan_inst = panoptic(unified, superpoints, cfg)
    return {
        "semantic": semantic(unified, superpoints),
        "instance_masks": inst_masks, "instance_labels": inst_labels,
        "instance_scores": inst_scores,
        "panoptic_semantic": pan_sem, "panoptic_instance": pan_inst,
        "interactive": prompt_masks(out["clicks"]["masks"], superpoints, cfg),
        "referring": prompt_masks(out["texts"]["masks"], superpoints, cfg),
    }
