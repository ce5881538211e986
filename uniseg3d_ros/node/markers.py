"""RViz marker data for segmentation results: pure functions, plus one thin ROS layer.

:func:`build_markers` turns instances into :class:`MarkerSpec` (plain numpy data, tested
without ROS): a DELETEALL first, then per instance its points (POINTS or CUBE_LIST, one
class color), its axis-aligned box (LINE_LIST, 12 edges) and a text label
"<label> <score>" (TEXT_VIEW_FACING) above the box. :func:`to_marker_array` converts
specs to a ``visualization_msgs/MarkerArray`` (imported lazily).

Colors are fixed per class: ScanNet20 classes take their index in a fixed 20-color
palette, other labels (open vocabulary, referring text) a stable CRC32 of the label.
All coordinates are in the map's fixed frame, metres.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniseg3d_model.data.labels import SCANNET20_CLASSES

# 20 distinct colors (RGB in [0, 1]); the order is part of the interface (colors stay stable).
PALETTE = np.array(
    [
        [0.68, 0.78, 0.91],
        [0.60, 0.87, 0.54],
        [0.12, 0.47, 0.71],
        [1.00, 0.73, 0.47],
        [0.74, 0.74, 0.13],
        [0.55, 0.34, 0.29],
        [1.00, 0.60, 0.59],
        [0.84, 0.15, 0.16],
        [0.77, 0.69, 0.84],
        [0.58, 0.40, 0.74],
        [0.77, 0.61, 0.58],
        [0.09, 0.75, 0.81],
        [0.97, 0.71, 0.82],
        [0.86, 0.86, 0.55],
        [1.00, 0.50, 0.05],
        [0.62, 0.85, 0.90],
        [0.17, 0.63, 0.17],
        [0.44, 0.50, 0.56],
        [0.89, 0.47, 0.76],
        [0.32, 0.33, 0.64],
    ],
    dtype=np.float32,
)

KINDS = ("deleteall", "points", "cube_list", "line_list", "text")
# box corner index pairs of the 12 edges; corners are (x, y, z) bits of 0..7 (bit0 x, bit1 y, bit2 z)
_BOX_EDGES = np.array(
    [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]]
)


@dataclass
class MarkerSpec:
    """One marker as plain data. ``points`` (K, 3) float32 for list types; ``position`` (3,) for text."""

    ns: str
    id: int
    kind: str
    color: np.ndarray = field(default_factory=lambda: np.ones(4, dtype=np.float32))
    scale: tuple[float, float, float] = (0.02, 0.02, 0.02)
    points: np.ndarray | None = None
    position: np.ndarray | None = None
    text: str = ""


def class_color(class_id: int, label: str = "") -> np.ndarray:
    """RGB (3,) float32 in [0, 1] for a class: ScanNet20 names/ids use their palette slot,
    other labels a stable hash of the label, unlabeled negative ids a grey."""
    if label in SCANNET20_CLASSES:
        return PALETTE[SCANNET20_CLASSES.index(label) % len(PALETTE)].copy()
    if label:
        return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)].copy()
    if class_id < 0:
        return np.full(3, 0.6, dtype=np.float32)
    return PALETTE[class_id % len(PALETTE)].copy()


def box_edges(bbox_min: Any, bbox_max: Any) -> np.ndarray:
    """(24, 3) float32 LINE_LIST vertices: the 12 edges of the axis-aligned box."""
    lo = np.asarray(bbox_min, dtype=np.float32).reshape(3)
    hi = np.asarray(bbox_max, dtype=np.float32).reshape(3)
    bits = (np.arange(8)[:, None] >> np.arange(3)[None, :]) & 1  # (8, 3)
    corners = np.where(bits == 1, hi, lo)
    return corners[_BOX_EDGES.reshape(-1)]


def subsample_indices(indices: np.ndarray, stride: int) -> np.ndarray:
    """Every ``stride``-th entry (deterministic, keeps the first)."""
    return np.asarray(indices)[:: max(1, int(stride))]


def _label_text(inst: Any) -> str:
    """"<label> <score>", plus " #<id>" when the instance names a persistent object."""
    text = f"{inst.label} {float(inst.score):.2f}"
    object_id = int(getattr(inst, "object_id", -1))
    return text + (f" #{object_id}" if object_id >= 0 else "")


def build_markers(
    instances: Sequence[Any],
    points: np.ndarray,
    *,
    max_points: int = 50000,
    point_size: float = 0.02,
    line_width: float = 0.01,
    text_height: float = 0.12,
    style: str = "points",
    ns_prefix: str = "",
) -> list[MarkerSpec]:
    """Marker data for ``instances`` over ``points`` (N, 3) (the snapshot the indices refer to).

    Each instance needs ``id``, ``class_id``, ``label``, ``score``, ``point_indices`` (K,) into
    ``points``, ``bbox_min`` and ``bbox_max`` (3,). ``style`` 'points' or 'cube_list' selects the
    per-point marker type. The label text names the persistent object (" #7") when the instance
