"""Isolated ROS 2 graphs on one machine: lease a free ``ROS_DOMAIN_ID`` and keep discovery local.

Used by the demo and the test helpers (``tests/rosutil.py``) so that several of them can run at
once without hearing each other: each lease is a file lock per id in
``$TMPDIR/uniseg3d_ros_domains``, and :func:`isolation_env` restricts discovery to this host.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DOMAIN_IDS = range(1, 102)  # Fast DDS on Linux: ids 0..101 keep ports below the ephemeral range
LOCK_DIR = Path(tempfile.gettempdir()) / "uniseg3d_ros_domains"


class DomainsExhausted(RuntimeError):
    """Every domain id in :data:`DOMAIN_IDS` is leased by another process."""


def isolation_env(domain_id: int) -> dict[str, str]:
    """Variables that put a process on ``domain_id`` with localhost-only discovery."""
    if domain_id not in DOMAIN_IDS:
        raise ValueError(f"domain_id={domain_id} outside {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1}")
    return {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOCALHOST_ONLY": "1",
        "ROS_STATIC_PEERS": "",
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
    }


@contextmanager
def lease_domain(forced: int | None = None, cooldown: float = 30.0) -> Iterator[int]:
    """Yield a ROS domain id no other cooperating process on this machine holds, or ``forced``.

    The search starts at a pid-derived id so parallel runs rarely contend, and passes over ids
    released less than ``cooldown`` s ago (by any process) while others are free: processes killed
    in the previous user of a domain can linger in discovery for a while. The id stays leased until
    the block ends. Raises :class:`DomainsExhausted` when every id is leased.
    """
    if forced is not None:
        isolation_env(forced)  # validates the range
        yield forced
        return
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    ids = list(DOMAIN_IDS)
    start = os.getpid() % len(ids)
    for fresh_only in (True, False):
        for domain_id in ids[start:] + ids[:start]:
            path = LOCK_DIR / f"{domain_id}.lock"
            try:
                fd, new = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666), True
            except FileExistsError:
                fd, new = os.open(path, os.O_RDWR), False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if fresh_only and not new and time.time() - os.fstat(fd).st_mtime < cooldown:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                continue
            try:
                yield domain_id
            finally:
                os.utime(fd)  # marks the release time for the cooldown
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
    raise DomainsExhausted(f"every ROS domain id {ids[0]}..{ids[-1]} is leased (locks in {LOCK_DIR})")


def stop_process(popen: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Stop a child node cleanly: SIGINT (rclpy shuts down), SIGKILL after ``timeout`` s.
    Returns its exit code."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGINT)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout)
    return popen.returncode
