"""Decoder outputs -> per-point predictions for every task.

All functions take one :class:`DecoderOutput` and its :class:`SceneSample`, work on
superpoint masks (S columns) and map the result to the scene's N points through
``out.superpoints``. Outputs are numpy arrays.

Two protocols, chosen by the model that produced the output (``out.protocol``, from
``ModelConfig.postprocess``), so callers never branch on the model:

``"tuned"`` (our models): defaults follow the published UniSeg3D test settings where they
exist (superpoint mask threshold 0.4, mask-score "object normalisation", panoptic score
threshold 0.5); instance defaults are tuned for users (``score_threshold`` 0.1, ``top_k`` 100,
greedy mask NMS); semantic = Mask2Former-style mixture of the unified queries.

``"official"`` (the released model, :mod:`official_postprocess`): the official ``test_cfg``:
instances = top 600, object normalisation, linear matrix NMS on the soft superpoint masks,
score > 0.0, more than 100 points; panoptic = stuff from the semantic head, things from the
instance path x raw IoU, score > 0.5, more than 100 points; semantic = each superpoint's own
query's semantic-head argmax. Arguments a caller passes explicitly (``score_threshold``,
``top_k``, ``min_points`` (strict there), ``mask_threshold``) override the official values;
``nms``/``nms_iou`` do not apply (the official matrix NMS always runs).
"""

from __future__ import annotations

import numpy as np
import torch

from uniseg3d_model import official_postprocess as official
from uniseg3d_model.data.labels import STUFF_CLASSES
from uniseg3d_model.encoding import DecoderOutput, LayerPrediction
from uniseg3d_model.predictions import InstancePrediction, PanopticPrediction
from uniseg3d_model.structures import SceneSample

MASK_THRESHOLD = 0.4


def _check(out: DecoderOutput, scene: SceneSample) -> torch.Tensor:
    sp = out.superpoints
    if sp.shape[0] != scene.num_points:
        raise ValueError(f"scene has {scene.num_points} points but the output maps {sp.shape[0]}")
    return sp


def _mask_scores(masks: torch.Tensor) -> torch.Tensor:
    """Object normalisation: mean sigmoid over superpoints with positive logit, (M,)."""
    pos = (masks > 0).float()
    return (masks.sigmoid() * pos).sum(1) / (pos.sum(1) + 1e-6)


def _superpoint_sizes(out: DecoderOutput) -> torch.Tensor:
    return torch.bincount(out.superpoints, minlength=out.num_superpoints).float()


def mask_nms(
    masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, sizes: torch.Tensor, iou: float
):
    """Greedy class-aware NMS on binary superpoint masks (M, S), IoU weighted by superpoint
    point counts ``sizes`` (S,). Returns kept indices in descending score order."""
    order = scores.argsort(descending=True)
    m = masks[order].float()
    inter = (m * sizes) @ m.t()
    area = inter.diagonal()
    ious = inter / (area[:, None] + area[None, :] - inter).clamp_min(1e-6)
    same = classes[order][:, None] == classes[order][None, :]
    suppress = (ious > iou) & same
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):  # M <= top_k, a loop over predictions, not points
        if keep[i]:
            later = suppress[i].clone()
            later[: i + 1] = False
            keep &= ~later
    return order[keep]


def matrix_nms_decay(
    masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, sizes: torch.Tensor
) -> torch.Tensor:
    """Matrix NMS (SOLOv2, linear kernel, class-aware) as UniSeg3D uses for AP: (M,) factors
    in (0, 1] that decay each mask's score by its overlap with higher-scored masks of the same
    class. masks (M, S) bool superpoint masks; IoU weighted by superpoint point counts."""
    order = scores.argsort(descending=True)
    m = masks[order].float()
    inter = (m * sizes) @ m.t()
    area = inter.diagonal()
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1e-6)
    same = classes[order][:, None] == classes[order][None, :]
    iou = (iou * same).triu(diagonal=1)  # iou[i, j]: i scored above j
    compensate = iou.max(dim=0).values  # how much each i is itself suppressed
    decay = ((1 - iou) / (1 - compensate[:, None]).clamp_min(1e-6)).min(dim=0).values
    out = torch.empty_like(decay)
    out[order] = decay.clamp(max=1.0)
    return out