carries an ``object_id`` >= 0. At most ``max_points`` instance points are drawn in total (every
    n-th point of each instance above that). Marker ids are the instance ids; namespaces are
    '<prefix>points', '<prefix>boxes', '<prefix>labels'. The first spec is always DELETEALL.
    """
    if style not in ("points", "cube_list"):
        raise ValueError(f"style must be 'points' or 'cube_list', got {style!r}")
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    specs = [MarkerSpec(ns="", id=0, kind="deleteall")]
    total = sum(len(inst.point_indices) for inst in instances)
    stride = int(np.ceil(total / max_points)) if total > max_points else 1
    for inst in instances:
        rgb = class_color(int(inst.class_id), str(inst.label))
        rgba = np.concatenate([rgb, [1.0]]).astype(np.float32)
        idx = subsample_indices(np.asarray(inst.point_indices, dtype=np.int64), stride)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(pts)):
            raise ValueError(f"instance {inst.id}: point_indices out of range for {len(pts)} points")
        specs.append(
            MarkerSpec(
                ns=ns_prefix + "points",
                id=int(inst.id),
                kind=style,
                color=rgba,
                scale=(point_size, point_size, point_size),
                points=pts[idx],
            )
        )
        specs.append(
            MarkerSpec(
                ns=ns_prefix + "boxes",
                id=int(inst.id),
                kind="line_list",
                color=rgba,
                scale=(line_width, 0.0, 0.0),
                points=box_edges(inst.bbox_min, inst.bbox_max),
            )
        )
        top = np.asarray(inst.centroid, dtype=np.float32).copy()
        top[2] = float(np.asarray(inst.bbox_max)[2]) + text_height
        specs.append(
            MarkerSpec(
                ns=ns_prefix + "labels",
                id=int(inst.id),
                kind="text",
                color=np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32),
                scale=(0.0, 0.0, text_height),
                position=top,
                text=_label_text(inst),
            )
        )
    return specs


def to_marker_array(specs: Sequence[MarkerSpec], frame_id: str, stamp: Any = None) -> Any:
    """``visualization_msgs/MarkerArray`` from specs (``stamp``: builtin_interfaces/Time or None)."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    types = {
        "points": Marker.POINTS,
        "cube_list": Marker.CUBE_LIST,
        "line_list": Marker.LINE_LIST,
        "text": Marker.TEXT_VIEW_FACING,
    }
    out = MarkerArray()
    for spec in specs:
        m = Marker()
        m.header.frame_id = frame_id
        if stamp is not None:
            m.header.stamp = stamp
        m.ns, m.id = spec.ns, int(spec.id)
        if spec.kind == "deleteall":
            m.action = Marker.DELETEALL
            out.markers.append(m)
            continue
        m.type, m.action = types[spec.kind], Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x, m.scale.y, m.scale.z = (float(v) for v in spec.scale)
        r, g, b, a = (float(v) for v in spec.color)
        m.color = ColorRGBA(r=r, g=g, b=b, a=a)
        if spec.points is not None:
            m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in spec.points.tolist()]
        if spec.position is not None:
            m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in spec.position)
        m.text = spec.text
        out.markers.append(m)
    return out


def marker_array_to_specs(msg: Any) -> list[MarkerSpec]:
    """Inverse of :func:`to_marker_array` (for subscribers and tests): MarkerArray -> specs."""
    kinds = {8: "points", 6: "cube_list", 5: "line_list", 9: "text"}
    out = []
    for m in msg.markers:
        if m.action == 3:  # DELETEALL
            out.append(MarkerSpec(ns=m.ns, id=m.id, kind="deleteall"))
            continue
        pts = np.array([[p.x, p.y, p.z] for p in m.points], dtype=np.float32).reshape(-1, 3)
        out.append(
            MarkerSpec(
                ns=m.ns,
                id=m.id,
                kind=kinds.get(m.type, str(m.type)),
                color=np.array([m.color.r, m.color.g, m.color.b, m.color.a], dtype=np.float32),
                scale=(m.scale.x, m.scale.y, m.scale.z),
                points=pts,
                position=np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z]),
                text=m.text,
            )
        )
    return out
