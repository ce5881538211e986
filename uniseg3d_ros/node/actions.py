"""``~/segment`` as a ROS 2 action (``uniseg3d_msgs/action/Segment``): the service's request and
result, feedback before each stage (superpoints, backbone, decoder, postprocess; on a tiled map
each tile's stages with its number, then the merge), cancellable between stages.

The action shares its name with the ``~/segment`` service: an action's entities live under
``~/segment/_action/`` (send_goal, cancel_goal, get_result services; feedback, status topics), so
they never clash with the service ``~/segment``; the two types (``srv/Segment``,
``action/Segment``) are distinct interfaces of ``uniseg3d_msgs``. tests/test_node_planner.py uses
both on one node.

Goals are accepted one at a time (a second goal while one runs is rejected: a planner waits for or
cancels the running one). The engine serialises builds of the encoding itself (light queries keep
answering from the last finished one); a cancel request is answered at once and takes effect at the
next stage boundary (the engine's cache stays consistent).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from uniseg3d_msgs.action import Segment as SegmentAction

from uniseg3d_ros.inference.engine import STAGES, Cancelled


class SegmentActionHandler:
    """Goal, cancel and execute callbacks of the ``~/segment`` action for ``node``."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._busy = threading.Lock()

    def on_goal(self, goal: Any) -> GoalResponse:
        if not self.node.active or not self._busy.acquire(blocking=False):
            self.node.count("action_segment_rejected")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def on_cancel(self, goal_handle: Any) -> CancelResponse:
        return CancelResponse.ACCEPT

    def execute(self, goal_handle: Any) -> Any:
        node = self.node
        node.count("action_segment")
        t0 = time.perf_counter()

        def progress(stage: str, cached: bool, tile: tuple[int, int] = (0, 0)) -> None:
            if goal_handle.is_cancel_requested:
                raise Cancelled(stage)
            goal_handle.publish_feedback(
                SegmentAction.Feedback(
                    stage=stage,
                    stage_index=STAGES.index(stage) + 1,
                    stage_count=len(STAGES),
                    elapsed_ms=1e3 * (time.perf_counter() - t0),
                    tile_index=tile[0],
                    tile_count=tile[1],
                )
            )

        result = SegmentAction.Result()
        try:
            if goal_handle.is_cancel_requested:
                raise Cancelled("start")
            result = node._srv_segment(goal_handle.request, result, progress=progress)
        except Cancelled as stage:
            node.count("action_segment_canceled")
            result.success, result.message = False, f"canceled before stage {stage}"
            result.latency_ms = 1e3 * (time.perf_counter() - t0)
            goal_handle.canceled()
            return result
        except Exception as exc:  # noqa: BLE001 - a goal must end with a result, whatever happened
            node.count("srv_errors")
            node.warn_once(f"action_error:{type(exc).__name__}", f"segment action failed: {exc!r}")
            result.success, result.message = False, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self._busy.release()
        if result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result


def create_segment_action(node: Any) -> ActionServer:
    """The ``~/segment`` action server of ``node`` (its own reentrant callback group, so a cancel
    request is handled while a goal executes)."""
    handler = SegmentActionHandler(node)
    node.segment_action_handler = handler
    return ActionServer(
        node,
        SegmentAction,
        "~/segment",
        execute_callback=handler.execute,
        goal_callback=handler.on_goal,
        cancel_callback=handler.on_cancel,
        callback_group=ReentrantCallbackGroup(),
    )
