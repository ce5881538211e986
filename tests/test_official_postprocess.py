"""The official post-processing protocol (uniseg3d_model/official_postprocess.py) against hand
computations, and its selection through DecoderOutput.protocol in uniseg3d_model.postprocess."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from uniseg3d_model import official_postprocess as official
from uniseg3d_model import postprocess
from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_model.encoding import DecoderOutput, LayerPrediction
from uniseg3d_model.official_heads import STUFF_LOGIT
from uniseg3d_model.structures import SceneSample


def naive_matrix_nms(masks, labels, scores):
    """Matrix NMS (linear) written with loops: decay_j = min_i (1 - iou_ij) / (1 - comp_i) over
    higher-scored i of the same class, comp_i = max IoU of i with a higher-scored same-class mask."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    m = [masks[i] for i in order]
    lab = [int(labels[i]) for i in order]

    def iou(a, b):
        inter = float((m[a] * m[b]).sum())
        return inter / (float(m[a].sum()) + float(m[b].sum()) - inter)

    n = len(order)
    comp = [max([iou(i, j) for i in range(j) if lab[i] == lab[j]], default=0.0) for j in range(n)]
    out = []
    for j in range(n):
        pair = [iou(i, j) if i < j and lab[i] == lab[j] else 0.0 for i in range(n)]
        decay = min((1 - pair[i]) / (1 - comp[i]) for i in range(n))
        out.append((float(scores[order[j]]) * decay, lab[j], order[j]))
    return sorted(out, key=lambda t: -t[0])


def test_matrix_nms_small_example_by_hand():
    masks = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]])
    scores, labels, kept, keep = official.mask_matrix_nms_linear(masks, torch.tensor([3, 3, 4]),
                                                                 torch.tensor([0.9, 0.8, 0.7]))
    # IoU(0, 1) = 2 / 3 within class 3 -> 0.8 * (1 - 2/3); mask 2 is alone in class 4
    assert torch.allclose(scores, torch.tensor([0.9, 0.7, 0.8 / 3]))
    assert keep.tolist() == [0, 2, 1] and labels.tolist() == [3, 4, 3] and torch.equal(kept[2], masks[1])


def test_matrix_nms_compensation_matches_the_loop_definition():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(9, 12, generator=g) ** 2
    labels, scores = torch.randint(0, 3, (9,), generator=g), torch.rand(9, generator=g)
    got, lab, _, keep = official.mask_matrix_nms_linear(masks, labels, scores)
    want = naive_matrix_nms(masks, labels, scores)
    assert np.allclose(got.numpy(), [w[0] for w in want], atol=1e-6)
    assert lab.tolist() == [w[1] for w in want] and keep.tolist() == [w[2] for w in want]


def _case():
    """3 queries over 4 superpoints; points per superpoint 60, 60, 50, 30 (N = 200)."""
    sp = torch.tensor([0] * 60 + [1] * 60 + [2] * 50 + [3] * 30)
    masks = torch.tensor([[4.0, 4.0, -4.0, -4.0],    # sp 0 + 1 = 120 points
                          [4.0, -4.0, -4.0, -4.0],   # sp 0 = 60 points
                          [-4.0, -4.0, 3.0, 3.0]])   # sp 2 + 3 = 80 points
    # vocabulary (stuff, thing a, thing b) + background
    logits = torch.tensor([[STUFF_LOGIT, 3.0, 0.0, 0.0],
                           [STUFF_LOGIT, 2.0, 0.0, 0.0],
                           [STUFF_LOGIT, 0.0, 2.5, 0.0]])
    return sp, masks, logits


def test_instance_path_by_hand():
    sp, masks, logits = _case()
    cfg = dataclasses.replace(official.TEST_CFG, npoint_thr=70)
    pm, cls, scores = official.instances(logits, masks, None, [1, 2], sp, 0.0, False, cfg)
    probs = logits[:, 1:].softmax(-1)[:, :2]
    mscore = torch.sigmoid(torch.tensor([4.0, 4.0, 3.0]))  # mean sigmoid over the positive superpoints
    raw = {(q, c): float(probs[q, c] * mscore[q]) for q in range(3) for c in range(2)}
    # query 1 (60 points) fails npoint > 70; same-class overlaps decay the weaker duplicates
    assert all(int(m.sum()) > 70 for m in pm)
    assert float(scores[0]) == max(scores).item()
    assert abs(float(scores[0]) - raw[(0, 0)]) < 1e-6 and cls[0] == 1
    top_b = [s for s, c in zip(scores.tolist(), cls.tolist()) if c == 2]
    assert abs(top_b[0] - raw[(2, 1)]) < 1e-6
    assert torch.equal(pm[0], (sp == 0) | (sp == 1))
    iou = torch.tensor([0.5, 1.0, 2.0])  # raw IoU, no sigmoid
    _, _, s_iou = official.instances(logits, masks, iou, [1, 2], sp, 0.0, True, cfg)
    assert abs(float(s_iou.max()) - max(raw[(0, 0)] * 0.5, raw[(2, 1)] * 2.0)) < 1e-6
    strict = dataclasses.replace(cfg, npoint_thr=120)
    kept = official.instances(logits, masks, None, [1, 2], sp, 0.0, False, strict)[0]
    assert not kept.sum(1).eq(120).any()  # npoint_thr is strict: exactly 120 points is dropped


