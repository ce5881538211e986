"""A transform tree over time, as in a ``/tf`` + ``/tf_static`` stream (pure numpy, no ROS).

Used by the node when tf2_ros is not installed (it feeds the buffer from ``tf2_msgs/TFMessage``
itself) and by the replay tool for bags. Semantics follow tf2:

- every frame has at most one parent; an edge parent -> child is either static (one transform for
  all time) or dynamic (a bounded, time-sorted history: at most ``max_samples`` per edge, none older
  than ``cache_time`` seconds before the edge's newest sample);
- ``lookup(target, source, stamp)`` -> ``T_target_source`` (4, 4) float64, composed along the chain
  through the frames' common ancestor; each dynamic edge is interpolated at ``stamp`` (translation
  linearly, rotation by slerp); ``stamp=None`` means the latest time every dynamic edge of the chain
  has data for (tf2's "time 0");
- a stamp before the oldest or after the newest sample of an edge is refused
  (:class:`ExtrapolationError`, with the edge and how far off); unknown frames raise
  :class:`FrameNotFoundError`, frames in different trees :class:`ConnectivityError`. All three are
  ``LookupError`` subclasses whose message is a complete sentence.

A transform ``T_parent_child`` maps points in the child frame to the parent frame.
Stamps are seconds (float).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniseg3d_ros.mapping.frames import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    matrix_to_quaternion,
    quaternion_to_matrix,
)

__all__ = [
    "ConnectivityError",
    "ExtrapolationError",
    "FrameNotFoundError",
    "TransformBuffer",
    "slerp",
]


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w) (4,), shortest arc, t in [0, 1]."""
    q0 = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: normalised lerp is exact to float precision
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    s = np.sin(theta)
    return (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / s


@dataclass
class _Edge:
    """Transforms parent -> child: one static sample, or a time-sorted bounded history."""

    parent: str
    static: bool
    stamps: list[float] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)  # quaternions (x, y, z, w)

    def insert(
        self, stamp: float, translation: np.ndarray, rotation: np.ndarray, max_samples: int, cache_time: float
    ) -> None:
        if self.static:
            self.stamps, self.translations, self.rotations = [stamp], [translation], [rotation]
            return
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:  # same stamp again: replace
            self.translations[i], self.rotations[i] = translation, rotation
        else:
            self.stamps.insert(i, stamp)
            self.translations.insert(i, translation)
            self.rotations.insert(i, rotation)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_time)
        cut = max(cut, len(self.stamps) - max_samples)
        if cut > 0:
            del self.stamps[:cut], self.translations[:cut], self.rotations[:cut]

    def at(self, stamp: float, child: str) -> np.ndarray:
        """T_parent_child (4, 4) at ``stamp``; ExtrapolationError outside the history."""
        if self.static:
            return _matrix(self.translations[0], self.rotations[0])
        first, last = self.stamps[0], self.stamps[-1]
        eps = 1e-9
        if stamp > last + eps:
            raise ExtrapolationError(
                f"extrapolation into the future: transform {self.parent} -> {child} requested at "
                f"{stamp:.6f} but its newest sample is {last:.6f} ({stamp - last:.3f} s older)",
                future=True,
            )
        if stamp < first - eps:
            raise ExtrapolationError(
                f"extrapolation into the past: transform {self.parent} -> {child} requested at "
                f"{stamp:.6f} but its oldest kept sample is {first:.6f} ({first - stamp:.3f} s newer)",
                future=False,
            )
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and abs(self.stamps[i] - stamp) <= eps:
            return _matrix(self.translations[i], self.rotations[i])
        if i == 0:  # within eps before the first sample
            return _matrix(self.translations[0], self.rotations[0])
        if i == len(self.stamps):  # within eps after the last one
            return _matrix(self.translations[-1], self.rotations[-1])
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        w = (stamp - t0) / (t1 - t0)
        trans = (1.0 - w) * self.translations[i - 1] + w * self.translations[i]
        return _matrix(trans, slerp(self.rotations[i - 1], self.rotations[i], w))


