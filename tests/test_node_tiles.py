"""Maps beyond one room through uniseg3d_node over real rclpy on loopback: above ``tile_above`` the
node answers ``~/segment`` (service and action), ``~/refer``, ``~/interactive`` / clicks and
``~/open_vocab`` in tiles merged across borders; below it, exactly as the plain engine.

The node runs the shipped model (``checkpoint: ''``) on two generated rooms (uniseg3d_model's
synthetic generator, never seen in training) fused as the node fuses a camera stream (the model's
domain) and placed side by side: a bathroom and an office, 9.3 m across, 117k voxels. With the
node's 6 m tiles (1 m overlap) the office's black chair (object 16) is cut by a tile border and its
black bookshelf (object 12) lies outside the first tile. Smaller tiles cut the rooms into pieces
the model never saw: referring then picks the wrong tile (docs/ros_node.md).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests import rosutil
from tests.test_node import NODE, NodeHarness

TILE = {"tile_above": 4.0, "tile_size": 6.0, "tile_overlap": 1.0}  # the node's defaults, a low threshold
PARAMS = {
    "checkpoint": "",  # the shipped model: real objects, so "one instance per object" means something
    "stats_period": 0.2,
    "map_publish_rate": 0.0,
    "max_voxels": 400000,
    "max_click_distance": 0.1,
    **TILE,
}
SHELF = 1012  # the office's black bookshelf (room 2, object 12), beyond the first tile
CHAIR = 1016  # the office's black chair (room 2, object 16)


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    map_dir = tmp_path_factory.mktemp("maps")
    with rosutil.running_node({**PARAMS, "map_directory": str(map_dir)}, NodeHarness,
                              ready_timeout=120.0) as harness:
        harness.map_dir = map_dir
        yield harness


def _rooms(seeds):
    """Generated rooms as the node fuses them (48 RGB-D frames, 2 cm map, the shipped model's
    domain), side by side along x (0.3 m apart): points, colours, object id per point (1000 * room
    index + object id; -1 for wall, floor and unlabelled points)."""
    from uniseg3d_model.synthetic.scene import generate_scene
    from uniseg3d_ros.tools.fused_scene import fused_sample

    pts, cols, ids, x = [], [], [], 0.0
    for k, seed in enumerate(seeds):
        room = fused_sample(generate_scene(seed))
        p = room["points"] - room["points"].min(0) + np.float32([x, 0.0, 0.0])
        x = float(p[:, 0].max()) + 0.3
        inst = room["instance"]
        pts.append(p)
        cols.append(room["colors"])
        ids.append(np.where(inst >= 0, room["instance_object_id"][np.maximum(inst, 0)] + 1000 * k, -1))
    return SimpleNamespace(points=np.concatenate(pts), colors=np.concatenate(cols), ids=np.concatenate(ids))


@pytest.fixture(scope="module")
def apartment():
    return _rooms([0, 1])


@pytest.fixture(scope="module")
def bathroom():
    return _rooms([0])


@pytest.fixture(scope="module")
def engine():
    from uniseg3d_ros.inference.loading import load_engine

    return load_engine("")


def _saved(ros, name):
    """The node's map as a snapshot (saved by ~/save_map, loaded here)."""
    from uniseg3d_msgs.srv import SaveMap

    from uniseg3d_ros.mapping.map_io import load_map

    saved = ros.call(SaveMap, "save_map", SaveMap.Request(path=name, overwrite=True))
    assert saved.success, saved.message
    return load_map(saved.path).snapshot()


def _truth(rooms, snap):
    """Object id per snapshot row (the nearest generated vertex's)."""
    from scipy.spatial import cKDTree

    _, nn = cKDTree(rooms.points).query(snap.points)
    return rooms.ids[nn]


