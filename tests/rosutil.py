"""Helpers for tests that run real rclpy on loopback, isolated from any other ROS graph.

Isolation: every test gets its own ROS domain (``ros_domain()``: an id in 1..101, the range Fast DDS
can use on Linux, leased with a file lock so concurrent test processes on one machine never share
one) and discovery restricted to this host (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, plus the
older ``ROS_LOCALHOST_ONLY=1``).

Typical use::

    from tests import rosutil

    def test_something():
        with rosutil.ros_domain() as domain, rosutil.ros_context(domain) as ctx:
            env = rosutil.ros_env(domain)
            with rosutil.start_python(["-m", "uniseg3d_ros.node.node"], env=env) as server:
                node = rclpy.create_node("probe", context=ctx)
                client = node.create_client(Segment, "/uniseg3d/segment")
                rosutil.wait_for_service(node, client, timeout=20.0, procs=[server])
                response = rosutil.call_service(node, client, Segment.Request(), timeout=30.0)

Synchronisation is always "spin until a predicate holds, with a deadline" (``spin_until``); a child
process that dies while we wait fails the wait at once with its output in the message.

``ensure_interfaces()`` (called by ``ros_context``) makes ``import uniseg3d_msgs`` work in the test
process whether or not ``scripts/env.sh`` was sourced.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uniseg3d_ros.tools.ros_domain import isolation_env, lease_domain, stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_PREFIX = REPO_ROOT / "install"


# --------------------------------------------------------------------------- paths and environment


def _install_site_packages(prefix: Path = INSTALL_PREFIX) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _wheel_lib_dirs() -> list[str]:
    """Library dirs of the ros-* wheels (what ros_wheels_bootstrapper adds to LD_LIBRARY_PATH)."""
    site = _install_site_packages(Path(sys.prefix))
    return [str(Path(sys.prefix) / "lib")] + sorted(str(p) for p in site.glob("ros_*.libs") if p.is_dir())


def _prepend(value: str | None, entries: Sequence[str]) -> str:
    parts = [p for p in (value or "").split(os.pathsep) if p]
    new = [e for e in entries if e not in parts]
    return os.pathsep.join(new + parts)


def ensure_interfaces(prefix: Path = INSTALL_PREFIX) -> None:
    """Make ``uniseg3d_msgs`` importable and usable by rclpy in this process and its children.

    Raises RuntimeError naming the build command when ``prefix`` holds no built package. When
    ``<prefix>/lib`` was not on LD_LIBRARY_PATH at interpreter start (env.sh not sourced), the
    package's type support libraries are preloaded so rclpy's dlopen-by-name finds them.
    """
    site = _install_site_packages(prefix)
    if not (site / "uniseg3d_msgs").is_dir():
        raise RuntimeError(
            f"uniseg3d_msgs is not built in {prefix}; run `bash scripts/build_msgs.sh` (or `make setup`)"
        )
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    lib = str(prefix / "lib")
    if lib not in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        # Type support libraries first (they are what rcl looks up by name), generator_py last.
        for so in sorted((prefix / "lib").glob("lib*.so"), key=lambda p: "generator_py" in p.name):
            ctypes.CDLL(str(so), mode=ctypes.RTLD_GLOBAL)
    os.environ["PYTHONPATH"] = _prepend(os.environ.get("PYTHONPATH"), [str(site)])
    os.environ["LD_LIBRARY_PATH"] = _prepend(os.environ.get("LD_LIBRARY_PATH"), [lib, *_wheel_lib_dirs()])
    os.environ["AMENT_PREFIX_PATH"] = _prepend(os.environ.get("AMENT_PREFIX_PATH"), [str(prefix), sys.prefix])
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def ros_env(domain_id: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process on ``domain_id``, localhost-only, with ./install usable.

    Built from this process's environment; the repo root and ./install's site-packages go first on
    PYTHONPATH, ./install/lib and the wheels' libs on LD_LIBRARY_PATH (the bootstrapper's re-exec is
    skipped since its work is already done), ROS_DISCOVERY_SERVER is dropped. ``extra`` wins.
    """
    env = dict(os.environ)
    env.pop("ROS_DISCOVERY_SERVER", None)
    env.update(isolation_env(domain_id))
    env["PYTHONPATH"] = _prepend(env.get("PYTHONPATH"), [str(REPO_ROOT), str(_install_site_packages())])
    libs = [str(INSTALL_PREFIX / "lib"), *_wheel_lib_dirs()]
    env["LD_LIBRARY_PATH"] = _prepend(env.get("LD_LIBRARY_PATH"), libs)
    env["AMENT_PREFIX_PATH"] = _prepend(env.get("AMENT_PREFIX_PATH"), [str(INSTALL_PREFIX), sys.prefix])
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- domain ids


