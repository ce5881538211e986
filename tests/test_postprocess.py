"""Post-processing on hand-built decoder outputs whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uniseg3d_model import postprocess
from uniseg3d_model.encoding import DecoderOutput, LayerPrediction
from uniseg3d_model.structures import SceneSample

VOCAB = ("wall", "floor", "chair", "table")
BIG = 12.0
# 6 superpoints: 0-1 wall, 2 floor, 3 chair, 4-5 table; 2 points per superpoint
SUPERPOINTS = np.repeat(np.arange(6), 2)
N = len(SUPERPOINTS)


def _scene(**kw) -> SceneSample:
    rng = np.random.default_rng(0)
    return SceneSample(
        points=rng.random((N, 3)).astype(np.float32),
        colors=rng.random((N, 3)).astype(np.float32),
        superpoints=SUPERPOINTS,
        **kw,
    )


def _row(sp_ids: list[int], cls: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.full((6,), -BIG)
    mask[sp_ids] = BIG
    logits = torch.full((len(VOCAB) + 1,), -BIG)
    logits[len(VOCAB) if cls is None else cls] = BIG
    return mask, logits


def _output(rows: list[tuple[list[int], int | None]], clicks: int = 0, texts: int = 0, scores=None):
    masks, logits = zip(*(_row(sp, c) for sp, c in rows))
    masks, logits = torch.stack(masks), torch.stack(logits)
    q = len(rows)
    s = torch.full((q,), BIG) if scores is None else torch.as_tensor(scores, dtype=torch.float32)
    layer = LayerPrediction(masks, logits, s, torch.nn.functional.normalize(torch.randn(q, 8), dim=-1))
    return DecoderOutput(
        layers=[layer],
        num_unified=q - clicks - texts,
        num_clicks=clicks,
        num_texts=texts,
        query_superpoints=torch.full((q - clicks - texts,), -1),
        vocabulary=VOCAB,
        superpoints=torch.as_tensor(SUPERPOINTS),
        contrastive_scale=torch.tensor(10.0),
    )


def _points_of(sp_ids: list[int]) -> np.ndarray:
    return np.isin(SUPERPOINTS, sp_ids)


def test_instances_keep_things_drop_stuff_and_map_to_points():
    out = _output([([0, 1], 0), ([2], 1), ([3], 2), ([4, 5], 3), ([0], None)])
    pred = postprocess.instances(out, _scene(), min_points=1)
    assert sorted(pred.labels) == ["chair", "table"]
    assert pred.masks.shape == (2, N) and pred.masks.dtype == bool
    by_label = dict(zip(pred.labels, pred.masks))
    assert np.array_equal(by_label["chair"], _points_of([3]))
    assert np.array_equal(by_label["table"], _points_of([4, 5]))
    assert np.all(np.diff(pred.scores) <= 0)
    assert pred.classes.tolist() == [VOCAB.index(x) for x in pred.labels]


def test_instances_nms_removes_duplicate_masks():
    out = _output([([4, 5], 3), ([4, 5], 3), ([3], 2)])
    assert len(postprocess.instances(out, _scene(), min_points=1, nms_iou=0.5)) == 2
    assert len(postprocess.instances(out, _scene(), min_points=1, nms_iou=None)) == 3


def test_instances_threshold_topk_and_min_points():
    out = _output([([3], 2), ([4, 5], 3)])
    assert len(postprocess.instances(out, _scene(), min_points=1, top_k=1)) == 1
    assert len(postprocess.instances(out, _scene(), min_points=3)) == 1  # chair has 2 points
    assert len(postprocess.instances(out, _scene(), min_points=1, score_threshold=0.999999)) == 0


def test_semantic_labels_every_point_from_mask_class_votes():
    out = _output([([0, 1], 0), ([2], 1), ([3], 2), ([4, 5], 3)])
    sem = postprocess.semantic(out, _scene())
    expected = np.array([0, 0, 1, 2, 3, 3])[SUPERPOINTS]
    assert np.array_equal(sem, expected)


def test_panoptic_paints_things_over_stuff_with_instance_ids():
    # the table query also claims superpoint 3 with a lower score than the chair
    out = _output([([0, 1], 0), ([2], 1), ([3], 2), ([3, 4, 5], 3)], scores=[BIG, BIG, BIG, 0.0])
    pan = postprocess.panoptic(out, _scene(), score_threshold=0.1, min_points=1)
    assert pan.semantic.shape == (N,) and pan.instance.shape == (N,)
    assert np.array_equal(pan.semantic[_points_of([0, 1])], np.zeros(4))
    assert np.all(pan.instance[_points_of([0, 1, 2])] == -1)
    chair = pan.instances.labels.index("chair")
    table = pan.instances.labels.index("table")
    assert np.all(pan.instance[_points_of([3])] == chair)  # higher score wins the overlap
    assert np.all(pan.instance[_points_of([4, 5])] == table)
    assert np.array_equal(pan.semantic[_points_of([4, 5])], np.full(4, 3))
    assert np.array_equal(pan.instances.masks[table], _points_of([4, 5]))


def test_interactive_and_referring_masks_per_prompt():
    out = _output(
        [([3], 2), ([4, 5], 3), ([3], 2), ([0, 1], 0)], clicks=1, texts=2, scores=[BIG, BIG, BIG, -BIG]
    )
    clicks = postprocess.interactive(out, _scene())
    assert clicks.shape == (1, N) and np.array_equal(clicks[0], _points_of([4, 5]))
    masks, scores = postprocess.referring(out, _scene())
    assert masks.shape == (2, N) and np.array_equal(masks[0], _points_of([3]))
    assert scores.shape == (2,) and scores[0] > 0.9 and scores[1] < 0.1


def test_referring_score_falls_when_the_mask_lies_on_another_class_than_the_sentence_asks():
    # two sentences whose class heads say "chair": one mask on the chair, one (as clean) on the table
    out = _output([([3], 2), ([3], 2), ([4, 5], 2)], texts=2, scores=[BIG, BIG, BIG])
    semantic = np.repeat(np.array([0, 0, 1, 2, 3, 3]), 2)  # per point, as the semantic head says
    masks, quality = postprocess.referring(out, _scene())
    scores = quality * postprocess.class_agreement(out.texts().class_logits, masks, semantic)
    assert np.array_equal(masks[1], _points_of([4, 5]))
    assert quality[1] > 0.9 and scores[0] > 0.9 and scores[1] < 1e-3  # clean mask, wrong class
    assert postprocess.prompt_classes(out.texts()).tolist() == [2, 2]  # both sentences ask for a chair

    logits = torch.tensor([[0.0, 0.0, np.log(3.0), 0.0, -1e4]])  # chair 0.5, the rest 1/6 each
    half = np.zeros((1, N), bool)
    half[0, _points_of([3, 4])] = True  # half chair, half table points
    agree = postprocess.class_agreement(logits, half, semantic)
    assert agree[0] == pytest.approx((0.5 + 1 / 6) / 2)
    unlabelled = postprocess.class_agreement(logits, half, np.full(N, -1))
    assert unlabelled[0] == 1.0  # no evidence either way: the mask score alone


def test_open_vocabulary_uses_scene_vocabulary_names():
    out = _output([([0, 1], 0), ([3], 2)])
    scene = _scene(vocabulary=list(VOCAB))
    pred = postprocess.open_vocabulary(out, scene, min_points=1)
    assert sorted(pred.labels) == ["chair", "wall"]  # every class counts, stuff included
    with pytest.raises(ValueError, match="vocabulary"):
        postprocess.open_vocabulary(out, _scene(vocabulary=["lamp"]))


def test_point_count_mismatch_raises():
    out = _output([([3], 2)])
    rng = np.random.default_rng(1)
    other = SceneSample(rng.random((5, 3)), rng.random((5, 3)), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="points"):
        postprocess.semantic(out, other)


def test_matrix_nms_decays_overlapping_masks_instead_of_dropping_them():
    out = _output([([4, 5], 3), ([3, 4, 5], 3), ([3], 2)], scores=[BIG, BIG, BIG])
    out.layers[0].class_logits[1, 4] = BIG  # the overlapping table is only 50 % "table"
    pred = postprocess.instances(out, _scene(), min_points=1, score_threshold=0.01, nms="matrix")
    assert sorted(pred.labels) == ["chair", "table", "table"]  # nothing dropped
    big = _points_of([3, 4, 5])
    decayed = [s for s, m in zip(pred.scores, pred.masks) if (m == big).all()]
    best = [s for s, m in zip(pred.scores, pred.masks) if (m == _points_of([4, 5])).all()]
    # IoU 4/6 with the better table -> linear decay 1 - 2/3
    assert best[0] > 0.99 and decayed[0] == pytest.approx(0.5 / 3, rel=1e-3)
    assert pred.scores[pred.labels.index("chair")] > 0.99  # other class: no decay
    with pytest.raises(ValueError, match="nms"):
        postprocess.instances(out, _scene(), nms="soft")
