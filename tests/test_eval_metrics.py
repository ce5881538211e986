"""Hand-computed cases for every evaluation metric."""

import numpy as np
import pytest

from uniseg3d_model.eval import (
    InstanceAPEvaluator,
    InteractiveEvaluator,
    PanopticEvaluator,
    ReferringEvaluator,
    SemanticEvaluator,
    ap_at_threshold,
    split_ap,
)

CLASSES = ["chair", "table"]


def _scene():
    """300 points: 0-99 chair #0, 100-199 chair #1, 200-299 table #2 ... plus 100 unlabelled (wall)."""
    gt_instance = np.full(400, -1)
    gt_instance[0:100] = 0
    gt_instance[100:200] = 1
    gt_instance[200:300] = 2
    gt_class = np.array([0, 0, 1])
    return gt_instance, gt_class


def _masks(*ranges, n=400):
    masks = np.zeros((len(ranges), n), bool)
    for i, (a, b) in enumerate(ranges):
        masks[i, a:b] = True
    return masks


def _evaluate(pred_ranges, classes, scores, min_region_size=10):
    ev = InstanceAPEvaluator(CLASSES, min_region_size=min_region_size)
    gt_instance, gt_class = _scene()
    ev.add_scene(gt_instance, gt_class, _masks(*pred_ranges), np.array(classes), np.array(scores))
    return ev.compute()


def test_instance_ap_perfect_prediction_is_one():
    result = _evaluate([(0, 100), (100, 200), (200, 300)], [0, 0, 1], [0.9, 0.8, 0.7])
    assert result["ap"] == pytest.approx(1.0)
    assert result["ap50"] == pytest.approx(1.0)
    assert result["ap25"] == pytest.approx(1.0)


def test_instance_ap_disjoint_prediction_is_zero():
    # the chair predictions sit on the table, the table prediction on the chairs
    result = _evaluate([(200, 300), (0, 100)], [0, 1], [0.9, 0.8])
    assert result["ap"] == 0.0
    assert result["ap25"] == 0.0


def test_instance_ap_partial_overlap_known_value():
    # one chair predicted with IoU 0.75 (75 of 100 points): TP for thresholds 0.50..0.70 only
    ev = InstanceAPEvaluator(["chair"], min_region_size=10)
    gt = np.full(100, -1)
    gt[:100] = 0
    ev.add_scene(gt, np.array([0]), _masks((0, 75), n=100), np.array([0]), np.array([0.5]))
    result = ev.compute()
    assert result["ap"] == pytest.approx(0.5)
    assert result["ap50"] == pytest.approx(1.0)
    assert result["per_class"]["chair"]["ap25"] == pytest.approx(1.0)


def test_instance_ap_duplicate_prediction_penalized():
    # TP 0.9 (chair 0), duplicate of chair 0 at 0.8 (FP), TP 0.7 (chair 1): benchmark AP = 19/24
    result = _evaluate([(0, 100), (0, 100), (100, 200)], [0, 0, 0], [0.9, 0.8, 0.7])
    chair = result["per_class"]["chair"]
    assert chair["ap50"] == pytest.approx(19 / 24)
    without_duplicate = _evaluate([(0, 100), (100, 200)], [0, 0], [0.9, 0.7])["per_class"]["chair"]
    assert without_duplicate["ap50"] == pytest.approx(1.0)


def test_instance_ap_prediction_on_unlabelled_space_is_ignored():
    # a confident chair prediction on the wall (points 300-399) is not a false positive
    result = _evaluate([(300, 400), (0, 100), (100, 200)], [0, 0, 0], [0.99, 0.5, 0.4])
    assert result["per_class"]["chair"]["ap"] == pytest.approx(1.0)
    # the same prediction on the table (another evaluated class) is
    hurt = _evaluate([(200, 300), (0, 100), (100, 200)], [0, 0, 0], [0.99, 0.5, 0.4])
    assert hurt["per_class"]["chair"]["ap"] < 1.0


def test_instance_ap_small_regions_are_not_evaluated():
    ev = InstanceAPEvaluator(["chair"], min_region_size=50)
    gt = np.full(100, -1)
    gt[:20] = 0  # a 20-point chair: below min_region_size
    ev.add_scene(gt, np.array([0]), _masks((0, 20), n=100), np.array([0]), np.array([0.9]))
    assert np.isnan(ev.compute()["ap"])


def test_instance_ap_missing_class_counts_zero_when_gt_exists():
    result = _evaluate([(0, 100), (100, 200)], [0, 0], [0.9, 0.8])
    assert result["per_class"]["chair"]["ap"] == pytest.approx(1.0)
    assert result["per_class"]["table"]["ap"] == 0.0
    assert result["ap"] == pytest.approx(0.5)


def test_instance_ap_rejects_mismatched_predictions():
    ev = InstanceAPEvaluator(CLASSES)
    gt_instance, gt_class = _scene()
    with pytest.raises(ValueError, match="pred_masks"):
        ev.add_scene(gt_instance, gt_class, _masks((0, 10)), np.array([0, 1]), np.array([0.5]))


def test_split_ap_averages_named_subsets():
    result = _evaluate([(0, 100), (100, 200)], [0, 0], [0.9, 0.8])
    splits = split_ap(result, {"head": ["chair"], "tail": ["table"], "none": ["sofa"]})
    assert splits["head"] == pytest.approx(1.0)
    assert splits["tail"] == 0.0
    assert np.isnan(splits["none"])


