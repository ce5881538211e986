"""Felzenszwalb-Huttenlocher graph segmentation over an edge list (as ScanNet's Segmentator).

One sequential union-find pass over the edges sorted by weight, then a pass merging small
components. Two interchangeable backends with identical results: a numba-compiled kernel
(used when ``numba`` imports; compiled once per machine, cached next to this file) and a tight
pure-Python loop (about 10-50x slower, no extra dependency).
"""

from __future__ import annotations

import os
import threading

import numpy as np

_numba_kernel = None
_numba_lock = threading.Lock()


def felzenszwalb_segment(
    num_vertices: int,
    a: np.ndarray,
    b: np.ndarray,
    w: np.ndarray,
    k_thresh: float,
    min_size: int,
    backend: str = "auto",
    presorted: bool = False,
) -> np.ndarray:
    """Segment a graph; returns (V,) int64 component root ids (not relabelled).

    a, b: (E,) int vertex ids of each edge; w: (E,) float weights. Edges are visited by
    non-decreasing weight (stable sort). Two components merge when the edge weight is at most
    both components' thresholds, a component's threshold being ``k_thresh`` initially and
    ``w + k_thresh / size`` after each merge. A second pass over the same order merges any
    component smaller than ``min_size`` with its neighbour. ``backend``: ``"auto"`` (numba if
    importable, unless ``UNISEG3D_NO_NUMBA=1``), ``"numba"`` or ``"python"``. ``presorted``: the
    edges are already in that order (:func:`sort_edges`), so repeated calls on one graph sort once.
    """
    if backend not in ("auto", "numba", "python"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'python', got {backend!r}")
    if not presorted:
        a, b, w = sort_edges(a, b, w)
    kernel = None
    if backend == "numba" or (backend == "auto" and os.environ.get("UNISEG3D_NO_NUMBA") != "1"):
        kernel = _get_numba_kernel(required=backend == "numba")
    if kernel is None:
        return _segment_python(num_vertices, a, b, w, float(k_thresh), int(min_size))
    return kernel(int(num_vertices), a, b, w, float(k_thresh), int(min_size))


def sort_edges(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E,) edge arrays in the order :func:`felzenszwalb_segment` visits them (stable by weight),
    contiguous int64 / int64 / float64."""
    order = np.argsort(w, kind="stable")
    return (np.ascontiguousarray(a[order], dtype=np.int64), np.ascontiguousarray(b[order], dtype=np.int64),
            np.ascontiguousarray(w[order], dtype=np.float64))


def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:  # path halving
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _union(parent: np.ndarray, rank: np.ndarray, size: np.ndarray, x: int, y: int) -> int:
    if rank[x] > rank[y]:
        x, y = y, x
    parent[x] = y
    size[y] += size[x]
    if rank[x] == rank[y]:
        rank[y] += 1
    return y


def _segment_arrays(
    num_vertices: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, k_thresh: float, min_size: int
) -> np.ndarray:
    """Array-based kernel (compiled by numba); a, b, w sorted by weight."""
    parent = np.arange(num_vertices)
    rank = np.zeros(num_vertices, dtype=np.int64)
    size = np.ones(num_vertices, dtype=np.int64)
    thresh = np.full(num_vertices, k_thresh)
    for i in range(len(a)):
        x = _find(parent, a[i])
        y = _find(parent, b[i])
        if x != y and w[i] <= thresh[x] and w[i] <= thresh[y]:
            r = _union(parent, rank, size, x, y)
            thresh[r] = w[i] + k_thresh / size[r]
    if min_size > 1:
        for i in range(len(a)):
            x = _find(parent, a[i])
            y = _find(parent, b[i])
            if x != y and (size[x] < min_size or size[y] < min_size):
                _union(parent, rank, size, x, y)
    for i in range(num_vertices):
        parent[i] = _find(parent, i)
    return parent


def _get_numba_kernel(required: bool):
    with _numba_lock:  # compile once even when several threads segment at the same time
        return _build_numba_kernel(required) if _numba_kernel is None else _numba_kernel


def _build_numba_kernel(required: bool):
    global _numba_kernel
    if _numba_kernel is None:
        try:
            import numba
        except ImportError as exc:  # retried on the next call; a failed import costs < 1 ms
            if required:
                raise ImportError("backend='numba' requested but numba is not installed") from exc
            return None
        jit = numba.njit(cache=True, nogil=True)
        global _find, _union
        _find, _union = jit(_find), jit(_union)
        _numba_kernel = jit(_segment_arrays)
    return _numba_kernel


def _segment_python(
    num_vertices: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, k_thresh: float, min_size: int
) -> np.ndarray:
    """Pure-Python backend; a, b, w already sorted by weight. Returns (V,) root ids."""
    parent = list(range(num_vertices))
    rank = [0] * num_vertices
    size = [1] * num_vertices
    thresh = [k_thresh] * num_vertices

    # The union-find is inlined (path halving) because this loop runs once per edge.
    for x, y, weight in zip(a.tolist(), b.tolist(), w.tolist()):
        while parent[x] != x:
            parent[x] = x = parent[parent[x]]
        while parent[y] != y:
            parent[y] = y = parent[parent[y]]
        if x != y and weight <= thresh[x] and weight <= thresh[y]:
            if rank[x] > rank[y]:
                x, y = y, x
            parent[x] = y
            size[y] += size[x]
            rank[y] += rank[x] == rank[y]
            thresh[y] = weight + k_thresh / size[y]

    roots = _roots(parent)
    if min_size > 1:
        # Sizes only grow, so edges between two already-large components can never merge.
        comp_size = np.asarray(size)[roots]
        small = (comp_size[a] < min_size) | (comp_size[b] < min_size)
        for x, y in zip(a[small].tolist(), b[small].tolist()):
            while parent[x] != x:
                parent[x] = x = parent[parent[x]]
            while parent[y] != y:
                parent[y] = y = parent[parent[y]]
            if x != y and (size[x] < min_size or size[y] < min_size):
                if rank[x] > rank[y]:
                    x, y = y, x
                parent[x] = y
                size[y] += size[x]
                rank[y] += rank[x] == rank[y]
        roots = _roots(parent)
    return roots


def _roots(parent: list[int]) -> np.ndarray:
    """Root of every element of a union-find forest, by vectorized pointer jumping."""
    p = np.asarray(parent, dtype=np.int64)
    while True:
        nxt = p[p]
        if np.array_equal(nxt, p):
            return p
        p = nxt