def _iou(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return len(np.intersect1d(a, b)) / max(1, len(np.union1d(a, b)))


def _same(node_instances, direct_instances):
    assert [(i.class_id, i.point_count) for i in node_instances] == [
        (i.class_id, i.point_count) for i in direct_instances
    ]
    for a, b in zip(node_instances, direct_instances):
        np.testing.assert_array_equal(np.asarray(a.point_indices), b.point_indices)


@pytest.mark.ros
def test_below_tile_above_the_node_answers_as_the_plain_engine(ros, bathroom, engine):
    from uniseg3d_msgs.srv import Refer, Segment

    ros.load_room(bathroom)  # one room: one piece
    seg = ros.call(Segment, "segment", Segment.Request())
    ref = ros.call(Refer, "refer", Refer.Request(text="the white toilet"))
    assert seg.success and ref.success, (seg.message, ref.message)
    assert "tiles" not in seg.message and ros.fresh_stats()["tiles"] == 0
    snap = _saved(ros, "bathroom.npz")
    _same(seg.instances, engine.segment(snap).instances)
    _same(ref.instances, engine.refer(snap, "the white toilet").instances)


@pytest.mark.ros
def test_above_tile_above_segment_merges_objects_cut_by_tile_borders(ros, apartment, engine):
    from uniseg3d_msgs.srv import Segment

    from uniseg3d_ros.inference.tiles import TileConfig, TiledEngine

    ros.load_room(apartment)  # 9.3 m across: tiled
    res = ros.call(Segment, "segment", Segment.Request(return_cloud=True), timeout=120.0)
    assert res.success and len(res.instances) > 5, res.message
    snap = _saved(ros, "apartment.npz")
    assert res.num_points == len(snap.points) and "tiles" in res.message
    assert ros.fresh_stats()["tiles"] >= 2

    # the object cut by a tile border comes back as one instance (not one piece per tile)
    chair = np.flatnonzero(_truth(apartment, snap) == CHAIR)
    squares = np.floor(snap.points[:, :2] / TILE["tile_size"]).astype(int)
    assert len({tuple(s) for s in squares[chair]}) >= 2, "the chair no longer spans a tile border"
    best = max(res.instances, key=lambda i: _iou(i.point_indices, chair))
    assert _iou(best.point_indices, chair) > 0.7
    both_sides = np.intersect1d(np.asarray(best.point_indices), chair)
    assert len({tuple(s) for s in squares[both_sides]}) >= 2
    pieces = [i for i in res.instances if np.isin(chair, np.asarray(i.point_indices)).mean() > 0.1]
    assert pieces == [best]
    owner = np.concatenate([np.asarray(i.point_indices) for i in res.instances])
    assert len(owner) == len(np.unique(owner))  # disjoint masks, as without tiles

    # the tiled engine run directly on the saved map gives the same answer
    cfg = TileConfig(tile_size=TILE["tile_size"], overlap=TILE["tile_overlap"])
    direct = TiledEngine(engine, cfg).segment(snap)
    _same(res.instances, direct.instances)


@pytest.mark.ros
def test_refer_clicks_and_open_vocab_search_every_tile(ros, apartment):
    from geometry_msgs.msg import Point, PointStamped
    from uniseg3d_msgs.msg import ClassVocabulary
    from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer

    from uniseg3d_ros.mapping.pointcloud2 import read_points

    if ros.fresh_stats()["map_points"] < 100000:  # run alone: load the map first
        ros.load_room(apartment)
    snap = _saved(ros, "apartment_q.npz")
    truth = _truth(apartment, snap)
    shelf = np.flatnonzero(truth == SHELF)
    assert snap.points[shelf, 0].min() > TILE["tile_size"] + TILE["tile_overlap"]  # outside the first tile

    ref = ros.call(Refer, "refer", Refer.Request(text="the black bookshelf"), timeout=120.0)
    assert ref.success, ref.message
    assert _iou(ref.instances[0].point_indices, shelf) > 0.5

    centre = snap.points[shelf].mean(0)
    click = snap.points[shelf[np.argmin(np.linalg.norm(snap.points[shelf] - centre, axis=1))]]
    point = Point(x=float(click[0]), y=float(click[1]), z=float(click[2]))
    inter = ros.call(Interactive, "interactive", Interactive.Request(clicks=[point]))
    assert inter.success, inter.message
    assert _iou(inter.instances[0].point_indices, shelf) > 0.5

    names = ["table", "chair", "door", "window", "bookshelf"]
    ov = ros.call(OpenVocab, "open_vocab", OpenVocab.Request(class_names=names))
    assert ov.success and ov.instances, ov.message
    assert {i.label for i in ov.instances} <= set(names)
    assert max(i.centroid.x for i in ov.instances) > TILE["tile_size"] + TILE["tile_overlap"]  # beyond tile 1
    assert all(max(i.point_indices) < len(snap.points) for i in ov.instances)

    # an RViz click on /clicked_point lands on the same object
    classes: list = []
    latched = _latched()
    ros.node.create_subscription(ClassVocabulary, f"{NODE}/segmented_classes", classes.append, latched)
    pub = ros.node.create_publisher(PointStamped, "/clicked_point", 10)
    ros.segmented.clear()
    msg = PointStamped()
    msg.header.frame_id = "map"
    msg.point = point

    def answered():
        if not (classes and classes[-1].query == "clicked_point" and ros.segmented):
            pub.publish(msg)
            return False
        return True

    ros.spin_until(answered, 60.0, "~/segmented_cloud answering /clicked_point")
    cloud = read_points(ros.segmented[-1], ["instance"])
    clicked = np.flatnonzero(cloud["instance"] >= 0)
    assert _iou(clicked, shelf) > 0.5


def _latched():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )


@pytest.mark.ros
def test_tiled_segment_action_reports_stages_per_tile_and_cancels(ros, apartment):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from uniseg3d_msgs.action import Segment as SegmentAction

    from uniseg3d_ros.inference.engine import STAGES

    ros.load_room(apartment)  # a new map version: every tile is encoded again
    client = ActionClient(ros.node, SegmentAction, f"{NODE}/segment")
    ros.spin_until(client.server_is_ready, timeout=30.0, what="~/segment action server")

    def run(cancel_after):
        feedback: list = []
        future = client.send_goal_async(
            SegmentAction.Goal(), feedback_callback=lambda m: feedback.append(m.feedback)
        )
        ros.spin_until(future.done, what="goal response")
        handle = future.result()
        assert handle.accepted
        if cancel_after:
            ros.spin_until(lambda: len(feedback) >= cancel_after, timeout=60.0, what="feedback")
            handle.cancel_goal_async()
        result = handle.get_result_async()
        ros.spin_until(result.done, timeout=120.0, what="action result")
        tiles.append([(f.tile_index, f.tile_count) for f in feedback])
        return result.result(), [f.stage for f in feedback]

    tiles: list = []  # (tile_index, tile_count) of each feedback, per goal

    res, stages = run(cancel_after=6)  # cancelled inside the second tile
    assert res.status == GoalStatus.STATUS_CANCELED and "canceled" in res.result.message
    assert stages[:4] == list(STAGES) and len(stages) <= 8  # the first tile's stages, then stopped
    count = tiles[0][0][1]  # the feedback names the tile and the number of tiles
    assert count >= 2 and tiles[0][:4] == [(1, count)] * 4
    assert tiles[0][4:] == [(2, count)] * len(tiles[0][4:])
    res, stages = run(cancel_after=0)  # the tiles finished before the cancel are not encoded again
    assert res.status == GoalStatus.STATUS_SUCCEEDED and res.result.success, res.result.message
    encoded = stages.count("backbone")
    assert count == ros.fresh_stats()["tiles"] and 0 < encoded < count and stages[-1] == "postprocess"
    numbers = [t for t, n in tiles[1][:-1]]  # every stage but the merge names its tile, in order
    assert all(n == count for t, n in tiles[1][:-1]) and numbers == sorted(numbers) and numbers[0] >= 2
    assert tiles[1][-1] == (0, 0)  # the merge
    assert f"({encoded} encoded)" in res.result.message
    client.destroy()


@pytest.mark.ros
def test_light_queries_answer_on_the_last_tiling_while_a_tiled_segment_runs(ros, apartment):
    import time

    from sensor_msgs.msg import PointCloud2
    from uniseg3d_msgs.srv import Refer, Segment

    from uniseg3d_ros.mapping.frames import stamp_msg
    from uniseg3d_ros.mapping.pointcloud2 import Header, points_to_cloud

    if ros.fresh_stats()["map_points"] < 100000:
        ros.load_room(apartment)
    first = ros.call(Segment, "segment", Segment.Request(), timeout=120.0)
    assert first.success, first.message
    old = ros.fresh_stats()["map_version"]

    # a frame over the whole office (every tile changes): the next segment re-encodes them all
    office = apartment.points[apartment.ids >= 1000]
    frame = office[::3] + np.float32([0.0, 0.0, 0.01])
    header = Header(frame_id="map", stamp=stamp_msg(2.0))

    def msg():
        return points_to_cloud(header, frame, None, msg_factory=PointCloud2)

    ros.publish_until(msg, lambda: ros.stats.get("map_version", old) != old, "the new frame integrated")
    client = ros.node.create_client(Segment, f"{NODE}/segment")
    seg = client.call_async(Segment.Request())
    ros.spin_until(lambda: ros.stats.get("encoding_version", -1) > 0, 60.0, "the node tiling the new map")
    t0 = time.perf_counter()
    ref = ros.call(Refer, "refer", Refer.Request(text="the black bookshelf"))
    round_trip = time.perf_counter() - t0
    assert not seg.done(), "the tiled segment finished before refer: make the frame larger"
    assert ref.success and f"on map version {old}" in ref.message, ref.message
    print(f"refer during a tiled segment: {1e3 * round_trip:.0f} ms round trip; {ref.message}")
    assert round_trip < 5.0  # a decoder pass per tile, never behind the tiled encode
    ros.spin_until(seg.done, 120.0, "segment response")
    assert seg.result().success and "encoded" in seg.result().message
    ros.node.destroy_client(client)
