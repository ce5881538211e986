"""Augmentations: the official pipeline (rotation, scale, translation, no flips, elastic last on the
voxel placement only) against independent references; shapes kept, seeded draws reproducible."""

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
    out, out_cols, voxel_points = augment_scene(pts, cols, np.random.default_rng(3), cfg)
    assert voxel_points is None
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


def test_defaults_are_the_official_pipeline() -> None:
    cfg = AugmentConfig()  # GlobalRotScaleTrans + ElasticTransfrom of the official config
    assert cfg.rotate_z == np.pi and cfg.scale == (0.8, 1.2) and cfg.translate_std == 0.1
    assert cfg.flip_x_p == cfg.flip_y_p == 0.0 and cfg.auto_contrast_p == cfg.color_jitter_std == 0.0
    assert cfg.elastic_p == 0.5 and cfg.elastic == ((6.0, 40.0), (20.0, 160.0)) and cfg.voxel_size == 0.02
    assert cfg.elastic_target == "voxels"


def test_rotation_scale_translation_in_mmdet3d_order() -> None:
    pts, cols = _scene()
    cfg = AugmentConfig(elastic_p=0.0)
    out, _, _ = augment_scene(pts, cols, np.random.default_rng(11), cfg)
    ref_rng = np.random.default_rng(11)  # same draws, written out: angle, scale, translation
    a, s, t = ref_rng.uniform(-np.pi, np.pi), ref_rng.uniform(0.8, 1.2), ref_rng.normal(0.0, 0.1, 3)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    np.testing.assert_allclose(out, (pts.astype(np.float64) @ rot.T) * s + t, atol=1e-5)


def test_no_flips_by_default_every_draw_keeps_handedness() -> None:
    pts, cols = _scene(50)
    centred = pts - pts.mean(0)
    for seed in range(20):
        out, _, _ = augment_scene(pts, cols, np.random.default_rng(seed), AugmentConfig(elastic_p=0.0))
        linear = np.linalg.lstsq(centred, out - out.mean(0), rcond=None)[0]
        assert np.linalg.det(linear) > 0  # a mirror would make it negative


def _box_blur_zero_padded(a: np.ndarray, axis: int) -> np.ndarray:
    padded = np.pad(a, [(1, 1) if d == axis else (0, 0) for d in range(3)])
    take = [slice(None)] * 3
    parts = []
    for offset in range(3):
        take[axis] = slice(offset, offset + a.shape[axis])
        parts.append(padded[tuple(take)])
    return (parts[0] + parts[1] + parts[2]) / 3.0


def _official_elastic_reference(x: np.ndarray, rng: np.random.Generator, gran: float,
                                mag: float) -> np.ndarray:
    """transforms_3d.py ElasticTransfrom.elastic written out: noise grid centred on 0, spacing 2*gran."""
    dims = (np.abs(x).max(0).astype(np.int32) // gran).astype(int) + 3
    noise = [rng.standard_normal(tuple(dims), dtype=np.float32).astype(np.float64) for _ in range(3)]
    for axis in (0, 1, 2, 0, 1, 2):
        noise = [_box_blur_zero_padded(n, axis) for n in noise]
    disp = np.zeros_like(x)
    for d in range(3):  # one field per displacement axis, each interpolated over all three axes
        grid = noise[d]
        lo = -(dims - 1) * gran
        u = (x - lo) / (2 * gran)
        i0 = np.floor(u).astype(int)
        f = u - i0
        acc = np.zeros(len(x))
        for corner in range(8):
            bits = [(corner >> k) & 1 for k in range(3)]
            idx = [np.clip(i0[:, k] + bits[k], 0, dims[k] - 1) for k in range(3)]
            w = np.prod([f[:, k] if bits[k] else 1 - f[:, k] for k in range(3)], axis=0)
            acc += w * grid[idx[0], idx[1], idx[2]]
        disp[:, d] = acc
    return x + disp * mag


def test_elastic_is_last_and_moves_only_the_voxel_placement() -> None:
    pts, cols = _scene(300)
    cfg = AugmentConfig(elastic_p=1.0)
    out, out_cols, voxel_points = augment_scene(pts, cols, np.random.default_rng(5), cfg)
    rigid, _, none = augment_scene(pts, cols, np.random.default_rng(5), AugmentConfig(elastic_p=0.0))
    np.testing.assert_array_equal(out, rigid)  # features and prompts see the undistorted points
    assert none is None and voxel_points.shape == pts.shape
    ref_rng = np.random.default_rng(5)
    ref_rng.uniform(-np.pi, np.pi), ref_rng.uniform(0.8, 1.2), ref_rng.normal(0.0, 0.1, 3), ref_rng.uniform()
    vox = out.astype(np.float64) / 0.02
    for gran, mag in cfg.elastic:
        vox = _official_elastic_reference(vox, ref_rng, gran, mag)
    np.testing.assert_allclose(voxel_points, vox * 0.02, atol=1e-4)
    assert np.abs(voxel_points - out).max() > 0.02  # it does move the placement


def test_elastic_on_points_is_a_named_option() -> None:
    pts, cols = _scene(300)
    voxels = augment_scene(pts, cols, np.random.default_rng(2), AugmentConfig(elastic_p=1.0))
    on_points = AugmentConfig(elastic_p=1.0, elastic_target="points")
    points = augment_scene(pts, cols, np.random.default_rng(2), on_points)
    assert points[2] is None
    np.testing.assert_array_equal(points[0], voxels[2])
