"""The planner-facing side of uniseg3d_node over real rclpy on loopback: persistent object ids
(~/objects, object_id in every answer), ~/segment as an action (feedback, cancel), the
vocabulary topics beside the labelled clouds, RViz clicks on /clicked_point, and /diagnostics.

The node runs the untrained model (deterministic masks), so these tests check the plumbing and
the documented contracts; the association rules themselves are tested in tests/test_objects.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import rosutil
from tests.test_node import NODE, NODE_PARAMS, NodeHarness

PARAMS = {**NODE_PARAMS, "diagnostics_period": 0.2, "max_voxels": 20000}


@pytest.fixture(scope="module")
def ros():
    with rosutil.running_node(PARAMS, NodeHarness) as harness:
        yield harness


@pytest.fixture(scope="module")
def room():
    from tests.synthetic_room import make_room

    return make_room(seed=1, density=150.0)


def _latched():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )


def _listen(ros, msg_type, topic, qos=None):
    """A list that collects every message on ``topic`` from now on."""
    got: list = []
    ros.node.create_subscription(msg_type, topic, got.append, qos or _latched())
    return got


def _point(p):
    from geometry_msgs.msg import Point

    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _publish_until(ros, pub, msg, done, what, period=0.5):
    """Publish ``msg`` on ``pub`` every ``period`` s (node clock) until done()."""
    last = [-1e9]

    def step():
        if done():
            return True
        now = ros.node.get_clock().now().nanoseconds * 1e-9
        if now - last[0] > period:
            pub.publish(msg)
            last[0] = now
        return False

    ros.spin_until(step, 30.0, what)


def _cloud_fields(msg):
    from uniseg3d_ros.mapping.pointcloud2 import read_points

    return read_points(msg, ["x", "y", "z", "label", "instance"])


def _objects_from_segment(res):
    """An ObjectMap holding exactly the objects of a ~/segment response (its cloud + instances)."""
    from uniseg3d_ros.inference.objects import ObjectConfig, ObjectMap
    from uniseg3d_ros.inference.results import InstanceInfo

    cloud = _cloud_fields(res.segmented_cloud)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1).astype(np.float64)
    m = ObjectMap(ObjectConfig(voxel_size=0.02))
    insts = [
        InstanceInfo(
            i.id,
            i.class_id,
            i.label,
            i.score,
            np.zeros(3),
            np.zeros(3),
            np.zeros(3),
            np.asarray(i.point_indices),
        )
        for i in res.instances
    ]
    ids = m.update(xyz, insts, 0.0).ids
    return xyz, m, dict(zip(ids, [i.id for i in res.instances]))


# ----------------------------------------------------------------------------- persistent objects
@pytest.mark.ros
def test_segment_ids_are_persistent_and_listed_on_the_latched_objects_topic(ros, room):
    from uniseg3d_msgs.msg import ObjectArray
    from uniseg3d_msgs.srv import Segment

    ros.load_room(room)
    req = Segment.Request(score_threshold=1e-6, return_cloud=True)
    first = ros.call(Segment, "segment", req)
    assert first.success and len(first.instances) > 0, first.message
    second = ros.call(Segment, "segment", req)  # same map: same instances, same ids
    assert [i.id for i in second.instances] == [i.id for i in first.instances]
    assert all(i.object_id == i.id for i in first.instances)
    assert len({i.id for i in first.instances}) == len(first.instances)
    cloud = _cloud_fields(first.segmented_cloud)
    for inst in first.instances:  # the cloud's instance field carries the persistent ids
        np.testing.assert_array_equal(np.flatnonzero(cloud["instance"] == inst.id), inst.point_indices)

    # a subscriber that joins later still gets the object map (transient local)
    objects = _listen(ros, ObjectArray, f"{NODE}/objects")
    ros.spin_until(lambda: objects, what="latched ~/objects")
    msg = objects[-1]
    assert msg.header.frame_id == "map" and list(msg.class_names) == list(first.class_names)
    by_id = {o.id: o for o in msg.objects}
    assert set(by_id) == {i.id for i in first.instances}
    for inst in first.instances:
        obj = by_id[inst.id]
        assert (obj.label, obj.class_id, obj.point_count) == (inst.label, inst.class_id, inst.point_count)
        assert obj.times_seen == 2 and obj.times_missed == 0
        assert (obj.centroid.x, obj.centroid.y, obj.centroid.z) == pytest.approx(
            (inst.centroid.x, inst.centroid.y, inst.centroid.z), abs=1e-5
        )
        assert obj.first_seen == obj.last_seen == first.header.stamp


@pytest.mark.ros
def test_refer_interactive_and_open_vocab_name_the_object_they_hit(ros, room):
    from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer, Segment

    ros.load_room(room)
    seg = ros.call(Segment, "segment", Segment.Request(score_threshold=1e-6, return_cloud=True))
    assert seg.success, seg.message
    xyz, expected_map, to_node_id = _objects_from_segment(seg)
    c = room.points[room.instance == 1].mean(0)
    near = room.points[np.argmin(np.linalg.norm(room.points - c, axis=1))]
    answers = [
        ros.call(Refer, "refer", Refer.Request(text="the blue table in the middle", top_k=3)),
        ros.call(
            Interactive, "interactive", Interactive.Request(clicks=[_point(near)], max_click_distance=0.2)
        ),
        ros.call(
            OpenVocab, "open_vocab", OpenVocab.Request(class_names=["table", "chair"], score_threshold=1e-6)
        ),
    ]
    named = 0
    for res in answers:
        assert res.success, res.message
        for inst in res.instances:
            want = to_node_id.get(expected_map.lookup(xyz, np.asarray(inst.point_indices)), -1)
            assert inst.object_id == want, (res.message, inst.id, inst.object_id, want)
            named += want != -1
    assert named > 0  # at least one answer hit a known object (so the check above is not all -1)


# ----------------------------------------------------------------------------- vocabulary topics
@pytest.mark.ros
def test_each_labelled_cloud_comes_with_its_vocabulary(ros, room):
    from sensor_msgs.msg import PointCloud2
    from uniseg3d_msgs.msg import ClassVocabulary
    from uniseg3d_msgs.srv import OpenVocab, Segment

    ros.load_room(room)
    seg_classes = _listen(ros, ClassVocabulary, f"{NODE}/segmented_classes")
    ov_classes = _listen(ros, ClassVocabulary, f"{NODE}/open_vocab_classes")
    ov_clouds = _listen(ros, PointCloud2, f"{NODE}/open_vocab_cloud")
    seg = ros.call(Segment, "segment", Segment.Request(score_threshold=1e-6, publish=True))
    assert seg.success, seg.message
    ros.spin_until(
        lambda: seg_classes and seg_classes[-1].query == "segment" and ros.segmented,
        what="~/segmented_classes",
    )
    vocab = seg_classes[-1]
    assert list(vocab.class_names) == list(seg.class_names)
    assert vocab.cloud_topic == f"{NODE}/segmented_cloud" and vocab.header == ros.segmented[-1].header
    n_segmented = len(ros.segmented)

    names = ["lamp", "table", "chair"]
    ov = ros.call(OpenVocab, "open_vocab", OpenVocab.Request(class_names=names, score_threshold=1e-6))
    assert ov.success and len(ov.instances) > 0, ov.message
    ros.spin_until(lambda: ov_classes and ov_clouds, what="~/open_vocab_classes and ~/open_vocab_cloud")
    assert list(ov_classes[-1].class_names) == names and ov_classes[-1].query == "open_vocab"
    assert ov_classes[-1].cloud_topic == f"{NODE}/open_vocab_cloud"
    cloud = _cloud_fields(ov_clouds[-1])
    labels = cloud["label"]
    assert labels.min() >= -1 and labels.max() < len(names)
    for inst in ov.instances:  # label = index into the request's list, at the instance's points
        assert inst.label == names[inst.class_id]
        idx = np.flatnonzero(cloud["instance"] == inst.id)
        assert len(idx) and (labels[idx] == inst.class_id).all()
    # the ScanNet-labelled topic did not change meaning: nothing new was published there
    assert len(ros.segmented) == n_segmented and seg_classes[-1].query == "segment"


# ----------------------------------------------------------------------------- RViz clicks
@pytest.mark.ros
def test_clicked_point_is_answered_with_an_interactive_segmentation(ros, room):
    from geometry_msgs.msg import PointStamped
    from uniseg3d_msgs.msg import ClassVocabulary
    from uniseg3d_msgs.srv import Interactive

    from uniseg3d_ros.node.markers import marker_array_to_specs

    ros.load_room(room)
    c = room.points[room.instance == 2].mean(0)
    near = room.points[np.argmin(np.linalg.norm(room.points - c, axis=1))]
    want = ros.call(Interactive, "interactive", Interactive.Request(clicks=[_point(near)]))
    assert want.success, want.message

    classes = _listen(ros, ClassVocabulary, f"{NODE}/segmented_classes")
    pub = ros.node.create_publisher(PointStamped, "/clicked_point", 10)  # what RViz's Publish Point sends
    ros.markers.clear()
    msg = PointStamped()
    msg.header.frame_id = "map"
    msg.point = _point(near)

    def answered():
        return bool(classes) and classes[-1].query == "clicked_point" and bool(ros.markers)

    _publish_until(ros, pub, msg, answered, "markers answering /clicked_point")
    ros.node.destroy_publisher(pub)
    specs = {(s.ns, s.id): s for s in marker_array_to_specs(ros.markers[-1])}
    inst = want.instances[0]
    drawn = specs[("points", inst.id)].points
    cloud = _cloud_fields(ros.segmented[-1])
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
    np.testing.assert_allclose(drawn, xyz[np.asarray(inst.point_indices)], atol=1e-6)
    assert specs[("labels", inst.id)].text.startswith(inst.label)
    stats = ros.fresh_stats()
    assert stats.get("clicks", 0) >= 1 and stats.get("clicks_failed", 0) == 0


# ----------------------------------------------------------------------------- diagnostics
@pytest.mark.ros
def test_diagnostics_report_model_map_inputs_and_queries(ros, room):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import PointCloud2, PointField
    from uniseg3d_msgs.srv import Segment

    ros.load_room(room)
    seg = ros.call(Segment, "segment", Segment.Request())
    assert seg.success, seg.message
    diags = _listen(ros, DiagnosticArray, "/diagnostics", 10)

    def status(msg, part):
        return next(s for s in msg.status if s.name == f"uniseg3d_node: {part}")

    ros.spin_until(lambda: len(diags) >= 1, what="/diagnostics")
    msg = diags[-1]
    model, map_, inputs = status(msg, "model"), status(msg, "map"), status(msg, "inputs")
    values = {s.name.split(": ")[1]: {kv.key: kv.value for kv in s.values} for s in msg.status}
    assert (
        model.level == b"\x00"
        and values["model"]["loaded"] == "true"
        and model.hardware_id == "uniseg3d_node"
    )
    assert values["model"]["encoding"].startswith("current") and float(values["model"]["last_segment_ms"]) > 0
    stats = ros.fresh_stats()
    assert int(values["map"]["points"]) == stats["map_points"] and map_.level == b"\x00"
    assert int(values["inputs"]["clouds_integrated"]) <= stats["clouds_integrated"]
    assert inputs.level == b"\x00" or "dropping" in inputs.message

    # a malformed cloud: the inputs status turns WARN and names the cause
    bad = PointCloud2(height=1, width=100, point_step=12, row_step=1200, data=b"\x00" * 120)
    bad.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")
    ]
    bad.header.frame_id = "map"
    diags.clear()

    def warned():
        return any(
            status(m, "inputs").level == b"\x01" and "malformed_cloud" in status(m, "inputs").message
            for m in diags
        )

    ros.publish_until(lambda: bad, warned, "/diagnostics inputs WARN naming malformed_cloud")


# ----------------------------------------------------------------------------- the segment action
def _action_client(ros):
    from rclpy.action import ActionClient
    from uniseg3d_msgs.action import Segment as SegmentAction

    client = ActionClient(ros.node, SegmentAction, f"{NODE}/segment")
    ros.spin_until(client.server_is_ready, timeout=30.0, what="~/segment action server")
    return client


def _send(ros, client, goal, feedback):
    future = client.send_goal_async(goal, feedback_callback=lambda m: feedback.append(m.feedback))
    ros.spin_until(future.done, what="goal response")
    handle = future.result()
    assert handle.accepted
    return handle


@pytest.mark.ros
def test_segment_action_reports_every_stage_and_answers_like_the_service(ros, room):
    from action_msgs.msg import GoalStatus
    from uniseg3d_msgs.action import Segment as SegmentAction
    from uniseg3d_msgs.srv import Segment

    from uniseg3d_ros.inference.engine import STAGES

    ros.load_room(room)  # a new map version: every stage really runs
    client = _action_client(ros)
    feedback: list = []
    handle = _send(ros, client, SegmentAction.Goal(score_threshold=1e-6, return_cloud=True), feedback)
    result_future = handle.get_result_async()
    ros.spin_until(result_future.done, timeout=60.0, what="action result")
    res = result_future.result()
    assert res.status == GoalStatus.STATUS_SUCCEEDED and res.result.success, res.result.message
    assert [f.stage for f in feedback] == list(STAGES)
    assert [f.stage_index for f in feedback] == [1, 2, 3, 4] and all(f.stage_count == 4 for f in feedback)
    assert all(a.elapsed_ms <= b.elapsed_ms for a, b in zip(feedback, feedback[1:]))
    # the service of the same name answers the same (cached) segmentation with the same ids
    srv = ros.call(Segment, "segment", Segment.Request(score_threshold=1e-6))
    assert [(i.id, i.point_count) for i in srv.instances] == [
        (i.id, i.point_count) for i in res.result.instances
    ]
    assert res.result.num_points == srv.num_points and len(res.result.segmented_cloud.data) > 0
    client.destroy()


@pytest.mark.ros
def test_a_running_segment_goal_can_be_canceled(ros, room):
    from action_msgs.msg import GoalStatus
    from uniseg3d_msgs.action import Segment as SegmentAction

    ros.load_room(room)  # new map version: superpoints + backbone + decoder take seconds
    client = _action_client(ros)
    feedback: list = []
    handle = _send(ros, client, SegmentAction.Goal(), feedback)
    ros.spin_until(lambda: feedback, timeout=30.0, what="first feedback")
    cancel = handle.cancel_goal_async()
    ros.spin_until(cancel.done, what="cancel response")
    assert len(cancel.result().goals_canceling) == 1
    result_future = handle.get_result_async()
    ros.spin_until(result_future.done, timeout=60.0, what="result of the canceled goal")
    res = result_future.result()
    assert res.status == GoalStatus.STATUS_CANCELED, (res.status, res.result.message)
    assert not res.result.success and "canceled" in res.result.message
    assert len(feedback) < 4  # stopped before the last stage
    stats = ros.fresh_stats()
    assert stats.get("action_segment_canceled", 0) >= 1
    # the node is still consistent: the next goal runs to the end
    feedback.clear()
    handle = _send(ros, client, SegmentAction.Goal(), feedback)
    done = handle.get_result_async()
    ros.spin_until(done.done, timeout=60.0, what="result after cancel")
    assert done.result().status == GoalStatus.STATUS_SUCCEEDED, done.result().result.message
    client.destroy()


def test_docs_cover_the_planner_interfaces():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs/ros_node.md").read_text()
    names = [
        "~/objects",
        "~/segmented_classes",
        "~/open_vocab_cloud",
        "~/open_vocab_classes",
        "/diagnostics",
        "clicked_point",
        "uniseg3d_lifecycle_node",
        "objects_min_overlap",
        "objects_retire_after",
    ]
    assert not [n for n in names if f"`{n}`" not in doc]
    interfaces = (root / "docs/interfaces.md").read_text()
    for name in ("msg/SceneObject", "msg/ObjectArray", "msg/ClassVocabulary", "action/Segment", "object_id"):
        assert name in interfaces
