"""``uniseg3d_node``: the ROS 2 glue around the scene map and the inference engine.

Threading: a MultiThreadedExecutor runs four callback groups. Sensor callbacks (clouds,
RGB-D, poses) share one mutually exclusive group and only decode + fuse into the map
(under a lock); heavy services (segment, save/clear map) and the auto-segment timer share
another, so inference never blocks sensor input; the light queries (refer, open_vocab,
interactive) share a reentrant group and never wait behind a segment: the engine answers
them from its last finished encoding while a new one is built (InferenceEngine docstring);
publishing timers (map cloud, stats) have the fourth. Queues are bounded everywhere (QoS
depth, RGB-D sync buffer, pose buffer, map capacity).

Sensor callbacks: inputs.py. Service handlers: services.py. Tiles for maps beyond one room:
tiling.py. Topics, services and parameters: docs/ros_node.md. Logic lives in the tested pure
modules (params, frames, rgbd_sync, engine, tiles, results, markers, scene_map, pointcloud2, rgbd).
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

import rclpy
from geometry_msgs.msg import PointStamped, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from uniseg3d_msgs.msg import ClassVocabulary
from uniseg3d_msgs.srv import Interactive, OpenVocab, Refer, SaveMap, Segment
from visualization_msgs.msg import MarkerArray

from uniseg3d_model.superpoints import warm_up_segment_points
from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine, QueryResult
from uniseg3d_ros.inference.preflight import ModelLoadError, load_engine_checked
from uniseg3d_ros.mapping.frames import (
    PoseBuffer,
    PoseResolver,
    PoseWaitQueue,
    make_tf_lookup,
    stamp_msg,
)
from uniseg3d_ros.mapping.pointcloud2 import points_to_cloud, segmented_cloud
from uniseg3d_ros.mapping.rgbd_sync import RGBDSynchronizer
from uniseg3d_ros.mapping.scene_map import SceneMap
from uniseg3d_ros.node import params as params_mod
from uniseg3d_ros.node.actions import create_segment_action
from uniseg3d_ros.node.clicks import on_clicked_point
from uniseg3d_ros.node.diagnostics import DiagnosticsPublisher
from uniseg3d_ros.node.inputs import SensorInputs
from uniseg3d_ros.node.map_files import prepare_map_directory
from uniseg3d_ros.node.markers import build_markers, to_marker_array
from uniseg3d_ros.node.name_check import find_namesake, fully_qualified_name
from uniseg3d_ros.node.object_topics import ObjectTracking
from uniseg3d_ros.node.qos import InputSubscription, NodeExecutor, input_qos
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


class UniSeg3DNode(ObjectTracking, ServiceHandlers, SensorInputs, TilingChoice, Node):
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
        # compile the numba kernels now, not in the first sensor callback or the first ~/segment
        took = SceneMap.warm_up() + warm_up_segment_points(**engine.cfg.superpoint_kwargs)
        self.get_logger().info(f"map fusion and superpoint kernels ready in {took:.1f} s")
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
        self.clear_epoch = 0  # ~/clear_map count (under map_lock): data received before a clear is dropped
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
    executor = NodeExecutor(num_threads=6)  # sensor, output, heavy services + light queries
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
