"""Feeding the recorded RGB-D sequence to the node, two ways.

* :func:`feed_in_process` (default): the demo publishes the recording itself with the replay
  tool's publisher (:class:`uniseg3d_ros.tools.replay.ReplayPublisher`), one frame at a time, and waits
  for the node's ``~/stats`` to acknowledge each pose and each frame's images before the next. The
  node's inputs use best-effort sensor QoS and drop frames whose pose has not arrived yet, so on a
  busy machine a free-running replay loses frames; this handshake loses none, at any machine speed.
  ``rate`` still caps the speed (x real time of the recording; 0 = as fast as the node fuses).
* :func:`feed_with_replay_tool`: runs ``uniseg3d_replay`` as a child process at ``rate``, as a
  user would; frames the node cannot keep up with are dropped (counted in ``~/stats``).

Both end with :func:`wait_settled`: the node's counters unchanged for a second.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from uniseg3d_ros.tools.demo.ros_io import Child, DemoError, Planner

RESEND_AFTER = 3.0  # s without an acknowledgement before a message is published again
MAX_SENDS = 4


def _count(stats: dict[str, Any], *keys: str) -> int:
    return sum(int(stats.get(k, 0)) for k in keys)


def _send_until(planner: Planner, send: Any, acked: Any, timeout: float, what: str) -> int:
    """Call ``send()`` and spin until ``acked()``; resend every RESEND_AFTER s (best-effort inputs).
    Returns how many times it was sent."""
    deadline = time.monotonic() + timeout
    for attempt in range(MAX_SENDS):
        send()
        wait = min(RESEND_AFTER, deadline - time.monotonic())
        if wait <= 0:
            break
        try:
            planner.spin_until(acked, wait, what)
            return attempt + 1
        except DemoError:
            if attempt == MAX_SENDS - 1:
                raise
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def feed_in_process(
    planner: Planner, sequence_dir: Path, node_name: str, rate: float, timeout: float
) -> tuple[int, int]:
    """Publish every frame of ``sequence_dir`` to ``/<node_name>/{pose,color,camera_info,depth}``
    with a per-frame handshake on ``~/stats``; returns (frames sent, frames sent more than once: a
    frame the node was slow to acknowledge can reach the map twice)."""
    from uniseg3d_ros.tools.replay import Pacer, ReplayPublisher, sequence_events

    topics = {
        k: f"/{node_name}/{'camera_info' if k == 'info' else k}" for k in ("pose", "color", "info", "depth")
    }
    pub = ReplayPublisher(planner.node, topics)
    planner.spin_until(
        lambda: all(p.get_subscription_count() > 0 for p in pub.pubs.values()),
        timeout,
        "the node's RGB-D and pose subscriptions",
    )
    stats = planner.stats
    poses0 = _count(stats, "poses")
    streams = ("depth_msgs", "color_msgs", "info_msgs")
    received0 = {k: _count(stats, k) for k in streams}

    def received(n: int) -> bool:
        # the node's sensor callbacks run one at a time, so once all three images of frame n are
        # counted its fusion was attempted (a frame without valid depth is skipped, not counted)
        return all(_count(planner.stats, k) >= received0[k] + n for k in streams)

    pacer, frame, sent, resent = Pacer(rate), [], 0, 0
    for ev in sequence_events(sequence_dir):
        if ev.kind == "pose":
            delay = pacer.delay(ev.stamp, time.monotonic())
            if delay > 0:  # pacing to the recording's clock (rate), spinning meanwhile
                until = time.monotonic() + delay
                planner.spin_until(lambda u=until: time.monotonic() >= u, delay + 1.0, "the replay clock")
            n = sent + 1
            _send_until(
                planner,
                lambda e=ev: pub.publish(e),
                lambda n=n: _count(planner.stats, "poses") >= poses0 + n,
                timeout,
                f"the node to receive pose {n}",
            )
            continue
        frame.append(ev)
        if ev.kind != "depth":  # a frame is pose, color, info, depth (depth last)
            continue
        sent += 1
        times = _send_until(
            planner,
            lambda f=tuple(frame): [pub.publish(e) for e in f],
            lambda n=sent: received(n),
            timeout,
            f"the node to receive the images of frame {sent}",
        )
        resent += times > 1
        frame = []
    return sent, resent


def feed_with_replay_tool(
    planner: Planner,
    sequence_dir: Path,
    node_name: str,
    rate: float,
    timeout: float,
    env: dict[str, str],
    log_path: Path,
) -> None:
    """Run ``python -m uniseg3d_ros.tools.replay`` on ``sequence_dir`` at ``rate`` until it exits."""
    replay = Child(
        "uniseg3d_replay",
        [
            "-m",
            "uniseg3d_ros.tools.replay",
            str(sequence_dir),
            "--rate",
            str(rate),
            "--node",
            node_name,
            # the tool also waits for a cloud subscriber, which an rgbd-only node does not have
            "--wait-subscribers",
            "3",
        ],
        env,
        log_path,
    )
    try:
        planner.spin_until(lambda: replay.returncode() is not None, timeout, "uniseg3d_replay to finish")
    finally:
        code = replay.stop()
    if code != 0:
        raise DemoError(f"uniseg3d_replay exited with code {code}:\n{replay.output(15)}")


def wait_settled(planner: Planner, timeout: float, quiet: float = 1.0) -> dict[str, Any]:
    """Spin until the node's input counters and map version stay unchanged for ``quiet`` s
    (queued frames fused); returns the last stats."""
    state: dict[str, Any] = {"key": None, "since": time.monotonic()}

    def settled() -> bool:
        s = planner.stats
        key = (s.get("depth_msgs"), s.get("rgbd_integrated"), s.get("map_version"))
        if key != state["key"]:
            state["key"], state["since"] = key, time.monotonic()
        return time.monotonic() - state["since"] > quiet

    planner.spin_until(settled, timeout, "the map to settle")
    return dict(planner.stats)
