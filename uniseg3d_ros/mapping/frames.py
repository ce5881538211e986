"""Where the sensor was: pose math, a stamped pose buffer and the pose-source policy.

Poses are 4x4 float64 homogeneous matrices ``T_fixed_sensor`` mapping points in the
sensor frame to the fixed frame (REP 105 ``map`` by default): ``p_fixed = T @ [p_sensor, 1]``.
Quaternions are ``(x, y, z, w)`` as in geometry_msgs.

Sources, chosen by :class:`PoseResolver`:
- ``tf``: tf2_ros ``Buffer.lookup_transform(fixed, sensor, stamp)`` when tf2_ros imports
  (:func:`make_tf_lookup`; a real ROS install has it), else the node's own /tf + /tf_static
  buffer (``tf_buffer.TransformBuffer``, fed from tf2_msgs/TFMessage by ``node/tf_listener.py``);
- ``topic``: geometry_msgs/PoseStamped or nav_msgs/Odometry messages giving the sensor
  pose in the fixed frame, looked up nearest by stamp in a bounded :class:`PoseBuffer`;
- ``identity``: the data is already in the fixed frame.
Only :func:`make_tf_lookup` touches ROS, and only when called.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# frame_id, stamp [s] -> T_fixed_sensor (raises LookupError with a reason when unknown; the
# subclasses below say why, so the resolver can wait for a pose still to come or fall back)
TransformLookup = Callable[[str, float], np.ndarray]


class FrameNotFoundError(LookupError):
    """A frame no transform names."""


class ConnectivityError(LookupError):
    """Both frames are known but in different trees."""


class ExtrapolationError(LookupError):
    """The stamp lies outside the transforms' history. ``future`` is True when it is newer than the
    newest one (the transform may still arrive), False when it is older than the oldest kept one."""

    def __init__(self, message: str, future: bool) -> None:
        super().__init__(message)
        self.future = future


def quaternion_to_matrix(q: Any) -> np.ndarray:
    """(x, y, z, w) -> (3, 3) rotation. The quaternion is normalised; a zero one raises."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = float(np.linalg.norm(q))
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion must be finite and non-zero, got {q.tolist()}")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rot: Any) -> np.ndarray:
    """(3, 3) rotation -> (x, y, z, w) with w >= 0 (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {m.shape}")
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_to_matrix(position: Any, orientation: Any) -> np.ndarray:
    """Translation (3,) [m] + quaternion (x, y, z, w) -> (4, 4) float64."""
    t = np.asarray(position, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"position must be finite, got {t.tolist()}")
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(orientation)
    out[:3, 3] = t
    return out


def matrix_to_pose(matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) -> (position (3,), quaternion (x, y, z, w))."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"pose matrix must be (4, 4), got {m.shape}")
    return m[:3, 3].copy(), matrix_to_quaternion(m[:3, :3])


def msg_pose_to_matrix(pose: Any) -> np.ndarray:
    """A geometry_msgs Pose-like object (``.position.x/y/z``, ``.orientation.x/y/z/w``) -> (4, 4)."""
    p, o = pose.position, pose.orientation
    return pose_to_matrix((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))


def msg_transform_to_matrix(transform: Any) -> np.ndarray:
    """A geometry_msgs Transform-like object (``.translation``, ``.rotation``) -> (4, 4)."""
    t, r = transform.translation, transform.rotation
    return pose_to_matrix((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


def stamp_to_sec(stamp: Any) -> float:
    """builtin_interfaces/Time-like (``sec``, ``nanosec``) -> seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def sec_to_stamp(seconds: float) -> tuple[int, int]:
    """seconds -> (sec, nanosec) with 0 <= nanosec < 1e9 (rounded to the nanosecond)."""
    total = int(round(float(seconds) * 1e9))
    return total // 1_000_000_000, total % 1_000_000_000


def stamp_msg(seconds: float) -> Any:
    """builtin_interfaces/Time for ``seconds`` (imports the ROS message type lazily)."""
    from builtin_interfaces.msg import Time

    sec, nanosec = sec_to_stamp(seconds)
    return Time(sec=sec, nanosec=nanosec)


