"""RViz's Publish Point tool: a ``geometry_msgs/PointStamped`` on ``clicked_point_topic`` (default
``clicked_point``, i.e. ``/clicked_point`` or ``/<namespace>/clicked_point``) answered with an
interactive segmentation of the clicked object, published as ``~/markers`` and
``~/segmented_cloud`` like a ``~/interactive`` call with that one click.

Points in the fixed frame are used as they are; points in another frame are transformed with tf2
when it is installed, otherwise counted (``clicks_wrong_frame``) and logged once. A click that
fails (off the map, empty map) is counted (``clicks_failed``) and logged once per cause.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uniseg3d_ros.mapping.frames import stamp_to_sec, transform_points


def click_in_fixed_frame(node: Any, msg: Any) -> np.ndarray | None:
    """(1, 3) float64 click in the node's fixed frame, or None (counted, logged once)."""
    p = np.array([[msg.point.x, msg.point.y, msg.point.z]], dtype=np.float64)
    frame = msg.header.frame_id.lstrip("/")
    if frame in ("", node.p.fixed_frame.lstrip("/")):
        return p
    lookup = node.resolver.tf_lookup
    if lookup is not None:
        try:
            return transform_points(p, lookup(frame, stamp_to_sec(msg.header.stamp))).astype(np.float64)
        except LookupError as exc:
            node.count("clicks_wrong_frame")
            node.warn_once(f"click_tf:{frame}", f"clicked point in {frame!r}: no transform ({exc})")
            return None
    node.count("clicks_wrong_frame")
    node.warn_once(
        f"click_frame:{frame}",
        f"clicked point in frame {frame!r}, expected {node.p.fixed_frame!r} (no tf2 to transform it); "
        "set RViz's fixed frame to the node's fixed_frame",
    )
    return None


def on_clicked_point(node: Any, msg: Any) -> None:
    """Subscription callback (service callback group: it runs inference)."""
    node.count("clicks")
    if not node.active or node.engine is None:
        node.count("clicks_failed")
        return
    click = click_in_fixed_frame(node, msg)
    if click is None:
        return
    snapshot = node._snapshot()
    result = node.answerer(snapshot).interactive(snapshot, click, 0.0)  # plain or tiled map
    if result.success:
        with node.inference_lock:
            node.name_objects(result, snapshot)
    if not result.success:
        node.count("clicks_failed")
        node.warn_once(f"click_failed:{result.message.split(' ')[0]}", f"clicked point: {result.message}")
        return
    inst = result.instances[0]
    node.get_logger().info(
        f"clicked point {np.round(click[0], 3).tolist()}: {inst.label}, {inst.point_count} points, "
        f"object {inst.object_id}"
    )
    node.publish_result(result, "clicked_point")
