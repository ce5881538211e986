"""TransformBuffer (mapping/tf_buffer.py): chains, static + dynamic edges, interpolation at stamps,
extrapolation refused with a reason, bounded history. Pure numpy, no ROS."""

from __future__ import annotations

import numpy as np
import pytest

from uniseg3d_ros.mapping.frames import pose_to_matrix, quaternion_to_matrix
from uniseg3d_ros.mapping.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    TransformBuffer,
    slerp,
)


def _yaw(angle: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    return pose_to_matrix(t, [0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)])


def test_static_chain_composes_through_the_common_ancestor():
    buf = TransformBuffer()
    a = pose_to_matrix([1, 0, 0], [0, 0, 0.3826834, 0.9238795])
    b = pose_to_matrix([0, 2, 0.5], [0.1, 0.2, 0.0, 0.97])
    buf.set_transform("map", "odom", a, 0.0, static=True)
    buf.set_transform("/odom", "base", b, 0.0, static=True)
    buf.set_transform("map", "marker", np.eye(4), 0.0, static=True)
    np.testing.assert_allclose(buf.lookup("map", "base", 5.0), a @ b, atol=1e-9)
    np.testing.assert_allclose(buf.lookup("base", "map"), np.linalg.inv(a @ b), atol=1e-9)
    np.testing.assert_allclose(buf.lookup("marker", "base", 123.0), a @ b, atol=1e-9)
    with pytest.raises(FrameNotFoundError, match="'lidar' does not exist"):
        buf.lookup("map", "lidar", 0.0)
    buf.set_transform("world", "elsewhere", np.eye(4), 0.0, static=True)
    with pytest.raises(ConnectivityError, match="not connected"):
        buf.lookup("map", "elsewhere", 0.0)


def test_dynamic_edge_interpolates_translation_linearly_and_rotation_by_slerp():
    buf = TransformBuffer()
    buf.set_transform("odom", "base", _yaw(0.0, (0.0, 0.0, 0.0)), 10.0)
    buf.set_transform("odom", "base", _yaw(np.pi / 2, (2.0, -4.0, 0.0)), 11.0)
    m = buf.lookup("odom", "base", 10.25)
    np.testing.assert_allclose(m[:3, 3], [0.5, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(m[:3, :3], _yaw(np.pi / 8)[:3, :3], atol=1e-12)  # a quarter of 90 deg
    np.testing.assert_allclose(buf.lookup("odom", "base", 11.0), _yaw(np.pi / 2, (2.0, -4.0, 0.0)))


def test_slerp_takes_the_short_arc_and_keeps_unit_length():
    q0 = np.array([0.0, 0.0, np.sin(0.1), np.cos(0.1)])
    q1 = -np.array([0.0, 0.0, np.sin(0.3), np.cos(0.3)])  # same rotation as +q1
    q = slerp(q0, q1, 0.5)
    assert np.linalg.norm(q) == pytest.approx(1.0)
    np.testing.assert_allclose(quaternion_to_matrix(q), _yaw(0.4)[:3, :3], atol=1e-12)


def test_extrapolation_is_refused_naming_the_edge_and_the_gap():
    buf = TransformBuffer()
    buf.set_transform("map", "odom", np.eye(4), 0.0, static=True)
    buf.set_transform("odom", "base", np.eye(4), 5.0)
    buf.set_transform("odom", "base", np.eye(4), 6.0)
    with pytest.raises(ExtrapolationError, match="into the future.*odom -> base.*0.500 s") as future:
        buf.lookup("map", "base", 6.5)
    assert future.value.future
    with pytest.raises(ExtrapolationError, match="into the past") as past:
        buf.lookup("map", "base", 4.0)
    assert not past.value.future
    assert isinstance(past.value, LookupError)


def test_latest_common_time_is_the_oldest_newest_sample_of_the_chain():
    buf = TransformBuffer()
    for t in (1.0, 2.0, 3.0):
        buf.set_transform("odom", "base", _yaw(0.0, (t, 0, 0)), t)
    for t in (1.5, 2.5):
        buf.set_transform("map", "odom", _yaw(0.0, (0, t, 0)), t)
    buf.set_transform("base", "camera", _yaw(0.0, (0, 0, 1)), 0.0, static=True)
    assert buf.latest_common_time("map", "camera") == 2.5
    np.testing.assert_allclose(buf.lookup("map", "camera")[:3, 3], [2.5, 2.5, 1.0], atol=1e-12)


def test_history_is_bounded_by_cache_time_and_sample_count():
    buf = TransformBuffer(cache_time=1.0, max_samples=50)
    for k in range(300):
        buf.set_transform("odom", "base", _yaw(0.0, (k, 0, 0)), k * 0.01)
    edge = buf._edges["base"]
    assert len(edge.stamps) == 50 and edge.stamps[-1] == pytest.approx(2.99)
    with pytest.raises(ExtrapolationError, match="past"):
        buf.lookup("odom", "base", 2.0)
    buf2 = TransformBuffer(cache_time=0.5, max_samples=1000)
    for k in range(300):
        buf2.set_transform("odom", "base", np.eye(4), k * 0.01)
    assert buf2._edges["base"].stamps[0] >= 2.99 - 0.5 - 1e-9


def test_new_parent_replaces_the_old_edge_and_bad_input_raises():
    buf = TransformBuffer()
    buf.set_transform("odom", "base", _yaw(0.0, (1, 0, 0)), 1.0)
    buf.set_transform("map", "base", _yaw(0.0, (2, 0, 0)), 1.0)
    assert "odom" not in buf.frames()
    np.testing.assert_allclose(buf.lookup("map", "base", 1.0)[:3, 3], [2, 0, 0])
    with pytest.raises(ValueError, match="non-empty frame names"):
        buf.set_transform("", "base", np.eye(4), 0.0)
    with pytest.raises(ValueError, match="finite"):
        buf.set_transform("map", "x", np.full((4, 4), np.nan), 0.0)
