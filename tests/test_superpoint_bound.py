"""``segment_points(max_superpoints=...)``: a hard, measured bound on the superpoint count of fused
maps whatever their density or noise, without touching maps already under it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic_room import make_room
from uniseg3d_model.superpoints import segment_points


def voxels_per_segment(points: np.ndarray, sp: np.ndarray, voxel: float) -> np.ndarray:
    keys = np.unique(np.column_stack([sp, np.floor(points / voxel).astype(np.int64)]), axis=0)
    return np.bincount(keys[:, 0])


@pytest.fixture(scope="module")
def noisy_room():
    room = make_room(seed=2, density=900.0)
    rng = np.random.default_rng(0)
    pts = room.points + rng.normal(0, 0.012, room.points.shape).astype(np.float32)  # noisy depth
    cols = np.clip(room.colors + rng.normal(0, 0.08, room.colors.shape), 0, 1).astype(np.float32)
    return pts, cols


def test_noise_over_segments_without_a_bound_and_the_bound_holds(noisy_room):
    pts, cols = noisy_room
    free = segment_points(pts, cols)
    budget = max(10, (free.max() + 1) // 4)
    bounded = segment_points(pts, cols, max_superpoints=budget)
    assert free.max() + 1 > budget  # the case the bound is for
    assert bounded.max() + 1 <= budget
    m = len(np.unique(np.floor(pts / 0.02).astype(np.int64), axis=0))
    assert voxels_per_segment(pts, bounded, 0.02).min() >= -(-m // budget)


def test_isolated_sparse_points_are_bounded_too():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 3, (3000, 3)).astype(np.float32)  # mostly isolated voxels: no graph edges
    free = segment_points(pts, None)
    bounded = segment_points(pts, None, max_superpoints=50)
    assert free.max() + 1 > 1000 and bounded.max() + 1 <= 50


def test_maps_under_the_bound_are_unchanged(noisy_room):
    pts, cols = noisy_room
    free = segment_points(pts, cols)
    np.testing.assert_array_equal(segment_points(pts, cols, max_superpoints=free.max() + 1), free)


def test_bad_bound_is_rejected(noisy_room):
    with pytest.raises(ValueError, match="max_superpoints"):
        segment_points(noisy_room[0], None, max_superpoints=0)