def test_semantic_miou_known_value_and_ignore():
    ev = SemanticEvaluator(["a", "b", "c"])
    ev.add_scene(np.array([0, 0, 1, 1, -100, -100]), np.array([0, 1, 1, 1, 2, 2]))
    result = ev.compute()
    assert result["per_class"]["a"] == pytest.approx(1 / 2)
    assert result["per_class"]["b"] == pytest.approx(2 / 3)
    assert np.isnan(result["per_class"]["c"])  # only predicted on ignored points
    assert result["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["accuracy"] == pytest.approx(3 / 4)


def test_semantic_perfect_and_disjoint():
    ev = SemanticEvaluator(["a", "b"])
    ev.add_scene(np.array([0, 1, 1]), np.array([0, 1, 1]))
    assert ev.compute()["miou"] == pytest.approx(1.0)
    ev = SemanticEvaluator(["a", "b"])
    ev.add_scene(np.array([0, 0, 1]), np.array([1, 1, 0]))
    assert ev.compute()["miou"] == 0.0


PAN_CLASSES = ["wall", "chair"]


def _panoptic(pred_sem, pred_inst, gt_sem=None, gt_inst=None, min_points=0):
    # 10 wall points, chair #0 = points 10..19, chair #1 = points 20..29
    if gt_sem is None:
        gt_sem = np.array([0] * 10 + [1] * 20)
        gt_inst = np.array([-1] * 10 + [0] * 10 + [1] * 10)
    ev = PanopticEvaluator(PAN_CLASSES, thing_classes=["chair"], min_points=min_points)
    ev.add_scene(gt_sem, gt_inst, np.asarray(pred_sem), np.asarray(pred_inst))
    return ev.compute()


def test_panoptic_perfect_is_one():
    result = _panoptic([0] * 10 + [1] * 20, [-1] * 10 + [5] * 10 + [7] * 10)
    assert result["pq"] == pytest.approx(1.0)
    assert result["things_pq"] == pytest.approx(1.0)
    assert result["stuff_pq"] == pytest.approx(1.0)


def test_panoptic_partial_overlap_and_false_positive():
    # chair 0 predicted on 8 of its 10 points (IoU 0.8, the other 2 are called wall);
    # chair 1 split in halves: IoU 0.5 each -> no match: 2 FP + 1 FN
    pred_sem = [0] * 10 + [0, 0] + [1] * 8 + [1] * 10
    pred_inst = [-1] * 10 + [-1, -1] + [0] * 8 + [1] * 5 + [2] * 5
    result = _panoptic(pred_sem, pred_inst)
    chair = result["per_class"]["chair"]
    assert chair["sq"] == pytest.approx(0.8)
    assert chair["rq"] == pytest.approx(1 / (1 + 0.5 * 2 + 0.5 * 1))
    assert chair["pq"] == pytest.approx(0.8 / 2.5)
    wall = result["per_class"]["wall"]
    assert wall["pq"] == pytest.approx(10 / 12)  # wall pred has 12 points, 10 right


def test_panoptic_segment_in_ignored_space_is_not_false_positive():
    gt_sem = np.array([0] * 10 + [1] * 10 + [-100] * 10)
    gt_inst = np.array([-1] * 10 + [0] * 10 + [-1] * 10)
    pred_sem = [0] * 10 + [1] * 20
    pred_inst = [-1] * 10 + [3] * 10 + [4] * 10  # instance 4 lies wholly in ignored space
    result = _panoptic(pred_sem, pred_inst, gt_sem, gt_inst)
    assert result["pq"] == pytest.approx(1.0)


def test_panoptic_min_points_drops_small_segments():
    pred_sem = [0] * 10 + [1] * 20
    pred_inst = [-1] * 10 + [0] * 10 + [1] * 9 + [2]
    assert _panoptic(pred_sem, pred_inst, min_points=2)["per_class"]["chair"]["pq"] == pytest.approx(
        (1 + 0.9) / 2
    )
    # counting the single stray point as a segment adds one false positive
    assert _panoptic(pred_sem, pred_inst, min_points=0)["per_class"]["chair"]["pq"] == pytest.approx(
        (1 + 0.9) / 2.5
    )


def test_interactive_ap_known_values():
    gt = _masks((0, 100), (0, 100), (0, 100), n=100)
    # IoUs 0.9, 0.6, 0.3 with confidences 0.9, 0.8, 0.7
    pred = _masks((0, 90), (0, 60), (0, 30), n=100)
    ev = InteractiveEvaluator()
    ev.add_scene(pred, gt, np.array([0.9, 0.8, 0.7]))
    result = ev.compute()
    assert result["ap50"] == pytest.approx(2 / 3)
    assert result["ap25"] == pytest.approx(1.0)
    assert result["ap"] == pytest.approx(1 / 3)
    assert result["miou"] == pytest.approx(0.6)


def test_interactive_ap_ranks_by_confidence():
    ious = np.array([0.9, 0.1])
    assert ap_at_threshold(ious, np.array([0.9, 0.1]), 0.5) == pytest.approx(0.5)
    # the wrong mask ranked first halves the precision at the only recall step
    assert ap_at_threshold(ious, np.array([0.1, 0.9]), 0.5) == pytest.approx(0.25)


def test_referring_miou_and_accuracy():
    gt = _masks((0, 10), (0, 10), (0, 10), n=20)
    pred = _masks((0, 10), (0, 4), (10, 20), n=20)  # IoU 1.0, 0.4, 0.0
    ev = ReferringEvaluator()
    ev.add_scene(pred, gt)
    result = ev.compute()
    assert result["miou"] == pytest.approx(1.4 / 3)
    assert result["acc25"] == pytest.approx(2 / 3)
    assert result["acc50"] == pytest.approx(1 / 3)


def test_referring_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        ReferringEvaluator().add_scene(np.zeros((2, 5), bool), np.zeros((3, 5), bool))
