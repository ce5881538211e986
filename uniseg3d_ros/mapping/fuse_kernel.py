"""Compiled fusion of one point batch into the voxel map: one pass over the points (numba).

Two steps, each with a numba kernel and a numpy twin of identical results (``SceneMap(backend=...)``
picks one; the tests compare them bit for bit):

1. :func:`group_batch`: transform, filter and group a batch by voxel in ONE pass over the points:
   per point ``w = R p + t`` (float32, evaluated as ``(R0 x + R1 y) + R2 z + t``, no fused
   multiply-add), NaN / range / crop / extent filters, ``floor(w / voxel)`` -> packed key, then
   a batch-local open-addressing table (sized from the previous batch, grown on demand) with a
   "same voxel as the previous point" shortcut that skips most probes on depth images (neighbouring
   pixels share voxels). Sums are float64 in point order, so they equal ``np.bincount``'s.
2. :func:`merge_batch`: look the batch's voxels up in the map's :class:`VoxelHashTable`, give new
   voxels rows in ascending key order (as the numpy path does), and update the running means,
   counts and stamps in place.

Colour rules (both backends): uint8 -> summed as integers, divided by 255 after summing; float
-> NaN becomes 0.5, values are clipped to [0, 1] in their own dtype, then summed as float64;
``None`` -> 0.5.
"""

from __future__ import annotations

import os

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


@njit(cache=True, nogil=True)
def _group_pass(points, colors, has_colors, is_uint8, R, t, inv_voxel, range2, use_range, lo, hi, use_crop,
                start, tkeys, tgroup, shift, keys, counts, psum, csum, state):
    """Points ``start``.. into the batch table until the table is half full. state[0] = voxels so
    far (u), state[1] += points beyond the key extent. Returns the index of the first point not
    done (n when finished). The arrays never change inside the loop (growing is the caller's)."""
    n = points.shape[0]
    rows = keys.shape[0]
    mask = tkeys.shape[0] - 1
    u = state[0]
    dropped = 0
    prev_key = np.int64(-1)
    prev_g = 0
    r00, r01, r02 = R[0, 0], R[0, 1], R[0, 2]
    r10, r11, r12 = R[1, 0], R[1, 1], R[1, 2]
    r20, r21, r22 = R[2, 0], R[2, 1], R[2, 2]
    t0, t1, t2 = t[0], t[1], t[2]
    fmin, fmax = np.float32(COORD_MIN), np.float32(COORD_MAX + 1)
    i = start
    while i < n:
        x = np.float32(points[i, 0])
        y = np.float32(points[i, 1])
        z = np.float32(points[i, 2])
        i += 1
        if (x - x) != 0 or (y - y) != 0 or (z - z) != 0:  # NaN or inf (cheaper than isfinite)
            continue
        if use_range and not ((x * x + y * y) + z * z <= range2):
            continue
        wx = ((r00 * x + r01 * y) + r02 * z) + t0
        wy = ((r10 * x + r11 * y) + r12 * z) + t1
        wz = ((r20 * x + r21 * y) + r22 * z) + t2
        if use_crop and not (lo[0] <= wx <= hi[0] and lo[1] <= wy <= hi[1] and lo[2] <= wz <= hi[2]):
            continue
        vx = wx * inv_voxel
        vy = wy * inv_voxel
        vz = wz * inv_voxel
        # floor(v) in [COORD_MIN, COORD_MAX]  <=>  COORD_MIN <= v < COORD_MAX + 1 (NaN fails too)
        if not (fmin <= vx < fmax and fmin <= vy < fmax and fmin <= vz < fmax):
            dropped += 1
            continue
        # floor as truncation of a non-negative float64 (exact: v + 2**20 >= 0 and float32 v fits
        # float64 with room to spare); libm's floorf call costs more than the rest of the loop
        ix = np.int64(np.float64(vx) + _OFF)
        iy = np.int64(np.float64(vy) + _OFF)
        iz = np.int64(np.float64(vz) + _OFF)
        key = (ix << _SHIFT2) | (iy << KEY_BITS) | iz  # ix = floor(vx) + KEY_OFFSET
        if key == prev_key:
            g = prev_g
        else:
            j = _slot(key, shift)
            while True:
                k = tkeys[j]
                if k == key:
                    g = tgroup[j]
                    break
                if k == _EMPTY:
                    if u >= rows:  # table half full: hand back, the caller grows it
                        state[0] = u
                        state[1] += dropped
                        return i - 1
                    tkeys[j] = key
                    tgroup[j] = u
                    keys[u] = key
                    g = u
                    u += 1
                    break
                j = (j + 1) & mask
            prev_key = key
            prev_g = g
        counts[g] += 1
        psum[g, 0] += np.float64(wx)
        psum[g, 1] += np.float64(wy)
        psum[g, 2] += np.float64(wz)
        if has_colors:
            for a in range(3):
                c = colors[i - 1, a]
                if is_uint8:
                    csum[g, a] += np.float64(c)
                else:
                    if c != c:
                        c = 0.5
                    elif c < 0:
                        c = 0.0
                    elif c > 1:
                        c = 1.0
                    csum[g, a] += np.float64(c)
    state[0] = u
    state[1] += dropped
    return n


@njit(cache=True, nogil=True)
def _group_kernel(points, colors, has_colors, is_uint8, R, t, inv_voxel, range2, use_range, lo, hi,
                  use_crop, cap_hint):
    n = points.shape[0]
    cap = 1024
    while cap < 2 * cap_hint:
        cap *= 2
    bits = 0
    while (1 << bits) < cap:
        bits += 1
    shift = 64 - bits
    tkeys = np.full(cap, _EMPTY, np.int64)
    tgroup = np.empty(cap, np.int32)
    rows = cap // 2
    keys = np.empty(rows, np.int64)
    counts = np.zeros(rows, np.int64)
    psum = np.zeros((rows, 3), np.float64)
    csum = np.zeros((rows, 3), np.float64)
    state = np.zeros(2, np.int64)
    i = 0
    while True:
        i = _group_pass(points, colors, has_colors, is_uint8, R, t, inv_voxel, range2, use_range, lo, hi,
                        use_crop, i, tkeys, tgroup, shift, keys, counts, psum, csum, state)
        if i >= n:
            break
        cap *= 2
        tkeys, tgroup, shift = _rehash(tkeys, tgroup, cap)
        rows = cap // 2
        keys = _grow1(keys, rows)
        counts = _grow1(counts, rows)
        psum = _grow2(psum, rows)
        csum = _grow2(csum, rows)
    u = state[0]
    return keys[:u], counts[:u], psum[:u], csum[:u], state[1]


@njit(cache=True, nogil=True)
def _grow1(a, rows):
    out = np.zeros(rows, a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _grow2(a, rows):
    out = np.zeros((rows, a.shape[1]), a.dtype)
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
    keys, counts, psum, csum, dropped = _group_kernel(
        pts, cols, has_colors, is_uint8, np.asarray(R, np.float32), np.asarray(t, np.float32),
        np.float32(inv_voxel), np.float32(range2), use_range, lo, hi, use_crop, int(cap_hint),
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
