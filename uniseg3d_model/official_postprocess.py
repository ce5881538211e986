"""The released UniSeg3D's post-processing (``uniseg3d.py`` ``predict_by_feat_*``,
``mask_matrix_nms.py``, the config's ``test_cfg``), on tensors.

:mod:`uniseg3d_model.postprocess` calls these for outputs whose ``protocol`` is "official"
and wraps the results in its prediction containers. Shapes: Q queries, S superpoints,
N points, V vocabulary classes; class columns are vocabulary indices throughout (the official
code's thing-index labels ``l`` are our ``thing_columns[l]``). The ``decoded_*`` functions at
the end apply them to a :class:`DecoderOutput` and return :mod:`predictions` containers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from uniseg3d_model.encoding import DecoderOutput
from uniseg3d_model.predictions import InstancePrediction, PanopticPrediction
from uniseg3d_model.structures import SceneSample


@dataclass(frozen=True)
class OfficialTestConfig:
    """``test_cfg`` of ``uniseg3d_1xb4_scannet_scanrefer_scannet200_unified.py`` plus the model's
    ``inst_test_iou`` / ``pano_test_iou``. Mask/point thresholds are strict (``>``) as there."""

    topk_insts: int = 600
    inst_score_thr: float = 0.0
    pan_score_thr: float = 0.5
    npoint_thr: int = 100
    obj_normalization: bool = True
    sp_score_thr: float = 0.4
    nms: bool = True
    inst_test_iou: bool = False
    pano_test_iou: bool = True


TEST_CFG = OfficialTestConfig()


def mask_matrix_nms_linear(
    masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matrix NMS with the linear kernel (mmdet's ``mask_matrix_nms``, no pre/post filtering) on
    soft masks: masks (M, S) float, labels (M,), scores (M,). IoU of the soft masks (sum of
    products over unweighted superpoints), class-aware. Returns (scores, labels, masks,
    keep_inds) sorted by the decayed score, descending."""
    if len(labels) == 0:
        empty = masks.new_zeros(0, masks.shape[-1])
        return scores.new_zeros(0), labels.new_zeros(0), empty, labels.new_zeros(0)
    area = masks.sum(1).float()
    scores, order = torch.sort(scores, descending=True)
    masks, area, labels = masks[order], area[order], labels[order]
    m = len(labels)
    flat = masks.reshape(m, -1).float()
    inter = flat @ flat.t()
    ex_area = area.expand(m, m)
    iou = (inter / (ex_area + ex_area.t() - inter)).triu(diagonal=1)
    ex_labels = labels.expand(m, m)
    same = (ex_labels == ex_labels.t()).triu(diagonal=1)
    decay_iou = iou * same
    compensate = decay_iou.max(0).values.expand(m, m).t()
    decay = ((1 - decay_iou) / (1 - compensate)).min(0).values
    scores = scores * decay
    scores, again = torch.sort(scores, descending=True)
    return scores, labels[again], masks[again], order[again]


