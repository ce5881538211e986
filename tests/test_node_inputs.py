"""uniseg3d_node inputs over real rclpy on loopback: input QoS with large clouds, TF from /tf and
/tf_static without tf2_ros, confined ~/save_map, and the start-up / input checks (same-name node,
empty frame_id, clouds that land outside the map, Python warnings in the ROS log).

The node runs in its own process on a leased domain; the test process publishes and calls services.
"""

from __future__ import annotations

import json
import os
import re
import stat

import numpy as np
import pytest

from tests import rosutil
from uniseg3d_ros.mapping.scene_map import SceneMap

NODE = "/uniseg3d_node"
PARAMS = {
    "text_encoder": "hash",
    "checkpoint": "random",
    "stats_period": 0.2,
    "map_publish_rate": 0.0,
    # deep enough for a 4 s burst of 10 Hz clouds while integration (~0.1-0.2 s per 100k points on
    # this loaded 2-core machine) catches up: the QoS test then measures delivery, not CPU speed
    "queue_depth": 50,
    "max_voxels": 200000,
}


_args = rosutil.node_args


class Probe(rosutil.StatsProbe):
    """The test side: a node with a ~/stats listener, clients, and helpers to publish and wait."""

    def __init__(self, ctx, server):
        super().__init__(ctx, server, "inputs_test_probe", NODE)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    map_dir = tmp_path_factory.mktemp("maps")
    with rosutil.running_node({**PARAMS, "map_directory": map_dir}, Probe) as probe:
        probe.map_dir = map_dir
        yield probe


def _cloud(points, frame="map", stamp=1.0, colors=None):
    from sensor_msgs.msg import PointCloud2

    from uniseg3d_ros.mapping.frames import stamp_msg
    from uniseg3d_ros.mapping.pointcloud2 import Header, points_to_cloud

    return points_to_cloud(
        Header(frame_id=frame, stamp=stamp_msg(stamp)), points, colors, msg_factory=PointCloud2
    )


def _clear(node):
    from std_srvs.srv import Trigger

    assert node.call(Trigger, "clear_map", Trigger.Request()).success
    node.spin_until(lambda: node.stats.get("map_points", -1) == 0, what="map cleared")


# ----------------------------------------------------------------------------- part 5: input QoS
def _stream(node, pub, n: int, rate: float, make) -> None:
    """Publish n messages at ``rate`` Hz, paced by the clock while spinning (no sleeps)."""
    sent, t0 = [0], node.now()

    def step():
        while sent[0] < min(n, int((node.now() - t0) * rate) + 1):
            pub.publish(make(sent[0]))
            sent[0] += 1
        return sent[0] >= n

    node.spin_until(step, n / rate + 10.0, f"{n} messages sent")


def _publishers(node) -> list[str]:
    infos = node.node.get_publishers_info_by_topic(f"{NODE}/cloud")
    return [f"{i.node_name}:{i.qos_profile.reliability.name}" for i in infos]


def _qos_state(node) -> str:
    return node.stats.get("input_qos", {}).get("cloud", {}).get("active", "")


