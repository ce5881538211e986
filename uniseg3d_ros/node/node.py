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
import os
import sys
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from uniseg3d_msgs.msg import ClassVocabulary
from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer, SaveMap, Segment
from visualization_msgs.msg import MarkerArray

from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine, QueryResult
from uniseg3d_ros.inference.preflight import ModelLoadError, load_engine_checked
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
from uniseg3d_ros.node.actions import create_segment_action
from uniseg3d_ros.node.clicks import on_clicked_point
from uniseg3d_ros.node.diagnostics import DiagnosticsPublisher
from uniseg3d_ros.node.map_files import prepare_map_directory
from uniseg3d_ros.node.markers import build_markers, to_marker_array
from uniseg3d_ros.node.name_check import find_namesake, fully_qualified_name
from uniseg3d_ros.node.object_topics import ObjectTracking
from uniseg3d_ros.node.qos import InputSubscription, input_qos
from uniseg3d_ros.node.services import ServiceHandlers
from uniseg3d_ros.node.tf_listener import make_native_tf_lookup
from uniseg3d_ros.node.tiling import TilingChoice
from uniseg3d_ros.node.warnings_log import route_warnings_to_logger

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
    "inactive_dropped",
)


class DuplicateNodeError(RuntimeError):
    """A node with this node's fully qualified name is already in the graph."""


