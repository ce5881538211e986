"""Augmentations: shapes and labels kept, rigid parts rigid, seeded draws reproducible."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist

from uniseg3d_model.data.augment import (
    AugmentConfig,
    augment_scene,
    auto_contrast,
    elastic_distortion,
    flip,
    rotate_z,
)


def _scene(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform((0, 0, 0), (4, 3, 2.5), (n, 3)).astype(np.float32), rng.uniform(0, 1, (n, 3)).astype(
        np.float32)


def test_rotation_preserves_pairwise_distances_and_z() -> None:
    pts, _ = _scene()
    rot = rotate_z(pts, 1.234)
    np.testing.assert_allclose(pdist(rot), pdist(pts), atol=1e-4)
    np.testing.assert_allclose(rot[:, 2], pts[:, 2])
    assert not np.allclose(rot[:, :2], pts[:, :2])


def test_rotation_by_quarter_turn_maps_x_to_y() -> None:
    rot = rotate_z(np.array([[1.0, 0.0, 0.5]], np.float32), np.pi / 2)
    np.testing.assert_allclose(rot, [[0.0, 1.0, 0.5]], atol=1e-6)


def test_flip_mirrors_one_axis() -> None:
    pts, _ = _scene()
    f = flip(pts, 1)
    np.testing.assert_array_equal(f[:, 1], -pts[:, 1])
    np.testing.assert_array_equal(f[:, [0, 2]], pts[:, [0, 2]])
    np.testing.assert_allclose(pdist(f), pdist(pts), atol=1e-4)


def test_rigid_config_preserves_distances() -> None:
    pts, cols = _scene()
    cfg = AugmentConfig(scale=(1.0, 1.0), elastic_p=0.0, auto_contrast_p=0.0, color_jitter_std=0.0)
    out, out_cols = augment_scene(pts, cols, np.random.default_rng(3), cfg)
    np.testing.assert_allclose(pdist(out), pdist(pts), atol=1e-4)
    np.testing.assert_array_equal(out_cols, cols)


def test_elastic_is_smooth_and_bounded() -> None:
    pts, _ = _scene(2000)
    vox = pts / 0.02
    disp = elastic_distortion(vox, np.random.default_rng(0), 6.0, 40.0) - vox
    assert np.abs(disp).max() > 0.5  # it moves points (voxel units)
    assert np.abs(disp).max() < 40.0  # but by much less than the magnitude
    # nearby points move alike: displacement differences grow with distance
    d = np.linalg.norm(vox[:, None] - vox[None], axis=2)
    dd = np.linalg.norm(disp[:, None] - disp[None], axis=2)
    assert dd[(d > 0) & (d < 2)].mean() < 0.5 * dd[d > 30].mean()


def test_full_augmentation_keeps_shapes_dtypes_and_is_seeded() -> None:
    pts, cols = _scene()
    cfg = AugmentConfig(elastic_p=1.0, auto_contrast_p=1.0)
    a = augment_scene(pts, cols, np.random.default_rng(7), cfg)
    b = augment_scene(pts, cols, np.random.default_rng(7), cfg)
    c = augment_scene(pts, cols, np.random.default_rng(8), cfg)
    for x in a:
        assert x.shape == pts.shape and x.dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])
    assert a[1].min() >= 0.0 and a[1].max() <= 1.0
    assert np.all(np.isfinite(a[0]))


def test_auto_contrast_stays_in_range_and_stretches() -> None:
    cols = np.random.default_rng(0).uniform(0.3, 0.6, (100, 3)).astype(np.float32)
    out = auto_contrast(cols, np.random.default_rng(1))
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(out.max(0) - out.min(0) >= cols.max(0) - cols.min(0) - 1e-6)