def _instances(
    pred: LayerPrediction,
    out: DecoderOutput,
    scene: SceneSample,
    class_ids: list[int],
    score_threshold: float,
    top_k: int,
    nms_iou: float | None,
    min_points: int,
    mask_threshold: float,
    use_score_head: bool,
    nms: str,
) -> InstancePrediction:
    if nms not in ("greedy", "matrix"):
        raise ValueError(f"nms must be 'greedy' or 'matrix', got {nms!r}")
    sp = _check(out, scene)
    n = scene.num_points
    empty = InstancePrediction(np.zeros((0, n), bool), np.zeros(0, np.int64), np.zeros(0, np.float32), [])
    if pred.masks.shape[0] == 0 or not class_ids:
        return empty
    with torch.no_grad():
        probs = pred.class_logits.softmax(-1)[:, class_ids]  # (Q, C')
        c = len(class_ids)
        flat = probs.flatten()
        k = min(top_k, flat.numel())
        scores, idx = flat.topk(k)
        query, cls = idx // c, torch.as_tensor(class_ids, device=idx.device)[idx % c]
        masks = pred.masks[query]
        scores = scores * _mask_scores(masks)
        if use_score_head:
            scores = scores * pred.scores[query].sigmoid()
        bin_masks = masks.sigmoid() > mask_threshold
        sizes = _superpoint_sizes(out)
        npts = bin_masks.float() @ sizes
        if nms == "matrix" and len(scores):
            scores = scores * matrix_nms_decay(bin_masks, cls, scores, sizes)
        keep = (scores > score_threshold) & (npts >= max(min_points, 1))
        bin_masks, cls, scores = bin_masks[keep], cls[keep], scores[keep]
        if nms == "greedy" and nms_iou is not None and len(scores):
            order = mask_nms(bin_masks.cpu(), cls.cpu(), scores.cpu(), sizes.cpu(), nms_iou).to(scores.device)
        else:
            order = scores.argsort(descending=True)
        bin_masks, cls, scores = bin_masks[order], cls[order], scores[order]
        point_masks = bin_masks[:, sp]
    classes = cls.cpu().numpy().astype(np.int64)
    return InstancePrediction(
        masks=point_masks.cpu().numpy(),
        classes=classes,
        scores=scores.cpu().numpy().astype(np.float32),
        labels=[out.vocabulary[i] for i in classes],
    )


def _stuff_ids(out: DecoderOutput, stuff_classes: tuple[str, ...]) -> list[int]:
    return [i for i, name in enumerate(out.vocabulary) if name in stuff_classes]


def instances(
    out: DecoderOutput,
    scene: SceneSample,
    score_threshold: float | None = None,
    top_k: int | None = None,
    nms_iou: float | None = 0.5,
    min_points: int | None = None,
    mask_threshold: float | None = None,
    stuff_classes: tuple[str, ...] = STUFF_CLASSES,
    use_score_head: bool = False,
    nms: str = "greedy",
) -> InstancePrediction:
    """Thing instances from the unified queries: score = class probability x mask score
    (x predicted IoU when ``use_score_head``), top-k over (query, class) pairs, score
    threshold, at least ``min_points`` points, and class-aware mask NMS: ``nms="greedy"``
    drops masks overlapping a better one by IoU > ``nms_iou`` (None disables);
    ``nms="matrix"`` decays scores by overlap before the threshold (the paper's AP setting:
    ``score_threshold=0.0, top_k=600, nms="matrix"``). Sorted by descending score. None
    arguments take the protocol's default (tuned: 0.1, 100, 20, 0.4; official: see the module
    docstring; ``use_score_head`` is the official ``inst_test_iou``)."""
    stuff = set(_stuff_ids(out, stuff_classes))
    things = [i for i in range(len(out.vocabulary)) if i not in stuff]
    if out.protocol == "official":
        return official.decoded_instances(
            out, scene, things, score_threshold, top_k, min_points, mask_threshold, use_score_head
        )
    return _instances(
        out.unified(),
        out,
        scene,
        things,
        0.1 if score_threshold is None else score_threshold,
        100 if top_k is None else top_k,
        nms_iou,
        20 if min_points is None else min_points,
        MASK_THRESHOLD if mask_threshold is None else mask_threshold,
        use_score_head,
        nms,
    )