class UniSeg3DNode(ObjectTracking, ServiceHandlers, TilingChoice, Node):
    """The plain node: parameters, model, then every topic/service (``build``). A model that cannot
    load raises :class:`ModelLoadError` (``main`` exits 2 with its one-line reason). The managed
    variant (node/lifecycle.py) runs the same steps from its lifecycle transitions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._started = time.monotonic()  # the namesake check overlaps the model load
        self.p = params_mod.declare(self)
        self.active = True  # the managed node starts inactive
        self.engine = self.load_model()
        self.build()
        self.get_logger().info(
            f"ready: input_mode={self.p.input_mode} pose_source={self.resolver.active_source()} "
            f"fixed_frame={self.p.fixed_frame} voxel_size={self.p.voxel_size}"
        )

    def load_model(self) -> InferenceEngine:
        """The inference engine, or :class:`ModelLoadError` with a one-line reason."""
        p = self.p
        engine = load_engine_checked(
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
        for note in engine.notes:
            log = self.get_logger().warning if note.startswith("NO CHECKPOINT") else self.get_logger().info
            log(note)
        return engine

    def build(self) -> None:
        """Create the map, the queues and every subscription, publisher, service and timer."""
        p = self.p
        self.engine_error = ""
        self.inference_lock = threading.Lock()  # the persistent object map (engine calls need no lock)
        self.counters: Counter[str] = Counter({k: 0 for k in COUNTERS})
        self._count_lock = threading.Lock()
        self._warned: set[str] = set()
        route_warnings_to_logger(self.get_logger(), self.count)
        self.map = SceneMap(
            voxel_size=p.voxel_size,
            max_voxels=p.max_voxels,
            max_range=p.max_range if p.max_range > 0 else None,
        )
        self.map_lock = threading.Lock()
        self.map_directory, stale = prepare_map_directory(p.map_directory)
        for path in stale:
            self.get_logger().info(f"removed a temporary map file left by an interrupted save: {path}")
        self._last_stamp = 0.0
        self._published_map_version = -1

        self.sensor_group = MutuallyExclusiveCallbackGroup()
        self.service_group = MutuallyExclusiveCallbackGroup()
        self.output_group = MutuallyExclusiveCallbackGroup()
        # light queries (answered from the cached encoding) run concurrently, never behind a segment
        self.query_group = ReentrantCallbackGroup()

        tf_lookup, self.tf_buffer = None, None  # tf2_ros when it imports, else our /tf listener
        if p.pose_source in ("auto", "tf"):
            tf_lookup = make_tf_lookup(self, p.fixed_frame, p.tf_timeout)
            native = None if tf_lookup else make_native_tf_lookup(
                self, p.fixed_frame, self.sensor_group, self._release_waiting, self.count, self.warn_once
            )
            if native is not None:
                tf_lookup, self.tf_buffer = native
        if p.pose_source == "tf" and tf_lookup is None:
            self.get_logger().error(
                "pose_source 'tf' but neither tf2_ros nor tf2_msgs is installed; using pose topics"
            )
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

        inputs: list[tuple[Any, str, Any, str]] = []
        if p.input_mode in ("cloud", "both"):
            inputs.append((PointCloud2, p.cloud_topic, self._on_cloud, "cloud"))
        if p.input_mode in ("rgbd", "both"):
            inputs += [
                (Image, p.depth_topic, partial(self._on_rgbd, "depth"), "depth"),
                (Image, p.color_topic, partial(self._on_rgbd, "color"), "color"),
                (CameraInfo, p.camera_info_topic, partial(self._on_rgbd, "info"), "info"),
            ]
        if self.resolver.active_source() != "tf" and p.pose_source in ("auto", "topic"):
            inputs += [
                (PoseStamped, p.pose_topic, lambda m: self._on_pose(m.header, m.pose), "pose"),
                (Odometry, p.odom_topic, lambda m: self._on_pose(m.header, m.pose.pose), "odom"),
            ]
        # QoS: overridable per topic (qos_overrides.<topic>.subscription.*), best_available by default
        self.inputs = [
            InputSubscription(self, msg_type, topic, callback, input_qos(p.queue_depth), self.sensor_group,
                              name, self.count, self.warn_once)
            for msg_type, topic, callback, name in inputs
        ]

        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", latched)
        self.pub_segmented = self.create_publisher(PointCloud2, "~/segmented_cloud", latched)
        self.pub_map = self.create_publisher(PointCloud2, "~/map_cloud", 1)
        self.pub_stats = self.create_publisher(String, "~/stats", 10)

        self.build_objects()
        self.pub_segmented_classes = self.create_publisher(ClassVocabulary, "~/segmented_classes", latched)
        self.pub_open_vocab = self.create_publisher(PointCloud2, "~/open_vocab_cloud", latched)
        self.pub_open_vocab_classes = self.create_publisher(ClassVocabulary, "~/open_vocab_classes", latched)
        self.last_segment_ms = -1.0
        self.diagnostics = DiagnosticsPublisher(self)
        create_segment_action(self)
        self.create_subscription(
            PointStamped,
            p.clicked_point_topic,
            partial(on_clicked_point, self),
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
            callback_group=self.query_group,  # a click is a light query
        )

        started = getattr(self, "_started", time.monotonic())
        if p.name_check_time > 0 and find_namesake(self, started, p.name_check_time):
            raise DuplicateNodeError(
                f"another node named {fully_qualified_name(self)} is already running in this ROS graph "
                f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}); stop it, or give this one another "
                "name (--ros-args -r __node:=<name>)"
            )
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
        self.create_timer(1.0, self._maintain_inputs, callback_group=self.output_group)

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
            input_qos={sub.name: sub.describe() for sub in self.inputs},
            encoding_version=self._encoding_version(),
            tiles=len(self._tiled.tiles) if self._tiled is not None else 0,
        )
        return out

    def _encoding_version(self) -> int:
        """The map version being encoded (tiled or not), -1 when none."""
        if self.engine is None:
            return -1
        tiled = self._tiled.building if self._tiled is not None else None
        return (tiled or self.engine.building or (-1,))[0]

    def _maintain_inputs(self) -> None:
        for sub in self.inputs:
            sub.maintain()

    def publish_stats(self) -> None:
        self.pub_stats.publish(String(data=json.dumps(self.stats(), sort_keys=True)))

    # ------------------------------------------------------------------ inputs
    def _on_pose(self, header: Any, pose: Any) -> None:
        if not self.active:
            self.count("inactive_dropped")
            return
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
        may still arrive (pose topic, or TF newer than the data) waits in a small bounded queue
        (see PoseWaitQueue); data with an empty frame_id is rejected."""
        if not frame_id.strip("/ "):
            self.count("empty_frame_id")
            self.warn_once("empty_frame_id", "data with an empty header.frame_id rejected (frame unknown)")
            return
        if len(self.waiting):  # transforms may have arrived since (tf2_ros gives no callback)
            self._release_waiting()
        res = self.resolver.resolve(frame_id, stamp)
        if res.pose is not None:
            self._integrate(points, colors, res.pose, stamp, counter)
            return
        if res.pending and self.waiting.may_still_come(stamp, self.resolver.buffer.latest_stamp()):
            with self._sensor_lock:
                dropped = self.waiting.push(frame_id, stamp, (points, colors, stamp, counter))
            if dropped is not None:
                self.count("no_pose")
                self.warn_once(
                    "no_pose_overflow", f"data waited too long for its pose and was dropped: {POSE_HINT}"
                )
            return
        self.count(res.cause)
        self.warn_once(f"{res.cause}:{frame_id}", res.reason)

    def _release_waiting(self) -> None:
        with self._sensor_lock:
            ready, expired = self.waiting.release(self._resolve, self.resolver.buffer.latest_stamp())
        for (points, colors, stamp, counter), pose in ready:
            self._integrate(points, colors, pose, stamp, counter)
        if expired:
            self.count("no_pose", len(expired))
            self.warn_once(
                "no_pose", f"no pose within {self.p.pose_tolerance} s of a frame; frame dropped: {POSE_HINT}"
            )

    def _integrate(
        self, points: np.ndarray, colors: np.ndarray | None, pose: np.ndarray, stamp: float, counter: str
    ) -> None:
        """Fuse points (N, 3) sensor frame with ``pose`` T_fixed_sensor; count ``counter`` when any point
        landed in the map, else count the batch dropped with its reason."""
        if colors is None:
            colors = np.full(points.shape, 0.5, dtype=np.float32)
        with self.map_lock:
            fused = self.map.integrate(points, colors, pose, stamp=stamp)
            if fused:
                self._last_stamp = max(self._last_stamp, stamp)
        if fused:
            self.count(counter)
            return
        far = self.map.max_range is not None and bool(
            np.all(np.linalg.norm(np.asarray(points, dtype=np.float64), axis=1) > self.map.max_range)
        )
        cause = "dropped_out_of_range" if far else "dropped_outside_map"
        self.count(cause)
        self.warn_once(
            cause,
            f"a batch of {len(points)} points had none inside the map "
            + (f"(all beyond max_range {self.map.max_range} m)" if far else "(beyond the map extent or crop)")
            + "; dropped",
        )

    def _on_cloud(self, msg: PointCloud2) -> None:
        if not self.active:
            self.count("inactive_dropped")
            return
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
        if not self.active:
            self.count("inactive_dropped")
            return
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

    def publish_result(self, result: QueryResult, query: str = "") -> None:
        """Markers, then the labelled cloud with its vocabulary: open-vocabulary results on
        ``~/open_vocab_cloud`` + ``~/open_vocab_classes`` (labels index the request's class names),
        every other query on ``~/segmented_cloud`` + ``~/segmented_classes`` (the model's classes)."""
        specs = build_markers(
            result.instances, result.points, max_points=self.p.max_marker_points, point_size=self.p.voxel_size
        )
        self.pub_markers.publish(to_marker_array(specs, self.p.fixed_frame, stamp_msg(self._last_stamp)))
        query = query or result.query
        if query == "open_vocab":
            cloud_pub, classes_pub = self.pub_open_vocab, self.pub_open_vocab_classes
        else:
            cloud_pub, classes_pub = self.pub_segmented, self.pub_segmented_classes
        cloud = self._segmented(result)
        vocab = ClassVocabulary(
            header=cloud.header,
            cloud_topic=cloud_pub.topic_name,
            query=query,
            map_version=max(0, int(result.map_version)),
            class_names=list(result.class_names),
        )
        classes_pub.publish(vocab)
        cloud_pub.publish(cloud)


