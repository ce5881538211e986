"""Pose math, the stamped pose buffer and the pose-source policy (no ROS needed)."""

from types import SimpleNamespace

import numpy as np
import pytest

from uniseg3d_ros.mapping.frames import (
    PoseBuffer,
    PoseResolver,
    matrix_to_pose,
    matrix_to_quaternion,
    msg_pose_to_matrix,
    msg_transform_to_matrix,
    pose_to_matrix,
    quaternion_to_matrix,
    transform_points,
)


def random_rotations(n, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_quaternion_to_matrix_known_rotation_about_z():
    s = np.sqrt(0.5)
    rot = quaternion_to_matrix([0, 0, s, s])  # +90 deg about z
    np.testing.assert_allclose(rot @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rot @ [0, 1, 0], [-1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quaternion_matrix_round_trip(seed):
    for q in random_rotations(50, seed):
        rot = quaternion_to_matrix(q)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(rot), 1.0)
        q2 = matrix_to_quaternion(rot)
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-9)


def test_pose_matrix_round_trip_and_transform_points():
    q = random_rotations(1, 5)[0]
    pose = pose_to_matrix([1.0, -2.0, 0.5], q)
    pos, quat = matrix_to_pose(pose)
    np.testing.assert_allclose(pos, [1.0, -2.0, 0.5])
    np.testing.assert_allclose(pose_to_matrix(pos, quat), pose, atol=1e-12)
    pts = np.random.default_rng(0).normal(size=(10, 3))
    out = transform_points(pts, pose)
    back = transform_points(out, np.linalg.inv(pose))
    np.testing.assert_allclose(back, pts, atol=1e-5)
    assert out.dtype == np.float32


def test_msg_like_objects_convert():
    xyz = SimpleNamespace(x=1.0, y=2.0, z=3.0)
    quat = SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0)
    pose = msg_pose_to_matrix(SimpleNamespace(position=xyz, orientation=quat))
    tf = msg_transform_to_matrix(SimpleNamespace(translation=xyz, rotation=quat))
    np.testing.assert_allclose(pose, tf)
    np.testing.assert_allclose(pose[:3, 3], [1, 2, 3])


def test_zero_quaternion_raises():
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_to_matrix([0, 0, 0, 0])


def test_pose_buffer_nearest_within_tolerance():
    buf = PoseBuffer(maxlen=10, tolerance=0.05)
    for k in range(5):
        p = np.eye(4)
        p[0, 3] = k
        buf.add(float(k), p)
    assert buf.lookup(2.03)[0, 3] == 2
    assert buf.lookup(2.97)[0, 3] == 3
    assert buf.lookup(2.5) is None
    assert buf.lookup(-1.0) is None


def test_pose_buffer_is_bounded_and_accepts_out_of_order():
    buf = PoseBuffer(maxlen=3, tolerance=0.01)
    for t in (5.0, 1.0, 3.0, 4.0, 2.0):
        buf.add(t, np.eye(4) * 1.0)
    assert len(buf) == 3
    assert buf.lookup(1.0) is None and buf.lookup(2.0) is None  # smallest stamps were evicted
    assert buf.lookup(5.0) is not None


def test_pose_buffer_rejects_bad_pose():
    with pytest.raises(ValueError, match="pose"):
        PoseBuffer().add(0.0, np.eye(3))


def test_resolver_identity_accepts_fixed_frame_and_flags_others():
    res = PoseResolver(fixed_frame="map", source="identity")
    assert res.active_source() == "identity"
    np.testing.assert_array_equal(res.resolve("map", 0.0).pose, np.eye(4))
    bad = res.resolve("camera", 0.0)
    assert bad.pose is None and bad.cause == "unknown_frame" and "camera" in bad.reason


def test_resolver_auto_without_tf_uses_topic_poses():
    res = PoseResolver(fixed_frame="map", buffer=PoseBuffer(tolerance=0.02), sensor_frame="camera")
    assert res.active_source() == "topic"
    assert res.resolve("camera", 10.0).cause == "no_pose"  # none yet: may still arrive
    pose = pose_to_matrix([0, 0, 1], [0, 0, 0, 1])
    res.buffer.add(10.0, pose)
    assert res.active_source() == "topic"
    np.testing.assert_array_equal(res.resolve("camera", 10.01).pose, pose)
    assert res.resolve("camera", 11.0).cause == "no_pose"
    assert res.resolve("lidar", 10.0).cause == "unknown_frame"


