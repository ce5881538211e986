"""Input QoS of ``uniseg3d_node``: overridable the ROS 2 way, defaults that deliver large clouds.

Why: on Fast DDS a best-effort subscription loses most clouds above ~0.5 MB (100k points = 1.6 MB:
1 in 10 arrived at 2 Hz), while a reliable one gets them all; but a reliable subscription never
matches a best-effort publisher, and many drivers publish sensor data best-effort.

Policy: every input subscription is created with rclpy's QoS overriding options, so
``qos_overrides.<topic>.subscription.{reliability,history,depth}`` parameters exist (read-only, set at
launch). The default reliability is ``best_available`` (ROS 2's own name for "reliable when every
publisher is"), which this module resolves itself and keeps resolved while the node runs
(:meth:`InputSubscription.maintain`, called from a 1 Hz timer): reliable while all publishers on the
topic are reliable (or there are none yet), best-effort as soon as a best-effort publisher appears
(re-created, logged once with the cost), and back to reliable when only reliable ones remain. An
explicit ``reliable`` or ``best_effort`` is used as given; a publisher it cannot match is logged once.
Messages the middleware reports lost are counted (``<name>_lost`` in ``~/stats``).

``resolve_reliability`` is the pure decision; the rest is rclpy glue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidHandle
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

RELIABILITY_NAMES = {
    ReliabilityPolicy.RELIABLE: "reliable",
    ReliabilityPolicy.BEST_EFFORT: "best_effort",
    ReliabilityPolicy.BEST_AVAILABLE: "best_available",
    ReliabilityPolicy.SYSTEM_DEFAULT: "system_default",
}


def input_qos(depth: int) -> QoSProfile:
    """The default profile of every sensor input before overrides: keep last ``depth``, volatile,
    reliability ``best_available`` (resolved by :func:`resolve_reliability`)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_AVAILABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def resolve_reliability(
    configured: ReliabilityPolicy, publishers: Sequence[ReliabilityPolicy]
) -> ReliabilityPolicy:
    """The reliability to subscribe with. ``best_available``: reliable unless some publisher is
    best-effort (a reliable reader would not match it); other values are used as configured."""
    if configured != ReliabilityPolicy.BEST_AVAILABLE:
        return configured
    if any(p == ReliabilityPolicy.BEST_EFFORT for p in publishers):
        return ReliabilityPolicy.BEST_EFFORT
    return ReliabilityPolicy.RELIABLE


class NodeExecutor(MultiThreadedExecutor):
    """The node's executor: a MultiThreadedExecutor that skips a waitable destroyed between the
    wait and its take, as rclpy itself does for subscriptions, services, clients and timers.

    Why: :meth:`InputSubscription.maintain` re-creates a subscription (another callback group's
    thread) while the executor may hold the old one's QoS event handler (``message_lost``,
    ``incompatible_qos``) as ready; rclpy then raised ``InvalidHandle`` ("destruction was
    requested") out of ``spin()`` and the node died (seen once, under load, when a best-effort
    publisher appeared)."""

    def _take_waitable(self, waitable: Any) -> Any:
        try:
            return super()._take_waitable(waitable)
        except InvalidHandle:
            return None  # destroyed after the wait: nothing to run


class InputSubscription:
    """One sensor input: the subscription, its overridable QoS, and its re-resolution.

    ``count(key, n)`` and ``warn_once(cause, message)`` are the node's bookkeeping; ``name`` (e.g.
    ``cloud``) prefixes the counters.
    """

    def __init__(
        self,
        node: Any,
        msg_type: Any,
        topic: str,
        callback: Callable[[Any], None],
        qos: QoSProfile,
        callback_group: Any,
        name: str,
        count: Callable[..., None],
        warn_once: Callable[[str, str], None],
    ) -> None:
        self.node, self.msg_type, self.callback, self.group = node, msg_type, callback, callback_group
        self.name, self._count, self._warn_once = name, count, warn_once
        self.qos = qos  # mutated by the override parameters in the first create_subscription
        self.sub = node.create_subscription(
            msg_type,
            topic,
            callback,
            qos,
            callback_group=callback_group,
            event_callbacks=self._events(),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self.topic = self.sub.topic_name  # fully qualified, remapped
        self.configured = self.qos.reliability
        self.active = self.configured
        self.recreated = 0
        self.maintain()

    def _events(self) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(
            message_lost=lambda info: self._count(f"{self.name}_lost", int(info.total_count_change)),
            incompatible_qos=lambda info: self._count(f"{self.name}_qos_incompatible"),
        )

    def publisher_reliabilities(self) -> list[ReliabilityPolicy]:
        infos = self.node.get_publishers_info_by_topic(self.topic)
        return [i.qos_profile.reliability for i in infos]

    def maintain(self) -> None:
        """Re-create the subscription when the resolved reliability changed; log mismatches once."""
        publishers = self.publisher_reliabilities()
        want = resolve_reliability(self.configured, publishers)
        if want == ReliabilityPolicy.RELIABLE and ReliabilityPolicy.BEST_EFFORT in publishers:
            self._warn_once(
                f"qos_incompatible:{self.topic}",
                f"a best-effort publisher on {self.topic} cannot reach the reliable subscription "
                f"(qos_overrides.{self.topic}.subscription.reliability=reliable); set it to best_available "
                "or make the publisher reliable",
            )
        if want == self.active:
            return
        if want == ReliabilityPolicy.BEST_EFFORT:
            self._warn_once(
                f"qos_best_effort:{self.topic}",
                f"best-effort publisher on {self.topic}: subscribing best-effort; on Fast DDS most messages "
                "above ~0.5 MB are then lost (counted as "
                f"{self.name}_lost); publish reliable to receive every large cloud",
            )
        self.node.destroy_subscription(self.sub)
        qos = QoSProfile(
            history=self.qos.history, depth=self.qos.depth, reliability=want, durability=self.qos.durability
        )
        self.sub = self.node.create_subscription(
            self.msg_type,
            self.topic,
            self.callback,
            qos,
            callback_group=self.group,
            event_callbacks=self._events(),
        )
        self.active = want
        self.recreated += 1

    def describe(self) -> dict[str, Any]:
        """For ~/stats: configured and active reliability, depth."""
        return {
            "configured": RELIABILITY_NAMES.get(self.configured, str(self.configured)),
            "active": RELIABILITY_NAMES.get(self.active, str(self.active)),
            "depth": int(self.qos.depth),
        }