@pytest.mark.ros
def test_100k_point_clouds_at_10hz_arrive_from_reliable_and_best_effort_publishers(node):
    """Default input QoS (best_available): all of a reliable publisher's 1.6 MB clouds arrive; a
    best-effort publisher is matched (a reliable subscription would hear nothing) and what DDS drops
    is counted as cloud_lost."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    rng = np.random.default_rng(0)
    clouds = [
        _cloud(
            rng.uniform(0, 4, (100_000, 3)).astype(np.float32),
            stamp=200.0 + k,
            colors=rng.uniform(0, 1, (100_000, 3)).astype(np.float32),
        )
        for k in range(3)
    ]
    assert len(clouds[0].data) == 1_600_000
    n = 40  # 4 s at 10 Hz
    for kind in ("reliable", "best_effort", "reliable"):
        reliability = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
        pub = node.node.create_publisher(
            PointCloud2, f"{NODE}/cloud", QoSProfile(depth=5, reliability=reliability)
        )
        # the node re-resolves best_available within ~1 s of a publisher kind change
        try:
            node.spin_until(
                lambda kind=kind, pub=pub: _qos_state(node) == kind and pub.get_subscription_count() == 1,
                timeout=30.0,  # discovery + the node's 1 s re-resolution; slow on a loaded machine
                what=f"cloud subscription {kind} and matched",
            )
        except TimeoutError as exc:
            state = f"{_qos_state(node)!r}, {pub.get_subscription_count()} matched, {_publishers(node)}"
            raise AssertionError(f"{exc}; now {state}") from None
        before = node.fresh_stats()
        _stream(node, pub, n, 10.0, lambda k: clouds[k % len(clouds)])
        settled = node.settled("clouds_integrated", timeout=30.0)
        integrated = settled - before["clouds_integrated"]
        # DDS sees a loss as a gap in sequence numbers, so a lost tail is only reported once a later
        # message arrives: send small clouds (these arrive best-effort too) until one is integrated
        tiny = _cloud(np.zeros((10, 3), np.float32), stamp=300.0)
        node.publish_until(
            pub, lambda t=tiny: t, lambda s=settled: node.stats.get("clouds_integrated", 0) > s, "flush"
        )
        lost = node.fresh_stats().get("cloud_lost", 0) - before.get("cloud_lost", 0)
        print(f"{kind} publisher -> default subscription: {integrated}/{n} integrated, {lost} reported lost")
        node.node.destroy_publisher(pub)
        assert integrated <= n
        if kind == "reliable":
            # keep-last 5 on the publisher: under heavy CPU load a sample can be replaced before it is
            # repaired (seen once: 39/40, the loss reported); best-effort loses half or more
            assert integrated >= n - 2, f"reliable: {integrated}/{n} clouds integrated, {lost} lost"
        else:  # matched, and the clouds DDS dropped are counted (its count was seen 1-2 short of exact)
            assert integrated >= 1, "best-effort publisher: nothing arrived (subscription did not match?)"
            assert n - 3 <= integrated + lost <= n + 3, f"{integrated} integrated + {lost} lost of {n}"
    node.spin_until(lambda: _qos_state(node) == "reliable", timeout=15.0, what="back to reliable")


@pytest.mark.ros
def test_qos_override_parameters_are_honoured_and_a_mismatch_is_reported(tmp_path):
    """qos_overrides./uniseg3d_node/cloud.subscription.reliability:=reliable (+ depth): the node keeps
    the reliable subscription when a best-effort publisher appears, says once why it hears nothing,
    and counts the incompatibility."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    overrides = {
        f"qos_overrides.{NODE}/cloud.subscription.reliability": "reliable",
        f"qos_overrides.{NODE}/cloud.subscription.depth": 7,
        "map_directory": tmp_path,
        "name_check_time": 0.0,
    }
    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        with rosutil.start_python(
            _args({**PARAMS, **overrides}), env=rosutil.ros_env(domain), name="qos"
        ) as server:
            server.wait_for_output("ready:", timeout=60.0)
            probe = rclpy.create_node("qos_probe", context=ctx)
            stats: dict = {}
            probe.create_subscription(String, f"{NODE}/stats", lambda m: stats.update(json.loads(m.data)), 10)
            pub = probe.create_publisher(
                PointCloud2, f"{NODE}/cloud", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
            )
            rosutil.spin_until(
                probe,
                lambda: stats.get("cloud_qos_incompatible", 0) >= 1,
                20.0,
                "incompatibility counted",
                [server],
            )
            assert stats["input_qos"]["cloud"] == {"configured": "reliable", "active": "reliable", "depth": 7}
            rosutil.spin_until(
                probe, lambda: "cannot reach" in server.output(), 10.0, "mismatch logged", [server]
            )
            assert server.output().count("cannot reach the reliable subscription") == 1
            probe.destroy_publisher(pub)
            probe.destroy_node()


# ----------------------------------------------------------------------------- part 8: TF
def _tf(parent, child, matrix, stamp):
    from geometry_msgs.msg import TransformStamped

    from uniseg3d_ros.mapping.frames import matrix_to_pose, stamp_msg

    pos, q = matrix_to_pose(matrix)
    t = TransformStamped()
    t.header.frame_id, t.header.stamp, t.child_frame_id = parent, stamp_msg(stamp), child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, pos)
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = map(float, q)
    return t


