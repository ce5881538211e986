"""``uniseg3d_replay``: publish a recorded RGB-D sequence or a ROS 2 bag to the node.

Sources:
- an RGB-D sequence directory (``sequence.json`` + ``color/ depth/ pose/ intrinsic/``, the
  :class:`uniseg3d_model.data.rgbd_sequence.RGBDSequence` format);
- a ROS 2 bag (``.mcap`` or sqlite3 ``.db3`` file, or a bag directory with ``metadata.yaml``),
  read with the ``rosbags`` package: sensor_msgs/Image (16UC1/32FC1 depth, rgb8/bgr8 color),
  CameraInfo, PointCloud2, geometry_msgs/PoseStamped and nav_msgs/Odometry, or poses of one frame
  from /tf + /tf_static (``--tf-frame``).

Published (default topic names are the node's private inputs, ``/<node>/<name>``): depth
(16UC1 or 32FC1), color (rgb8), camera_info, pose (PoseStamped in the fixed frame) and
clouds; or, with ``--cloud``, only pre-fused PointCloud2 in the fixed frame (depth
back-projected and transformed by the pose here). Messages keep their recorded stamps and
are paced at ``--rate`` x real time (0 = as fast as possible).

The event stream (:class:`Event`, :func:`sequence_events`, :func:`bag_events`,
:func:`fuse_events`) and the pacing (:class:`Pacer`) are pure Python; only :func:`main`
and :class:`ReplayPublisher` touch rclpy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniseg3d_ros.mapping.frames import (
    PoseBuffer,
    msg_pose_to_matrix,
    msg_transform_to_matrix,
    stamp_to_sec,
    transform_points,
)
from uniseg3d_ros.mapping.rgbd_sync import RGBDSynchronizer, image_to_array
from uniseg3d_ros.mapping.tf_buffer import TransformBuffer

KINDS = ("depth", "color", "info", "pose", "cloud")


@dataclass
class Event:
    """One message to publish. ``data``: depth (H, W) uint16 mm / float32 m; color (H, W, 3) uint8
    RGB; info (3, 3) K with ``size`` (W, H) in ``extra``; pose (4, 4) sensor -> fixed frame;
    cloud ((N, 3) float32 points, (N, 3) float32 colors in [0, 1] or None)."""

    stamp: float
    kind: str
    data: Any
    frame_id: str
    extra: Any = None


def sequence_events(
    path: str | Path, fixed_frame: str = "map", camera_frame: str = "camera", max_frames: int = 0
) -> Iterator[Event]:
    """Events of an RGBDSequence: per frame pose, color, camera_info and depth (depth last)."""
    from uniseg3d_model.data.rgbd_sequence import RGBDSequence

    seq = RGBDSequence(path)
    for k, frame in enumerate(seq):
        if max_frames and k >= max_frames:
            break
        depth = np.asarray(frame.depth)
        h, w = depth.shape[:2]
        if float(frame.depth_scale) != 1000.0:  # 16UC1 means millimetres: publish metres as 32FC1
            depth = (depth.astype(np.float32) / np.float32(frame.depth_scale)).astype(np.float32)
        color = np.full((h, w, 3), 128, np.uint8) if frame.color is None else np.asarray(frame.color)
        yield Event(frame.stamp, "pose", np.asarray(frame.pose, dtype=np.float64), fixed_frame)
        yield Event(frame.stamp, "color", color, camera_frame)
        yield Event(frame.stamp, "info", np.asarray(frame.K, dtype=np.float64), camera_frame, (w, h))
        yield Event(frame.stamp, "depth", depth, camera_frame)


SEQUENCE_KINDS = ("pose", "color", "info", "depth")
_BAG_KINDS = {
    "sensor_msgs/msg/Image": ("depth", "color"),
    "sensor_msgs/msg/CameraInfo": ("info",),
    "sensor_msgs/msg/PointCloud2": ("cloud",),
    "geometry_msgs/msg/PoseStamped": ("pose",),
    "nav_msgs/msg/Odometry": ("pose",),
}


_TF_TYPE = "tf2_msgs/msg/TFMessage"


def bag_kinds(path: str | Path, topics: Iterable[str] = (), tf_frame: str = "") -> tuple[str, ...]:
    """Event kinds a bag can produce (from its connections; images count as depth and color;
    /tf gives poses when ``tf_frame`` is set)."""
    from rosbags.highlevel import AnyReader

    wanted = set(topics)
    kinds_of = {**_BAG_KINDS, **({_TF_TYPE: ("pose",)} if tf_frame else {})}
    with AnyReader([Path(path)]) as reader:
        kinds = {
            k
            for c in reader.connections
            if not wanted or c.topic in wanted
            for k in kinds_of.get(c.msgtype, ())
        }
    return tuple(k for k in KINDS if k in kinds)


def _classify_image(msg: Any) -> str:
    return "depth" if str(msg.encoding) in ("16UC1", "mono16", "32FC1") else "color"


def bag_events(
    path: str | Path,
    topics: Iterable[str] = (),
    max_frames: int = 0,
    tf_frame: str = "",
    fixed_frame: str = "map",
) -> Iterator[Event]:
    """Events from a ROS 2 bag (mcap or sqlite3) in recorded order. ``topics`` limits the topics
    read (all supported ones by default). Stamps are the messages' header stamps. With
    ``tf_frame``, /tf and /tf_static are read into a :class:`TransformBuffer` and each /tf message
    that advances the latest common time of the chain ``fixed_frame`` <- ``tf_frame`` yields a pose
    event of ``tf_frame`` in ``fixed_frame`` at that time (interpolated like tf2)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    supported = set(_BAG_KINDS) | ({_TF_TYPE} if tf_frame else set())
    tree = TransformBuffer(cache_time=3600.0)
    last_tf_pose = float("-inf")
    p = Path(path)
    with AnyReader([p], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        wanted = set(topics)
        conns = [
            c for c in reader.connections if c.msgtype in supported and (not wanted or c.topic in wanted)
        ]
        if not conns:
            found = sorted({(c.topic, c.msgtype) for c in reader.connections})
            raise ValueError(f"bag {p} has no supported topics {sorted(supported)}; found {found}")
        depth_seen = 0
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype == _TF_TYPE:
                static = conn.topic == "/tf_static"
                for tf in msg.transforms:
                    tree.set_transform(
                        tf.header.frame_id,
                        tf.child_frame_id,
                        msg_transform_to_matrix(tf.transform),
                        stamp_to_sec(tf.header.stamp),
                        static=static,
                    )
                try:  # a pose each time the chain's latest common time advances
                    stamp = tree.latest_common_time(fixed_frame, tf_frame)
                    pose = tree.lookup(fixed_frame, tf_frame, stamp)
                except LookupError:
                    continue
                if not static and stamp > last_tf_pose:
                    last_tf_pose = stamp
                    yield Event(stamp, "pose", pose, fixed_frame)
                continue
            stamp, frame = stamp_to_sec(msg.header.stamp), msg.header.frame_id
            kind = conn.msgtype.split("/")[-1]
            if kind == "Image":
                img_kind = _classify_image(msg)
                if img_kind == "depth":
                    depth_seen += 1
                    if max_frames and depth_seen > max_frames:
                        break
                yield Event(stamp, img_kind, image_to_array(msg), frame)
            elif kind == "CameraInfo":
                yield Event(
                    stamp,
                    "info",
                    np.asarray(msg.k, dtype=np.float64).reshape(3, 3),
                    frame,
                    (int(msg.width), int(msg.height)),
                )
            elif kind == "PointCloud2":
                from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays

                yield Event(stamp, "cloud", cloud_to_arrays(msg), frame)
            elif kind == "PoseStamped":
                yield Event(stamp, "pose", msg_pose_to_matrix(msg.pose), frame)
            else:  # Odometry
                yield Event(stamp, "pose", msg_pose_to_matrix(msg.pose.pose), frame)


def fuse_events(
    events: Iterable[Event],
    fixed_frame: str = "map",
    stride: int = 2,
    min_depth: float = 0.1,
    max_depth: float = 6.0,
    tolerance: float = 0.02,
) -> Iterator[Event]:
    """Turn depth + color + camera_info + pose events into one 'cloud' event per frame, in the fixed
    frame (clouds pass through; frames without a pose within ``tolerance`` are skipped)."""
    from uniseg3d_ros.mapping.rgbd import depth_to_points

    sync = RGBDSynchronizer(tolerance, buffer_size=30)
    poses = PoseBuffer(maxlen=1000, tolerance=tolerance)
    for ev in events:
        if ev.kind == "pose":
            poses.add(ev.stamp, ev.data)
            continue
        if ev.kind == "cloud":
            yield ev
            continue
        frame = sync.add(ev.kind, ev.stamp, ev)
        if frame is None:
            continue
        pose = poses.lookup(frame.stamp)
        if pose is None:
            continue
        pts, cols = depth_to_points(
            frame.depth.data,
            frame.color.data,
            frame.info.data,
            stride=stride,
            min_depth=min_depth,
            max_depth=max_depth,
        )
        yield Event(frame.stamp, "cloud", (transform_points(pts, pose), cols), fixed_frame)


class Pacer:
    """Wall-clock pacing: event at stamp ``t`` is due ``(t - t0) / rate`` s after the first one."""

    def __init__(self, rate: float = 1.0) -> None:
        if rate < 0 or not np.isfinite(rate):
            raise ValueError(f"rate must be >= 0 (0 = as fast as possible), got {rate}")
        self.rate = float(rate)
        self._t0: float | None = None
        self._wall0 = 0.0

    def delay(self, stamp: float, now: float) -> float:
        """Seconds to wait before publishing an event stamped ``stamp`` at wall time ``now``."""
        if self._t0 is None:
            self._t0, self._wall0 = stamp, now
            return 0.0
        if self.rate == 0:
            return 0.0
        return max(0.0, self._wall0 + (stamp - self._t0) / self.rate - now)


# ----------------------------------------------------------------------------- ROS side
class ReplayPublisher:
    """Publishers for the event kinds on ``topics`` (kind -> topic name) of an rclpy node."""

    def __init__(self, node: Any, topics: dict[str, str]) -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {
            "depth": Image,
            "color": Image,
            "info": CameraInfo,
            "pose": PoseStamped,
            "cloud": PointCloud2,
        }
        self.node = node
        self.pubs = {k: node.create_publisher(types[k], topics[k], qos) for k in topics}
        self.published = {k: 0 for k in topics}

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait (wall clock, no spinning needed) until every publisher is matched; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return True
            time.sleep(0.05)
        return False

    def publish(self, ev: Event) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Header

        from uniseg3d_ros.mapping.frames import matrix_to_pose, stamp_msg
        from uniseg3d_ros.mapping.pointcloud2 import points_to_cloud
        from uniseg3d_ros.mapping.rgbd_sync import array_to_image_fields

        if ev.kind not in self.pubs:
            return
        header = Header(frame_id=ev.frame_id, stamp=stamp_msg(ev.stamp))
        if ev.kind in ("depth", "color"):
            msg = Image(header=header, **array_to_image_fields(ev.data))
        elif ev.kind == "info":
            w, h = ev.extra
            msg = CameraInfo(header=header, width=int(w), height=int(h), distortion_model="plumb_bob")
            msg.k = np.asarray(ev.data, dtype=np.float64).reshape(9).tolist()
            msg.d = [0.0] * 5
            p = np.zeros((3, 4))
            p[:, :3] = np.asarray(ev.data).reshape(3, 3)
            msg.p = p.reshape(12).tolist()
            msg.r = np.eye(3).reshape(9).tolist()
        elif ev.kind == "pose":
            pos, quat = matrix_to_pose(ev.data)
            msg = PoseStamped(header=header)
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pos)
            o = msg.pose.orientation
            o.x, o.y, o.z, o.w = (float(v) for v in quat)
        else:
            points, colors = ev.data
            msg = points_to_cloud(header, points, colors, msg_factory=PointCloud2)
        self.pubs[ev.kind].publish(msg)
        self.published[ev.kind] += 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="uniseg3d_replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="RGB-D sequence directory or ROS 2 bag (.mcap / .db3 / bag directory)")
    ap.add_argument(
        "--rate", type=float, default=1.0, help="playback speed x real time; 0 = as fast as possible"
    )
    ap.add_argument(
        "--node", default="uniseg3d_node", help="node whose private inputs to feed (topic prefix)"
    )
    ap.add_argument(
        "--cloud", action="store_true", help="publish pre-fused PointCloud2 in the fixed frame only"
    )
    ap.add_argument("--fixed-frame", default="map")
    ap.add_argument("--camera-frame", default="camera", help="frame_id of images from a sequence")
    ap.add_argument(
        "--tf-frame",
        default="",
        help="bags: publish the pose of this frame in --fixed-frame from /tf + /tf_static",
    )
    ap.add_argument("--topics", nargs="*", default=(), help="bag topics to read (default: all supported)")
    ap.add_argument("--stride", type=int, default=2, help="depth pixel stride for --cloud")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    ap.add_argument(
        "--wait-subscribers",
        type=float,
        default=10.0,
        help="seconds to wait for the node's subscriptions before publishing",
    )
    args, _ros = ap.parse_known_args(argv)
    # user mistakes are answered here, before any ROS set-up or waiting for subscribers
    if not (args.rate >= 0 and np.isfinite(args.rate)):
        ap.error(f"--rate must be >= 0 (0 = as fast as possible), got {args.rate}")
    if args.stride < 1:
        ap.error(f"--stride must be >= 1, got {args.stride}")
    if args.max_frames < 0:
        ap.error(f"--max-frames must be >= 0 (0 = all), got {args.max_frames}")
    if not (args.wait_subscribers >= 0 and np.isfinite(args.wait_subscribers)):
        ap.error(f"--wait-subscribers must be >= 0 seconds, got {args.wait_subscribers}")
    problem = source_problem(Path(args.source))
    if problem:
        ap.error(problem)
    return args


