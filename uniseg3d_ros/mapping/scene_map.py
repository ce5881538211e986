"""Voxel-hashed colored scene map fused from posed point batches (pure numpy, no ROS).

Each occupied voxel (edge ``voxel_size`` metres, fixed frame, e.g. ``map`` per REP 105) keeps:
the running mean position of the points that fell in it, the running mean color, the observation
count (points integrated) and the ``stamp`` of the last batch that touched it.

Concurrency: ``integrate`` does its per-batch work (transform, filtering, grouping) without the lock
and holds it only to merge the grouped batch (O(voxels in the batch), not O(map)). ``snapshot`` holds
the lock for O(1): it hands out read-only views of the voxel arrays and marks them shared; the next
change copies the arrays before writing (copy-on-write), so a snapshot never changes afterwards.

Capacity: at most ``max_voxels`` voxels. When a merge exceeds it, the map evicts down to
``max_voxels * (1 - evict_fraction)`` voxels: least recently seen first (smallest ``last_seen``), ties
broken by fewest observations, then by oldest insertion.

``version`` increases on every change (integrate that kept >= 1 point, clear, load). Versions come
from one process-wide counter, so two maps (e.g. before and after ``load``) never share a version.
"""

from __future__ import annotations

import itertools
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from uniseg3d_ros.mapping.cloud_types import check_unit_colors
from uniseg3d_ros.mapping.fuse_kernel import HAVE_NUMBA, group_batch_numba, lookup_numba, merge_batch_numba
from uniseg3d_ros.mapping.voxel_hash import COORD_MAX, COORD_MIN, VoxelHashTable, group_voxels

__all__ = ["MapSnapshot", "SceneMap", "transform_points"]

_VERSIONS = itertools.count(1)
_VERSION_LOCK = threading.Lock()
_DEFAULT_GREY = 0.5


def _next_version() -> int:
    with _VERSION_LOCK:
        return next(_VERSIONS)


def check_pose(pose: np.ndarray | None, name: str = "pose") -> np.ndarray:
    """Validate a (4, 4) rigid transform (``None`` -> identity); raises ``ValueError`` naming ``name``."""
    if pose is None:
        return np.eye(4)
    T = np.asarray(pose, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} contains non-finite values")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
        raise ValueError(f"{name} rotation block is not a proper rotation (orthonormal, det +1)")
    return T


def transform_points(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(N, 3) points in the sensor frame -> (N, 3) float32 in the fixed frame, ``p' = R p + t``,
    with exactly the arithmetic of ``SceneMap.integrate`` (float32, ``(R0 x + R1 y) + R2 z + t``)."""
    P = np.ascontiguousarray(np.asarray(points, dtype=np.float32).T)
    return np.ascontiguousarray(_transform_rows(P, np.asarray(pose)).T)


def _transform_rows(P: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(3, N) float32 rows -> (3, N) float32 ``R p + t``, elementwise in a fixed order (no BLAS, no
    fused multiply-add), so the numpy path and the compiled kernel agree bit for bit."""
    R, t = T[:3, :3].astype(np.float32), T[:3, 3].astype(np.float32)
    W = np.empty_like(P)
    with np.errstate(invalid="ignore", over="ignore"):
        for a in range(3):
            np.multiply(R[a, 0], P[0], out=W[a])
            W[a] += R[a, 1] * P[1]
            W[a] += R[a, 2] * P[2]
            W[a] += t[a]
    return W


@dataclass
class MapSnapshot:
    """An immutable view of the map at one ``version`` (arrays are read-only, row i = voxel i).

    points: (K, 3) float32 mean point position per voxel, metres, fixed frame.
    colors: (K, 3) float32 mean RGB in [0, 1].
    counts: (K,) int32 number of integrated points per voxel.
    last_seen: (K,) float64 ``stamp`` of the last batch that hit the voxel.
    version: the map version this snapshot shows.
    voxel_size: voxel edge in metres.
    keys: (K,) int64 packed voxel keys (see ``voxel_hash.unpack_keys``).
    """

    points: np.ndarray
    colors: np.ndarray
    counts: np.ndarray
    last_seen: np.ndarray
    version: int
    voxel_size: float = 0.02
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.points.shape[0])


