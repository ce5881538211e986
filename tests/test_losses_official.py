"""The official loss recipe on hand-built decoder outputs, each term against a reference written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_model.encoding import DecoderOutput, LayerPrediction
from uniseg3d_model.losses import LossConfig, build_criterion, build_targets
from uniseg3d_model.losses.official import OfficialCriterion
from uniseg3d_model.losses.sparse_matcher import OUTSIDE, sparse_topk_match
from uniseg3d_model.official_heads import STUFF_LOGIT
from uniseg3d_model.structures import SceneSample

V = len(SCANNET20_CLASSES)
CHAIR, TABLE = SCANNET20_CLASSES.index("chair"), SCANNET20_CLASSES.index("table")


def _scene(clicks: list[int] = (1, 0), texts: list[int] = (0, 1), pseudo: bool = True) -> SceneSample:
    """6 superpoints x 2 points: chair on sp 0-1, table on sp 2-3, wall on sp 4, an unannotated object
    on sp 5 (the pseudo mask)."""
    sp = np.repeat(np.arange(6), 2)
    inst = np.array([0, 0, 0, 0, 1, 1, 1, 1, -100, -100, -100, -100])
    sem = np.array([CHAIR] * 4 + [TABLE] * 4 + [0, 0, -100, -100])
    return SceneSample(
        np.zeros((12, 3)),
        np.zeros((12, 3)),
        sp,
        semantic=sem,
        instance=inst,
        instance_class=np.array([CHAIR, TABLE]),
        clicks=np.zeros((len(clicks), 3)),
        click_instance=np.array(clicks),
        texts=["t"] * len(texts),
        text_instance=np.array(texts),
        pseudo_masks=np.array([[0, 0, 0, 0, 0, 1]], bool) if pseudo else None,
    )


def _output(
    seed: int, layers: int = 2, k: int = 2, t: int = 2, scale: float = math.exp(2.66)
) -> DecoderOutput:
    g = torch.Generator().manual_seed(seed)
    q = 6 + k + t

    def layer() -> LayerPrediction:
        return LayerPrediction(
            masks=torch.randn(q, 6, generator=g) * 3,
            class_logits=torch.randn(q, V + 1, generator=g),
            scores=torch.randn(q, generator=g),
            embeddings=F.normalize(torch.randn(q, 8, generator=g), dim=-1),
        )

    return DecoderOutput(
        layers=[layer() for _ in range(layers)],
        num_unified=6,
        num_clicks=k,
        num_texts=t,
        query_superpoints=torch.arange(6),
        vocabulary=SCANNET20_CLASSES,
        superpoints=torch.as_tensor(np.repeat(np.arange(6), 2)),
        contrastive_scale=torch.tensor(scale),
    )


def _ref_match(cost: torch.Tensor, allowed: torch.Tensor) -> set[tuple[int, int]]:
    """Per target: the allowed query of lowest cost, when strictly below every other query's cost."""
    pairs = set()
    c = torch.where(allowed, cost, torch.full_like(cost, OUTSIDE))
    for j in range(c.shape[1]):
        order = torch.argsort(c[:, j])
        if c[order[0], j] < c[order[1], j]:
            pairs.add((int(order[0]), j))
    return pairs


def _ref_costs(masks, logits, tgt, labels, with_class=True):
    p = masks.sigmoid()
    bce = torch.stack([torch.stack([F.binary_cross_entropy_with_logits(m, t) for t in tgt]) for m in masks])
    dice = 1 - (2 * p @ tgt.t() + 1) / (p.sum(1)[:, None] + tgt.sum(1)[None] + 1)
    cost = bce + dice
    return cost - 0.5 * logits.softmax(-1)[:, labels] if with_class else cost


def test_sparse_matcher_takes_the_best_query_per_target_not_a_hungarian_assignment() -> None:
    tgt = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    masks = torch.tensor([[9.0, 9, 9, -9], [-9, -9, -9, -9], [-9, -9, -9, 9], [-9, -9, -9, 9]])
    allowed = torch.tensor(
        [[True, True, False], [True, True, False], [False, False, True], [False, False, True]]
    )
    q, g = sparse_topk_match(masks, tgt, allowed, weights=(0.0, 1.0, 1.0))
    assert set(zip(q.tolist(), g.tolist())) == {(0, 0), (0, 1)}  # query 0 serves two targets; 2 and 3 tie
    got = sparse_topk_match(masks, tgt, allowed, weights=(0.0, 1.0, 1.0))
    assert set(zip(*[x.tolist() for x in got])) == _ref_match(
        _ref_costs(masks, None, tgt, None, False), allowed
    )
    rnd = torch.randn(7, 4, generator=torch.Generator().manual_seed(1))
    logits = torch.randn(7, V + 1, generator=torch.Generator().manual_seed(2))
    ok = torch.rand(7, 3, generator=torch.Generator().manual_seed(3)) > 0.3
    labels = torch.tensor([1, 4, 6])
    q, g = sparse_topk_match(rnd, tgt, ok, logits, labels)
    assert set(zip(q.tolist(), g.tolist())) == _ref_match(_ref_costs(rnd, logits, tgt, labels), ok)


