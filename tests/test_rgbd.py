"""RGB-D back-projection: geometry against ray-cast depth, units, filtering, stride, colors, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from uniseg3d_ros.mapping.rgbd import depth_to_points
from uniseg3d_ros.mapping.scene_map import transform_points

K = np.array([[200.0, 0.0, 63.5], [0.0, 210.0, 47.5], [0.0, 0.0, 1.0]])


def test_plane_back_projects_onto_the_pixel_rays():
    depth = np.full((96, 128), 2.0, np.float32)
    pts, colors = depth_to_points(depth, None, K)
    assert colors is None and pts.shape == (96 * 128, 3) and pts.dtype == np.float32
    v, u = np.mgrid[0:96, 0:128]
    np.testing.assert_allclose(pts[:, 2], 2.0)
    np.testing.assert_allclose(pts[:, 0], (u.ravel() - 63.5) * 2.0 / 200.0, atol=1e-6)
    np.testing.assert_allclose(pts[:, 1], (v.ravel() - 47.5) * 2.0 / 210.0, atol=1e-6)
    # Projecting back with K gives the integer pixel grid (REP 103 optical frame: x right, y down).
    proj = (K @ pts.T.astype(np.float64)).T
    np.testing.assert_allclose(proj[:, :2] / proj[:, 2:], np.stack([u.ravel(), v.ravel()], 1), atol=1e-4)


def test_raycast_depth_lands_on_the_mesh_surface():
    from tests.test_scene_map import K as RK
    from tests.test_scene_map import build_room, o3d, render, room_poses

    scene, rgbs = build_room()
    for pose in room_poses(3):
        depth, color = render(scene, rgbs, pose)
        pts, cols = depth_to_points(depth, color, RK, max_depth=10.0)
        assert len(pts) == np.count_nonzero(depth)
        world = transform_points(pts, pose)
        dist = scene.compute_distance(o3d.core.Tensor(world)).numpy()
        assert np.percentile(dist, 99) < 2e-3  # mm depth quantization over a few metres


def test_millimetres_and_metres_agree():
    rng = np.random.default_rng(0)
    mm = rng.integers(200, 5000, (48, 64)).astype(np.uint16)
    a, _ = depth_to_points(mm, None, K)
    b, _ = depth_to_points(mm.astype(np.float32) / 1000.0, None, K)
    c, _ = depth_to_points(mm // 10, None, K, depth_scale=0.01)  # 16UC1 in centimetres
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a[:, 2], np.round(mm.ravel() / 10) / 100, atol=0.0051)
    assert c.shape == a.shape


def test_invalid_and_out_of_range_depths_are_dropped():
    depth = np.full((4, 5), 1.0, np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.nan
    depth[0, 2] = np.inf
    depth[0, 3] = 0.05  # below min_depth 0.1
    depth[0, 4] = 7.0  # above max_depth 6
    depth[1, 0] = -1.0
    pts, _ = depth_to_points(depth, None, K)
    assert pts.shape == (20 - 6, 3) and np.all(pts[:, 2] == 1.0)
    mm = np.array([[0, 100, 6000, 6001]], np.uint16)
    pts, _ = depth_to_points(mm, None, K)
    np.testing.assert_allclose(pts[:, 2], [0.1, 6.0])


def test_stride_keeps_full_resolution_pixel_coordinates():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 3.0, (30, 40)).astype(np.float32)
    color = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    full, fc = depth_to_points(depth, color, K)
    sub, sc = depth_to_points(depth, color, K, stride=3)
    idx = (np.arange(0, 30, 3)[:, None] * 40 + np.arange(0, 40, 3)[None, :]).ravel()
    np.testing.assert_array_equal(sub, full[idx])
    np.testing.assert_array_equal(sc, fc[idx])


def test_colors_follow_their_pixels():
    depth = np.ones((2, 3), np.uint16) * 1000
    depth[1, 1] = 0
    rgba = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    pts, cols = depth_to_points(depth, rgba, K)
    keep = np.array([True, True, True, True, False, True])
    np.testing.assert_allclose(cols, rgba.reshape(-1, 4)[keep, :3] / 255.0, atol=1e-7)
    _, cf = depth_to_points(depth, rgba[..., :3] / 255.0, K)
    np.testing.assert_allclose(cf, cols, atol=1e-6)


def test_camera_info_k_and_skew():
    depth = np.full((3, 4), 2.0, np.float32)
    a, _ = depth_to_points(depth, None, K.ravel().tolist())
    b, _ = depth_to_points(depth, None, K)
    np.testing.assert_array_equal(a, b)
    ks = K.copy()
    ks[0, 1] = 5.0
    s, _ = depth_to_points(depth, None, ks)
    proj = (ks @ s.T.astype(np.float64)).T
    v, u = np.mgrid[0:3, 0:4]
    np.testing.assert_allclose(proj[:, :2] / proj[:, 2:], np.stack([u.ravel(), v.ravel()], 1), atol=1e-4)


def test_nonzero_distortion_warns_zero_does_not():
    depth = np.ones((2, 2), np.float32)
    with pytest.warns(UserWarning, match="distortion"):
        depth_to_points(depth, None, K, D=[0.1, 0.0, 0.0, 0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        depth_to_points(depth, None, K, D=[0.0] * 5)
        depth_to_points(depth, None, K, D=[])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"K": np.eye(3)[:2]}, "9 elements"),
    ({"K": np.diag([0.0, 1.0, 1.0])}, "focal"),
    ({"K": np.array([[1.0, 0, 0], [0, 1, 0], [0, 1, 1]])}, "last row"),
    ({"depth": np.ones((2, 2, 1))}, "2-D"),
    ({"depth": np.ones((2, 2), bool)}, "dtype"),
    ({"color": np.zeros((3, 2, 3), np.uint8)}, "does not match"),
    ({"color": np.zeros((2, 2), np.uint8)}, "color must be"),
    ({"color": np.full((2, 2, 3), 255.0)}, "0-255"),
    ({"stride": 0}, "stride"),
    ({"max_depth": 0.05}, "max_depth"),
    ({"depth_scale": -1.0}, "depth_scale"),
])
def test_bad_inputs_raise_named_errors(kwargs, match):
    args = {"depth": np.ones((2, 2), np.float32), "color": None, "K": K}
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        depth_to_points(args["depth"], args["color"], args["K"], **extra)
