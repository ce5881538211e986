"""uniseg3d_msgs over real rclpy on loopback: one InstanceResult topic echo and every service type.

A server process (this module run with ``--serve``) answers each service with values computed from the
request, and republishes every InstanceResult it receives in a transformed form; the test process checks
the exact values, so both directions of every field's (de)serialisation are exercised.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import rosutil

rosutil.ensure_interfaces()

import rclpy  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402
from uniseg3d_msgs.msg import InstanceResult  # noqa: E402
from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer, SaveMap, Segment  # noqa: E402

pytestmark = pytest.mark.ros

NS = "/u3d_iface"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
CLOUD_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb", "label", "instance"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u4"],
    }
)


# ----------------------------------------------------------------------------- server side


def _instance(
    id_: int,
    class_id: int,
    label: str,
    score: float,
    centre: tuple[float, float, float],
    half: float,
    indices: np.ndarray,
) -> InstanceResult:
    c = np.asarray(centre, dtype=np.float64)
    return InstanceResult(
        id=id_,
        class_id=class_id,
        label=label,
        score=score,
        centroid=Point(x=c[0], y=c[1], z=c[2]),
        bbox_min=Point(x=c[0] - half, y=c[1] - half, z=c[2] - half),
        bbox_max=Point(x=c[0] + half, y=c[1] + half, z=c[2] + half),
        point_count=len(indices),
        point_indices=np.asarray(indices, dtype=np.uint32),
    )


def _echo(msg: InstanceResult) -> InstanceResult:
    """The server's transform of a received InstanceResult (checked literally by the test)."""
    indices = np.asarray(msg.point_indices, dtype=np.uint32)[::-1]
    return InstanceResult(
        id=msg.id + 1000,
        class_id=msg.class_id - 1,
        label=msg.label.upper(),
        score=1.0 - msg.score,
        centroid=Point(x=-msg.centroid.x, y=-msg.centroid.y, z=-msg.centroid.z),
        bbox_min=msg.bbox_max,
        bbox_max=msg.bbox_min,
        point_count=len(indices),
        point_indices=indices,
    )


def _segment(req: Segment.Request, res: Segment.Response) -> Segment.Response:
    res.success = True
    res.message = f"threshold={req.score_threshold:.2f} publish={req.publish}"
    res.header.frame_id = "map"
    res.header.stamp.sec, res.header.stamp.nanosec = 1_700_000_000, 5
    res.class_names = ["wall", "floor", "chair"]
    res.instances = [
        _instance(1, 2, "chair", req.score_threshold + 0.5, (1.0, 2.0, 0.5), 0.25, np.array([0, 2])),
        _instance(2, -1, "", 0.125, (0.0, 0.0, 1.0), 0.5, np.array([1])),
    ]
    res.num_points = 3
    res.latency_ms = 12.5
    if req.return_cloud:
        pts = np.zeros(3, dtype=CLOUD_DTYPE)
        pts["x"], pts["y"], pts["z"] = [0.0, 1.0, 2.0], [0.5, 0.5, 0.5], [-1.0, 0.0, 1.0]
        pts["rgb"] = np.array([0xFF0000, 0x00FF00, 0x0000FF], dtype="<u4").view("<f4")
        pts["label"], pts["instance"] = [2, 0, 2], [1, 2, 1]
        cloud = res.segmented_cloud
        cloud.header = res.header
        cloud.height, cloud.width, cloud.point_step = 1, 3, CLOUD_DTYPE.itemsize
        cloud.row_step, cloud.is_dense, cloud.is_bigendian = 3 * CLOUD_DTYPE.itemsize, True, False
        kinds = {"<f4": PointField.FLOAT32, "<u4": PointField.UINT32}
        cloud.fields = [
            PointField(
                name=n, offset=CLOUD_DTYPE.fields[n][1], datatype=kinds[CLOUD_DTYPE.fields[n][0].str], count=1
            )
            for n in CLOUD_DTYPE.names
        ]
        cloud.data = pts.tobytes()
    return res


