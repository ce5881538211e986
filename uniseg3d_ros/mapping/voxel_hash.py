"""Voxel keys and a vectorized open-addressing hash table (pure numpy).

Voxel ``(i, j, k) = floor(p / voxel_size)`` is packed into one non-negative int64 key with 21 bits
per axis (offset 2**20), so coordinates must satisfy ``-2**20 <= i < 2**20`` (+-21 km at 2 cm).
Keys compare in lexicographic (i, j, k) order.

``VoxelHashTable`` maps keys to dense row ids with linear probing; ``lookup`` and ``insert`` process
all keys of a batch at once, one numpy round per probe step (a handful of rounds at load <= 0.5), so
the cost per frame is O(batch), independent of the map size.
"""

from __future__ import annotations

import numpy as np

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
COORD_MIN, COORD_MAX = -KEY_OFFSET, KEY_OFFSET - 1
_AXIS_MASK = (1 << KEY_BITS) - 1
_EMPTY = -1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

__all__ = ["COORD_MAX", "COORD_MIN", "VoxelHashTable", "group_voxels", "pack_keys", "unpack_keys"]


def pack_keys(coords: np.ndarray) -> np.ndarray:
    """(N, 3) integer voxel coordinates in [COORD_MIN, COORD_MAX] -> (N,) int64 keys."""
    c = np.asarray(coords, dtype=np.int64) + KEY_OFFSET
    return (c[:, 0] << (2 * KEY_BITS)) | (c[:, 1] << KEY_BITS) | c[:, 2]


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """(N,) int64 keys -> (N, 3) int64 voxel coordinates."""
    k = np.asarray(keys, dtype=np.int64)
    out = np.empty((k.shape[0], 3), dtype=np.int64)
    out[:, 0] = (k >> (2 * KEY_BITS)) & _AXIS_MASK
    out[:, 1] = (k >> KEY_BITS) & _AXIS_MASK
    out[:, 2] = k & _AXIS_MASK
    out -= KEY_OFFSET
    return out