@pytest.mark.ros
def test_tf_chain_static_and_moving_places_clouds_at_their_stamps(node):
    """map -> odom (static) -> base_link (moving on /tf) -> camera (static); a camera cloud stamped
    between two odom samples lands where the interpolated chain puts it; one newer than every
    transform waits for it; one older than the history is refused with the reason."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    from uniseg3d_ros.mapping.frames import pose_to_matrix, transform_points

    _clear(node)
    static_qos = QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    pub_static = node.node.create_publisher(TFMessage, "/tf_static", static_qos)
    pub_tf = node.node.create_publisher(
        TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    )
    pub_cloud = node.node.create_publisher(
        PointCloud2, f"{NODE}/cloud", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    map_odom = pose_to_matrix([10.0, 0.0, 0.0], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])  # yaw 90 deg
    base_cam = pose_to_matrix([0.2, 0.0, 1.0], [-0.5, 0.5, -0.5, 0.5])  # optical frame, 1 m up

    def odom_base(t):  # drives 1 m/s along x and turns 0.5 rad/s
        yaw = 0.5 * (t - 100.0)
        return pose_to_matrix([t - 100.0, 0.0, 0.0], [0, 0, np.sin(yaw / 2), np.cos(yaw / 2)])

    pub_static.publish(
        TFMessage(transforms=[_tf("map", "odom", map_odom, 0.0), _tf("base_link", "camera", base_cam, 0.0)])
    )
    samples = [100.0, 100.5, 101.0]
    for t in samples:
        pub_tf.publish(TFMessage(transforms=[_tf("odom", "base_link", odom_base(t), t)]))
    node.spin_until(lambda: node.stats.get("tf_transforms", 0) >= 5, what="transforms received")

    rng = np.random.default_rng(3)
    local = rng.uniform([-0.5, -0.5, 1.5], [0.5, 0.5, 2.5], (3000, 3)).astype(np.float32)  # camera frame
    stamp = 100.25
    base = node.fresh_stats()["clouds_integrated"]
    pub_cloud.publish(_cloud(local, "camera", stamp))
    node.spin_until(lambda: node.stats.get("clouds_integrated", 0) > base, what="camera cloud integrated")
    # the expected pose: interpolate odom -> base_link at 100.25 (translation 0.25, yaw 0.125)
    expected = transform_points(local, map_odom @ odom_base(stamp) @ base_cam)
    _assert_map_matches(node, expected, "interp.npz")

    # a cloud newer than every transform waits; the next /tf sample releases it
    _clear(node)
    base = node.fresh_stats()["clouds_integrated"]
    pub_cloud.publish(_cloud(local, "camera", 101.3))
    node.spin_until(lambda: node.stats.get("awaiting_pose", 0) == 1, what="cloud waiting for its transform")
    assert node.stats["clouds_integrated"] == base
    pub_tf.publish(TFMessage(transforms=[_tf("odom", "base_link", odom_base(101.5), 101.5)]))
    node.spin_until(lambda: node.stats.get("clouds_integrated", 0) > base, what="waiting cloud released")
    _assert_map_matches(node, transform_points(local, map_odom @ odom_base(101.3) @ base_cam), "late.npz")

    # a cloud older than the kept history is refused, with the reason in the log
    no_pose = node.fresh_stats().get("no_pose", 0)
    pub_cloud.publish(_cloud(local, "camera", 50.0))
    node.spin_until(lambda: node.stats.get("no_pose", 0) > no_pose, what="old cloud refused")
    assert "extrapolation into the past" in node.server.output()
    for pub in (pub_static, pub_tf, pub_cloud):
        node.node.destroy_publisher(pub)


def _assert_map_matches(node, expected, name):
    from uniseg3d_msgs.srv import SaveMap

    from uniseg3d_ros.mapping.map_io import load_map

    saved = node.call(SaveMap, "save_map", SaveMap.Request(path=name, overwrite=True))
    assert saved.success, saved.message
    got = load_map(saved.path).snapshot().points
    voxels = np.unique(np.floor(expected / 0.02).astype(np.int64), axis=0)
    assert len(got) == len(voxels)
    np.testing.assert_allclose(got.mean(0), expected.mean(0), atol=2e-3)
    np.testing.assert_allclose(got.min(0), expected.min(0), atol=0.02)


# ----------------------------------------------------------------------------- part 6: confined saves
@pytest.mark.ros
def test_save_map_refuses_every_escape_with_a_reason(node):
    from uniseg3d_msgs.srv import SaveMap

    _clear(node)
    base = node.fresh_stats()["clouds_integrated"]
    node.publish_until(
        node.node.create_publisher(type(_cloud(np.zeros((1, 3), np.float32))), f"{NODE}/cloud", 10),
        lambda: _cloud(np.random.default_rng(1).uniform(0, 1, (500, 3)).astype(np.float32)),
        lambda: node.stats.get("clouds_integrated", 0) > base,
        "cloud integrated",
    )
    outside = node.map_dir.parent / "outside"
    outside.mkdir(exist_ok=True)
    victim = outside / "victim.ply"
    victim.write_bytes(b"unrelated")
    (node.map_dir / "link.ply").symlink_to(victim)
    (node.map_dir / "link_dir").symlink_to(outside)
    (node.map_dir / "taken.npz").write_bytes(b"keep me")
    cases = [
        ("../outside/escape.ply", "contains '..'"),
        (str(outside / "abs.ply"), "is absolute"),
        ("~/home.ply", "starts with '~'"),
        ("link.ply", "symbolic link"),
        ("link_dir/through.ply", "symbolic link"),
        ("taken.npz", "overwrite=true"),
        ("nowhere/x.npz", "does not exist"),
    ]
    for path, reason in cases:
        res = node.call(SaveMap, "save_map", SaveMap.Request(path=path))
        assert not res.success and reason in res.message, (path, res.message)
    assert victim.read_bytes() == b"unrelated" and (node.map_dir / "taken.npz").read_bytes() == b"keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.ply"]
    res = node.call(SaveMap, "save_map", SaveMap.Request(path="taken.npz", overwrite=True))
    assert res.success and res.path == str(node.map_dir / "taken.npz"), res.message
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(res.path).st_mode) == 0o666 & ~umask
    assert not [p for p in node.map_dir.iterdir() if ".uniseg3d-tmp" in p.name]


@pytest.mark.ros
def test_temp_files_of_a_killed_save_are_removed_at_start_up(tmp_path):
    stale = tmp_path / ".room.0badf00d.uniseg3d-tmp.ply"
    stale.write_bytes(b"half a map")
    (tmp_path / "room.ply").write_bytes(b"a finished map")
    with rosutil.ros_domain() as domain:
        env = rosutil.ros_env(domain)
        with rosutil.start_python(
            _args({**PARAMS, "map_directory": tmp_path, "name_check_time": 0.0}), env=env, name="cleanup_node"
        ) as server:
            server.wait_for_output("ready:", timeout=60.0)
            assert not stale.exists() and (tmp_path / "room.ply").read_bytes() == b"a finished map"
            assert str(stale) in server.output()


# ----------------------------------------------------------------------------- part 10: checks
@pytest.mark.ros
def test_second_node_with_the_same_name_exits_non_zero_with_one_line(node):
    # the twin watches the graph up to 10 s (default 2 s): on a loaded 2-core machine discovery of the
    # first node took longer once and the twin ran on; it exits as soon as it sees the namesake
    twin = {**PARAMS, "map_directory": node.map_dir, "name_check_time": 10.0}
    proc = rosutil.start_python(_args(twin), env=node.env, name="twin")
    try:
        proc.popen.wait(timeout=60)
        out = proc.output()
    finally:
        proc.stop()
    assert proc.popen.returncode == 1, out
    lines = [line for line in out.splitlines() if "already running" in line]
    assert len(lines) == 1 and "/uniseg3d_node" in lines[0] and "Traceback" not in out, out
    node.fresh_stats()  # the first node still answers


@pytest.mark.ros
def test_cloud_with_empty_frame_id_is_rejected_not_queued(node):
    pub = node.node.create_publisher(type(_cloud(np.zeros((1, 3), np.float32))), f"{NODE}/cloud", 10)
    before = node.fresh_stats()
    cloud = _cloud(np.ones((100, 3), np.float32), frame="", stamp=300.0)
    node.publish_until(
        pub,
        lambda: cloud,
        lambda: node.stats.get("empty_frame_id", 0) >= before.get("empty_frame_id", 0) + 2,
        "empty frame_id counted twice",
    )
    after = node.fresh_stats()
    assert after["awaiting_pose"] == 0 and after["clouds_integrated"] == before["clouds_integrated"]
    assert node.server.output().count("empty header.frame_id") == 1
    node.node.destroy_publisher(pub)


@pytest.mark.ros
def test_cloud_entirely_outside_the_map_is_dropped_and_warnings_reach_the_ros_log(node):
    """Points beyond the map extent (and at 3e38 m, which overflows float32 maths in numpy): nothing
    is integrated, the cloud counts as dropped with its reason, and the Python warnings appear once,
    as ROS log lines, not as raw stderr warnings."""
    pub = node.node.create_publisher(type(_cloud(np.zeros((1, 3), np.float32))), f"{NODE}/cloud", 10)
    before = node.fresh_stats()
    far = np.array([[1e5, 0, 0], [0, 3e38, 0], [-3e38, 1, 2]], np.float32)
    node.publish_until(
        pub,
        lambda: _cloud(far, stamp=400.0),
        lambda: node.stats.get("dropped_outside_map", 0) >= before.get("dropped_outside_map", 0) + 3,
        "far clouds dropped",
    )
    after = node.fresh_stats()
    assert after["clouds_integrated"] == before["clouds_integrated"]
    assert after["map_points"] == before["map_points"]
    assert after["python_warnings"] >= 3
    log = node.server.output()
    assert len(re.findall(r"\[uniseg3d_node\]: UserWarning: .*beyond the map extent", log)) == 1, log[-3000:]
    if SceneMap().backend == "numpy":  # the numpy twin overflows float32 maths at 3e38 m and warns;
        # the compiled fusion (numba, the default where it imports) works in float64 and does not
        assert re.search(r"\[uniseg3d_node\]: RuntimeWarning: overflow", log), log[-3000:]
    assert not re.search(r"\.py:\d+: (User|Runtime)Warning", log), log[-3000:]  # no raw stderr warnings
    assert log.count("had none inside the map") == 1
    node.node.destroy_publisher(pub)
