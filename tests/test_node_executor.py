"""The node's executor (``uniseg3d_ros.node.qos.NodeExecutor``) survives a QoS event handler whose
subscription was destroyed after the executor's wait: ``InputSubscription.maintain`` re-creates
input subscriptions from another thread, and rclpy's own MultiThreadedExecutor then raised
``InvalidHandle`` out of ``spin()`` and killed the node (seen once in a test run, under load)."""

from __future__ import annotations

import pytest

from tests import rosutil


def test_a_waitable_destroyed_after_the_wait_is_skipped_not_raised():
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.exceptions import InvalidHandle
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import String

    from uniseg3d_ros.node.qos import NodeExecutor

    with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
        import rclpy

        node = rclpy.create_node("executor_probe", context=ctx)
        events = SubscriptionEventCallbacks(message_lost=lambda info: None)
        sub = node.create_subscription(String, "probe", lambda msg: None, 10, event_callbacks=events)
        handler = sub.event_handlers[0]
        node.destroy_subscription(sub)  # what maintain() does while the handler may be in a wait list
        plain, ours = MultiThreadedExecutor(context=ctx), NodeExecutor(context=ctx)
        try:
            handler._ready_to_take_data = True  # the state is_ready() left after the executor's wait
            with pytest.raises(InvalidHandle):
                plain._take_waitable(handler)  # rclpy's own: the exception that ended spin()
            handler._ready_to_take_data = True
            assert ours._take_waitable(handler) is None
        finally:
            plain.shutdown()
            ours.shutdown()
            node.destroy_node()