#: what to do when sensor data finds no pose (logged with the first drop of each kind)
POSE_HINT = (
    "publish the sensor pose on ~/pose (PoseStamped) or ~/odom (Odometry), or TF from the fixed frame to "
    "the data's frame_id, or set pose_source:=identity when the data is already in the fixed frame"
)


def run(make_node: Any, args: list[str] | None = None, started_note: str = "") -> None:
    """Command-line life of a node class (the plain node, the managed one): ``--help`` prints the
    parameters and exits before joining a graph; a node that cannot start exits with one line
    (2: bad parameter or model, 1: a namesake is running); else it spins until Ctrl-C / shutdown."""
    argv = list(sys.argv[1:] if args is None else args)
    if params_mod.wants_help(argv):  # print and exit before joining any ROS graph
        print(params_mod.help_text(), end="")
        return
    rclpy.init(args=args)
    try:
        node = make_node()
    except (ValueError, InvalidParameterTypeException, InvalidParameterValueException, ModelLoadError) as exc:
        # invalid parameters or a model that cannot load: say which, exit non-zero
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        raise SystemExit(2) from exc
    except DuplicateNodeError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        raise SystemExit(1) from exc
    if started_note:
        node.get_logger().info(started_note)
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


def main(args: list[str] | None = None) -> None:
    run(UniSeg3DNode, args)


if __name__ == "__main__":
    main()