def test_panoptic_paints_higher_scores_last_and_drops_small_leftovers():
    stuff = torch.tensor([0, 0, 1, 1, 1, 0])
    masks = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    classes, scores = torch.tensor([5, 6, 7]), torch.tensor([0.9, 0.6, 0.7])
    sem, owner, alive = official.panoptic(stuff, masks, classes, scores, npoint_thr=1)
    # ascending paint: 0.6 (inst 1), 0.7 (inst 2), 0.9 (inst 0) -> inst 0 wins points 0-3;
    # inst 1 keeps only point 4 (1 point <= 1: dropped, back to stuff); inst 2 has 1 point: dropped
    assert owner.tolist() == [0, 0, 0, 0, -1, -1]
    assert sem.tolist() == [5, 5, 5, 5, 1, 0] and alive.tolist() == [0]


def test_semantic_takes_each_superpoints_own_query_and_never_background():
    sem = torch.tensor([[0.0, 2.0, 9.0], [3.0, 1.0, 9.0]])  # last column: background
    sp = torch.tensor([1, 0, 0])
    per_sp = official.superpoint_semantic_logits(sem, torch.zeros(2, 2), torch.tensor([0, 1]), 2)
    assert official.semantic(per_sp, sp).tolist() == [0, 1, 1]
    assert official.semantic(per_sp, sp, [0]).tolist() == [0, 0, 0]
    # a superpoint without a query: mask-weighted mean of the queries' logits
    masks = torch.tensor([[0.0, 10.0], [0.0, -10.0]])
    mixed = official.superpoint_semantic_logits(sem[:1], masks[:1], torch.tensor([0]), 2)
    assert torch.allclose(mixed[1], sem[0])


def _output(protocol: str, q=30, s=40, n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    sp = torch.randint(0, s, (n,), generator=g)
    sp[:s] = torch.arange(s)
    masks = torch.randn(q, s, generator=g) * 3 + 1
    cls = torch.randn(q, 21, generator=g) * 3
    cls[:, :2], cls[:, -1] = STUFF_LOGIT, 0.0
    sem = torch.randn(q, 21, generator=g)
    sem[:, -1] = 0
    iou = torch.rand(q, generator=g)
    layer = LayerPrediction(masks, cls, iou, torch.zeros(q, 4), sem, iou)
    qsp = torch.arange(q)
    out = DecoderOutput([layer], q, 0, 0, qsp, SCANNET20_CLASSES, sp, torch.tensor(1.0), protocol)
    scene = SceneSample(np.zeros((n, 3), np.float32), np.zeros((n, 3), np.float32), sp.numpy())
    return out, scene


def test_postprocess_dispatches_on_the_outputs_protocol_with_official_defaults():
    out, scene = _output("official")
    inst = postprocess.instances(out, scene)
    pm, cls, scores = official.instances(out.final.class_logits, out.final.masks, out.final.iou,
                                         list(range(2, 20)), out.superpoints, 0.0, False)
    assert np.array_equal(inst.masks, pm.numpy()) and np.array_equal(inst.classes, cls.numpy())
    assert np.allclose(inst.scores, scores.numpy()) and len(inst) > 0
    assert (inst.masks.sum(1) > 100).all()
    # the evaluation call (explicit 0.0 / 600 / "matrix") gives the same; nms options do not apply
    same = postprocess.instances(out, scene, score_threshold=0.0, top_k=600, nms="matrix", nms_iou=0.1)
    assert np.array_equal(same.masks, inst.masks)
    fewer = postprocess.instances(out, scene, top_k=5, min_points=10)
    assert len(fewer) <= 5
    tuned_out, _ = _output("tuned")
    tuned = postprocess.instances(tuned_out, scene)
    assert len(tuned) <= 100 and not np.array_equal(tuned.scores[: len(inst)], inst.scores[: len(tuned)])


def test_official_panoptic_and_semantic_through_postprocess():
    out, scene = _output("official", q=40, s=40, seed=1)
    sem = postprocess.semantic(out, scene)
    per_sp = out.final.sem_logits[:, :20].argmax(1)
    assert np.array_equal(sem, per_sp[out.superpoints].numpy())
    pan = postprocess.panoptic(out, scene)
    stuff = pan.instance < 0
    assert set(np.unique(pan.semantic[stuff])) <= {0, 1}
    for j in range(len(pan.instances)):
        assert (pan.semantic[pan.instance == j] == pan.instances.classes[j]).all()
        assert pan.instances.masks[j].sum() > 100 and pan.instances.scores[j] > 0.5
    assert list(pan.instances.scores) == sorted(pan.instances.scores, reverse=True)
