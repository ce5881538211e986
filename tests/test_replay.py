"""uniseg3d_replay: events from an RGB-D sequence and from ROS 2 bags (mcap, sqlite3) written here,
pacing, pre-fusion into map-frame clouds, and the CLI feeding a real node on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import rosutil
from uniseg3d_ros.tools.replay import Pacer, bag_events, bag_kinds, fuse_events, sequence_events

W, H, FPS, N_FRAMES = 64, 48, 10.0, 6
K = np.array([[50.0, 0.0, (W - 1) / 2], [0.0, 50.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
# camera optical frame (z forward, x right, y down) looking along map +x, z up
R_MAP_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
WALL_X = 2.0  # metres: every frame sees a flat wall at map x = 2 from x = 0


def camera_pose(k: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = R_MAP_OPTICAL
    pose[:3, 3] = [0.0, 0.1 * k, 1.0]
    return pose


def wall_frame(k: int):
    from uniseg3d_model.data.rgbd_sequence import RGBDFrame

    depth = np.full((H, W), int(WALL_X * 1000), np.uint16)
    depth[:4] = 0  # a few invalid rows
    color = np.zeros((H, W, 3), np.uint8)
    color[:, : W // 2] = (200, 30, 30)
    color[:, W // 2 :] = (30, 30, 200)
    return RGBDFrame(stamp=k / FPS, depth=depth, color=color, K=K.copy(), pose=camera_pose(k))


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    from uniseg3d_model.data.rgbd_sequence import write_sequence

    return write_sequence(
        tmp_path_factory.mktemp("seq") / "wall", [wall_frame(k) for k in range(N_FRAMES)], FPS
    )


# ----------------------------------------------------------------------------- pure
def test_pacer_spaces_events_by_stamp_over_rate():
    fast = Pacer(rate=2.0)
    assert fast.delay(10.0, now=100.0) == 0.0
    assert fast.delay(11.0, now=100.1) == pytest.approx(0.4)  # due at 100.5
    assert fast.delay(11.0, now=101.0) == 0.0  # late: publish at once
    assert Pacer(rate=0.0).delay(5.0, 0.0) == 0.0 and Pacer(0.0).delay(99.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="rate"):
        Pacer(-1.0)


def test_sequence_events_carry_the_recorded_frames(sequence):
    events = list(sequence_events(sequence, fixed_frame="map", camera_frame="cam"))
    assert [e.kind for e in events[:4]] == ["pose", "color", "info", "depth"]
    assert len(events) == 4 * N_FRAMES
    for k in range(N_FRAMES):
        pose, color, info, depth = events[4 * k : 4 * k + 4]
        assert [e.stamp for e in (pose, color, info, depth)] == [pytest.approx(k / FPS)] * 4
        np.testing.assert_allclose(pose.data, camera_pose(k), atol=1e-6)
        assert pose.frame_id == "map" and depth.frame_id == "cam"
        np.testing.assert_array_equal(depth.data, wall_frame(k).depth)
        np.testing.assert_array_equal(color.data, wall_frame(k).color)
        np.testing.assert_allclose(info.data, K)
        assert info.extra == (W, H)
    assert len(list(sequence_events(sequence, max_frames=2))) == 8


def test_fused_clouds_lie_on_the_wall_in_the_map_frame(sequence):
    clouds = list(fuse_events(sequence_events(sequence), fixed_frame="map", stride=2))
    assert len(clouds) == N_FRAMES and all(c.kind == "cloud" and c.frame_id == "map" for c in clouds)
    for k, ev in enumerate(clouds):
        pts, cols = ev.data
        assert len(pts) == (H // 2 - 2) * (W // 2)  # stride 2, first 4 rows invalid
        np.testing.assert_allclose(pts[:, 0], WALL_X, atol=1e-4)
        assert abs(np.median(pts[:, 1]) - 0.1 * k) < 0.05  # the camera moved along y
        red = pts[cols[:, 0] > 0.5]
        assert np.all(red[:, 1] > 0.1 * k - 1e-6)  # left half of the image = map +y side


def _write_bag(path: Path, storage: str) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from uniseg3d_ros.mapping.frames import matrix_to_pose
    from uniseg3d_ros.mapping.pointcloud2 import points_to_cloud
    from uniseg3d_ros.mapping.rgbd_sync import array_to_image_fields

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {
            name: writer.add_connection(topic, msgtype, typestore=ts)
            for name, topic, msgtype in [
                ("depth", "/cam/depth", "sensor_msgs/msg/Image"),
                ("color", "/cam/color", "sensor_msgs/msg/Image"),
                ("info", "/cam/info", "sensor_msgs/msg/CameraInfo"),
                ("pose", "/cam/pose", "geometry_msgs/msg/PoseStamped"),
                ("cloud", "/lidar", "sensor_msgs/msg/PointCloud2"),
            ]
        }
        for k in range(3):
            fr = wall_frame(k)
            sec, ns = int(fr.stamp), int(round((fr.stamp % 1) * 1e9))
            t_ns = sec * 10**9 + ns

            def header(frame, sec=sec, ns=ns):
                return T["std_msgs/msg/Header"](
                    stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=ns), frame_id=frame
                )

            def image(array, frame):
                f = array_to_image_fields(array)
                f["data"] = np.frombuffer(f["data"], np.uint8)
                return T["sensor_msgs/msg/Image"](header=header(frame), **f)

            pos, quat = matrix_to_pose(fr.pose)
            pose = T["geometry_msgs/msg/PoseStamped"](
                header=header("map"),
                pose=T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=pos[0], y=pos[1], z=pos[2]),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=quat[0], y=quat[1], z=quat[2], w=quat[3]),
                ),
            )
            roi = T["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            )
            info = T["sensor_msgs/msg/CameraInfo"](
                header=header("cam"),
                height=H,
                width=W,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=K.reshape(9),
                r=np.eye(3).reshape(9),
                p=np.zeros(12),
                binning_x=0,
                binning_y=0,
                roi=roi,
            )
            pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0 + k]], np.float32)
            c = points_to_cloud(None, pts, np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32))
            cloud = T["sensor_msgs/msg/PointCloud2"](
                header=header("map"),
                height=c.height,
                width=c.width,
                is_bigendian=c.is_bigendian,
                point_step=c.point_step,
                row_step=c.row_step,
                is_dense=c.is_dense,
                data=np.frombuffer(c.data, np.uint8),
                fields=[
                    T["sensor_msgs/msg/PointField"](
                        name=f.name, offset=f.offset, datatype=f.datatype, count=f.count
                    )
                    for f in c.fields
                ],
            )
            for name, msg in (
                ("pose", pose),
                ("color", image(fr.color, "cam")),
                ("info", info),
                ("depth", image(fr.depth, "cam")),
                ("cloud", cloud),
            ):
                writer.write(conns[name], t_ns, ts.serialize_cdr(msg, msg.__msgtype__))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_events_round_trip(tmp_path, storage):
    bag = tmp_path / f"bag_{storage}"
    _write_bag(bag, storage)
    assert bag_kinds(bag) == ("depth", "color", "info", "pose", "cloud")
    assert bag_kinds(bag, ["/lidar"]) == ("cloud",)
    events = list(bag_events(bag))
    assert [e.kind for e in events[:5]] == ["pose", "color", "info", "depth", "cloud"]
    assert len(events) == 15
    for k in range(3):
        pose, color, info, depth, cloud = events[5 * k : 5 * k + 5]
        assert pose.stamp == pytest.approx(k / FPS) and depth.frame_id == "cam"
        np.testing.assert_allclose(pose.data, camera_pose(k), atol=1e-9)
        np.testing.assert_array_equal(depth.data, wall_frame(k).depth)
        np.testing.assert_array_equal(color.data, wall_frame(k).color)
        np.testing.assert_allclose(info.data, K)
        assert info.extra == (W, H)
        pts, cols = cloud.data
        np.testing.assert_allclose(pts, [[1, 2, 3], [4, 5, 6 + k]])
        np.testing.assert_allclose(cols, [[1, 0, 0], [0, 1, 0]])
    fused = [e for e in fuse_events(bag_events(bag)) if e.frame_id == "map" and len(e.data[0]) > 2]
    assert len(fused) == 3 and np.allclose(fused[0].data[0][:, 0], WALL_X, atol=1e-4)


def test_bag_without_supported_topics_raises(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        writer.write(
            conn, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String")
        )
    with pytest.raises(ValueError, match="no supported topics"):
        list(bag_events(tmp_path / "b"))


# ----------------------------------------------------------------------------- ROS: CLI -> node
@pytest.mark.ros
def test_replayed_sequence_and_bag_build_the_nodes_map(sequence, tmp_path):
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import MarkerArray

    from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays

    bag = tmp_path / "bag"
    _write_bag(bag, "mcap")
    params = {
        "text_encoder": "hash",
        "checkpoint": "random",
        "pose_source": "topic",
        "stats_period": 0.1,
        "map_publish_rate": 10.0,
        "depth_stride": 1,
        "queue_depth": 20,
        "sync_buffer": 30,
        "auto_segment_period": 1.0,
    }
    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        env = rosutil.ros_env(domain)
        args = ["-m", "uniseg3d_ros.node.node", "--ros-args"] + [
            x for k, v in params.items() for x in ("-p", f"{k}:={v}")
        ]
        with rosutil.start_python(args, env=env, name="uniseg3d_node") as node_proc:
            probe = rclpy.create_node("replay_probe", context=ctx)
            stats, clouds = [{}], []
            probe.create_subscription(
                String, "/uniseg3d_node/stats", lambda m: stats.__setitem__(0, json.loads(m.data)), 10
            )
            probe.create_subscription(PointCloud2, "/uniseg3d_node/map_cloud", clouds.append, 1)
            markers = []
            latched = QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            probe.create_subscription(MarkerArray, "/uniseg3d_node/markers", markers.append, latched)
            clear = probe.create_client(Trigger, "/uniseg3d_node/clear_map")
            rosutil.wait_for_service(probe, clear, 60.0, [node_proc])

            def replay(*extra):
                with rosutil.start_python(
                    ["-m", "uniseg3d_ros.tools.replay", *extra], env=env, name="replay"
                ) as rp:
                    rosutil.spin_until(
                        probe, lambda: rp.popen.poll() is not None, 60.0, "replay finished", [node_proc]
                    )
                    assert rp.popen.returncode == 0 and "replay done" in rp.output(), rp.output()

            def settled(key, n):
                rosutil.spin_until(
                    probe, lambda: stats[0].get(key, 0) >= n, 20.0, f"{key} >= {n}", [node_proc]
                )

            # 1) the RGB-D sequence at 4x real time: depth/color/camera_info/pose -> fused frames
            replay(str(sequence), "--rate", "4")
            settled("rgbd_integrated", N_FRAMES - 1)  # best-effort inputs: allow one lost frame
            rosutil.spin_until(
                probe,
                lambda: clouds and clouds[-1].width == stats[0]["map_points"] > 0,
                20.0,
                "map cloud",
                [node_proc],
            )
            pts, _ = cloud_to_arrays(clouds[-1])
            np.testing.assert_allclose(pts[:, 0], WALL_X, atol=0.011)  # the wall, at its place in the map
            assert pts[:, 1].max() > 0.1 * (N_FRAMES - 2)  # the camera's sideways sweep widened it

            # auto_segment_period: the node segments the map by itself and publishes markers
            rosutil.spin_until(probe, lambda: bool(markers), 30.0, "auto-segment markers", [node_proc])
            assert markers[-1].markers[0].action == markers[-1].markers[0].DELETEALL

            # 2) the same frames pre-fused into map-frame PointCloud2 (--cloud)
            base = stats[0].get("clouds_integrated", 0)
            replay(str(sequence), "--rate", "0", "--cloud", "--max-frames", "3")
            settled("clouds_integrated", base + 2)

            # 3) a ROS 2 bag (mcap): images, camera_info, poses and a PointCloud2 topic
            rosutil.call_service(probe, clear, Trigger.Request(), 10.0, [node_proc])
            before = dict(stats[0])
            replay(str(bag), "--rate", "0")
            settled("rgbd_integrated", before.get("rgbd_integrated", 0) + 2)
            settled("clouds_integrated", before.get("clouds_integrated", 0) + 2)
            probe.destroy_node()


def test_bag_poses_from_tf_and_tf_static(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from uniseg3d_ros.mapping.frames import matrix_to_pose, pose_to_matrix

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types

    def tf_msg(parent, child, matrix, t):
        pos, q = matrix_to_pose(matrix)
        header = T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=int(t), nanosec=0), frame_id=parent
        )
        tr = T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=pos[0], y=pos[1], z=pos[2]),
            rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        )
        stamped = T["geometry_msgs/msg/TransformStamped"](header=header, child_frame_id=child, transform=tr)
        return T["tf2_msgs/msg/TFMessage"](transforms=[stamped])

    map_odom = pose_to_matrix([1.0, 0.0, 0.0], [0, 0, 0, 1])
    base_cam = camera_pose(0)  # static mount: the optical frame 1 m up, looking forward
    with Writer(tmp_path / "tfbag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        static = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
        dynamic = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts)
        for msg in (tf_msg("map", "odom", map_odom, 0), tf_msg("base", "cam", base_cam, 0)):
            writer.write(static, 0, ts.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))
        for k in range(3):
            odom_base = pose_to_matrix([0.5 * k, 0.0, 0.0], [0, 0, 0, 1])
            msg = tf_msg("odom", "base", odom_base, k + 1)
            writer.write(dynamic, (k + 1) * 10**9, ts.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))
    assert bag_kinds(tmp_path / "tfbag") == () and bag_kinds(tmp_path / "tfbag", tf_frame="cam") == ("pose",)
    poses = list(bag_events(tmp_path / "tfbag", tf_frame="cam", fixed_frame="map"))
    assert [p.stamp for p in poses] == [1.0, 2.0, 3.0] and all(p.frame_id == "map" for p in poses)
    for k, ev in enumerate(poses):
        np.testing.assert_allclose(ev.data[:3, 3], [1.0 + 0.5 * k, 0.0, 1.0], atol=1e-9)
        np.testing.assert_allclose(ev.data[:3, :3], R_MAP_OPTICAL, atol=1e-9)