def source_problem(src: Path) -> str:
    """Why ``src`` cannot be replayed ('' when it can): a missing path, or neither an RGB-D
    sequence (a folder with ``sequence.json``) nor a ROS 2 bag rosbags can open."""
    if not src.exists():
        return f"source {src} does not exist"
    if (src / "sequence.json").is_file():
        return ""
    from rosbags.highlevel import AnyReader

    try:
        with AnyReader([src]):
            return ""
    except Exception as exc:  # rosbags raises several types for "not a bag"
        return (
            f"source {src} is neither an RGB-D sequence (a folder with sequence.json) nor a ROS 2 bag "
            f"(.mcap, .db3 or a bag folder with metadata.yaml): {exc}"
        )


def main(argv: list[str] | None = None) -> int:
    import rclpy

    args = parse_args(argv)
    src = Path(args.source)
    if (src / "sequence.json").is_file():
        events: Iterable[Event] = sequence_events(src, args.fixed_frame, args.camera_frame, args.max_frames)
        kinds = SEQUENCE_KINDS
    else:  # parse_args checked that a bag reader opens it
        events = bag_events(src, args.topics, args.max_frames, args.tf_frame, args.fixed_frame)
        kinds = bag_kinds(src, args.topics, args.tf_frame)
    if args.cloud:
        events = fuse_events(events, args.fixed_frame, args.stride)
        kinds = ("cloud",)
    topics = {k: f"/{args.node}/{'camera_info' if k == 'info' else k}" for k in kinds}

    rclpy.init(args=argv)
    node = rclpy.create_node("uniseg3d_replay")
    pub = ReplayPublisher(node, topics)
    log = node.get_logger()
    if args.wait_subscribers > 0 and not pub.wait_for_subscribers(args.wait_subscribers):
        log.warning(f"not every topic has a subscriber after {args.wait_subscribers} s; publishing anyway")
    pacer = Pacer(args.rate)
    try:
        for ev in events:
            wait = pacer.delay(ev.stamp, time.monotonic())
            if wait > 0:
                time.sleep(wait)  # pacing to the recording's clock, not synchronisation
            pub.publish(ev)
        log.info(f"replay done: {pub.published}")
        print(f"replay done: {pub.published}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