def test_dice_is_four_times_the_mean_on_the_final_stage_and_four_over_b_on_auxiliary_ones() -> None:
    out, other = _output(0), _output(1)
    out.layers, other.layers = [out.layers[1]] * 2, [other.layers[1]] * 2  # only the scaling differs
    crit = OfficialCriterion(LossConfig(recipe="official"))
    _, logs = crit([out, other], [_scene(), _scene()])
    _, single = crit([out], [_scene()])
    assert logs["aux_unified_dice"] == pytest.approx(logs["unified_dice"] / 2)  # B = 2
    assert single["aux_unified_dice"] == pytest.approx(single["unified_dice"])  # B = 1
    tg = build_targets(_scene(), 6, V, [], torch.device("cpu"), "half")
    allowed = tg.masks.t() > 0
    pred = out.unified()
    pairs = sorted(_ref_match(_ref_costs(pred.masks, pred.class_logits, tg.masks, tg.labels), allowed))
    rows, cols = [p[0] for p in pairs], [p[1] for p in pairs]
    p = pred.masks[rows].sigmoid()
    t = tg.masks[cols]
    dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()
    assert single["unified_dice"] == pytest.approx(4 * float(dice), rel=1e-5)


def test_pseudo_masks_get_their_own_matcher_mask_losses_and_no_class_target() -> None:
    out, scene = _output(2, layers=1), _scene()
    crit = OfficialCriterion(LossConfig(recipe="official"))
    _, logs = crit([out], [scene])
    pred = out.unified()
    tg = build_targets(scene, 6, V, [], torch.device("cpu"), "half")
    base = _ref_match(_ref_costs(pred.masks, pred.class_logits, tg.masks, tg.labels), tg.masks.t() > 0)
    free = [i for i in range(6) if i not in {q for q, _ in base}]
    pseudo = torch.tensor([[0.0, 0, 0, 0, 0, 1]])
    allowed = pseudo[:, free].t() > 0  # only the query from superpoint 5 lies in the pseudo mask
    ov = _ref_match(_ref_costs(pred.masks[free], None, pseudo, None, False), allowed)
    assert len(ov) == 1
    ov_q = free[next(iter(ov))[0]]
    assert logs["unified_pseudo_bce"] == pytest.approx(
        float(F.binary_cross_entropy_with_logits(pred.masks[ov_q], pseudo[0])), rel=1e-5
    )
    target = torch.full((6,), V)
    for q, g in base:
        target[q] = tg.labels[g]
    target[ov_q] = -1  # ignored, not "no object"
    weight = torch.ones(V + 1)
    weight[V] = 0.1
    assert logs["unified_cls"] == pytest.approx(
        float(F.cross_entropy(pred.class_logits, target, weight, ignore_index=-1)), rel=1e-5
    )
    _, without = crit([out], [_scene(pseudo=False)])
    assert without["unified_pseudo_bce"] == without["unified_pseudo_dice"] == 0.0


def test_iou_head_is_regressed_raw_with_mse_on_every_stage() -> None:
    out, scene = _output(3, layers=1), _scene(pseudo=False)
    out.layers[0].iou = torch.linspace(-0.5, 1.5, 10)  # a raw IoU head (h_model's field)
    _, logs = OfficialCriterion(LossConfig(recipe="official"))([out], [scene])
    pred = out.unified()
    tg = build_targets(scene, 6, V, [], torch.device("cpu"), "half")
    pairs = sorted(
        _ref_match(_ref_costs(pred.masks, pred.class_logits, tg.masks, tg.labels), tg.masks.t() > 0)
    )
    rows = [p[0] for p in pairs]
    binary = (pred.masks[rows] >= 0).float()
    t = tg.masks[[p[1] for p in pairs]]
    iou = (binary * t).sum(1) / (binary.sum(1) + t.sum(1) - (binary * t).sum(1) + 1e-6)
    assert logs["unified_iou"] == pytest.approx(float(F.mse_loss(out.layers[0].iou[rows], iou)), rel=1e-5)