def instances(
    class_logits: torch.Tensor,
    masks: torch.Tensor,
    iou: torch.Tensor | None,
    class_columns: list[int],
    superpoints: torch.Tensor,
    score_thr: float,
    use_iou: bool,
    cfg: OfficialTestConfig = TEST_CFG,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``predict_by_feat_instance``: class_logits (Q, V + 1) (last column background), masks
    (Q, S) logits, iou (Q,) raw IoU or None, class_columns the scored vocabulary columns,
    superpoints (N,). Score = softmax over [columns, background] (x raw IoU when ``use_iou``),
    top ``topk_insts`` (query, class) pairs, x mask score (object normalisation), linear
    matrix NMS on the sigmoid masks, score > ``score_thr``, point mask = sigmoid >
    ``sp_score_thr``, more than ``npoint_thr`` points.

    Returns point masks (M, N) bool, vocabulary classes (M,) int64, scores (M,), in the order
    the matrix NMS leaves them (descending score)."""
    cols = torch.as_tensor(list(class_columns) + [class_logits.shape[1] - 1], device=class_logits.device)
    probs = class_logits[:, cols].softmax(-1)[:, :-1]
    c = probs.shape[1]
    if use_iou and iou is not None:
        probs = probs * iou.reshape(-1, 1)
    labels = torch.arange(c, device=probs.device).repeat(len(probs))
    k = min(cfg.topk_insts, probs.numel())
    scores, idx = probs.flatten().topk(k, sorted=False)
    labels = labels[idx]
    mask_logits = masks[torch.div(idx, c, rounding_mode="floor")]
    soft = mask_logits.sigmoid()
    if cfg.obj_normalization:
        pos = mask_logits > 0
        scores = scores * (soft * pos).sum(1) / (pos.sum(1) + 1e-6)
    if cfg.nms:
        scores, labels, soft, _ = mask_matrix_nms_linear(soft, labels, scores)
    # the official thresholds a (K, N) point mask; the same masks counted per superpoint (their
    # point counts from the superpoint sizes) give the same selection, and only the kept masks
    # are expanded to points (K x N was most of an open-vocabulary query's time)
    sp_masks = soft > cfg.sp_score_thr
    sizes = torch.bincount(superpoints, minlength=soft.shape[1])
    keep = (scores > score_thr) & ((sp_masks.long() * sizes).sum(1) > cfg.npoint_thr)
    classes = cols[:-1][labels[keep]]
    return sp_masks[keep][:, superpoints], classes, scores[keep]


def superpoint_semantic_logits(
    sem_logits: torch.Tensor, masks: torch.Tensor, query_superpoints: torch.Tensor, num_superpoints: int
) -> torch.Tensor:
    """(S, V + 1) semantic logits per superpoint. Officially every superpoint is a query and
    takes its own query's semantic logits (``sem_preds[:, classes].argmax(1)[superpoints]``);
    a superpoint without a query (capped or training-time query selection) gets the
    mask-weighted mean of the queries' semantic logits instead."""
    out = torch.empty(num_superpoints, sem_logits.shape[1], dtype=sem_logits.dtype, device=sem_logits.device)
    own = query_superpoints >= 0
    covered = torch.zeros(num_superpoints, dtype=torch.bool, device=out.device)
    covered[query_superpoints[own]] = True
    if not bool(covered.all()):
        weights = masks.sigmoid().t()  # (S, Q)
        out[:] = weights @ sem_logits / weights.sum(1, keepdim=True).clamp_min(1e-6)
    out[query_superpoints[own]] = sem_logits[: len(query_superpoints)][own]
    return out


def semantic(
    sp_sem_logits: torch.Tensor, superpoints: torch.Tensor, columns: list[int] | None = None
) -> torch.Tensor:
    """``predict_by_feat_semantic``: (N,) int64 vocabulary index, the argmax over ``columns``
    (default every class, never the background column) of each point's superpoint."""
    if columns is None:
        columns = list(range(sp_sem_logits.shape[1] - 1))
    cols = torch.as_tensor(columns, device=sp_sem_logits.device)
    return cols[sp_sem_logits[:, cols].argmax(dim=1)][superpoints]


def panoptic(
    stuff_map: torch.Tensor,
    inst_masks: torch.Tensor,
    inst_classes: torch.Tensor,
    inst_scores: torch.Tensor,
    npoint_thr: int = TEST_CFG.npoint_thr,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``predict_by_feat_panoptic`` after its two inputs: stuff_map (N,) stuff class per point
    (semantic head over the stuff classes), instance path output (M, N) masks, (M,) classes,
    (M,) scores (already thresholded at ``pan_score_thr``). Instances are painted in ascending
    score order (higher scores win), those left with ``<= npoint_thr`` points are dropped.

    Returns semantic (N,) int64 (stuff class or the covering thing's class), owner (N,) int64
    index into the instance inputs or -1 (stuff), and the indices (K,) of the surviving
    instances in descending score order."""
    n = stuff_map.shape[0]
    owner = torch.full((n,), -1, dtype=torch.long, device=stuff_map.device)
    if inst_masks.shape[0] == 0:
        return stuff_map.clone(), owner, torch.zeros(0, dtype=torch.long, device=stuff_map.device)
    _, order = inst_scores.sort()
    ranks = torch.arange(1, len(order) + 1, device=inst_masks.device).view(-1, 1)
    painted, which = (ranks * inst_masks[order].long()).max(dim=0)  # 0 = no thing
    values, counts = painted.unique(return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        if value != 0 and count <= npoint_thr:
            painted[painted == value] = 0
    things = painted != 0
    owner[things] = order[which[things]]
    semantic = stuff_map.clone()
    semantic[things] = inst_classes[owner[things]]
    alive = torch.unique(painted[things]) - 1  # ascending rank -> ascending score
    return semantic, owner, order[alive].flip(0)


# ---------------------------------------------------------------- on decoder outputs
def _points(out: DecoderOutput, scene: SceneSample) -> torch.Tensor:
    """(N,) superpoint of each point, checked against the scene."""
    n = out.superpoints.shape[0]
    if n != scene.num_points:
        raise ValueError(f"scene has {scene.num_points} points but the output maps {n}")
    return out.superpoints


def _cfg_with(
    score_threshold: float | None, top_k: int | None, min_points: int | None, mask_threshold: float | None
) -> tuple[OfficialTestConfig, float]:
    """The official test config with the caller's explicit overrides; returns (cfg, inst_score_thr)."""
    base = TEST_CFG
    cfg = replace(
        base,
        topk_insts=base.topk_insts if top_k is None else int(top_k),
        npoint_thr=base.npoint_thr if min_points is None else int(min_points),
        sp_score_thr=base.sp_score_thr if mask_threshold is None else float(mask_threshold),
    )
    return cfg, base.inst_score_thr if score_threshold is None else float(score_threshold)


def decoded_instances(
    out: DecoderOutput,
    scene: SceneSample,
    class_ids: list[int],
    score_threshold: float | None,
    top_k: int | None,
    min_points: int | None,
    mask_threshold: float | None,
    use_iou: bool,
) -> InstancePrediction:
    sp = _points(out, scene)
    cfg, thr = _cfg_with(score_threshold, top_k, min_points, mask_threshold)
    pred = out.unified()
    n = scene.num_points
    if pred.masks.shape[0] == 0 or not class_ids:
        return InstancePrediction(np.zeros((0, n), bool), np.zeros(0, np.int64), np.zeros(0, np.float32), [])
    with torch.no_grad():
        masks, classes, scores = instances(
            pred.class_logits, pred.masks, pred.iou, class_ids, sp, thr, use_iou, cfg
        )
    classes_np = classes.cpu().numpy().astype(np.int64)
    return InstancePrediction(
        masks=masks.cpu().numpy(),
        classes=classes_np,
        scores=scores.cpu().numpy().astype(np.float32),
        labels=[out.vocabulary[i] for i in classes_np],
    )


def decoded_sp_semantic(out: DecoderOutput) -> torch.Tensor:
    """(S, V + 1) semantic-head logits per superpoint (official protocol)."""
    pred = out.unified()
    if pred.sem_logits is None:
        raise ValueError("official post-processing needs the semantic head's sem_logits (official heads)")
    return superpoint_semantic_logits(
        pred.sem_logits, pred.masks, out.query_superpoints, out.num_superpoints
    )


def decoded_panoptic(
    out: DecoderOutput,
    scene: SceneSample,
    score_threshold: float | None,
    min_points: int | None,
    stuff_classes: tuple[str, ...],
    mask_threshold: float | None,
) -> PanopticPrediction:
    """Official ``predict_by_feat_panoptic``: stuff from the semantic head over the stuff
    classes, things from the instance path (x raw IoU), score > 0.5, > 100 points."""
    sp = _points(out, scene)
    stuff = [i for i, name in enumerate(out.vocabulary) if name in stuff_classes]
    things = [i for i in range(len(out.vocabulary)) if i not in set(stuff)]
    thr = TEST_CFG.pan_score_thr if score_threshold is None else float(score_threshold)
    cfg, _ = _cfg_with(None, None, min_points, mask_threshold)
    pred = out.unified()
    with torch.no_grad():
        stuff_map = semantic(decoded_sp_semantic(out), sp, stuff or None)
        if pred.masks.shape[0] and things:
            masks, classes, scores = instances(
                pred.class_logits, pred.masks, pred.iou, things, sp, thr, cfg.pano_test_iou, cfg
            )
        else:
            masks = torch.zeros(0, len(sp), dtype=torch.bool, device=sp.device)
            classes = torch.zeros(0, dtype=torch.long, device=sp.device)
            scores = torch.zeros(0, device=sp.device)
        sem, owner, alive = panoptic(stuff_map, masks, classes, scores, cfg.npoint_thr)
    owner_np, alive_np = owner.cpu().numpy(), alive.cpu().numpy()
    remap = np.full(max(len(masks), 1) + 1, -1, dtype=np.int64)
    remap[alive_np] = np.arange(len(alive_np))
    instance_pts = remap[owner_np]  # owner -1 -> remap[-1] == -1
    classes_np = classes.cpu().numpy().astype(np.int64)[alive_np]
    painted = InstancePrediction(
        masks=np.stack([instance_pts == j for j in range(len(alive_np))])
        if len(alive_np)
        else np.zeros((0, len(owner_np)), bool),
        classes=classes_np,
        scores=scores.cpu().numpy().astype(np.float32)[alive_np],
        labels=[out.vocabulary[i] for i in classes_np],
    )
    return PanopticPrediction(sem.cpu().numpy().astype(np.int64), instance_pts, painted)
