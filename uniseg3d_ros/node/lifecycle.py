"""``uniseg3d_lifecycle_node``: the same node as a managed (lifecycle) node, the nav2 way.

Transitions:

- ``configure``: loads the model (:func:`uniseg3d_ros.inference.preflight.load_engine_checked`)
  and FAILS, staying *unconfigured* with the one-line reason in the log, when it cannot (missing
  checkpoint, ``device: cuda`` without CUDA, the text encoder's package or weights missing); on
  success builds the map and every topic, service, action and timer (as the plain node does);
- ``activate``: sensor input is fused, services, the action and clicks answer;
- ``deactivate``: input is counted as ``inactive_dropped`` and dropped, services answer
  ``success=false`` ("node is inactive"), the action rejects goals; the map is kept;
- ``cleanup``: destroys what configure built and drops the model and the map;
- ``shutdown``: as cleanup.

Before a successful configure (and after a failed one) ``/diagnostics`` carries one ERROR status
``<node>: model`` whose message is the reason (e.g. the missing checkpoint).

Parameters are read when the node starts (they are read-only, as in the plain node).
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from uniseg3d_ros.inference.preflight import ModelLoadError
from uniseg3d_ros.node import params as params_mod
from uniseg3d_ros.node.diagnostics import ERROR, Status, to_diagnostic_array
from uniseg3d_ros.node.node import NODE_NAME, UniSeg3DNode, run


class ManagedUniSeg3DNode(LifecycleNodeMixin, UniSeg3DNode):
    """:class:`UniSeg3DNode` whose model load and interfaces follow the lifecycle transitions."""

    def __init__(self, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        LifecycleNodeMixin.__init__(self, enable_communication_interface=True)
        self.p = params_mod.declare(self)
        self.active = False
        self.engine = None
        self.engine_error = "not configured"
        self._built: list[Any] = []
        # until configure succeeds, /diagnostics says why there is no model (an aggregator shows it)
        self._unconfigured_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.p.diagnostics_period > 0:
            self.create_timer(self.p.diagnostics_period, self._publish_unconfigured)

    def _publish_unconfigured(self) -> None:
        if self.engine is not None:
            return  # configured: the node's own DiagnosticsPublisher reports
        status = Status(
            f"{self.get_name()}: model", ERROR, self.engine_error, self.get_name(), {"loaded": "false"}
        )
        self._unconfigured_pub.publish(to_diagnostic_array([status], self.get_clock().now().to_msg()))

    def _entities(self) -> list[Any]:
        return [*self.publishers, *self.subscriptions, *self.services, *self.timers, *self.waitables]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            engine = self.load_model()
        except ModelLoadError as exc:
            self.engine_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        before = {id(e) for e in self._entities()}
        self.engine = engine
        self.build()
        self._built = [e for e in self._entities() if id(e) not in before]
        self.get_logger().info(
            f"configured: input_mode={self.p.input_mode} pose_source={self.resolver.active_source()} "
            f"fixed_frame={self.p.fixed_frame} voxel_size={self.p.voxel_size}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self.active = False
        destroy = {
            "Publisher": self.destroy_publisher,
            "Subscription": self.destroy_subscription,
            "Service": self.destroy_service,
            "Timer": self.destroy_timer,
        }
        for entity in reversed(self._built):
            kind = next((k for k in destroy if any(c.__name__ == k for c in type(entity).__mro__)), None)
            if kind is not None:
                destroy[kind](entity)
            elif hasattr(entity, "destroy"):
                entity.destroy()  # the action server
        self._built = []
        self.engine, self.engine_error = None, "not configured"
        if hasattr(self, "map"):
            del self.map


def main(args: list[str] | None = None) -> None:
    run(ManagedUniSeg3DNode, args, "unconfigured: waiting for the configure transition")


if __name__ == "__main__":
    main()
