"""Every parameter of ``uniseg3d_node`` in one place: name, default, description, constraints.

:data:`PARAMETERS` is the single source of truth. :func:`declare` declares them on an
rclpy node with descriptors (the only function here that touches ROS, imported
lazily); :meth:`NodeParams.from_mapping` validates plain values (a YAML file, a dict)
without ROS. ``launch/config/params.yaml`` mirrors the defaults (a test checks it).

Units: metres, seconds, hertz. Frames follow REP 105 (``fixed_frame`` is ``map``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

INPUT_MODES = ("cloud", "rgbd", "both")
POSE_SOURCES = ("auto", "tf", "topic", "identity")


@dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter. ``choices`` for strings, ``low``/``high`` (inclusive) for numbers."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


PARAMETERS: tuple[ParameterSpec, ...] = (
    # frames and map
    ParameterSpec("fixed_frame", "map", "Frame the scene map, markers and clouds live in (REP 105)."),
    ParameterSpec("voxel_size", 0.02, "Scene map voxel edge length [m].", low=0.001, high=1.0),
    ParameterSpec(
        "max_voxels",
        400000,
        "Map capacity; the least recently seen voxels are evicted.",
        low=1000,
        high=50_000_000,
    ),
    ParameterSpec(
        "max_range",
        0.0,
        "Drop sensor points farther than this from the sensor [m]; 0 = off.",
        low=0.0,
        high=1000.0,
    ),
    ParameterSpec(
        "map_directory",
        "~/.ros/uniseg3d_maps",
        "~/save_map writes only here, by relative name (created by the first save; '~' expanded).",
    ),
    # inputs
    ParameterSpec(
        "input_mode",
        "both",
        "Which inputs feed the map: PointCloud2, RGB-D images, or both.",
        choices=INPUT_MODES,
    ),
    ParameterSpec("cloud_topic", "~/cloud", "sensor_msgs/PointCloud2 input (any frame)."),
    ParameterSpec("depth_topic", "~/depth", "sensor_msgs/Image depth input (16UC1 mm or 32FC1 m)."),
    ParameterSpec("color_topic", "~/color", "sensor_msgs/Image color input (rgb8/bgr8/rgba8/bgra8)."),
    ParameterSpec("camera_info_topic", "~/camera_info", "sensor_msgs/CameraInfo of the depth camera."),
    ParameterSpec("pose_topic", "~/pose", "geometry_msgs/PoseStamped: sensor pose in the fixed frame."),
    ParameterSpec("odom_topic", "~/odom", "nav_msgs/Odometry: sensor pose in the fixed frame."),
    ParameterSpec(
        "queue_depth", 5, "History depth of the sensor-data QoS input subscriptions.", low=1, high=100
    ),
    ParameterSpec("min_depth", 0.1, "Depth pixels nearer than this are ignored [m].", low=0.0, high=100.0),
    ParameterSpec("max_depth", 6.0, "Depth pixels farther than this are ignored [m].", low=0.01, high=100.0),
    ParameterSpec("depth_stride", 2, "Use every n-th depth pixel in each direction.", low=1, high=16),
    ParameterSpec(
        "sync_tolerance", 0.02, "Max stamp difference depth/color/camera_info [s].", low=0.0, high=10.0
    ),
    ParameterSpec(
        "sync_buffer", 10, "Messages buffered per RGB-D stream while waiting for a match.", low=1, high=1000
    ),
    # poses
    ParameterSpec(
        "pose_source",
        "auto",
        "auto: TF (tf2_ros or the built-in /tf listener), pose/odom topics for frames TF lacks; "
        "or force tf, topic or identity.",
        choices=POSE_SOURCES,
    ),
    ParameterSpec("sensor_frame", "", "With topic poses: the only sensor frame accepted ('' = any)."),
    ParameterSpec(
        "pose_tolerance", 0.05, "Max stamp difference between a frame and its pose [s].", low=0.0, high=10.0
    ),
    ParameterSpec("pose_buffer", 200, "Poses kept for stamp lookup.", low=1, high=100000),
    ParameterSpec(
        "pose_wait_buffer",
        5,
        "Frames kept while their pose (topic or TF) has not arrived yet.",
        low=0,
        high=100,
    ),
    ParameterSpec("tf_timeout", 0.05, "How long a TF lookup may wait [s].", low=0.0, high=5.0),
    # model
    ParameterSpec(
        "checkpoint",
        "",
        "Model checkpoint; '' = uniseg3d_model/weights/default.pt if present, 'random' = untrained model.",
    ),
    ParameterSpec("device", "cpu", "torch device for inference ('cpu', 'cuda', 'cuda:1')."),
    ParameterSpec(
        "text_encoder",
        "",
        "Text encoder: '' = the checkpoint's own (minilm for the untrained model), 'minilm' (offline), "
        "'openclip:<model>' (+ weights) or 'hash' (tests).",
    ),
    ParameterSpec("text_encoder_weights", "", "Local weights file for an 'openclip:<model>' text encoder."),
    ParameterSpec("score_threshold", 0.3, "Default minimum instance score.", low=0.0, high=1.0),
    ParameterSpec("top_k", 1, "Ranked instances ~/refer returns when the request says 0.", low=1, high=1000),
    ParameterSpec(
        "max_instances", 100, "Most instances ~/segment and ~/open_vocab return.", low=1, high=10000
    ),
    ParameterSpec(
        "nms", 0.5, "Mask IoU above which a lower-scored instance is suppressed.", low=0.0, high=1.0
    ),
    ParameterSpec(
        "max_click_distance",
        0.2,
        "Clicks farther than this from every map point fail [m].",
        low=0.0,
        high=100.0,
    ),
    # maps beyond one room (inference/tiles.py)
    ParameterSpec(
        "tile_above",
        12.0,
        "Maps whose xy extent (longer side of the bounding box) exceeds this are segmented in "
        "overlapping tiles merged across borders; smaller ones in one piece [m]; 0 = always tile.",
        low=0.0,
        high=100000.0,
    ),
    ParameterSpec("tile_size", 6.0, "Edge of a square xy tile of a tiled map [m].", low=0.5, high=1000.0),
    ParameterSpec(
        "tile_overlap",
        1.0,
        "Neighbour context around each tile [m]: objects cut by a border are seen whole by one tile.",
        low=0.0,
        high=100.0,
    ),
    # outputs and timers
    ParameterSpec(
        "auto_segment_period",
        0.0,
        "Run ~/segment and publish every n seconds; 0 = off.",
        low=0.0,
        high=86400.0,
    ),
    ParameterSpec(
        "map_publish_rate",
        1.0,
        "~/map_cloud publish rate [Hz] (only when the map changed).",
        low=0.0,
        high=100.0,
    ),
    ParameterSpec(
        "stats_period", 1.0, "~/stats (JSON counters) publish period [s]; 0 = off.", low=0.0, high=3600.0
    ),
    ParameterSpec(
        "name_check_time",
        2.0,
        "At start-up, watch the graph this long [s] for a node of the same name (then exit 1); 0 = off.",
        low=0.0,
        high=60.0,
    ),
    ParameterSpec(
        "max_marker_points",
        50000,
        "Instance points drawn in ~/markers (subsampled above).",
        low=1,
        high=10_000_000,
    ),
    ParameterSpec(
        "diagnostics_period", 1.0, "/diagnostics publish period [s]; 0 = off.", low=0.0, high=3600.0
    ),
    ParameterSpec(
        "clicked_point_topic",
        "clicked_point",
        "geometry_msgs/PointStamped clicks (RViz Publish Point) answered with an interactive segmentation.",
    ),
    # persistent objects
    ParameterSpec(
        "objects_min_overlap",
        0.5,
        "Voxel overlap |a & b| / min(|a|, |b|) that links a new instance to a known object.",
        low=0.01,
        high=1.0,
    ),
    ParameterSpec(
        "objects_retire_after",
        3,
        "Consecutive segmentations missing an object before it is retired.",
        low=1,
        high=1000,
    ),
)

SPECS: dict[str, ParameterSpec] = {s.name: s for s in PARAMETERS}


def _default(name: str) -> Any:
    return SPECS[name].default


@dataclass(frozen=True)
class NodeParams:
    """Validated parameter values; field names equal the ROS parameter names, defaults come from
    :data:`PARAMETERS` (a field without a spec fails at import)."""

    fixed_frame: str = _default("fixed_frame")
    voxel_size: float = _default("voxel_size")
    max_voxels: int = _default("max_voxels")
    max_range: float = _default("max_range")
    map_directory: str = _default("map_directory")
    input_mode: str = _default("input_mode")
    cloud_topic: str = _default("cloud_topic")
    depth_topic: str = _default("depth_topic")
    color_topic: str = _default("color_topic")
    camera_info_topic: str = _default("camera_info_topic")
    pose_topic: str = _default("pose_topic")
    odom_topic: str = _default("odom_topic")
    queue_depth: int = _default("queue_depth")
    min_depth: float = _default("min_depth")
    max_depth: float = _default("max_depth")
    depth_stride: int = _default("depth_stride")
    sync_tolerance: float = _default("sync_tolerance")
    sync_buffer: int = _default("sync_buffer")
    pose_source: str = _default("pose_source")
    sensor_frame: str = _default("sensor_frame")
    pose_tolerance: float = _default("pose_tolerance")
    pose_buffer: int = _default("pose_buffer")
    pose_wait_buffer: int = _default("pose_wait_buffer")
    tf_timeout: float = _default("tf_timeout")
    checkpoint: str = _default("checkpoint")
    device: str = _default("device")
    text_encoder: str = _default("text_encoder")
    text_encoder_weights: str = _default("text_encoder_weights")
    score_threshold: float = _default("score_threshold")
    top_k: int = _default("top_k")
    max_instances: int = _default("max_instances")
    nms: float = _default("nms")
    max_click_distance: float = _default("max_click_distance")
    tile_above: float = _default("tile_above")
    tile_size: float = _default("tile_size")
    tile_overlap: float = _default("tile_overlap")
    auto_segment_period: float = _default("auto_segment_period")
    map_publish_rate: float = _default("map_publish_rate")
    stats_period: float = _default("stats_period")
    name_check_time: float = _default("name_check_time")
    max_marker_points: int = _default("max_marker_points")
    diagnostics_period: float = _default("diagnostics_period")
    clicked_point_topic: str = _default("clicked_point_topic")
    objects_min_overlap: float = _default("objects_min_overlap")
    objects_retire_after: int = _default("objects_retire_after")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> NodeParams:
        """Validate ``values`` (missing names take defaults). Raises ``ValueError`` naming the
        parameter for unknown names, wrong types, values out of range or not among the choices."""
        unknown = sorted(set(values) - set(SPECS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(SPECS)}")
        out: dict[str, Any] = {}
        for spec in PARAMETERS:
            out[spec.name] = validate(spec, values.get(spec.name, spec.default))
        return cls(**out)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


if [f.name for f in fields(NodeParams)] != list(SPECS):  # one list of names, in one order
    raise ImportError("NodeParams fields and PARAMETERS disagree: "
                      f"{sorted(set(SPECS) ^ {f.name for f in fields(NodeParams)})}")


def validate(spec: ParameterSpec, value: Any) -> Any:
    """Coerce ``value`` to the type of ``spec.default`` and check its constraints."""
    kind = type(spec.default)
    if kind is bool or isinstance(value, bool):
        raise ValueError(f"parameter {spec.name!r}: booleans are not accepted, got {value!r}")
    if kind is float and isinstance(value, int | float):
        value = float(value)
    elif kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind):
        raise ValueError(f"parameter {spec.name!r} must be {kind.__name__}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"parameter {spec.name!r} must be one of {spec.choices}, got {value!r}")
    if spec.low is not None and value < spec.low:
        raise ValueError(f"parameter {spec.name!r} must be >= {spec.low}, got {value!r}")
    if spec.high is not None and value > spec.high:
        raise ValueError(f"parameter {spec.name!r} must be <= {spec.high}, got {value!r}")
    return value


def declare(node: Any) -> NodeParams:
    """Declare every parameter on ``node`` (an ``rclpy.node.Node``) with a descriptor
    (description, constraint text, range) and return the validated values."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for spec in PARAMETERS:
        constraints = ""
        kw: dict[str, Any] = {}
        if spec.choices:
            constraints = "one of: " + ", ".join(spec.choices)
        if spec.low is not None and spec.high is not None:
            constraints = f"in [{spec.low}, {spec.high}]"
            if isinstance(spec.default, float):
                kw["floating_point_range"] = [
                    FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))
                ]
            else:
                kw["integer_range"] = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
        # floats accept integer overrides (voxel_size:=1); validate() coerces and checks them
        kw["dynamic_typing"] = isinstance(spec.default, float)
        descriptor = ParameterDescriptor(
            name=spec.name,
            description=spec.description,
            additional_constraints=constraints,
            read_only=True,
            **kw,
        )
        node.declare_parameter(spec.name, spec.default, descriptor)
    values = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    # overrides (-p name:=value, --params-file) that name no parameter would be ignored silently
    given = getattr(node, "_parameter_overrides", {})  # rclpy keeps them here; no public accessor
    for warning in unknown_parameter_warnings(given):
        node.get_logger().warning(warning)
    return NodeParams.from_mapping(values)