@contextmanager
def ros_domain(cooldown: float = 30.0) -> Iterator[int]:
    """Lease a ROS domain id no other cooperating process on this machine holds
    (:func:`uniseg3d_ros.tools.ros_domain.lease_domain`); ``UNISEG3D_TEST_DOMAIN_ID`` forces an id."""
    forced = os.environ.get("UNISEG3D_TEST_DOMAIN_ID")
    with lease_domain(int(forced) if forced else None, cooldown=cooldown) as domain_id:
        yield domain_id


@contextmanager
def ros_context(domain_id: int) -> Iterator[Any]:
    """An initialised ``rclpy.context.Context`` on ``domain_id`` with localhost-only discovery.

    Create nodes with ``rclpy.create_node(name, context=ctx)``. The isolation variables are set in
    ``os.environ`` for the init and restored afterwards; rclpy installs no signal handlers.
    """
    ensure_interfaces()
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    saved = {k: os.environ.get(k) for k in isolation_env(domain_id)}
    os.environ.update(isolation_env(domain_id))
    ctx = Context()
    try:
        rclpy.init(context=ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


# --------------------------------------------------------------------------- child processes


class RosProcess:
    """A child Python process whose stdout+stderr go to a temporary log file (no pipe to fill)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.popen = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        """Everything the child wrote so far (stdout and stderr interleaved)."""
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise RuntimeError with the child's output if it has exited."""
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"child {self.name!r} exited with code {code}; output:\n{self.output()}")

    def wait_for_output(self, text: str, timeout: float) -> None:
        """Poll the log until ``text`` appears; TimeoutError (with the log) after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name!r} printed no {text!r} within {timeout} s:\n{self.output()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGINT, wait up to ``timeout`` s, then SIGKILL. Returns the exit code; removes the log."""
        code = stop_process(self.popen, timeout)
        self._log.close()
        self.log_path.unlink(missing_ok=True)
        return code

    def __enter__(self) -> RosProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_python(
    args: Sequence[str], env: dict[str, str], cwd: Path = REPO_ROOT, name: str | None = None
) -> RosProcess:
    """Start ``python <args>`` (e.g. ``["-m", "uniseg3d_ros.node.node", "--ros-args", ...]`` or
    ``[script, "--serve"]``) with ``env`` (from ``ros_env``). Use as a context manager to stop it."""
    if not args or (args[0] == "-m" and len(args) < 2):
        raise ValueError(f"args={list(args)!r}: pass a script path or ['-m', 'package.module', ...]")
    return RosProcess(args, env, cwd, name or (args[1] if args[0] == "-m" else Path(args[0]).stem))


# --------------------------------------------------------------------------- spinning


def spin_until(
    node: Any,
    predicate: Callable[[], bool],
    timeout: float,
    what: str = "condition",
    procs: Sequence[RosProcess] = (),
) -> None:
    """Spin ``node`` (an rclpy Node) until ``predicate()`` is true.

    Raises TimeoutError naming ``what`` after ``timeout`` s, or RuntimeError as soon as one of
    ``procs`` has exited (with its output).
    """
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while not predicate():
            for proc in procs:
                proc.check_alive()
            if time.monotonic() > deadline:
                logs = "".join(f"\n--- {p.name} output:\n{p.output()}" for p in procs)
                raise TimeoutError(f"{what} did not hold within {timeout} s{logs}")
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def wait_for_service(node: Any, client: Any, timeout: float, procs: Sequence[RosProcess] = ()) -> None:
    """Spin until ``client``'s server is discovered."""
    spin_until(node, client.service_is_ready, timeout, f"service {client.srv_name} available", procs)


