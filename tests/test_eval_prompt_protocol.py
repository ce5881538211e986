"""The official prompt protocol: clicks farthest from the background (PointPromptTest 'agile'),
superpoint-level prompt ground truth (scatter_mean > 0.5) and the true-class click confidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uniseg3d_model.eval import (
    farthest_from_background_clicks,
    gt_class_confidence,
    superpoint_majority_masks,
)
from uniseg3d_model.eval.prompt_protocol import voxel_representatives


def _line(n: int) -> np.ndarray:
    """n points on x at voxel centres (0.025 + 0.05 i): one point per 5 cm voxel."""
    return np.stack([0.025 + 0.05 * np.arange(n), np.full(n, 0.025), np.full(n, 0.025)], 1)


def test_click_is_the_instance_point_farthest_from_background() -> None:
    points = _line(14)
    instance = np.full(14, -1)
    instance[3:10] = 0  # background at 0-2 and 10-13: point 6 is 4 voxels from both sides
    idx, targets = farthest_from_background_clicks(points, instance)
    assert idx.tolist() == [6] and targets.tolist() == [0]


def test_click_differs_from_the_centroid_on_an_l_shaped_instance() -> None:
    # an L of voxels: the centroid's nearest point sits near the inner corner, the click at the
    # point deepest inside the thick arm
    xs, ys = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    points = np.concatenate([0.025 + 0.05 * grid, np.full((len(grid), 1), 0.025)], 1)
    arm_a = (grid[:, 0] >= 1) & (grid[:, 0] <= 9) & (grid[:, 1] >= 1) & (grid[:, 1] <= 5)  # 9 x 5 block
    arm_b = (grid[:, 0] >= 1) & (grid[:, 0] <= 2) & (grid[:, 1] >= 1) & (grid[:, 1] <= 10)
    instance = np.where(arm_a | arm_b, 0, -1)
    (idx,), _ = farthest_from_background_clicks(points, instance)
    # distance to the background is 0.15 m at best (row y = 3, x in 3..7); the first such point
    # in index order is (3, 3)
    assert grid[idx].tolist() == [3, 3]
    members = np.flatnonzero(instance == 0)
    centroid_pick = members[np.argmin(np.linalg.norm(points[members] - points[members].mean(0), axis=1))]
    assert centroid_pick != idx


def test_click_uses_one_representative_point_per_voxel() -> None:
    # points 0 and 1 share a voxel; point 1 (higher index) is not a candidate even though it is
    # farther from the background, point 0 represents the voxel
    points = np.array([[0.010, 0.0, 0.0], [0.049, 0.0, 0.0], [0.075, 0.0, 0.0], [-0.03, 0.0, 0.0]])
    instance = np.array([0, 0, 0, -1])
    assert voxel_representatives(points).tolist() == [0, 2, 3]
    idx, _ = farthest_from_background_clicks(points, instance)
    assert idx.tolist() == [2]


def test_instance_without_representative_gets_no_click() -> None:
    # instance 1's only point shares a voxel with a lower-index point of instance 0
    points = np.array([[0.01, 0.0, 0.0], [0.02, 0.0, 0.0], [0.2, 0.0, 0.0]])
    instance = np.array([0, 1, -1])
    idx, targets = farthest_from_background_clicks(points, instance)
    assert targets.tolist() == [0] and idx.tolist() == [0]


def _reference_clicks(points: np.ndarray, instance: np.ndarray) -> list[int]:
    """PointPromptTest 'agile' as written there: quantize, cdist to background, argmax."""
    keys = np.floor(points / 0.05).astype(np.int64)
    _, unique_map = np.unique(keys, axis=0, return_index=True)
    unique_map = np.sort(unique_map)
    coords = torch.as_tensor(points[unique_map], dtype=torch.float64)
    out = []
    for t in np.unique(instance[instance >= 0]):
        fg = torch.as_tensor(instance[unique_map] == t)
        if fg.sum() == 0:
            continue
        dist = torch.cdist(coords[~fg], coords[fg]).min(dim=0).values
        out.append(int(unique_map[torch.where(fg)[0][dist.argmax()]]))
    return out


def test_clicks_match_the_reference_on_a_random_scene() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((3000, 3)) * np.array([2.0, 2.0, 1.0])
    instance = np.full(3000, -1)
    for k, centre in enumerate(rng.random((5, 3)) * np.array([2.0, 2.0, 1.0])):
        instance[np.linalg.norm(points - centre, axis=1) < 0.3] = k
    idx, _ = farthest_from_background_clicks(points, instance)
    assert idx.tolist() == _reference_clicks(points, instance)


def test_superpoint_majority_ground_truth() -> None:
    sp = np.array([0, 0, 0, 1, 1, 2])
    mask = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1]], bool)
    # superpoint 0: 2/3 in -> in; superpoint 1: 1/2 is not more than half -> out
    out = superpoint_majority_masks(mask, sp)
    assert out.tolist() == [[True, True, True, False, False, False], [False, False, False, True, True, True]]


def test_superpoint_majority_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="point_masks"):
        superpoint_majority_masks(np.zeros((1, 4), bool), np.zeros(5, int))


def test_click_confidence_is_the_true_class_probability() -> None:
    # logits [0, ln 2, 0 | no-object 0]: softmax [1, 2, 1, 1] / 5; "no object" stays in the denominator
    logits = torch.tensor([[0.0, math.log(2.0), 0.0, 0.0], [0.0, math.log(2.0), 0.0, 0.0]])
    conf = gt_class_confidence(logits, np.array([1, 2]))
    assert conf.tolist() == pytest.approx([2 / 5, 1 / 5])
    with pytest.raises(ValueError, match="classes"):
        gt_class_confidence(logits, np.array([3, 0]))  # column 3 is "no object"
