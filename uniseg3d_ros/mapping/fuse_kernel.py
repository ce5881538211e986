"""Compiled fusion of one point batch into the voxel map (numba), with a numpy twin.

Two steps, each with numba kernels and a numpy twin of identical results (``SceneMap(backend=...)``
picks one; the tests compare them bit for bit):

1. :func:`group_batch_numba`: transform, filter and group a batch by voxel in three passes over the
   points: (a) per point ``w = R p + t`` (float32, evaluated as ``(R0 x + R1 y) + R2 z + t``, no
   fused multiply-add), NaN / range / crop / extent filters, ``floor(w / voxel)`` -> packed key;
   (b) the group of each point through a batch-local open-addressing table (sized from the previous
   batch, grown on demand); (c) float64 sums per group in point order, equal to ``np.bincount``'s.
2. :func:`lookup_numba` + :func:`merge_batch_numba`: look the batch's voxels up in the map's
   :class:`VoxelHashTable` (new voxels get rows in ascending key order, as the numpy path gives
   them) and update the running means, counts and stamps in place.

Colour rules (both backends): uint8 -> summed as integers, divided by 255 after summing; float
-> NaN becomes 0.5, values are clipped to [0, 1] in their own dtype, then summed as float64;
``None`` -> 0.5.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from uniseg3d_ros.mapping.voxel_hash import _GOLDEN, COORD_MAX, COORD_MIN, KEY_BITS, KEY_OFFSET

__all__ = ["HAVE_NUMBA", "group_batch_numba", "lookup_numba", "merge_batch_numba"]

try:  # numba is a dependency; the numpy twin keeps the map working where it does not import
    if os.environ.get("UNISEG3D_NO_NUMBA") == "1":
        raise ImportError("UNISEG3D_NO_NUMBA=1")
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised with UNISEG3D_NO_NUMBA=1
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(fn):
            return fn

        return wrap


_EMPTY = -1
_GOLD = int(_GOLDEN)
_SHIFT2 = 2 * KEY_BITS
_OFF = float(KEY_OFFSET)
#: per-thread scratch of the group step (point keys, group ids), grown to the largest batch seen
_SCRATCH = threading.local()


@njit(cache=True, nogil=True)
def _slot(key, shift):
    return np.int64((np.uint64(key) * np.uint64(_GOLD)) >> np.uint64(shift))


@njit(cache=True, nogil=True)
def _rehash(tkeys, tgroup, new_cap):
    bits = 0
    while (1 << bits) < new_cap:
        bits += 1
    shift = 64 - bits
    mask = new_cap - 1
    nkeys = np.full(new_cap, _EMPTY, np.int64)
    ngroup = np.empty(new_cap, np.int32)
    for s in range(tkeys.shape[0]):
        k = tkeys[s]
        if k != _EMPTY:
            j = _slot(k, shift)
            while nkeys[j] != _EMPTY:
                j = (j + 1) & mask
            nkeys[j] = k
            ngroup[j] = tgroup[s]
    return nkeys, ngroup, shift


@njit(cache=True, nogil=True, inline="always")
def _world(points, i, R, t):
    """Point i in the fixed frame, float32, ``(R0 x + R1 y) + R2 z + t`` (no fused multiply-add)."""
    x = np.float32(points[i, 0])
    y = np.float32(points[i, 1])
    z = np.float32(points[i, 2])
    wx = ((R[0, 0] * x + R[0, 1] * y) + R[0, 2] * z) + t[0]
    wy = ((R[1, 0] * x + R[1, 1] * y) + R[1, 2] * z) + t[1]
    wz = ((R[2, 0] * x + R[2, 1] * y) + R[2, 2] * z) + t[2]
    return x, y, z, wx, wy, wz


@njit(cache=True, nogil=True)
def _key_pass(points, R, t, inv_voxel, range2, use_range, lo, hi, use_crop, out):
    """Phase 1, branch-light: out[i] = packed voxel key of point i, -1 if filtered (NaN, range,
    crop), -2 if beyond the key extent. Returns the number of -2."""
    fmin, fmax = np.float32(COORD_MIN), np.float32(COORD_MAX + 1)
    dropped = 0
    for i in range(points.shape[0]):
        x, y, z, wx, wy, wz = _world(points, i, R, t)
        if (x - x) != 0 or (y - y) != 0 or (z - z) != 0:  # NaN or inf (cheaper than isfinite)
            out[i] = -1
            continue
        if use_range and not ((x * x + y * y) + z * z <= range2):
            out[i] = -1
            continue
        if use_crop and not (lo[0] <= wx <= hi[0] and lo[1] <= wy <= hi[1] and lo[2] <= wz <= hi[2]):
            out[i] = -1
            continue
        vx = wx * inv_voxel
        vy = wy * inv_voxel
        vz = wz * inv_voxel
        # floor(v) in [COORD_MIN, COORD_MAX]  <=>  COORD_MIN <= v < COORD_MAX + 1 (NaN fails too)
        if not (fmin <= vx < fmax and fmin <= vy < fmax and fmin <= vz < fmax):
            out[i] = -2
            dropped += 1
            continue
        # floor as truncation of a non-negative float64 (exact: v + 2**20 >= 0 and a float32 fits
        # a float64 with room to spare); libm's floorf call costs more than the rest of the loop
        ix = np.int64(np.float64(vx) + _OFF)
        iy = np.int64(np.float64(vy) + _OFF)
        iz = np.int64(np.float64(vz) + _OFF)
        out[i] = (ix << _SHIFT2) | (iy << KEY_BITS) | iz  # ix = floor(vx) + KEY_OFFSET
    return dropped


@njit(cache=True, nogil=True)
def _table_pass(pkeys, start, tkeys, tgroup, shift, keys, group, state):
    """Phase 2: group id of every point (``group[i]``, -1 if filtered) through the batch table.
    Every point probes (independent probes overlap in the CPU; a "same voxel as the previous
    point" shortcut mispredicts on ~40 % of a frame's points and was slower). Stops when the
    table is half full and returns the index to resume from (n when done); state[0] = voxels."""
    n = pkeys.shape[0]
    rows = keys.shape[0]
    mask = tkeys.shape[0] - 1
    u = state[0]
    for i in range(start, n):
        key = pkeys[i]
        if key < 0:
            group[i] = -1
            continue
        j = _slot(key, shift)
        while True:
            k = tkeys[j]
            if k == key:
                g = tgroup[j]
                break
            if k == _EMPTY:
                if u >= rows:  # table half full: hand back, the caller grows it
                    state[0] = u
                    return i
                tkeys[j] = key
                tgroup[j] = u
                keys[u] = key
                g = u
                u += 1
                break
            j = (j + 1) & mask
        group[i] = g
    state[0] = u
    return n


@njit(cache=True, nogil=True)
def _sum_pass(points, colors, has_colors, raw, R, t, group, counts, psum, csum):
    """Phase 3: float64 sums per group, added in point order (as ``np.bincount``: bit-identical)."""
    for i in range(points.shape[0]):
        g = group[i]
        if g < 0:
            continue
        _, _, _, wx, wy, wz = _world(points, i, R, t)
        counts[g] += 1
        psum[g, 0] += np.float64(wx)
        psum[g, 1] += np.float64(wy)
        psum[g, 2] += np.float64(wz)
        if has_colors:
            csum[g, 0] += _color(colors[i, 0], raw)
            csum[g, 1] += _color(colors[i, 1], raw)
            csum[g, 2] += _color(colors[i, 2], raw)


@njit(cache=True, nogil=True, inline="always")
def _color(c, raw):
    """One colour value as summed: as is (uint8, or clean floats), else NaN -> 0.5, clipped to [0, 1]
    in its own dtype."""
    if not raw:
        if c != c:
            c = 0.5
        elif c < 0:
            c = 0.0
        elif c > 1:
            c = 1.0
    return np.float64(c)


@njit(cache=True, nogil=True)
def _group_kernel(points, colors, has_colors, raw, R, t, inv_voxel, range2, use_range, lo, hi,
                  use_crop, cap_hint, scratch_keys, scratch_group):
    n = points.shape[0]
    pkeys = scratch_keys[:n]  # reused across batches: no fresh pages to fault in per frame
    dropped = _key_pass(points, R, t, inv_voxel, range2, use_range, lo, hi, use_crop, pkeys)
    cap = 1024
    while cap < 2 * cap_hint:
        cap *= 2
    bits = 0
    while (1 << bits) < cap:
        bits += 1
    shift = 64 - bits
    tkeys = np.full(cap, _EMPTY, np.int64)
    tgroup = np.empty(cap, np.int32)
    keys = np.empty(cap // 2, np.int64)
    group = scratch_group[:n]
    state = np.zeros(1, np.int64)
    i = 0
    while True:
        i = _table_pass(pkeys, i, tkeys, tgroup, shift, keys, group, state)
        if i >= n:
            break
        cap *= 2
        tkeys, tgroup, shift = _rehash(tkeys, tgroup, cap)
        keys = _grow1(keys, cap // 2)
    u = state[0]
    counts = np.zeros(u, np.int64)
    psum = np.zeros((u, 3), np.float64)
    csum = np.zeros((u, 3), np.float64)
    _sum_pass(points, colors, has_colors, raw, R, t, group, counts, psum, csum)
    return keys[:u], counts, psum, csum, dropped


@njit(cache=True, nogil=True)
def _grow1(a, rows):
    out = np.zeros(rows, a.dtype)
    out[: a.shape[0]] = a
    return out


def group_batch_numba(points, colors, R, t, inv_voxel, max_range, crop_min, crop_max, cap_hint):
    """Numba step 1. points (N, 3) float (sensor frame); colors (N, 3) uint8 / float or None;
    R (3, 3), t (3,) the pose; returns keys (U,) int64 (first-seen order), counts (U,) int64,
    psum (U, 3) float64 fixed-frame point sums, csum (U, 3) float64 colour sums (already / 255
    for uint8), dropped (points beyond the key extent)."""
    pts = np.ascontiguousarray(points)
    if not (pts.dtype == np.float32 or pts.dtype == np.float64):
        pts = pts.astype(np.float64)
    has_colors = colors is not None
    cols = np.ascontiguousarray(colors) if has_colors else np.zeros((1, 3), np.float32)
    is_uint8 = cols.dtype == np.uint8
    if not is_uint8 and cols.dtype not in (np.float32, np.float64):
        cols = cols.astype(np.float64)
    use_crop = crop_min is not None
    lo = np.asarray(crop_min if use_crop else np.zeros(3), np.float32)
    hi = np.asarray(crop_max if use_crop else np.zeros(3), np.float32)
    use_range = max_range is not None
    range2 = np.float32(max_range) ** 2 if use_range else np.float32(0)
    raw = is_uint8  # float colours always go through the (well-predicted) NaN / clip branches
    n = pts.shape[0]
    scratch = getattr(_SCRATCH, "arrays", None)
    if scratch is None or scratch[0].shape[0] < n:
        scratch = _SCRATCH.arrays = (np.empty(n, np.int64), np.empty(n, np.int32))
    keys, counts, psum, csum, dropped = _group_kernel(
        pts, cols, has_colors, raw, np.asarray(R, np.float32), np.asarray(t, np.float32),
        np.float32(inv_voxel), np.float32(range2), use_range, lo, hi, use_crop, int(cap_hint), *scratch,
    )
    if not has_colors:
        csum = counts[:, None] * 0.5 * np.ones((1, 3))
    elif is_uint8:
        csum = csum * (1.0 / 255.0)
    return keys, counts, psum, csum, int(dropped)


@njit(cache=True, nogil=True)
def _lookup_kernel(tkeys, tvals, shift, keys):
    mask = tkeys.shape[0] - 1
    out = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        key = keys[i]
        j = _slot(key, shift)
        while True:
            k = tkeys[j]
            if k == key:
                out[i] = tvals[j]
                break
            if k == _EMPTY:
                out[i] = -1
                break
            j = (j + 1) & mask
    return out


@njit(cache=True, nogil=True)
def _update_kernel(points, colors, counts_arr, last_seen, ids, counts, psum, csum, stamp, max_weight):
    imax = np.float64(2147483647)
    for i in range(ids.shape[0]):
        r = ids[i]
        old = np.float64(counts_arr[r])
        w = old if max_weight < 0 else min(old, np.float64(max_weight))
        tot = w + np.float64(counts[i])
        for a in range(3):
            points[r, a] = np.float32((np.float64(points[r, a]) * w + psum[i, a]) / tot)
            colors[r, a] = np.float32((np.float64(colors[r, a]) * w + csum[i, a]) / tot)
        counts_arr[r] = np.int32(min(old + np.float64(counts[i]), imax))
        last_seen[r] = stamp


def lookup_numba(table, keys: np.ndarray) -> np.ndarray:
    """(U,) int64 keys -> (U,) int64 row ids in ``table`` (a VoxelHashTable), -1 where absent."""
    if table.size == 0:
        return np.full(keys.shape[0], -1, np.int64)
    return _lookup_kernel(table._keys, table._vals, int(table._shift), np.ascontiguousarray(keys, np.int64))


def merge_batch_numba(scene_map, ids, counts, psum, csum, stamp: float) -> None:
    """Numba step 2 (lock held, rows reserved): running-mean update of rows ``ids``."""
    mw = -1 if scene_map.max_weight is None else int(scene_map.max_weight)
    _update_kernel(scene_map._points, scene_map._colors, scene_map._counts, scene_map._last_seen,
                   ids, counts, np.ascontiguousarray(psum), np.ascontiguousarray(csum), float(stamp), mw)