def test_click_to_unified_distillation_on_the_top_masks_only_when_every_object_is_clicked() -> None:
    out, scene = _output(4, layers=1), _scene()
    # make both objects matched by their first superpoint's query and the match unambiguous
    masks = torch.full((6, 6), -6.0)
    masks[0, :2], masks[2, 2:4] = 6.0, 6.0
    out.layers[0].masks[:6] = masks
    out.layers[0].masks[6:8] = torch.randn(2, 6, generator=torch.Generator().manual_seed(9)) * 3
    crit = OfficialCriterion(LossConfig(recipe="official", kd_ratio=0.34))  # int(0.34 * 6) = 2 superpoints
    _, logs = crit([out], [scene])
    clicks = out.layers[0].masks[6:8]  # click 0 -> object 1 (table, query 2), click 1 -> object 0 (query 0)
    by_object = torch.stack([clicks[1], clicks[0]])
    unified = torch.stack([masks[0], masks[2]])
    val, obj = by_object.max(0)
    top = torch.topk(val, 2).indices
    ref = F.binary_cross_entropy(unified[obj[top], top].sigmoid(), val[top].sigmoid())
    assert logs["kd_unified"] == pytest.approx(float(ref), rel=1e-5)
    few = _output(4, layers=1, k=1, t=1)
    few.layers[0].masks[:6] = masks
    _, one_click = crit([few], [_scene(clicks=[1], texts=[1])])
    assert "kd_unified" not in one_click  # object 0 matched but not clicked: skipped


def test_contrastive_raw_multiplier_ranking_sum_and_sigmoid_class_distillation() -> None:
    out, scene = _output(5, layers=1, scale=math.exp(2.66)), _scene(clicks=[1, 0], texts=[0, 1])
    _, logs = OfficialCriterion(LossConfig(recipe="official"))([out], [scene])
    f = out.layers[0]
    refer = F.normalize(f.embeddings[[7, 6]], dim=-1)  # text 0 -> object 0 -> click 1 (row 7)
    key = F.normalize(f.embeddings[[8, 9]], dim=-1)
    sim = refer @ key.t()
    lab = torch.arange(2)
    con = (F.cross_entropy(2.66 * sim, lab) + F.cross_entropy(2.66 * sim.t(), lab)) / 2
    assert logs["contrastive"] == pytest.approx(float(con), rel=1e-4)
    rank = sum(max(0.0, float(sim[i, j] - sim[j, j])) for i in range(2) for j in range(2) if i != j)
    assert logs["ranking"] == pytest.approx(rank, abs=1e-6)
    dist = F.binary_cross_entropy(f.class_logits[[8, 9]].sigmoid(), f.class_logits[[7, 6]].sigmoid())
    assert logs["kd_referring"] == pytest.approx(float(dist), rel=1e-5)
    f.class_logits[:, :2] = STUFF_LOGIT  # official instance head: wall/floor columns pinned
    _, pinned = OfficialCriterion(LossConfig(recipe="official"))([out], [scene])
    things = f.class_logits[:, 2:]  # the official cls_preds: 18 things + no-object
    dist = F.binary_cross_entropy(things[[8, 9]].sigmoid(), things[[7, 6]].sigmoid())
    assert pinned["kd_referring"] == pytest.approx(float(dist), rel=1e-5)


def test_semantic_head_cross_entropy_over_the_unified_queries() -> None:
    out, scene = _output(6, layers=1), _scene()
    out.final.sem_logits = torch.randn(10, V + 1, generator=torch.Generator().manual_seed(0))  # every query
    _, logs = OfficialCriterion(LossConfig(recipe="official"))([out], [scene])
    target = torch.tensor([CHAIR, CHAIR, TABLE, TABLE, 0, -100])  # sp 5 unlabelled: ignored
    ref = F.cross_entropy(out.final.sem_logits[:6, :-1], target, ignore_index=-100)  # unified queries
    assert logs["semantic"] == pytest.approx(float(ref), rel=1e-5)


def test_total_is_the_weighted_sum_of_the_terms_and_build_criterion_picks_the_recipe() -> None:
    out, scene = _output(7), _scene()
    out.final.sem_logits = torch.randn(10, V + 1, generator=torch.Generator().manual_seed(1))
    cfg = LossConfig(recipe="official")
    crit = build_criterion(cfg)
    assert isinstance(crit, OfficialCriterion) and cfg.mask_rule == "half"
    loss, logs = crit([out], [scene])
    w = {"cls": 0.5, "bce": 1.0, "dice": 1.0, "pseudo_bce": 0.1, "pseudo_dice": 0.1, "iou": 0.1}
    expect = 0.0
    for name, value in logs.items():
        base = name.removeprefix("aux_")
        if base.startswith("unified_"):
            expect += w[base.removeprefix("unified_")] * value
        elif base.startswith(("click_", "text_")):
            expect += 0.1 * w[base.split("_", 1)[1]] * value
        elif name != "loss":
            expect += {"semantic": 0.2}.get(name, 0.1) * value
    assert float(loss) == pytest.approx(expect, rel=1e-5) and logs["loss"] == pytest.approx(float(loss))
    assert {
        "semantic",
        "contrastive",
        "ranking",
        "kd_referring",
        "unified_pseudo_dice",
        "aux_click_dice",
        "text_cls",
    } <= set(logs)
    loss.backward  # noqa: B018 - differentiable
    assert torch.isfinite(loss)
