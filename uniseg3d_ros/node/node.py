"""``uniseg3d_node``: the ROS 2 glue around the scene map and the inference engine.

Threading: a MultiThreadedExecutor runs four callback groups. Sensor callbacks (clouds,
RGB-D, poses) share one mutually exclusive group and only decode + fuse into the map
(under a lock); heavy services (segment, save/clear map) and the auto-segment timer share
another, so inference never blocks sensor input; the light queries (refer, open_vocab,
interactive) share a reentrant group and never wait behind a segment: the engine answers
them from its last finished encoding while a new one is built (InferenceEngine docstring);
publishing timers (map cloud, stats) have the fourth. Queues are bounded everywhere (QoS
depth, RGB-D sync buffer, pose buffer, map capacity).

Service handlers: services.py. Topics, services and parameters: docs/ros_node.md. Logic
lives in the tested pure modules (params, frames, rgbd_sync, engine, results, markers, scene_map,
pointcloud2, rgbd).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from functools import partial
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer, SaveMap, Segment
from visualization_msgs.msg import MarkerArray

from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine, QueryResult, load_engine
from uniseg3d_ros.mapping.frames import (
    PoseBuffer,
    PoseResolver,
    PoseWaitQueue,
    make_tf_lookup,
    msg_pose_to_matrix,
    stamp_msg,
    stamp_to_sec,
)
from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays, points_to_cloud, segmented_cloud
from uniseg3d_ros.mapping.rgbd import depth_to_points
from uniseg3d_ros.mapping.rgbd_sync import RGBDSynchronizer, SyncedFrame, image_to_array
from uniseg3d_ros.mapping.scene_map import SceneMap
from uniseg3d_ros.node import params as params_mod
from uniseg3d_ros.node.markers import build_markers, to_marker_array
from uniseg3d_ros.node.services import ServiceHandlers

NODE_NAME = "uniseg3d_node"
#: services in the reentrant query group: they never wait for a running encode (see InferenceEngine)
LIGHT_SERVICES = ("refer", "open_vocab", "interactive")
#: counters always present in ~/stats (others appear when first counted)
COUNTERS = (
    "clouds",
    "clouds_integrated",
    "depth_msgs",
    "color_msgs",
    "info_msgs",
    "rgbd_integrated",
    "poses",
    "malformed_cloud",
    "malformed_rgbd",
    "malformed_pose",
    "unknown_frame",
    "no_pose",
    "pose_wrong_frame",
    "srv_errors",
)


class UniSeg3DNode(ServiceHandlers, Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = params_mod.declare(self)
        p = self.p
        self.counters: Counter[str] = Counter({k: 0 for k in COUNTERS})
        self._count_lock = threading.Lock()
        self._warned: set[str] = set()
        self.map = SceneMap(
            voxel_size=p.voxel_size,
            max_voxels=p.max_voxels,
            max_range=p.max_range if p.max_range > 0 else None,
        )
        self.map_lock = threading.Lock()
        self._last_stamp = 0.0
        self._published_map_version = -1

        self.sensor_group = MutuallyExclusiveCallbackGroup()
        self.service_group = MutuallyExclusiveCallbackGroup()
        self.output_group = MutuallyExclusiveCallbackGroup()
        # light queries (answered from the cached encoding) run concurrently, never behind a segment
        self.query_group = ReentrantCallbackGroup()

        tf_lookup = None
        if p.pose_source in ("auto", "tf"):
            tf_lookup = make_tf_lookup(self, p.fixed_frame, p.tf_timeout)
        if p.pose_source == "tf" and tf_lookup is None:
            self.get_logger().error("pose_source 'tf' but tf2_ros is not installed; using pose topics")
        self.resolver = PoseResolver(
            p.fixed_frame,
            "auto" if p.pose_source == "tf" and tf_lookup is None else p.pose_source,
            PoseBuffer(p.pose_buffer, p.pose_tolerance),
            tf_lookup,
            p.sensor_frame,
        )
        self.sync = RGBDSynchronizer(p.sync_tolerance, p.sync_buffer)
        self.waiting = PoseWaitQueue(p.pose_wait_buffer, p.pose_tolerance)
        self._sensor_lock = threading.Lock()  # sync/waiting queues: clear_map (services) vs sensor callbacks

        sensor_qos = QoSProfile(**{**_qos_kwargs(qos_profile_sensor_data), "depth": p.queue_depth})
        inputs: list[tuple[Any, str, Any]] = []
        if p.input_mode in ("cloud", "both"):
            inputs.append((PointCloud2, p.cloud_topic, self._on_cloud))
        if p.input_mode in ("rgbd", "both"):
            inputs += [
                (Image, p.depth_topic, partial(self._on_rgbd, "depth")),
                (Image, p.color_topic, partial(self._on_rgbd, "color")),
                (CameraInfo, p.camera_info_topic, partial(self._on_rgbd, "info")),
            ]
        if self.resolver.active_source() != "tf" and p.pose_source in ("auto", "topic"):
            inputs += [
                (PoseStamped, p.pose_topic, lambda m: self._on_pose(m.header, m.pose)),
                (Odometry, p.odom_topic, lambda m: self._on_pose(m.header, m.pose.pose)),
            ]
        for msg_type, topic, callback in inputs:
            self.create_subscription(msg_type, topic, callback, sensor_qos, callback_group=self.sensor_group)

        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", latched)
        self.pub_segmented = self.create_publisher(PointCloud2, "~/segmented_cloud", latched)
        self.pub_map = self.create_publisher(PointCloud2, "~/map_cloud", 1)
        self.pub_stats = self.create_publisher(String, "~/stats", 10)

        self.engine: InferenceEngine | None = None
        self.engine_error = ""
        try:
            self.engine = load_engine(
                p.checkpoint,
                p.device,
                p.text_encoder,
                EngineConfig(
                    score_threshold=p.score_threshold,
                    top_k=p.top_k,
                    max_instances=p.max_instances,
                    nms_iou=p.nms,
                    max_click_distance=p.max_click_distance,
                ),
                p.text_encoder_weights,
            )
            for note in self.engine.notes:
                log = (
                    self.get_logger().warning if note.startswith("NO CHECKPOINT") else self.get_logger().info
                )
                log(note)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the node up, services say why
            self.engine_error = f"model not loaded: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.engine_error)

        services = [
            (Segment, "segment", self._srv_segment),
            (Refer, "refer", self._srv_refer),
            (OpenVocab, "open_vocab", self._srv_open_vocab),
            (Interactive, "interactive", self._srv_interactive),
            (SaveMap, "save_map", self._srv_save_map),
            (Trigger, "clear_map", self._srv_clear_map),
        ]
        for srv_type, name, handler in services:
            group = self.query_group if name in LIGHT_SERVICES else self.service_group
            self.create_service(srv_type, f"~/{name}", self._guard(srv_type, handler), callback_group=group)

        if p.auto_segment_period > 0:
            self.create_timer(p.auto_segment_period, self._auto_segment, callback_group=self.service_group)
        if p.map_publish_rate > 0:
            self.create_timer(1.0 / p.map_publish_rate, self._publish_map, callback_group=self.output_group)
        if p.stats_period > 0:
            self.create_timer(p.stats_period, self.publish_stats, callback_group=self.output_group)
        self.get_logger().info(
            f"ready: input_mode={p.input_mode} pose_source={self.resolver.active_source()} "
            f"fixed_frame={p.fixed_frame} voxel_size={p.voxel_size}"
        )

    # ------------------------------------------------------------------ bookkeeping
    def count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counters[key] += n

    def warn_once(self, cause: str, message: str) -> None:
        """Log the first occurrence of each cause; later ones only increment counters."""
        if cause not in self._warned:
            self._warned.add(cause)
            self.get_logger().warning(f"{message} (further '{cause}' events are only counted in ~/stats)")

    def stats(self) -> dict[str, Any]:
        with self._count_lock:
            out: dict[str, Any] = dict(self.counters)
        with self.map_lock:
            out.update(map_points=len(self.map), map_version=int(self.map.version))
        out.update(
            sync_buffered=len(self.sync),
            sync_dropped=dict(self.sync.dropped),
            pose_buffered=len(self.resolver.buffer),
            awaiting_pose=len(self.waiting),
            pose_source=self.resolver.active_source(),
            model_loaded=self.engine is not None,
            encodes=self.engine.encode_count if self.engine is not None else 0,
            encoding_version=(self.engine.building or (-1,))[0] if self.engine is not None else -1,
        )
        return out

    def publish_stats(self) -> None:
        self.pub_stats.publish(String(data=json.dumps(self.stats(), sort_keys=True)))

    # ------------------------------------------------------------------ inputs
    def _on_pose(self, header: Any, pose: Any) -> None:
        if header.frame_id.lstrip("/") != self.p.fixed_frame.lstrip("/"):
            self.count("pose_wrong_frame")
            self.warn_once(
                "pose_wrong_frame",
                f"pose in frame {header.frame_id!r}, expected {self.p.fixed_frame!r}; ignored",
            )
            return
        try:
            self.resolver.buffer.add(stamp_to_sec(header.stamp), msg_pose_to_matrix(pose))
            self.count("poses")
            self._release_waiting()
        except ValueError as exc:
            self.count("malformed_pose")
            self.warn_once("malformed_pose", f"malformed pose: {exc}")

    def _resolve(self, frame_id: str, stamp: float) -> np.ndarray | None:
        return self.resolver.resolve(frame_id, stamp).pose

    def _place(self, frame_id: str, stamp: float, points: np.ndarray, colors: Any, counter: str) -> None:
        """Integrate data stamped ``stamp`` in ``frame_id`` once its pose is known. Data whose pose
        may still arrive on the pose topic waits in a small bounded queue (see PoseWaitQueue)."""
        res = self.resolver.resolve(frame_id, stamp)
        if res.pose is not None:
            self._integrate(points, colors, res.pose, stamp)
            self.count(counter)
            return
        if res.cause == "no_pose" and self.waiting.may_still_come(stamp, self.resolver.buffer.latest_stamp()):
            with self._sensor_lock:
                dropped = self.waiting.push(frame_id, stamp, (points, colors, stamp, counter))
            if dropped is not None:
                self.count("no_pose")
                self.warn_once("no_pose_overflow", "data waited too long for its pose and was dropped")
            return
        self.count(res.cause)
        self.warn_once(f"{res.cause}:{frame_id}", res.reason)

    def _release_waiting(self) -> None:
        with self._sensor_lock:
            ready, expired = self.waiting.release(self._resolve, self.resolver.buffer.latest_stamp())
        for (points, colors, stamp, counter), pose in ready:
            self._integrate(points, colors, pose, stamp)
            self.count(counter)
        if expired:
            self.count("no_pose", len(expired))
            self.warn_once("no_pose", f"no pose within {self.p.pose_tolerance} s of a frame; frame dropped")

    def _integrate(
        self, points: np.ndarray, colors: np.ndarray | None, pose: np.ndarray, stamp: float
    ) -> None:
        if colors is None:
            colors = np.full(points.shape, 0.5, dtype=np.float32)
        with self.map_lock:
            self.map.integrate(points, colors, pose, stamp=stamp)
            self._last_stamp = max(self._last_stamp, stamp)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.count("clouds")
        try:
            points, colors = cloud_to_arrays(msg)
        except ValueError as exc:
            self.count("malformed_cloud")
            self.warn_once("malformed_cloud", f"malformed PointCloud2 dropped: {exc}")
            return
        if len(points):
            self._place(
                msg.header.frame_id, stamp_to_sec(msg.header.stamp), points, colors, "clouds_integrated"
            )

    def _on_rgbd(self, stream: str, msg: Any) -> None:
        self.count(f"{stream}_msgs")
        with self._sensor_lock:
            frame = self.sync.add(stream, stamp_to_sec(msg.header.stamp), msg)
        if frame is not None:
            self._integrate_rgbd(frame)

    def _integrate_rgbd(self, frame: SyncedFrame) -> None:
        try:
            depth = image_to_array(frame.depth)
            color = image_to_array(frame.color)
            if color.shape[:2] != depth.shape:
                raise ValueError(f"color {color.shape[:2]} and depth {depth.shape} sizes differ")
            points, colors = depth_to_points(
                depth,
                color,
                np.asarray(frame.info.k),
                min_depth=self.p.min_depth,
                max_depth=self.p.max_depth,
                stride=self.p.depth_stride,
            )
        except ValueError as exc:
            self.count("malformed_rgbd")
            self.warn_once("malformed_rgbd", f"malformed RGB-D frame dropped: {exc}")
            return
        if len(points):
            self._place(frame.depth.header.frame_id, frame.stamp, points, colors, "rgbd_integrated")

    # ------------------------------------------------------------------ outputs
    def _header(self) -> Header:
        return Header(frame_id=self.p.fixed_frame, stamp=stamp_msg(self._last_stamp))

    def _publish_map(self) -> None:
        with self.map_lock:
            if self.map.version == self._published_map_version:
                return
            snap = self.map.snapshot()
        self._published_map_version = snap.version
        self.pub_map.publish(
            points_to_cloud(self._header(), snap.points, snap.colors, msg_factory=PointCloud2)
        )

    def _segmented(self, result: QueryResult) -> PointCloud2:
        label, instance = result.point_labels()
        return segmented_cloud(
            self._header(), result.points, result.colors, label, instance, msg_factory=PointCloud2
        )

    def publish_result(self, result: QueryResult) -> None:
        specs = build_markers(
            result.instances, result.points, max_points=self.p.max_marker_points, point_size=self.p.voxel_size
        )
        self.pub_markers.publish(to_marker_array(specs, self.p.fixed_frame, stamp_msg(self._last_stamp)))
        self.pub_segmented.publish(self._segmented(result))


def _qos_kwargs(profile: QoSProfile) -> dict[str, Any]:
    return {
        "history": profile.history,
        "depth": profile.depth,
        "reliability": profile.reliability,
        "durability": profile.durability,
    }


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    try:
        node = UniSeg3DNode()
    except (ValueError, InvalidParameterTypeException, InvalidParameterValueException) as exc:
        # invalid parameters: say which, exit non-zero
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        raise SystemExit(2) from exc
    executor = MultiThreadedExecutor(num_threads=6)  # sensor, output, heavy services + light queries
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