def _refer(req: Refer.Request, res: Refer.Response) -> Refer.Response:
    k = req.top_k or 1
    res.success, res.message = True, f"{len(req.text.split())} words"
    res.header.frame_id = "map"
    res.instances = [
        _instance(10 + r, 2, req.text, 1.0 / (r + 1), (float(r), 0.0, 0.0), 0.1, np.arange(r, r + 4))
        for r in range(k)
    ]
    res.latency_ms = 3.25
    return res


def _open_vocab(req: OpenVocab.Request, res: OpenVocab.Response) -> OpenVocab.Response:
    if not req.class_names:
        res.success, res.message = False, "class_names is empty"
        return res
    res.success, res.message = True, "ok"
    res.header.frame_id = "map"
    res.instances = [
        _instance(i + 1, i, name, req.score_threshold + 0.125 * i, (0.0, float(i), 0.0), 0.2, np.array([i]))
        for i, name in reversed(list(enumerate(req.class_names)))
    ]
    res.latency_ms = 7.0
    return res


def _interactive(req: Interactive.Request, res: Interactive.Response) -> Interactive.Response:
    res.success, res.message = True, "ok"
    res.header.frame_id = "map"
    res.instances = [
        _instance(i + 1, -1, "", 1.0, (c.x, c.y, c.z), req.max_click_distance, np.arange(i + 1))
        for i, c in enumerate(req.clicks)
    ]
    res.latency_ms = 1.5
    return res


def _save_map(req: SaveMap.Request, res: SaveMap.Response) -> SaveMap.Response:
    path = Path(req.path)
    if path.suffix not in (".ply", ".npz"):
        res.success, res.message = False, f"path={req.path!r}: suffix must be .ply or .npz"
        return res
    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(path, points=points)
    res.success, res.message, res.path, res.num_voxels = True, "saved", str(path.resolve()), len(points)
    return res


