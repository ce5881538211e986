"""Hand-computed cases for every evaluation metric."""

import numpy as np
import pytest

from uniseg3d_model.eval import (
    INTERACTIVE_THRESHOLDS,
    OFFICIAL_OVERLAPS,
    OURS_OVERLAPS,
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


def _single_chair_ap(pred_points: int, overlaps=OFFICIAL_OVERLAPS) -> dict:
    """One 100-point chair predicted by its first ``pred_points`` points (IoU pred_points/100)."""
    ev = InstanceAPEvaluator(["chair"], min_region_size=10, overlaps=overlaps)
    gt = np.zeros(100, int)
    ev.add_scene(gt, np.array([0]), _masks((0, pred_points), n=100), np.array([0]), np.array([0.5]))
    return ev.compute()


def test_official_overlaps_are_the_benchmarks_nine_plus_quarter():
    # evaluate_semantic_instance.py get_options: np.append(np.arange(0.5, 0.95, 0.05), 0.25)
    assert len(OFFICIAL_OVERLAPS) == 10 and OFFICIAL_OVERLAPS[-1] == 0.25
    assert OFFICIAL_OVERLAPS[0] == 0.5 and OFFICIAL_OVERLAPS[8] == pytest.approx(0.9)
    assert not np.isclose(OFFICIAL_OVERLAPS, 0.95).any()
    assert len(OURS_OVERLAPS) == 11 and np.isclose(OURS_OVERLAPS, 0.95).any()


def test_instance_ap_partial_overlap_known_value():
    # IoU 0.75: TP at 0.50, 0.55, 0.60, 0.65, 0.70 -> 5 of the 9 averaged thresholds
    result = _single_chair_ap(75)
    assert result["ap"] == pytest.approx(5 / 9)
    assert result["ap50"] == pytest.approx(1.0)
    assert result["per_class"]["chair"]["ap25"] == pytest.approx(1.0)
    # our earlier 0.50:0.95 averaging: 5 of 10
    assert _single_chair_ap(75, OURS_OVERLAPS)["ap"] == pytest.approx(0.5)


def test_instance_ap_does_not_average_095():
    # IoU 0.93 passes every official threshold (the last is 0.90); 0.95 would fail it
    assert _single_chair_ap(93)["ap"] == pytest.approx(1.0)
    assert _single_chair_ap(93, OURS_OVERLAPS)["ap"] == pytest.approx(0.9)


def test_instance_ap_iou_must_exceed_the_threshold():
    # IoU exactly 0.5 is not a match at 0.5 (strict ">" in the benchmark): a miss and a false positive
    result = _single_chair_ap(50)
    assert result["ap50"] == 0.0
    assert result["ap25"] == pytest.approx(1.0)


def test_instance_ap_best_f1_precision_recall():
    # TP 0.9, duplicate FP 0.8, TP 0.7: best F1 point = all three (P 2/3, R 1)
    result = _evaluate([(0, 100), (0, 100), (100, 200)], [0, 0, 0], [0.9, 0.8, 0.7])
    assert result["per_class"]["chair"]["prec50"] == pytest.approx(2 / 3)
    assert result["per_class"]["chair"]["rec50"] == pytest.approx(1.0)


def test_instance_ap_ignored_fraction_boundary():
    # an unmatched chair prediction half on the wall (void), half on the table: it is ignored
    # only where its ignored fraction 0.5 exceeds the threshold (0.25), a false positive at
    # every threshold from 0.50 up (0.5 <= t)
    scene_pred = [(250, 350), (0, 100), (100, 200)]
    result = _evaluate(scene_pred, [0, 0, 0], [0.99, 0.5, 0.4])
    table = result["per_class"]["chair"]
    # 0.50: scores 0.4 (TP), 0.5 (TP), 0.99 (FP); one curve point per score, from the lowest:
    # (P, R) = (2/3, 1), (1/2, 1/2), (0, 0), then the artificial (1, 0). Step widths
    # convolve([1, 1, .5, 0, 0, 0], [-.5, 0, .5]) = [.25, .5, .25, 0] -> AP = 2/3*.25 + 1/2*.5 = 5/12
    assert table["ap50"] == pytest.approx(5 / 12)
    assert table["ap"] == pytest.approx(5 / 12)
    assert table["ap25"] == pytest.approx(1.0)


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


def _panoptic(pred_sem, pred_inst, gt_sem=None, gt_inst=None, min_points=0, rule="mmdet3d", classes=None):
    # 10 wall points, chair #0 = points 10..19, chair #1 = points 20..29
    if gt_sem is None:
        gt_sem = np.array([0] * 10 + [1] * 20)
        gt_inst = np.array([-1] * 10 + [0] * 10 + [1] * 10)
    classes = PAN_CLASSES if classes is None else classes
    ev = PanopticEvaluator(classes, thing_classes=classes[1:], min_points=min_points, rule=rule)
    ev.add_scene(gt_sem, gt_inst, np.asarray(pred_sem), np.asarray(pred_inst))
    return ev.compute()


@pytest.mark.parametrize("rule", ["mmdet3d", "coco"])  # both rules agree here
def test_panoptic_perfect_is_one(rule):
    result = _panoptic([0] * 10 + [1] * 20, [-1] * 10 + [5] * 10 + [7] * 10, rule=rule)
    assert result["pq"] == pytest.approx(1.0)
    assert result["things_pq"] == pytest.approx(1.0)
    assert result["stuff_pq"] == pytest.approx(1.0)


@pytest.mark.parametrize("rule", ["mmdet3d", "coco"])  # both rules agree here
def test_panoptic_partial_overlap_and_false_positive(rule):
    # chair 0 predicted on 8 of its 10 points (IoU 0.8, the other 2 are called wall);
    # chair 1 split in halves: IoU 0.5 each -> no match: 2 FP + 1 FN
    pred_sem = [0] * 10 + [0, 0] + [1] * 8 + [1] * 10
    pred_inst = [-1] * 10 + [-1, -1] + [0] * 8 + [1] * 5 + [2] * 5
    result = _panoptic(pred_sem, pred_inst, rule=rule)
    chair = result["per_class"]["chair"]
    assert chair["sq"] == pytest.approx(0.8)
    assert chair["rq"] == pytest.approx(1 / (1 + 0.5 * 2 + 0.5 * 1))
    assert chair["pq"] == pytest.approx(0.8 / 2.5)
    wall = result["per_class"]["wall"]
    assert wall["pq"] == pytest.approx(10 / 12)  # wall pred has 12 points, 10 right


@pytest.mark.parametrize("rule", ["mmdet3d", "coco"])  # both rules agree here
def test_panoptic_segment_in_ignored_space_is_not_false_positive(rule):
    gt_sem = np.array([0] * 10 + [1] * 10 + [-100] * 10)
    gt_inst = np.array([-1] * 10 + [0] * 10 + [-1] * 10)
    pred_sem = [0] * 10 + [1] * 20
    pred_inst = [-1] * 10 + [3] * 10 + [4] * 10  # instance 4 lies wholly in ignored space
    result = _panoptic(pred_sem, pred_inst, gt_sem, gt_inst, rule=rule)
    assert result["pq"] == pytest.approx(1.0)


@pytest.mark.parametrize("rule", ["mmdet3d", "coco"])  # both rules agree here
def test_panoptic_min_points_drops_small_segments(rule):
    pred_sem = [0] * 10 + [1] * 20
    pred_inst = [-1] * 10 + [0] * 10 + [1] * 9 + [2]
    chair = _panoptic(pred_sem, pred_inst, min_points=2, rule=rule)["per_class"]["chair"]
    assert chair["pq"] == pytest.approx((1 + 0.9) / 2)
    # counting the single stray point as a segment adds one false positive
    chair = _panoptic(pred_sem, pred_inst, min_points=0, rule=rule)["per_class"]["chair"]
    assert chair["pq"] == pytest.approx((1 + 0.9) / 2.5)


def _partly_ignored_case(rule):
    # gt: wall 0-9, chair 10-19, ignored 20-29. pred: wall on 0-7 and 26-29, chair #3 on 10-19,
    # chair #4 on 8-9 (wall) + 20-25 (ignored): 6 of its 8 points ignored
    gt_sem = np.array([0] * 10 + [1] * 10 + [-100] * 10)
    gt_inst = np.array([-1] * 10 + [0] * 10 + [-1] * 10)
    pred_sem = [0] * 8 + [1] * 2 + [1] * 10 + [1] * 6 + [0] * 4
    pred_inst = [-1] * 8 + [4] * 2 + [3] * 10 + [4] * 6 + [-1] * 4
    return _panoptic(pred_sem, pred_inst, gt_sem, gt_inst, rule=rule)


def test_panoptic_mmdet3d_partly_ignored_prediction_is_false_positive():
    # ignored points leave first; chair #4 keeps its 2 wall points: unmatched -> FP
    result = _partly_ignored_case("mmdet3d")
    assert result["per_class"]["wall"]["pq"] == pytest.approx(0.8)  # 8 / 10
    assert result["per_class"]["chair"]["pq"] == pytest.approx(1 / (1 + 0.5))
    assert result["pq"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_panoptic_coco_rule_skips_mostly_ignored_prediction():
    result = _partly_ignored_case("coco")  # 75% ignored > 50%: not a false positive
    assert result["per_class"]["chair"]["pq"] == pytest.approx(1.0)
    assert result["pq"] == pytest.approx((0.8 + 1.0) / 2)


def test_panoptic_mmdet3d_means_over_every_class():
    # a perfect labelling of a scene without sofas: the sofa class scores 0 in the official mean
    classes = ["wall", "chair", "sofa"]
    args = ([0] * 10 + [1] * 20, [-1] * 10 + [5] * 10 + [7] * 10)
    official = _panoptic(*args, classes=classes)
    assert official["per_class"]["sofa"]["pq"] == 0.0
    assert official["pq"] == pytest.approx(2 / 3)
    assert official["things_pq"] == pytest.approx(1 / 2)
    assert official["stuff_pq"] == pytest.approx(1.0)
    assert _panoptic(*args, classes=classes, rule="coco")["pq"] == pytest.approx(1.0)  # present classes only


def test_panoptic_mmdet3d_small_unmatched_ground_truth_is_not_false_negative():
    # chair #1 has 10 points and no prediction: a miss with min_points 1, not counted with 11
    pred_sem = [0] * 10 + [1] * 10 + [0] * 10
    pred_inst = [-1] * 10 + [0] * 10 + [-1] * 10
    counted = _panoptic(pred_sem, pred_inst, min_points=1)["per_class"]["chair"]
    assert counted["rq"] == pytest.approx(1 / 1.5)
    uncounted = _panoptic(pred_sem, pred_inst, min_points=11)["per_class"]["chair"]
    assert uncounted["rq"] == pytest.approx(1.0)


def test_panoptic_rejects_unknown_rule():
    with pytest.raises(ValueError, match="rule"):
        PanopticEvaluator(["wall"], [], rule="cityscapes")


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


def test_interactive_thresholds_are_cal_aps_ten():
    # unified_metric.py cal_ap: thr = 0.5 + 0.05 * i for i in range(10), 0.95 included
    assert len(INTERACTIVE_THRESHOLDS) == 10
    assert INTERACTIVE_THRESHOLDS[0] == 0.5 and INTERACTIVE_THRESHOLDS[-1] == pytest.approx(0.95)


def test_interactive_ap_counts_095():
    # one click with IoU 0.96 and one with 0.92: TP at 0.95 only for the first
    gt = _masks((0, 100), (0, 100), n=100)
    ev = InteractiveEvaluator()
    ev.add_scene(_masks((0, 96), (0, 92), n=100), gt, np.array([0.9, 0.8]))
    # thresholds 0.50..0.90: both TP -> AP 1; 0.95: the top click only -> AP 1/2
    assert ev.compute()["ap"] == pytest.approx((9 * 1.0 + 0.5) / 10)


def test_prompt_iou_eps_as_official_get_iou():
    # get_iou divides by union + 1e-8
    ev = ReferringEvaluator(eps=1e-8)
    ev.add_scene(_masks((0, 10), n=20), _masks((0, 10), n=20))
    assert ev.compute()["miou"] == 10 / (10 + 1e-8)
    exact = ReferringEvaluator(eps=0.0)
    exact.add_scene(_masks((0, 10), n=20), _masks((0, 10), n=20))
    assert exact.compute()["miou"] == 1.0


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
