"""The node's own TF listener for when tf2_ros is not installed: /tf + /tf_static -> TransformBuffer.

``tf2_msgs`` comes from the ROS install, or from ``compat/tf2_msgs`` built by
``scripts/build_msgs.sh``; when neither imports, :func:`make_native_tf_lookup` returns None and the
node runs on pose topics. QoS as tf2_ros's listener: /tf reliable, volatile, keep last 100;
/tf_static reliable, transient local (late joiners get the static transforms), keep last 100.
Topic names are absolute, as tf2 uses them (a node namespace does not move them).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from uniseg3d_ros.mapping.frames import TransformLookup, msg_transform_to_matrix, stamp_to_sec
from uniseg3d_ros.mapping.tf_buffer import TransformBuffer


def tf_qos(static: bool) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE,
    )


def make_native_tf_lookup(
    node: Any,
    fixed_frame: str,
    callback_group: Any,
    on_update: Callable[[], None],
    count: Callable[..., None],
    warn_once: Callable[[str, str], None],
    cache_time: float = 10.0,
) -> tuple[TransformLookup, TransformBuffer] | None:
    """Subscribe ``node`` to /tf and /tf_static, feeding a :class:`TransformBuffer`; returns
    (lookup: (frame, stamp) -> T_fixed_frame (4, 4), the buffer), or None without tf2_msgs.
    ``on_update()`` runs after each TFMessage (the node releases data that waited for its pose);
    malformed transforms are counted (``malformed_tf``) and logged once."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    buffer = TransformBuffer(cache_time=cache_time)

    def on_tf(msg: Any, static: bool) -> None:
        n = 0
        for tf in msg.transforms:
            try:
                buffer.set_transform(
                    tf.header.frame_id,
                    tf.child_frame_id,
                    msg_transform_to_matrix(tf.transform),
                    stamp_to_sec(tf.header.stamp),
                    static=static,
                )
                n += 1
            except ValueError as exc:
                count("malformed_tf")
                warn_once("malformed_tf", f"malformed transform ignored: {exc}")
        count("tf_transforms", n)
        on_update()

    for topic, static in (("/tf", False), ("/tf_static", True)):
        node.create_subscription(
            TFMessage, topic, partial(on_tf, static=static), tf_qos(static), callback_group=callback_group
        )

    def lookup(frame: str, stamp: float) -> np.ndarray:
        return buffer.lookup(fixed_frame, frame, stamp)

    return lookup, buffer