def serve() -> None:
    """Run the interface echo server until SIGINT (child process entry point)."""
    from rclpy.executors import ExternalShutdownException

    rclpy.init()
    node = rclpy.create_node("iface_server", namespace=NS)
    pub = node.create_publisher(InstanceResult, f"{NS}/instance_out", QOS)
    node.create_subscription(InstanceResult, f"{NS}/instance_in", lambda m: pub.publish(_echo(m)), QOS)
    services = [
        (Segment, "segment", _segment),
        (Refer, "refer", _refer),
        (OpenVocab, "open_vocab", _open_vocab),
        (Interactive, "interactive", _interactive),
        (SaveMap, "save_map", _save_map),
    ]
    for srv_type, name, handler in services:
        node.create_service(srv_type, f"{NS}/{name}", handler)
    print("iface_server ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# ----------------------------------------------------------------------------- client side (tests)


class Ros:
    def __init__(self, node: rclpy.node.Node, server: rosutil.RosProcess) -> None:
        self.node, self.server = node, server

    def call(self, srv_type: type, name: str, request: object) -> object:
        client = self.node.create_client(srv_type, f"{NS}/{name}")
        try:
            rosutil.wait_for_service(self.node, client, timeout=20.0, procs=[self.server])
            return rosutil.call_service(self.node, client, request, timeout=10.0, procs=[self.server])
        finally:
            self.node.destroy_client(client)


@pytest.fixture(scope="module")
def ros():
    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        env = rosutil.ros_env(domain)
        with rosutil.start_python(["-m", "tests.test_interfaces", "--serve"], env=env) as server:
            node = rclpy.create_node("iface_client", context=ctx)
            try:
                yield Ros(node, server)
            finally:
                node.destroy_node()
            assert server.stop() == 0, "the server did not exit cleanly on SIGINT"


def _xyz(p: Point) -> tuple[float, float, float]:
    return (p.x, p.y, p.z)


def test_instance_result_topic_round_trip_between_processes(ros):
    got: list[InstanceResult] = []
    ros.node.create_subscription(InstanceResult, f"{NS}/instance_out", got.append, QOS)
    pub = ros.node.create_publisher(InstanceResult, f"{NS}/instance_in", QOS)
    indices = np.arange(0, 100_000, 2, dtype=np.uint32)
    msg = InstanceResult(
        id=7,
        class_id=-1,
        label="office chair",
        score=0.875,
        centroid=Point(x=1.5, y=-2.25, z=0.5),
        bbox_min=Point(x=1.0, y=-3.0, z=0.0),
        bbox_max=Point(x=2.0, y=-1.5, z=1.0),
        point_count=len(indices),
        point_indices=indices,
    )
    last = [float("-inf")]

    def received() -> bool:  # (re)publish every 0.5 s until the server's echo arrives
        now = ros.node.get_clock().now().nanoseconds * 1e-9
        if not got and pub.get_subscription_count() > 0 and now - last[0] > 0.5:
            pub.publish(msg)
            last[0] = now
        return bool(got)

    rosutil.spin_until(ros.node, received, timeout=20.0, what="InstanceResult echo", procs=[ros.server])
    echo = got[0]
    assert (echo.id, echo.class_id, echo.label) == (1007, -2, "OFFICE CHAIR")
    assert echo.score == pytest.approx(0.125)
    assert _xyz(echo.centroid) == (-1.5, 2.25, -0.5)
    assert _xyz(echo.bbox_min) == (2.0, -1.5, 1.0) and _xyz(echo.bbox_max) == (1.0, -3.0, 0.0)
    assert echo.point_count == 50_000
    np.testing.assert_array_equal(np.asarray(echo.point_indices), indices[::-1])


def test_segment_service_round_trip_with_cloud(ros):
    res = ros.call(Segment, "segment", Segment.Request(score_threshold=0.25, publish=True, return_cloud=True))
    assert res.success and res.message == "threshold=0.25 publish=True"
    assert (res.header.frame_id, res.header.stamp.sec, res.header.stamp.nanosec) == ("map", 1_700_000_000, 5)
    assert list(res.class_names) == ["wall", "floor", "chair"]
    assert [(i.id, i.class_id, i.label) for i in res.instances] == [(1, 2, "chair"), (2, -1, "")]
    first = res.instances[0]
    assert first.score == pytest.approx(0.75)
    assert _xyz(first.bbox_min) == (0.75, 1.75, 0.25) and _xyz(first.bbox_max) == (1.25, 2.25, 0.75)
    assert list(first.point_indices) == [0, 2] and first.point_count == 2
    assert (res.num_points, res.latency_ms) == (3, 12.5)
    cloud = res.segmented_cloud
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "label", "instance"]
    assert (cloud.width, cloud.point_step, cloud.header.frame_id) == (3, 24, "map")
    pts = np.frombuffer(bytes(cloud.data), dtype=CLOUD_DTYPE)
    np.testing.assert_array_equal(pts["x"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(pts["rgb"].view("<u4"), [0xFF0000, 0x00FF00, 0x0000FF])
    np.testing.assert_array_equal(pts["label"], [2, 0, 2])
    np.testing.assert_array_equal(pts["instance"], [1, 2, 1])


def test_segment_without_cloud_returns_empty_cloud(ros):
    req = Segment.Request(score_threshold=0.0, publish=False, return_cloud=False)
    res = ros.call(Segment, "segment", req)
    assert res.success and res.message == "threshold=0.00 publish=False"
    assert res.segmented_cloud.width == 0 and len(res.segmented_cloud.data) == 0


@pytest.mark.parametrize(("top_k", "expected"), [(3, 3), (0, 1)])
def test_refer_service_ranks_top_k(ros, top_k, expected):
    text = "the red chair next to the window"
    res = ros.call(Refer, "refer", Refer.Request(text=text, top_k=top_k))
    assert res.success and res.message == "7 words" and res.header.frame_id == "map"
    assert [i.id for i in res.instances] == [10 + r for r in range(expected)]
    assert all(i.label == text for i in res.instances)
    assert [i.score for i in res.instances] == pytest.approx([1.0 / (r + 1) for r in range(expected)])
    assert list(res.instances[-1].point_indices) == list(range(expected - 1, expected + 3))
    assert res.latency_ms == 3.25


def test_open_vocab_service_labels_come_from_request(ros):
    names = ["mug", "laptop", "potted plant"]
    res = ros.call(OpenVocab, "open_vocab", OpenVocab.Request(class_names=names, score_threshold=0.5))
    assert res.success
    assert [(i.class_id, i.label) for i in res.instances] == [(2, "potted plant"), (1, "laptop"), (0, "mug")]
    assert [i.score for i in res.instances] == pytest.approx([0.75, 0.625, 0.5])
    assert _xyz(res.instances[0].centroid) == (0.0, 2.0, 0.0)
    empty = ros.call(OpenVocab, "open_vocab", OpenVocab.Request(class_names=[], score_threshold=0.5))
    assert not empty.success and empty.message == "class_names is empty" and len(empty.instances) == 0


def test_interactive_service_one_instance_per_click(ros):
    clicks = [Point(x=0.5, y=0.25, z=1.0), Point(x=-1.0, y=2.0, z=0.125)]
    res = ros.call(Interactive, "interactive", Interactive.Request(clicks=clicks, max_click_distance=0.5))
    assert res.success and len(res.instances) == 2
    assert [_xyz(i.centroid) for i in res.instances] == [(0.5, 0.25, 1.0), (-1.0, 2.0, 0.125)]
    assert _xyz(res.instances[1].bbox_min) == (-1.5, 1.5, -0.375)
    assert _xyz(res.instances[1].bbox_max) == (-0.5, 2.5, 0.625)
    assert [list(i.point_indices) for i in res.instances] == [[0], [0, 1]]
    assert res.latency_ms == 1.5


def test_save_map_service_writes_file_and_reports_errors(ros, tmp_path):
    target = tmp_path / "scene.npz"
    res = ros.call(SaveMap, "save_map", SaveMap.Request(path=str(target)))
    assert res.success and res.path == str(target.resolve()) and res.num_voxels == 4
    np.testing.assert_array_equal(np.load(target)["points"], np.arange(12, dtype=np.float32).reshape(4, 3))
    bad = ros.call(SaveMap, "save_map", SaveMap.Request(path=str(tmp_path / "scene.txt")))
    assert not bad.success and "scene.txt" in bad.message and ".ply or .npz" in bad.message
    assert not (tmp_path / "scene.txt").exists()


def test_ros_env_isolates_domain_and_discovery(monkeypatch):
    monkeypatch.delenv("UNISEG3D_TEST_DOMAIN_ID", raising=False)
    with rosutil.ros_domain() as a, rosutil.ros_domain() as b:
        assert a != b and 1 <= a <= 101 and 1 <= b <= 101
        env = rosutil.ros_env(a)
    with rosutil.ros_domain() as c:
        assert c not in (a, b), "a new lease reused a domain released just before"
    assert env["ROS_DOMAIN_ID"] == str(a) and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert str(rosutil.INSTALL_PREFIX / "lib") in env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert str(rosutil.REPO_ROOT) in env["PYTHONPATH"].split(os.pathsep)
    with pytest.raises(ValueError, match="domain_id=0"):
        rosutil.ros_env(0)


def test_child_that_dies_fails_the_wait_with_its_output(ros):
    code = "import sys; print('boom from child'); sys.exit(3)"
    with rosutil.start_python(["-c", code], env=os.environ.copy(), name="dying") as child:
        with pytest.raises(RuntimeError, match=r"(?s)'dying' exited with code 3.*boom from child"):
            rosutil.spin_until(ros.node, lambda: False, timeout=20.0, what="never", procs=[child])


def test_stop_kills_a_child_that_ignores_sigint():
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready'); time.sleep(60)"
    child = rosutil.start_python(["-c", code], env=rosutil.ros_env(1), name="stubborn")
    try:
        child.wait_for_output("ready", timeout=20.0)
    finally:
        assert child.stop(timeout=0.5) == -9


if __name__ == "__main__" and "--serve" in sys.argv:
    serve()