def test_resolver_prefers_tf_lookup_and_maps_lookup_errors():
    def lookup(frame, stamp):
        if frame != "camera":
            raise LookupError(f"frame {frame} does not exist")
        return pose_to_matrix([stamp, 0, 0], [0, 0, 0, 1])

    res = PoseResolver(fixed_frame="map", source="tf", tf_lookup=lookup)
    assert res.active_source() == "tf"
    assert res.resolve("camera", 2.0).pose[0, 3] == 2.0
    bad = res.resolve("ghost", 2.0)
    assert bad.cause == "unknown_frame" and "ghost" in bad.reason


def test_resolver_auto_uses_tf_then_topic_poses_for_frames_tf_does_not_know():
    from uniseg3d_ros.mapping.frames import ExtrapolationError, FrameNotFoundError

    def lookup(frame, stamp):
        if frame == "camera":
            return pose_to_matrix([stamp, 0, 0], [0, 0, 0, 1])
        if frame == "late":
            raise ExtrapolationError("extrapolation into the future", future=True)
        if frame == "old":
            raise ExtrapolationError("extrapolation into the past", future=False)
        raise FrameNotFoundError(f"frame {frame} does not exist")

    res = PoseResolver(fixed_frame="map", tf_lookup=lookup, buffer=PoseBuffer(tolerance=0.02))
    assert res.active_source() == "tf+topic"
    assert res.resolve("camera", 2.0).pose[0, 3] == 2.0
    late, old = res.resolve("late", 2.0), res.resolve("old", 2.0)
    assert late.cause == old.cause == "no_pose" and late.pending and not old.pending
    assert "past" in old.reason
    topic_pose = pose_to_matrix([0, 5, 0], [0, 0, 0, 1])
    res.buffer.add(3.0, topic_pose)
    np.testing.assert_array_equal(res.resolve("lidar", 3.0).pose, topic_pose)  # not in TF: topic pose
    assert res.resolve("lidar", 9.0).pending


def test_resolver_tf_without_tf2_raises():
    with pytest.raises(ValueError, match="tf2_ros"):
        PoseResolver(source="tf", tf_lookup=None)


def test_sec_to_stamp_splits_and_rounds():
    from uniseg3d_ros.mapping.frames import sec_to_stamp

    assert sec_to_stamp(12.5) == (12, 500_000_000)
    assert sec_to_stamp(0.999999999999) == (1, 0)
    sec, ns = sec_to_stamp(1700000000.123456789)
    assert sec == 1700000000 and abs(ns - 123456789) < 1000


def test_pose_wait_queue_releases_items_when_their_pose_arrives():
    from uniseg3d_ros.mapping.frames import PoseWaitQueue

    buf = PoseBuffer(tolerance=0.01)
    queue = PoseWaitQueue(maxlen=3, tolerance=0.01)
    res = PoseResolver(source="topic", buffer=buf)

    def resolve(frame, stamp):
        return res.resolve(frame, stamp).pose

    assert queue.push("camera", 1.0, "a") is None and queue.push("camera", 2.0, "b") is None
    buf.add(1.0, np.eye(4))
    ready, expired = queue.release(resolve, buf.latest_stamp())
    assert [item for item, _ in ready] == ["a"] and expired == [] and len(queue) == 1
    buf.add(3.0, np.eye(4))  # later pose, none near 2.0: "b" can no longer be placed
    ready, expired = queue.release(resolve, buf.latest_stamp())
    assert ready == [] and expired == ["b"] and len(queue) == 0


def test_pose_wait_queue_is_bounded():
    from uniseg3d_ros.mapping.frames import PoseWaitQueue

    queue = PoseWaitQueue(maxlen=2)
    dropped = [queue.push("camera", float(t), t) for t in range(5)]
    assert dropped == [None, None, 0, 1, 2] and len(queue) == 2
    assert PoseWaitQueue(maxlen=0).push("camera", 0.0, "x") == "x"
    assert queue.may_still_come(5.0, None) and not queue.may_still_come(5.0, 6.0)
