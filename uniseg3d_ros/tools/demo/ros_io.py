"""The demo's ROS side: an isolated ROS domain, child processes (node, replay) that are always
stopped, and a planner-like rclpy client of the node's services.

Isolation: the demo leases a ROS domain id no other cooperating process on this machine holds
(a file lock per id in ``$TMPDIR/uniseg3d_ros_domains``, the protocol the test helpers use) and
restricts discovery to this host, so it neither disturbs nor hears other ROS graphs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uniseg3d_ros.tools import ros_domain
from uniseg3d_ros.tools.ros_domain import stop_process


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why (printed, exit code 1)."""


@contextmanager
def lease_domain(forced: int | None = None) -> Iterator[int]:
    """:func:`uniseg3d_ros.tools.ros_domain.lease_domain`, failing as a :class:`DemoError`."""
    try:
        with ros_domain.lease_domain(forced) as domain_id:
            yield domain_id
    except ros_domain.DomainsExhausted as exc:
        raise DemoError(str(exc)) from exc


def child_env(domain_id: int, threads: int = 1) -> dict[str, str]:
    """This process's environment (with ``scripts/env.sh`` applied) on ``domain_id``."""
    env = dict(os.environ)
    env.pop("ROS_DISCOVERY_SERVER", None)
    env.update(ros_domain.isolation_env(domain_id))
    repo = str(Path(__file__).resolve().parents[1])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in parts if p != repo])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


class Child:
    """A child ``python -m <module>`` whose output goes to ``log_path`` (no pipe to fill)."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self, tail: int = 0) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def returncode(self) -> int | None:
        return self.popen.poll()

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise DemoError(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n{self.output(25)}"
            )

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGINT, then SIGKILL after ``timeout`` s. Returns the exit code."""
        code = stop_process(self.popen, timeout)
        self._log.close()
        return code


def ros_arg(value: Any) -> str:
    """A value as a ``-p name:=value`` string (YAML)."""
    if isinstance(value, bool):
        return str(value).lower()
    return '""' if value == "" else str(value)


class Planner:
    """What a task planner would run: an rclpy node with clients of the node's services and a
    listener on its ``~/stats``. All waits spin with a deadline and fail at once (with the child's
    log) when a watched child process dies."""

    def __init__(self, domain_id: int, node_name: str, watch: Sequence[Child] = ()) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        saved = {k: os.environ.get(k) for k in ros_domain.isolation_env(domain_id)}
        os.environ.update(ros_domain.isolation_env(domain_id))
        self.context = Context()
        try:
            rclpy.init(
                context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.node = rclpy.create_node("uniseg3d_demo_planner", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.prefix = f"/{node_name}"
        self.watch = list(watch)
        self.stats: dict[str, Any] = {}
        self.stats_count = 0
        self.node.create_subscription(String, f"{self.prefix}/stats", self._on_stats, 10)
        self._clients: dict[str, Any] = {}

    def _on_stats(self, msg: Any) -> None:
        self.stats = json.loads(msg.data)
        self.stats_count += 1

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for child in self.watch:
                child.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def client(self, srv_type: Any, name: str, timeout: float) -> Any:
        if name not in self._clients:
            cli = self.node.create_client(srv_type, f"{self.prefix}/{name}")
            self.spin_until(cli.service_is_ready, timeout, f"service {self.prefix}/{name}")
            self._clients[name] = cli
        return self._clients[name]

    def call(self, srv_type: Any, name: str, request: Any, timeout: float) -> tuple[Any, float]:
        """Call service ``~/name``; returns (response, round trip seconds)."""
        cli = self.client(srv_type, name, timeout)
        t0 = time.perf_counter()
        future = cli.call_async(request)
        self.spin_until(future.done, timeout, f"the answer of {self.prefix}/{name}")
        return future.result(), time.perf_counter() - t0

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