def _matrix(translation: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(rotation)
    out[:3, 3] = translation
    return out


class TransformBuffer:
    """Static + dynamic transforms between named frames; thread-safe.

    ``cache_time`` [s] and ``max_samples`` bound each dynamic edge's history (tf2 keeps 10 s).
    """

    def __init__(self, cache_time: float = 10.0, max_samples: int = 1000) -> None:
        if cache_time <= 0:
            raise ValueError(f"cache_time must be > 0, got {cache_time}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.cache_time, self.max_samples = float(cache_time), int(max_samples)
        self._edges: dict[str, _Edge] = {}  # child -> edge from its parent
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of edges (child frames with a parent)."""
        return len(self._edges)

    def set_transform(
        self, parent: str, child: str, transform: Any, stamp: float, static: bool = False
    ) -> None:
        """Add ``transform`` (4, 4) T_parent_child at ``stamp`` [s]. A child that gets a new parent, or
        switches between static and dynamic, starts a fresh history (tf2 keeps one parent per frame)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child:
            raise ValueError(f"transform needs non-empty frame names, got {parent!r} -> {child!r}")
        if parent == child:
            raise ValueError(f"transform from frame {child!r} to itself")
        m = np.asarray(transform, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"transform {parent} -> {child} must be a finite (4, 4) matrix")
        translation, rotation = m[:3, 3].copy(), matrix_to_quaternion(m[:3, :3])
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent, static)
            edge.insert(float(stamp), translation, rotation, self.max_samples, self.cache_time)

    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def newest_stamp(self) -> float | None:
        """The newest stamp of any dynamic edge (None when there is none)."""
        with self._lock:
            stamps = [e.stamps[-1] for e in self._edges.values() if not e.static and e.stamps]
        return max(stamps) if stamps else None

    def _path_to_root(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]; a loop raises LookupError."""
        path, seen = [frame], {frame}
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame in seen:
                raise LookupError(f"transform tree has a loop through frame {frame!r}")
            path.append(frame)
            seen.add(frame)
        return path

    def _chain(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from source up to (not including) the common ancestor, and the same from target."""
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for name, frame in (("source", source), ("target", target)):
            if frame not in known:
                raise FrameNotFoundError(
                    f"{name} frame {frame!r} does not exist in the transform tree "
                    f"(known: {sorted(known) if known else 'none yet'})"
                )
        up_s, up_t = self._path_to_root(source), self._path_to_root(target)
        if up_s[-1] != up_t[-1]:
            raise ConnectivityError(
                f"frames {target!r} and {source!r} are not connected: their trees have roots "
                f"{up_t[-1]!r} and {up_s[-1]!r}"
            )
        on_t = set(up_t)
        i = next(k for k, f in enumerate(up_s) if f in on_t)
        ancestor = up_s[i]
        return up_s[:i], up_t[: up_t.index(ancestor)]

    def latest_common_time(self, target: str, source: str) -> float:
        """The newest stamp all dynamic edges between the frames have (0.0 when all are static)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            if target == source:
                return 0.0
            from_s, from_t = self._chain(target, source)
            newest = [self._edges[f].stamps[-1] for f in from_s + from_t if not self._edges[f].static]
        return min(newest) if newest else 0.0

    def lookup(self, target: str, source: str, stamp: float | None = None) -> np.ndarray:
        """T_target_source (4, 4) float64 at ``stamp`` [s] (None: the latest common time).
        Raises FrameNotFoundError, ConnectivityError or ExtrapolationError (all LookupError)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        if stamp is None:
            stamp = self.latest_common_time(target, source)
        with self._lock:
            from_s, from_t = self._chain(target, source)
            T_a_s = np.eye(4)  # ancestor <- source
            for frame in from_s:
                T_a_s = self._edges[frame].at(stamp, frame) @ T_a_s
            T_a_t = np.eye(4)  # ancestor <- target
            for frame in from_t:
                T_a_t = self._edges[frame].at(stamp, frame) @ T_a_t
        return np.linalg.inv(T_a_t) @ T_a_s

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()
