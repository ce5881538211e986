"""Tile layout and border merging of the tiled engine, pure numpy (see inference/tiles.py).

Tiles are squares of ``tile_size`` metres on the xy grid of the map frame; each holds the map
points within ``overlap`` metres of its square. Two instances of neighbouring tiles merge when,
inside the two tiles' common region, they share at least ``merge_fraction`` of the smaller one's
points and have the same class, or, with different classes (each tile saw a part and named it
differently: a couch as sofa on one side, bed on the other), at least ``merge_fraction`` of the
LARGER one's points: the same region, not a small object inside a bigger one. Union-find, so
chains across several tiles merge too; a merged instance takes the class of its largest part.

Rows are int32 (a map holds far fewer than 2^31 voxels): the bookkeeping of a tiled map costs
about 4 B per row of each tile a voxel belongs to, plus 2 B of per-tile semantic labels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ROW", "TileResult", "merge_tile_instances", "tile_pairs", "tile_rows"]

ROW = np.int32  # dtype of every row array kept per tile


@dataclass
class TileResult:
    """One tile's answer in snapshot rows. rows (K,) int32 sorted snapshot rows of the tile;
    masks: per instance (M_i,) int32 sorted snapshot rows; classes, scores, labels per instance;
    semantic (K,) int16 class per tile row (-1 none)."""

    key: tuple[int, int]
    rows: np.ndarray
    masks: list[np.ndarray]
    classes: list[int]
    scores: list[float]
    labels: list[str]
    semantic: np.ndarray
    fingerprint: tuple = ()
    entry: Any = None  # the engine's private cache entry of this tile (prompted queries reuse it)
    snapshot: Any = None  # the tile's own snapshot (the entry's point / colour arrays)
    threshold: float = -1.0  # the score threshold ``masks`` were cut at


def tile_rows(points: np.ndarray, tile_size: float, overlap: float) -> dict[tuple[int, int], np.ndarray]:
    """(N, 3) map points -> {(ix, iy): sorted int32 rows within ``overlap`` of square (ix, iy)}, i.e.
    ``ix * tile_size - overlap <= x < (ix + 1) * tile_size + overlap`` (and so for y). One column of
    tiles at a time: the transient memory is an (N,) bool mask and that column's rows."""
    pts = np.asarray(points)
    if len(pts) == 0:
        return {}
    ts, ov = np.float64(tile_size), np.float64(overlap)  # float64 bounds: compared in float64
    out: dict[tuple[int, int], np.ndarray] = {}
    x, y = pts[:, 0], pts[:, 1]
    for ix in range(int(np.floor((x.min() - ov) / ts)), int(np.floor((x.max() + ov) / ts)) + 1):
        col = np.flatnonzero((x >= ix * ts - ov) & (x < (ix + 1) * ts + ov)).astype(ROW)
        if col.size == 0:
            continue
        cy = y[col]
        for iy in range(int(np.floor((cy.min() - ov) / ts)), int(np.floor((cy.max() + ov) / ts)) + 1):
            rows = col[(cy >= iy * ts - ov) & (cy < (iy + 1) * ts + ov)]
            if rows.size:
                out[(ix, iy)] = rows  # ascending: a subset of ascending rows
        del col, cy
    return out


def tile_pairs(keys: list[tuple[int, int]], reach: int | None = None) -> list[tuple[int, int]]:
    """Index pairs (s, t), s < t, of tiles that may share rows: keys at most ``reach`` apart on each
    axis (``ceil(2 overlap / tile_size)``; None: every pair)."""
    pairs = itertools.combinations(range(len(keys)), 2)
    if reach is None:
        return list(pairs)
    return [(s, t) for s, t in pairs
            if abs(keys[s][0] - keys[t][0]) <= reach and abs(keys[s][1] - keys[t][1]) <= reach]


def merge_tile_instances(tiles: list[TileResult], merge_fraction: float = 0.5,
                         reach: int | None = None) -> list[tuple]:
    """Union of the tiles' instances across borders (module docstring); returns
    [(rows (K,) sorted int32, class, score, label)] by descending score. ``reach``: see
    :func:`tile_pairs`."""
    ids = [(t, i) for t in range(len(tiles)) for i in range(len(tiles[t].masks))]
    index = {tid: k for k, tid in enumerate(ids)}
    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def instance_labels(t: TileResult) -> np.ndarray:
        """Per tile row: instance id (best score wins where the tile's masks overlap), -1 none."""
        lab = np.full(len(t.rows), -1, np.int32)
        for i in np.argsort(t.scores, kind="stable"):  # ascending: the best score is written last
            lab[np.searchsorted(t.rows, t.masks[i])] = i
        return lab

    for s, t in tile_pairs([tile.key for tile in tiles], reach):
        a, b = tiles[s], tiles[t]
        if not a.masks or not b.masks:
            continue
        common, ps, pt = np.intersect1d(a.rows, b.rows, assume_unique=True, return_indices=True)
        if common.size == 0:
            continue
        ls, lt = instance_labels(a)[ps], instance_labels(b)[pt]
        size_s = np.bincount(ls[ls >= 0], minlength=len(a.masks))
        size_t = np.bincount(lt[lt >= 0], minlength=len(b.masks))
        both = (ls >= 0) & (lt >= 0)
        if not both.any():
            continue
        pairs, shared = np.unique(np.stack([ls[both], lt[both]], 1), axis=0, return_counts=True)
        for (i, j), n in zip(pairs, shared):
            sizes = (size_s[i], size_t[j])  # each one's points in the common region
            need = min(sizes) if a.classes[i] == b.classes[j] else max(sizes)
            if n >= merge_fraction * need:
                parent[find(index[(s, int(i))])] = find(index[(t, int(j))])
    groups: dict[int, list[tuple[int, int]]] = {}
    for k, tid in enumerate(ids):
        groups.setdefault(find(k), []).append(tid)
    out = []
    for members in groups.values():
        parts = [tiles[t].masks[i] for t, i in members]
        rows = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
        best = max(members, key=lambda m: (len(tiles[m[0]].masks[m[1]]), tiles[m[0]].scores[m[1]]))
        score = max(tiles[t].scores[i] for t, i in members)
        out.append((rows.astype(ROW, copy=False), tiles[best[0]].classes[best[1]], score,
                    tiles[best[0]].labels[best[1]]))
    return sorted(out, key=lambda r: -r[2])
