"""``/diagnostics`` (diagnostic_msgs/DiagnosticArray): the node's health as robots aggregate it.

:func:`build_statuses` turns the node's counters (the ``~/stats`` dictionary) into four statuses,
pure Python (tested without ROS); :class:`DiagnosticsPublisher` publishes them every
``diagnostics_period`` s. Status names are ``<node name>: <part>`` with the node's name as
``hardware_id`` (what diagnostic_aggregator analyzers match on):

- ``model``: loaded or not (ERROR), device, checkpoint, text encoder, encoding state (the map
  version the cached encoding belongs to, or "stale" when the map changed since), backbone runs,
  last segment latency;
- ``map``: points, capacity fill (WARN from 95 %: the oldest voxels are being evicted), version,
  persistent objects;
- ``inputs``: frames received, integrated, and dropped by cause (WARN while new drops appear
  since the previous report, naming the causes);
- ``queries``: calls, failures and internal errors per service (WARN when new internal errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels

#: counters that count dropped input, by cause
DROP_CAUSES = (
    "malformed_cloud",
    "malformed_rgbd",
    "malformed_pose",
    "unknown_frame",
    "no_pose",
    "pose_wrong_frame",
    "inactive_dropped",
)


@dataclass
class Status:
    """One DiagnosticStatus as plain data."""

    name: str
    level: int
    message: str
    hardware_id: str
    values: dict[str, str] = field(default_factory=dict)


def _drops(stats: dict[str, Any]) -> dict[str, int]:
    out = {c: int(stats.get(c, 0)) for c in DROP_CAUSES}
    for cause, n in dict(stats.get("sync_dropped", {})).items():
        out[f"rgbd_sync_{cause}"] = int(n)
    return out


def build_statuses(
    node_name: str, stats: dict[str, Any], previous: dict[str, Any] | None = None
) -> list[Status]:
    """Statuses from ``stats`` (the node's ``stats()`` plus ``max_voxels``, ``objects``,
    ``last_segment_ms``, ``encoded_version``, ``device``, ``checkpoint``, ``text_encoder``,
    ``model_error``); ``previous``: the stats of the previous report (for "new drops")."""
    prev = previous or {}
    hw = node_name
    out = []

    loaded = bool(stats.get("model_loaded"))
    enc = int(stats.get("encoded_version", -1))
    version = int(stats.get("map_version", -1))
    encoding = "none" if enc < 0 else (f"current (map version {enc})" if enc == version else "stale")
    model_values = {
        "loaded": str(loaded).lower(),
        "device": str(stats.get("device", "")),
        "checkpoint": str(stats.get("checkpoint", "")) or "default",
        "text_encoder": str(stats.get("text_encoder", "")),
        "encoding": encoding,
        "backbone_runs": str(int(stats.get("encodes", 0))),
        "last_segment_ms": f"{float(stats.get('last_segment_ms', -1.0)):.1f}",
    }
    if loaded:
        out.append(Status(f"{node_name}: model", OK, f"loaded, encoding {encoding}", hw, model_values))
    else:
        why = str(stats.get("model_error", "")) or "not loaded"
        out.append(Status(f"{node_name}: model", ERROR, why, hw, model_values))

    points, cap = int(stats.get("map_points", 0)), int(stats.get("max_voxels", 0))
    fill = points / cap if cap > 0 else 0.0
    map_values = {
        "points": str(points),
        "max_voxels": str(cap),
        "fill_percent": f"{100 * fill:.1f}",
        "version": str(version),
        "objects": str(int(stats.get("objects", 0))),
    }
    if fill >= 0.95:
        out.append(
            Status(f"{node_name}: map", WARN, "at capacity: evicting the oldest voxels", hw, map_values)
        )
    else:
        out.append(
            Status(f"{node_name}: map", OK, "empty" if points == 0 else f"{points} points", hw, map_values)
        )

    drops, before = _drops(stats), _drops(prev)
    new = {c: n - before.get(c, 0) for c, n in drops.items() if n > before.get(c, 0)}
    input_values = {
        "clouds_received": str(int(stats.get("clouds", 0))),
        "clouds_integrated": str(int(stats.get("clouds_integrated", 0))),
        "rgbd_integrated": str(int(stats.get("rgbd_integrated", 0))),
        "poses": str(int(stats.get("poses", 0))),
        "awaiting_pose": str(int(stats.get("awaiting_pose", 0))),
        **{f"dropped_{c}": str(n) for c, n in drops.items()},
    }
    if new:
        causes = ", ".join(f"{c} x{n}" for c, n in sorted(new.items()))
        out.append(Status(f"{node_name}: inputs", WARN, f"dropping input: {causes}", hw, input_values))
    else:
        integrated = int(stats.get("clouds_integrated", 0)) + int(stats.get("rgbd_integrated", 0))
        out.append(Status(f"{node_name}: inputs", OK, f"{integrated} frames integrated", hw, input_values))

    calls = {k: str(int(v)) for k, v in sorted(stats.items()) if k.startswith(("srv_", "action_", "clicks"))}
    errors, errors_before = int(stats.get("srv_errors", 0)), int(prev.get("srv_errors", 0))
    if errors > errors_before:
        out.append(
            Status(f"{node_name}: queries", WARN, f"{errors - errors_before} internal errors", hw, calls)
        )
    else:
        out.append(Status(f"{node_name}: queries", OK, "ok", hw, calls))
    return out


def to_diagnostic_array(statuses: list[Status], stamp: Any) -> Any:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    msg = DiagnosticArray()
    msg.header.stamp = stamp
    for s in statuses:
        msg.status.append(
            DiagnosticStatus(
                level=bytes([s.level]),
                name=s.name,
                message=s.message,
                hardware_id=s.hardware_id,
                values=[KeyValue(key=k, value=v) for k, v in s.values.items()],
            )
        )
    return msg


class DiagnosticsPublisher:
    """Publishes the node's statuses on ``/diagnostics`` every ``diagnostics_period`` s (0 = off)."""

    def __init__(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.node = node
        self._previous: dict[str, Any] = {}
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if node.p.diagnostics_period > 0:
            node.create_timer(node.p.diagnostics_period, self.publish, callback_group=node.output_group)

    def collect(self) -> dict[str, Any]:
        node, p = self.node, self.node.p
        stats = node.stats()
        prep = getattr(node.engine, "_prep", None)
        tiling = getattr(node._tiled, "_tiling", None)
        if prep is None and tiling is not None:  # a map beyond one room: its last tiling
            prep = tiling
        stats.update(
            max_voxels=p.max_voxels,
            objects=len(node.objects),
            last_segment_ms=node.last_segment_ms,
            encoded_version=int(prep.version) if prep is not None else -1,
            device=p.device,
            checkpoint=p.checkpoint,
            text_encoder=p.text_encoder,
            model_error=node.engine_error,
        )
        return stats

    def publish(self) -> None:
        stats = self.collect()
        statuses = build_statuses(self.node.get_name(), stats, self._previous)
        self._previous = stats
        self.pub.publish(to_diagnostic_array(statuses, self.node.get_clock().now().to_msg()))