#: parameters rclpy or ROS tooling may pass to every node; never ours to warn about
FOREIGN_PARAMETERS = ("use_sim_time", "start_type_description_service")
FOREIGN_PREFIXES = ("qos_overrides.",)


def unknown_parameter_warnings(names: Iterable[str]) -> list[str]:
    """One warning per given parameter name that ``uniseg3d_node`` does not know, naming the
    closest known parameter when one is close (``voxel_sise`` -> ``voxel_size``)."""
    out = []
    for name in sorted(set(names)):
        if name in SPECS or name in FOREIGN_PARAMETERS or name.startswith(FOREIGN_PREFIXES):
            continue
        close = difflib.get_close_matches(name, list(SPECS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "; `uniseg3d_node --help` lists them"
        out.append(f"unknown parameter {name!r} is ignored{hint}")
    return out


def wants_help(argv: list[str]) -> bool:
    """``-h`` / ``--help`` among the arguments before ``--ros-args`` (the node's own)."""
    own = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    return "-h" in own or "--help" in own


def help_text(prog: str = "uniseg3d_node") -> str:
    """``uniseg3d_node --help``: usage and every parameter with its default and constraints."""
    lines = [
        f"usage: {prog} [--ros-args -p NAME:=VALUE ... --params-file FILE -r __ns:=/NAMESPACE]",
        "",
        "UniSeg3D 3D scene segmentation node: fuses point clouds / RGB-D into a scene map and",
        "serves ~/segment, ~/refer, ~/open_vocab, ~/interactive, ~/clear_map, ~/save_map.",
        "Details: docs/ros_node.md. Parameters (read-only, set at start-up):",
        "",
    ]
    for spec in PARAMETERS:
        default = repr(spec.default)
        if spec.choices:
            limits = " one of " + "/".join(spec.choices)
        elif spec.low is not None and spec.high is not None:
            limits = f" in [{spec.low}, {spec.high}]"
        else:
            limits = ""
        lines.append(f"  {spec.name} (default {default}{limits})")
        lines.append(f"      {spec.description}")
    return "\n".join(lines) + "\n"


def to_yaml(node_name: str = "uniseg3d_node") -> str:
    """The parameters file text (defaults with their descriptions as comments):
    ``python -m uniseg3d_ros.node.params > launch/config/params.yaml``."""
    import json

    lines = [
        "# uniseg3d_node parameters (generated: python -m uniseg3d_ros.node.params; a test checks them).",
        "# Units: metres, seconds, hertz. Topic names starting with ~/ are private to the node.",
        f"{node_name}:",
        "  ros__parameters:",
    ]
    for spec in PARAMETERS:
        value = json.dumps(spec.default) if isinstance(spec.default, str) else repr(spec.default)
        lines += [f"    # {spec.description}", f"    {spec.name}: {value}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(to_yaml(), end="")