def call_service(
    node: Any, client: Any, request: Any, timeout: float, procs: Sequence[RosProcess] = ()
) -> Any:
    """Call ``client`` with ``request`` and spin until the response arrives; returns it."""
    future = client.call_async(request)
    spin_until(node, future.done, timeout, f"response from {client.srv_name}", procs)
    return future.result()


# --------------------------------------------------------------------------- uniseg3d_node


def ros_arg(value: Any) -> Any:
    """A parameter value as ``-p name:=value`` spells it (booleans lower-case, '' quoted)."""
    return str(value).lower() if isinstance(value, bool) else (value if value != "" else '""')


def node_args(params: dict[str, Any], module: str = "uniseg3d_ros.node.node") -> list[str]:
    """Python arguments that start ``module``'s node with ``params`` (``-p name:=value`` each)."""
    args = ["-m", module, "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={ros_arg(v)}"]
    return args


@contextmanager
def running_node(
    params: dict[str, Any],
    make_probe: Callable[[Any, RosProcess], Any],
    extra_env: dict[str, str] | None = None,
    name: str = "uniseg3d_node",
    ready_timeout: float = 60.0,
) -> Iterator[Any]:
    """``uniseg3d_node`` with ``params`` in its own process on a leased, isolated domain; yields
    ``make_probe(ctx, server)`` (the test side; it must have a ``node``) once the node logged
    ``ready:``, with ``domain`` and ``env`` set on it. Afterwards the probe's node is destroyed and
    the node must exit cleanly on SIGINT."""
    with ros_domain() as domain, ros_context(domain) as ctx:
        env = ros_env(domain, extra_env)
        with start_python(node_args(params), env=env, name=name) as server:
            probe = make_probe(ctx, server)
            probe.domain, probe.env = domain, env
            try:
                server.wait_for_output("ready:", timeout=ready_timeout)
                yield probe
            finally:
                probe.node.destroy_node()
            log = server.output()
            assert server.stop() == 0, f"the node did not exit cleanly on SIGINT:\n{log[-4000:]}"


class StatsProbe:
    """The test side of a node test: a probe node on ``ctx`` with a ``<node>/stats`` listener, service
    clients made on first use, and spin / publish helpers that fail early when ``server`` died."""

    def __init__(self, ctx: Any, server: RosProcess, name: str, node: str = "/uniseg3d_node") -> None:
        import rclpy
        from std_msgs.msg import String

        self.server, self.prefix = server, node
        self.node = rclpy.create_node(name, context=ctx)
        self.stats: dict = {}
        self.node.create_subscription(String, f"{node}/stats", self._on_stats, 10)
        self._clients: dict = {}

    def _on_stats(self, msg: Any) -> None:
        self.stats = json.loads(msg.data)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
                   ) -> None:
        spin_until(self.node, predicate, timeout, what, procs=[self.server])

    def fresh_stats(self) -> dict:
        """Stats published after now (spins until one arrives)."""
        self.stats = {}
        self.spin_until(lambda: bool(self.stats), what="a ~/stats message")
        return self.stats

    def settled(self, key: str, timeout: float = 10.0) -> int:
        """Spin until ``key`` in ~/stats has not changed for 1 s; returns its value."""
        last = [self.fresh_stats().get(key, 0), self.now()]

        def stable() -> bool:
            value = self.stats.get(key, 0)
            if value != last[0]:
                last[:] = [value, self.now()]
            return self.now() - last[1] > 1.0

        self.spin_until(stable, timeout, f"{key} settled")
        return self.stats.get(key, 0)

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 60.0) -> Any:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, f"{self.prefix}/{name}")
            wait_for_service(self.node, client, timeout=30.0, procs=[self.server])
        return call_service(self.node, client, request, timeout, procs=[self.server])

    def publish_until(self, pub: Any, make_msg: Callable[[], Any], done: Callable[[], bool], what: str,
                      period: float = 0.3, timeout: float = 20.0) -> None:
        """Publish ``make_msg()`` on ``pub`` every ``period`` s until ``done()`` (a best-effort
        subscriber may drop one: resend)."""
        last = [-1e9]

        def step() -> bool:
            if done():
                return True
            if self.now() - last[0] > period:
                pub.publish(make_msg())
                last[0] = self.now()
            return False

        self.spin_until(step, timeout, what)