def transform_points(points: Any, matrix: Any) -> np.ndarray:
    """points (N, 3) in frame A, ``matrix`` (4, 4) T_B_A -> (N, 3) float32 in frame B."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return (p @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


class PoseBuffer:
    """The last ``maxlen`` stamped poses, looked up nearest by stamp within ``tolerance`` [s]."""

    def __init__(self, maxlen: int = 200, tolerance: float = 0.05) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.maxlen, self.tolerance = int(maxlen), float(tolerance)
        self._stamps: list[float] = []
        self._poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp: float, pose: Any) -> None:
        """Insert ``pose`` (4, 4) at ``stamp``; keeps stamps sorted, evicts the oldest beyond maxlen."""
        m = np.asarray(pose, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"pose must be a finite (4, 4) matrix, got shape {m.shape}")
        i = bisect.bisect_right(self._stamps, float(stamp))
        self._stamps.insert(i, float(stamp))
        self._poses.insert(i, m)
        if len(self._stamps) > self.maxlen:
            del self._stamps[0], self._poses[0]

    def latest_stamp(self) -> float | None:
        """Stamp of the newest pose, or None when empty."""
        return self._stamps[-1] if self._stamps else None

    def lookup(self, stamp: float) -> np.ndarray | None:
        """The pose nearest to ``stamp`` if within tolerance, else None."""
        if not self._stamps:
            return None
        i = bisect.bisect_left(self._stamps, float(stamp))
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self._stamps)]
        j = min(candidates, key=lambda k: abs(self._stamps[k] - stamp))
        if abs(self._stamps[j] - stamp) > self.tolerance:
            return None
        return self._poses[j].copy()

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()


@dataclass
class PoseResult:
    """``pose`` (4, 4) T_fixed_sensor, or None with ``cause`` ('unknown_frame' | 'no_pose') and a
    human-readable ``reason``; ``pending`` when the pose may still arrive (the data may wait)."""

    pose: np.ndarray | None
    cause: str = ""
    reason: str = ""
    pending: bool = False


class PoseResolver:
    """Decides the pose of a message stamped ``stamp`` in ``frame_id``.

    ``source``: 'auto' | 'tf' | 'topic' | 'identity'. 'auto' uses ``tf_lookup`` when given (tf2_ros,
    or the node's own /tf buffer) and the pose buffer (fed by pose/odom topics) for frames TF does
    not know ('tf+topic'); without ``tf_lookup`` only the pose buffer. A TF stamp newer than the
    newest transform is ``pending`` (the data may wait for it); one older than the history is not.
    Messages already in ``fixed_frame`` always get the identity. With topic poses,
    ``sensor_frame`` (if not empty) is the only other frame accepted.
    """

    def __init__(
        self,
        fixed_frame: str = "map",
        source: str = "auto",
        buffer: PoseBuffer | None = None,
        tf_lookup: TransformLookup | None = None,
        sensor_frame: str = "",
    ) -> None:
        if source not in ("auto", "tf", "topic", "identity"):
            raise ValueError(f"pose source must be auto|tf|topic|identity, got {source!r}")
        if source == "tf" and tf_lookup is None:
            raise ValueError("pose source 'tf' needs tf2_ros, which is not importable here")
        self.fixed_frame, self.source, self.sensor_frame = fixed_frame, source, sensor_frame
        self.buffer = buffer if buffer is not None else PoseBuffer()
        self.tf_lookup = tf_lookup

    def active_source(self) -> str:
        if self.source != "auto":
            return self.source
        return "tf+topic" if self.tf_lookup is not None else "topic"

    def resolve(self, frame_id: str, stamp: float) -> PoseResult:
        frame = frame_id.lstrip("/")
        if frame == self.fixed_frame.lstrip("/"):
            return PoseResult(np.eye(4))
        source = self.active_source()
        if source == "identity":
            return PoseResult(
                None,
                "unknown_frame",
                f"frame {frame_id!r} is not the fixed frame {self.fixed_frame!r} "
                "and no pose source (tf or pose/odom topic) is available",
            )
        if source in ("tf", "tf+topic"):
            assert self.tf_lookup is not None
            try:
                return PoseResult(np.asarray(self.tf_lookup(frame, stamp), dtype=np.float64))
            except ExtrapolationError as exc:
                reason = f"no transform {self.fixed_frame} <- {frame} at {stamp:.3f}: {exc}"
                return PoseResult(None, "no_pose", reason, pending=exc.future)
            except FrameNotFoundError as exc:
                if source == "tf":
                    reason = f"no transform {self.fixed_frame} <- {frame}: {exc}"
                    return PoseResult(None, "unknown_frame", reason)
            except LookupError as exc:
                return PoseResult(None, "unknown_frame", f"no transform {self.fixed_frame} <- {frame}: {exc}")
        if self.sensor_frame and frame != self.sensor_frame.lstrip("/"):
            return PoseResult(
                None,
                "unknown_frame",
                f"frame {frame_id!r} is neither the fixed frame nor sensor_frame {self.sensor_frame!r}",
            )
        pose = self.buffer.lookup(stamp)
        if pose is None:
            reason = f"no pose within {self.buffer.tolerance} s of stamp {stamp:.3f}"
            return PoseResult(None, "no_pose", reason, pending=True)
        return PoseResult(pose)


def tf2_available() -> bool:
    """True when tf2_ros imports (a full ROS 2 install)."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def make_tf_lookup(node: Any, fixed_frame: str, timeout: float = 0.05) -> TransformLookup | None:
    """A tf2_ros-backed lookup bound to ``node`` (keeps a Buffer + TransformListener alive),
    or None when tf2_ros is not importable. Lookup failures raise ``LookupError``."""
    try:
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time
    except ImportError:
        return None
    tf_buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(tf_buffer, node, spin_thread=True)

    def lookup(frame: str, stamp: float) -> np.ndarray:
        _ = listener  # keep the listener referenced as long as the lookup lives
        when = Time(nanoseconds=int(round(stamp * 1e9)))
        try:
            msg = tf_buffer.lookup_transform(fixed_frame, frame, when, timeout=Duration(seconds=timeout))
        except tf2_ros.LookupException as exc:
            raise FrameNotFoundError(str(exc)) from exc
        except tf2_ros.ExtrapolationException as exc:
            raise ExtrapolationError(str(exc), future="future" in str(exc)) from exc
        except tf2_ros.ConnectivityException as exc:
            raise ConnectivityError(str(exc)) from exc
        return msg_transform_to_matrix(msg.transform)

    return lookup


class PoseWaitQueue:
    """Data that arrived before its pose (pose and data come on different topics, in any order).

    Holds at most ``maxlen`` items (the oldest is dropped and returned by :meth:`push`).
    :meth:`release` hands back the items whose pose now resolves and, separately, those that can
    no longer get one (a pose newer than ``stamp + tolerance`` arrived but none matched).
    """

    def __init__(self, maxlen: int = 5, tolerance: float = 0.05) -> None:
        if maxlen < 0:
            raise ValueError(f"maxlen must be >= 0, got {maxlen}")
        self.maxlen, self.tolerance = int(maxlen), float(tolerance)
        self._items: list[tuple[str, float, Any]] = []

    def __len__(self) -> int:
        return len(self._items)

    def may_still_come(self, stamp: float, latest_pose_stamp: float | None) -> bool:
        """True while no pose later than ``stamp + tolerance`` has been seen."""
        return latest_pose_stamp is None or latest_pose_stamp <= stamp + self.tolerance

    def push(self, frame_id: str, stamp: float, item: Any) -> Any | None:
        """Queue ``item``; returns the item dropped to stay within ``maxlen`` (or ``item`` itself
        when ``maxlen`` is 0), else None."""
        if self.maxlen == 0:
            return item
        self._items.append((frame_id, float(stamp), item))
        return self._items.pop(0)[2] if len(self._items) > self.maxlen else None

    def release(
        self, resolve: Callable[[str, float], np.ndarray | None], latest_pose_stamp: float | None
    ) -> tuple[list[tuple[Any, np.ndarray]], list[Any]]:
        """-> (ready: [(item, pose)], expired: [item]); both leave the queue."""
        ready, expired, keep = [], [], []
        for frame_id, stamp, item in self._items:
            pose = resolve(frame_id, stamp)
            if pose is not None:
                ready.append((item, pose))
            elif self.may_still_come(stamp, latest_pose_stamp):
                keep.append((frame_id, stamp, item))
            else:
                expired.append(item)
        self._items = keep
        return ready, expired

    def clear(self) -> None:
        self._items.clear()