def group_voxels(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group points by voxel.

    Args:
        coords: (3, N) integer-valued voxel coordinates (int64, or float from ``np.floor``), one row per
            axis, already range-checked.
    Returns:
        keys: (U,) int64 unique keys, ascending.
        inverse: (N,) int64 group of each point.
        counts: (U,) int64 points per group.

    Uses a single ``np.sort`` of (local key << index bits | point index) when the batch's extent fits
    in 63 bits (always for a depth frame), several times faster than ``np.unique(...,
    return_inverse=True)`` and its argsort; falls back to ``np.unique`` otherwise.
    """
    n = coords.shape[1]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    cmin = coords.min(axis=1)
    cmin_i = cmin.astype(np.int64)
    span = coords.max(axis=1).astype(np.int64) - cmin_i + 1
    bits = [int(s - 1).bit_length() for s in span]
    idx_bits = int(n - 1).bit_length()
    if sum(bits) + idx_bits > 63:
        keys, inverse, counts = np.unique(pack_keys(coords.T), return_inverse=True, return_counts=True)
        return keys, inverse.reshape(-1), counts
    shifts = (bits[1] + bits[2] + idx_bits, bits[2] + idx_bits, idx_bits)
    comb = np.arange(n, dtype=np.int64)
    for axis in range(3):  # local coordinates are small non-negative integers, exact in float32
        comb |= (coords[axis] - cmin[axis]).astype(np.int64) << shifts[axis]
    comb.sort()
    order = comb & ((1 << idx_bits) - 1)
    lkey = comb >> idx_bits
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(lkey[1:], lkey[:-1], out=start[1:])
    group_sorted = np.cumsum(start) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = group_sorted
    first = np.flatnonzero(start)
    counts = np.diff(np.append(first, n))
    lk = lkey[first]
    local = np.stack([lk >> (bits[1] + bits[2]), (lk >> bits[2]) & ((1 << bits[1]) - 1),
                      lk & ((1 << bits[2]) - 1)], axis=1)
    keys = pack_keys(local + cmin_i)
    return keys, inverse, counts


class VoxelHashTable:
    """Open-addressing (linear probing) int64 key -> int64 id table, vectorized per batch.

    Capacity is a power of two and doubles when the load would exceed ``max_load``. There is no
    single-key delete: after evicting voxels the owner calls ``rebuild`` with the surviving keys.
    """

    def __init__(self, capacity: int = 1 << 16, max_load: float = 0.5) -> None:
        if not 0.0 < max_load < 1.0:
            raise ValueError(f"max_load must be in (0, 1), got {max_load}")
        self.max_load = max_load
        self._alloc(max(16, 1 << int(capacity - 1).bit_length()))

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self._shift = np.uint64(64 - (capacity.bit_length() - 1))
        self._keys = np.full(capacity, _EMPTY, dtype=np.int64)
        self._vals = np.zeros(capacity, dtype=np.int32)  # ids < 2**31
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._vals.nbytes)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        h = keys.view(np.uint64) * _GOLDEN  # wraps modulo 2**64 (Fibonacci hashing)
        return (h >> self._shift).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(N,) int64 keys -> (N,) int64 ids, -1 where absent."""
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        ids = np.full(keys.shape[0], -1, dtype=np.int64)
        if self.size == 0 or keys.size == 0:
            return ids
        mask = self.capacity - 1
        pend = np.arange(keys.shape[0])
        slot = self._slots(keys)
        while pend.size:
            tk = self._keys[slot]
            hit = tk == keys[pend]
            ids[pend[hit]] = self._vals[slot[hit]]
            cont = ~hit & (tk != _EMPTY)
            pend = pend[cont]
            slot = (slot[cont] + 1) & mask
        return ids

    def insert(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Insert (N,) unique keys that are NOT in the table, with their (N,) ids."""
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        if keys.size == 0:
            return
        if self.size + keys.size > self.max_load * self.capacity:
            old_k, old_v = self.items()
            need = (self.size + keys.size) / self.max_load
            self._alloc(1 << (int(np.ceil(need)) - 1).bit_length())
            self._bulk_load(np.concatenate([old_k, keys]), np.concatenate([old_v, ids]))
            return
        self._insert(keys, ids)

    def _bulk_load(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Fill an EMPTY table with unique keys in O(N log N) without probe rounds.

        With keys sorted by home slot h, linear probing puts the i-th at ``max(h_i, pos_{i-1} + 1)``,
        i.e. ``pos = i + cummax(h - i)``; the few that run past the end wrap via ``_insert``.
        """
        n = keys.shape[0]
        if n == 0:
            return
        h = self._slots(keys)
        idx_bits = int(n - 1).bit_length()
        if (self.capacity.bit_length() - 1) + idx_bits <= 63:
            comb = (h << idx_bits) | np.arange(n, dtype=np.int64)
            comb.sort()
            order, hs = comb & ((1 << idx_bits) - 1), comb >> idx_bits
        else:
            order = np.argsort(h, kind="stable")
            hs = h[order]
        ar = np.arange(n, dtype=np.int64)
        pos = np.maximum.accumulate(hs - ar) + ar
        fit = pos < self.capacity
        self._keys[pos[fit]] = keys[order[fit]]
        self._vals[pos[fit]] = ids[order[fit]]
        self.size += int(np.count_nonzero(fit))
        if not fit.all():
            rest = order[~fit]
            self._insert(keys[rest], ids[rest])

    def _insert(self, keys: np.ndarray, ids: np.ndarray) -> None:
        if keys.size == 0:
            return
        mask = self.capacity - 1
        pend = np.arange(keys.shape[0])
        slot = self._slots(keys)
        while pend.size:
            empty = self._keys[slot] == _EMPTY
            cand = np.flatnonzero(empty)
            placed = np.zeros(pend.shape[0], dtype=bool)
            if cand.size:
                # Several pending keys may probe the same empty slot: the first of each slot wins.
                _, first = np.unique(slot[cand], return_index=True)
                win = cand[first]
                self._keys[slot[win]] = keys[pend[win]]
                self._vals[slot[win]] = ids[pend[win]]
                placed[win] = True
            # Losers retry the same (now occupied) slot and advance next round; others advance now.
            nxt = np.where(empty, slot, (slot + 1) & mask)
            keep = ~placed
            pend = pend[keep]
            slot = nxt[keep]
        self.size += keys.shape[0]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All (keys, ids) currently stored, in slot order."""
        occ = self._keys != _EMPTY
        return self._keys[occ], self._vals[occ]

    def rebuild(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Replace the contents with (N,) unique keys -> ids (capacity re-chosen for the load)."""
        need = max(16.0, keys.shape[0] / self.max_load * 1.5)
        self._alloc(1 << int(np.ceil(need) - 1).bit_length())
        self._bulk_load(np.ascontiguousarray(keys, dtype=np.int64), np.asarray(ids, dtype=np.int64))