def open_vocabulary(
    out: DecoderOutput,
    scene: SceneSample,
    score_threshold: float | None = None,
    top_k: int | None = None,
    nms_iou: float | None = 0.5,
    min_points: int | None = None,
    mask_threshold: float | None = None,
    nms: str = "greedy",
) -> InstancePrediction:
    """Instances over every class of ``scene.vocabulary`` (the decoder's vocabulary), with
    labels taken from those names; arguments as :func:`instances` (the official protocol runs
    its instance path over every column)."""
    vocab = tuple(scene.vocabulary) if scene.vocabulary is not None else out.vocabulary
    if vocab != out.vocabulary:
        raise ValueError(f"scene.vocabulary {list(vocab)} differs from the decoded vocabulary")
    if out.protocol == "official":
        return official.decoded_instances(
            out, scene, list(range(len(vocab))), score_threshold, top_k, min_points, mask_threshold, False
        )
    return _instances(
        out.unified(),
        out,
        scene,
        list(range(len(vocab))),
        0.1 if score_threshold is None else score_threshold,
        100 if top_k is None else top_k,
        nms_iou,
        20 if min_points is None else min_points,
        MASK_THRESHOLD if mask_threshold is None else mask_threshold,
        False,
        nms,
    )


def superpoint_semantic_scores(out: DecoderOutput) -> torch.Tensor:
    """(S, V) Mask2Former-style semantic scores: sum_q p(class | q) * sigmoid(mask_q)."""
    pred = out.unified()
    probs = pred.class_logits.softmax(-1)[:, :-1]
    return pred.masks.sigmoid().t() @ probs


def semantic(out: DecoderOutput, scene: SceneSample) -> np.ndarray:
    """(N,) int64 vocabulary index per point."""
    sp = _check(out, scene)
    with torch.no_grad():
        if out.protocol == "official":
            return official.semantic(official.decoded_sp_semantic(out), sp).cpu().numpy().astype(np.int64)
        return superpoint_semantic_scores(out).argmax(1)[sp].cpu().numpy().astype(np.int64)