class SceneMap:
    """Fixed-frame voxel map; see the module docstring for semantics.

    Args:
        voxel_size: voxel edge in metres (> 0).
        max_voxels: hard cap on the number of voxels (>= 1).
        crop_min, crop_max: optional (3,) corners of an axis-aligned box in the fixed frame; points
            outside are ignored (both or neither).
        max_range: optional maximum distance (metres) from the sensor origin; farther points ignored.
        evict_fraction: extra fraction of ``max_voxels`` freed by one eviction (amortizes it).
        max_weight: optional cap on the weight of the old mean in the running means, so colors and
            positions keep adapting (``None``: plain running mean). Counts still count every point.
        backend: ``"auto"`` (the compiled kernels of :mod:`fuse_kernel` when numba imports, else
            numpy), ``"numba"`` or ``"numpy"``; both give bit-identical maps.
    """

    _ARRAYS = ("_keys", "_points", "_colors", "_counts", "_last_seen")

    def __init__(
        self,
        voxel_size: float = 0.02,
        max_voxels: int = 2_000_000,
        crop_min: np.ndarray | None = None,
        crop_max: np.ndarray | None = None,
        max_range: float | None = None,
        *,
        evict_fraction: float = 0.05,
        max_weight: int | None = None,
        backend: str = "auto",
    ) -> None:
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be finite and > 0, got {voxel_size}")
        if int(max_voxels) != max_voxels or max_voxels < 1:
            raise ValueError(f"max_voxels must be a positive integer, got {max_voxels}")
        if (crop_min is None) != (crop_max is None):
            raise ValueError("crop_min and crop_max must be given together")
        if crop_min is not None:
            crop_min = np.asarray(crop_min, dtype=np.float64).reshape(-1)
            crop_max = np.asarray(crop_max, dtype=np.float64).reshape(-1)
            if crop_min.shape != (3,) or crop_max.shape != (3,):
                raise ValueError(
                    f"crop_min/crop_max must have 3 elements, got {crop_min.shape}, {crop_max.shape}"
                )
            if not np.all(crop_min < crop_max):
                raise ValueError(f"crop_min {crop_min.tolist()} must be < crop_max {crop_max.tolist()}")
        if max_range is not None and not (max_range > 0):
            raise ValueError(f"max_range must be > 0 or None, got {max_range}")
        if not 0.0 <= evict_fraction < 1.0:
            raise ValueError(f"evict_fraction must be in [0, 1), got {evict_fraction}")
        if max_weight is not None and max_weight < 1:
            raise ValueError(f"max_weight must be >= 1 or None, got {max_weight}")
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
        if backend == "numba" and not HAVE_NUMBA:
            raise ValueError("backend 'numba' requested but numba does not import")
        if backend == "auto":
            backend = "numba" if HAVE_NUMBA else "numpy"
        self.backend = backend
        self._batch_hint = 0  # voxels in the last batch: sizes the kernel's batch table
        self.voxel_size = float(voxel_size)
        self.max_voxels = int(max_voxels)
        self.crop_min, self.crop_max = crop_min, crop_max
        self.max_range = None if max_range is None else float(max_range)
        self.evict_fraction = float(evict_fraction)
        self.max_weight = max_weight
        self.evicted_total = 0
        self._lock = threading.Lock()
        self._reset(capacity=1024)
        self._version = _next_version()

    # ------------------------------------------------------------------ state helpers (lock held)

    def _reset(self, capacity: int) -> None:
        self._n = 0
        self._keys = np.zeros(capacity, np.int64)
        self._points = np.zeros((capacity, 3), np.float32)
        self._colors = np.zeros((capacity, 3), np.float32)
        self._counts = np.zeros(capacity, np.int32)
        self._last_seen = np.zeros(capacity, np.float64)
        self._table = VoxelHashTable(capacity * 2)
        self._shared = False

    def _reserve(self, n_total: int) -> None:
        """Make room for ``n_total`` voxels; copies when growing or when a snapshot shares the arrays."""
        cap = self._keys.shape[0]
        if n_total <= cap and not self._shared:
            return
        new_cap = cap if n_total <= cap else max(n_total, int(cap * 1.5) + 1)
        n = self._n
        for name in self._ARRAYS:
            old = getattr(self, name)
            new = np.zeros((new_cap,) + old.shape[1:], old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
        self._shared = False

    @property
    def version(self) -> int:
        return self._version

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes held by the voxel arrays (allocated capacity) and the hash table."""
        arrays = sum(getattr(self, name).nbytes for name in self._ARRAYS)
        return int(arrays + self._table.nbytes)

    # ------------------------------------------------------------------ integration

    @staticmethod
    def _validate(points: np.ndarray, colors: np.ndarray | None, pose: np.ndarray | None):
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got shape {p.shape}")
        if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
            raise ValueError(f"points must be numeric, got dtype {p.dtype}")
        if colors is not None:
            c = np.asarray(colors)
            if c.shape != p.shape:
                raise ValueError(f"colors must have shape {p.shape} like points, got {c.shape}")
            check_unit_colors(c)
        return p, check_pose(pose)

    def _group(self, points: np.ndarray, colors: np.ndarray | None, pose: np.ndarray | None):
        """Validate, transform, filter and group one batch (no lock): (keys, counts, psum, csum)
        or None. keys are unique (ascending with numpy, first-seen order with numba)."""
        p, T = self._validate(points, colors, pose)
        if p.shape[0] == 0:
            return None
        if self.backend == "numba":
            keys, counts, psum, csum, dropped = group_batch_numba(
                p, colors, T[:3, :3], T[:3, 3], 1.0 / self.voxel_size, self.max_range,
                self.crop_min, self.crop_max, self._batch_hint,
            )
            if dropped:
                self._warn_extent(dropped)
            self._batch_hint = len(keys)
            return (keys, counts, psum, csum) if len(keys) else None
        return self._prepare(p, colors, T)

    def _warn_extent(self, n: int) -> None:
        warnings.warn(
            f"{n} points lie beyond the map extent (+-{COORD_MAX * self.voxel_size:.0f} m) and were dropped",
            UserWarning,
            stacklevel=4,
        )

    def _prepare(self, p: np.ndarray, colors: np.ndarray | None, T: np.ndarray):
        """The numpy twin of ``fuse_kernel.group_batch_numba`` (same arithmetic, same results)."""
        # (3, N) layout: per-axis rows keep every reduction along the long, contiguous axis.
        P = np.ascontiguousarray(p.T, dtype=np.float32)
        keep = np.isfinite(P).all(axis=0)
        if self.max_range is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                keep &= (P[0] * P[0] + P[1] * P[1]) + P[2] * P[2] <= np.float32(self.max_range) ** 2
        W = _transform_rows(P, T)
        if self.crop_min is not None:
            lo, hi = self.crop_min.astype(np.float32)[:, None], self.crop_max.astype(np.float32)[:, None]
            with np.errstate(invalid="ignore"):
                keep &= ((W >= lo) & (W <= hi)).all(axis=0)
        idx = None if keep.all() else np.flatnonzero(keep)
        if idx is not None:
            if idx.size == 0:
                return None
            W = W[:, idx]
        with np.errstate(invalid="ignore", over="ignore"):
            F = np.floor(W * np.float32(1.0 / self.voxel_size))
            inside = ((F >= COORD_MIN) & (F <= COORD_MAX)).all(axis=0)
        if not inside.all():
            self._warn_extent(int(inside.size - np.count_nonzero(inside)))
            sel = np.flatnonzero(inside)
            if sel.size == 0:
                return None
            W, F = W[:, sel], F[:, sel]
            idx = sel if idx is None else idx[sel]
        keys, inverse, counts = group_voxels(F)
        u = keys.shape[0]
        psum = np.empty((u, 3), np.float64)
        csum = np.empty((u, 3), np.float64)
        for a in range(3):
            psum[:, a] = np.bincount(inverse, weights=W[a], minlength=u)
        if colors is None:
            csum[:] = counts[:, None] * _DEFAULT_GREY
        else:
            c = np.asarray(colors)
            c = np.ascontiguousarray((c[idx] if idx is not None else c).T)  # (3, N) rows
            if c.dtype == np.uint8:
                scale = 1.0 / 255.0
            else:
                scale = 1.0
                if not (np.isfinite(c).all() and c.min() >= 0.0 and c.max() <= 1.0):
                    c = np.clip(np.where(np.isnan(c), c.dtype.type(_DEFAULT_GREY), c), 0, 1)
            for a in range(3):
                csum[:, a] = np.bincount(inverse, weights=c[a], minlength=u) * scale
        return keys, counts, psum, csum

    @staticmethod
    def warm_up() -> float:
        """Compile the fusion kernels (numba) for what the node passes, float32 points with float32
        colours or none, on throwaway maps (eviction included), so that the first sensor frame does
        not wait for the compiler: several seconds on a cold cache, as on the first run after an
        install or where the package folder is read-only. Returns the seconds it took."""
        t0 = time.perf_counter()
        points = np.random.default_rng(0).uniform(0.0, 1.0, (64, 3)).astype(np.float32)
        for colors in (points.copy(), None):
            scratch = SceneMap(voxel_size=0.1, max_voxels=32)  # fewer voxels than the cloud fills: evicts
            for stamp in (0.0, 1.0):
                scratch.integrate(points, colors, np.eye(4), stamp)
            scratch.snapshot()
        return time.perf_counter() - t0

    def integrate(
        self,
        points: np.ndarray,
        colors: np.ndarray | None,
        pose: np.ndarray | None = None,
        stamp: float = 0.0,
    ) -> int:
        """Fuse one batch.

        Args:
            points: (N, 3) float, metres, sensor frame (e.g. camera optical frame); NaN rows skipped.
            colors: (N, 3) float in [0, 1] (NaN -> grey) or uint8, or ``None`` (mid grey); other ranges
                or dtypes raise ``ValueError``.
            pose: (4, 4) sensor -> fixed frame transform (``None``: identity, points already fixed).
            stamp: time of the batch (seconds), stored as ``last_seen``.
        Returns:
            the number of points fused (after finite / range / crop filtering).
        """
        if not np.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        prepared = self._group(points, colors, pose)
        if prepared is None:
            return 0
        keys, counts, psum, csum = prepared
        with self._lock:
            self._merge(keys, counts, psum, csum, float(stamp))
            self._version = _next_version()
        return int(counts.sum())

    def _merge(self, keys, counts, psum, csum, stamp: float) -> None:
        numba = self.backend == "numba"
        ids = lookup_numba(self._table, keys) if numba else self._table.lookup(keys)
        new = np.flatnonzero(ids < 0)
        n_new = int(new.size)
        n0 = self._n
        self._reserve(n0 + n_new)
        if n_new:
            new = new[np.argsort(keys[new], kind="stable")]  # new rows in ascending key order
            new_ids = np.arange(n0, n0 + n_new, dtype=np.int64)
            ids[new] = new_ids
            self._table.insert(keys[new], new_ids)
            self._keys[new_ids] = keys[new]
            self._counts[new_ids] = 0
            self._n = n0 + n_new
        if numba:
            merge_batch_numba(self, ids, counts, psum, csum, stamp)
            if self._n > self.max_voxels:
                self._evict()
            return
        old = self._counts[ids].astype(np.float64)
        w_old = old if self.max_weight is None else np.minimum(old, float(self.max_weight))
        tot = (w_old + counts)[:, None]
        self._points[ids] = (self._points[ids] * w_old[:, None] + psum) / tot
        self._colors[ids] = (self._colors[ids] * w_old[:, None] + csum) / tot
        self._counts[ids] = np.minimum(old + counts, np.iinfo(np.int32).max).astype(np.int32)
        self._last_seen[ids] = stamp
        if self._n > self.max_voxels:
            self._evict()

    def _evict(self) -> None:
        """Drop voxels (least recently seen, then fewest observations, then oldest) down to the target."""
        n = self._n
        target = min(self.max_voxels, max(0, int(self.max_voxels * (1.0 - self.evict_fraction))))
        n_evict = n - target
        last = self._last_seen[:n]
        # O(n) selection, no full sort: every voxel older than the threshold stamp goes; among those
        # seen exactly at the threshold, the fewest-observation ones go, then the oldest (lowest row).
        thr = np.partition(last, n_evict - 1)[n_evict - 1]
        keep = last > thr
        tie = np.flatnonzero(last == thr)
        need = n_evict - (n - int(np.count_nonzero(keep)) - tie.size)
        cnt = self._counts[tie]
        cthr = np.partition(cnt, need - 1)[need - 1]
        fewer = cnt < cthr
        at = np.flatnonzero(cnt == cthr)
        spare = at[need - int(np.count_nonzero(fewer)):]  # ties at the count threshold: newest rows stay
        keep[tie[cnt > cthr]] = True
        keep[tie[spare]] = True
        cap = self._keys.shape[0]
        for name in self._ARRAYS:
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[:target] = old[:n][keep]
            setattr(self, name, new)
        self._n = target
        self._shared = False
        self._table.rebuild(self._keys[:target], np.arange(target, dtype=np.int64))
        self.evicted_total += int(n_evict)

    # ------------------------------------------------------------------ reading / lifecycle

    def snapshot(self) -> MapSnapshot:
        """Read-only views of the current voxels; O(1) under the lock (copy-on-write afterwards)."""
        with self._lock:
            n = self._n
            views = [getattr(self, name)[:n] for name in self._ARRAYS]
            version = self._version
            self._shared = True
        for v in views:
            v.flags.writeable = False
        keys, points, colors, counts, last_seen = views
        return MapSnapshot(points=points, colors=colors, counts=counts, last_seen=last_seen,
                           version=version, voxel_size=self.voxel_size, keys=keys)

    def clear(self) -> None:
        """Remove every voxel (bumps ``version``); earlier snapshots stay valid."""
        with self._lock:
            self._reset(capacity=1024)
            self._version = _next_version()

    def _restore(self, keys, points, colors, counts, last_seen) -> None:
        """Replace the state with validated arrays (used by ``map_io.load_map``)."""
        n = keys.shape[0]
        if n > self.max_voxels:
            raise ValueError(f"map holds {n} voxels, more than max_voxels={self.max_voxels}")
        with self._lock:
            self._reset(capacity=max(1024, n))
            self._keys[:n], self._points[:n], self._colors[:n] = keys, points, colors
            self._counts[:n], self._last_seen[:n] = counts, last_seen
            self._n = n
            self._table.rebuild(keys, np.arange(n, dtype=np.int64))
            self._version = _next_version()