def panoptic(
    out: DecoderOutput,
    scene: SceneSample,
    score_threshold: float | None = None,
    min_points: int | None = None,
    stuff_classes: tuple[str, ...] = STUFF_CLASSES,
    mask_threshold: float | None = None,
) -> PanopticPrediction:
    """Things painted in ascending score order (higher scores win overlaps) over a stuff map;
    instances left with fewer than ``min_points`` visible points are dropped. Points not
    covered by a thing get the best stuff class (or the semantic argmax when the vocabulary
    has no stuff class). None arguments: the protocol's defaults (tuned: 0.5, 20, 0.4)."""
    if out.protocol == "official":
        return official.decoded_panoptic(
            out, scene, score_threshold, min_points, stuff_classes, mask_threshold
        )
    score_threshold = 0.5 if score_threshold is None else score_threshold
    min_points = 20 if min_points is None else min_points
    mask_threshold = MASK_THRESHOLD if mask_threshold is None else mask_threshold
    sp = _check(out, scene)
    n = scene.num_points
    stuff = _stuff_ids(out, stuff_classes)
    with torch.no_grad():
        sem_scores = superpoint_semantic_scores(out)
        cols = stuff if stuff else list(range(sem_scores.shape[1]))
        stuff_map = torch.as_tensor(cols, device=sem_scores.device)[sem_scores[:, cols].argmax(1)][sp]
    semantic_pts = stuff_map.cpu().numpy().astype(np.int64)
    inst = instances(out, scene, score_threshold, 100, 0.5, min_points, mask_threshold, stuff_classes, True)
    instance_pts = np.full(n, -1, dtype=np.int64)
    for i in np.argsort(inst.scores, kind="stable"):  # ascending: later (higher) overwrite
        instance_pts[inst.masks[i]] = i
    visible = np.bincount(instance_pts[instance_pts >= 0], minlength=len(inst)) if len(inst) else np.zeros(0)
    keep = np.flatnonzero(visible >= max(min_points, 1))
    remap = np.full(len(inst) + 1, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    instance_pts = remap[instance_pts]  # -1 stays -1 (index len(inst) -> -1)
    painted = InstancePrediction(
        masks=np.stack([instance_pts == j for j in range(len(keep))])
        if len(keep)
        else np.zeros((0, n), bool),
        classes=inst.classes[keep],
        scores=inst.scores[keep],
        labels=[inst.labels[i] for i in keep],
    )
    things = instance_pts >= 0
    semantic_pts[things] = painted.classes[instance_pts[things]]
    return PanopticPrediction(semantic=semantic_pts, instance=instance_pts, instances=painted)


def interactive(out: DecoderOutput, scene: SceneSample, mask_threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """(K, N) bool mask per click."""
    sp = _check(out, scene)
    with torch.no_grad():
        return (out.clicks().masks.sigmoid() > mask_threshold)[:, sp].cpu().numpy()


def referring(
    out: DecoderOutput, scene: SceneSample, mask_threshold: float = MASK_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) bool mask per sentence and (T,) float32 score = predicted IoU x mask score (the
    node's ``~/refer`` also weighs :func:`class_agreement`)."""
    sp = _check(out, scene)
    with torch.no_grad():
        pred = out.texts()
        masks = (pred.masks.sigmoid() > mask_threshold)[:, sp].cpu().numpy()
    return masks, prompt_scores(pred)


def prompt_classes(pred: LayerPrediction) -> np.ndarray:
    """(P,) int64: the class each prompted query's class head names (argmax over the vocabulary,
    "no object" left out)."""
    with torch.no_grad():
        return pred.class_logits[:, :-1].argmax(1).cpu().numpy().astype(np.int64)


def class_agreement(class_logits: torch.Tensor, masks: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """(P,) float32 in [0, 1]: for each prompted mask, the mean over its points of the probability
    its query's class head gives to the point's semantic class (``class_logits`` (P, V + 1),
    softmax over the vocabulary and "no object"; ``masks`` (P, N) bool; ``semantic`` (N,) class
    per point, -1 none). Sentence and click queries are trained with the referred object's class,
    so a sentence about a bookshelf whose mask lies on a door scores near 0 even when the mask is
    clean. Points without a class in the vocabulary are left out; a mask with none of them gets 1."""
    semantic = np.asarray(semantic)
    with torch.no_grad():
        prob = torch.softmax(class_logits.float(), dim=-1).cpu().numpy()
    vocab = prob.shape[1] - 1
    out = np.ones(len(masks), dtype=np.float32)
    for k, mask in enumerate(np.asarray(masks, dtype=bool)):
        cls = semantic[mask]
        cls = cls[(cls >= 0) & (cls < vocab)]
        if len(cls):
            out[k] = float(np.bincount(cls, minlength=vocab) @ prob[k, :vocab]) / len(cls)
    return out


def prompt_scores(pred: LayerPrediction) -> np.ndarray:
    """(P,) float32 confidence of prompted (click or sentence) masks: predicted IoU x mask score
    (the official heads' IoU is raw: used as it is, no sigmoid)."""
    with torch.no_grad():
        iou = pred.iou if pred.iou is not None else pred.scores.sigmoid()
        return (iou * _mask_scores(pred.masks)).cpu().numpy().astype(np.float32)
