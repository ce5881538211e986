"""Maps beyond one room: segment a large map snapshot as overlapping xy tiles and merge across borders.

Tiles are squares of ``tile_size`` metres on the xy grid of the map frame; each tile holds the map
points within ``overlap`` metres of its square, so an object cut by a border appears whole or in
large part in both neighbours. Every tile runs the ordinary :class:`InferenceEngine` pipeline
(superpoints, backbone, decoder) on its own points, so time grows with the number of tiles (linear
in the map) and peak memory is bounded by one tile. Results and encodings are cached per tile,
keyed by the tile's *fingerprint* (voxel count, sum of observation counts, last stamp): a new
frame changes the fingerprints of the tiles it touched only, and only those are encoded again.

Merging: two instances of neighbouring tiles with the same class merge when they share at least
``merge_fraction`` of the smaller one's points inside the two tiles' common region (union-find, so
chains across several tiles merge too). Referring asks every tile and keeps the best-scored mask;
clicks go to the tile whose square holds them.

All geometry in the map frame, metres; ``point_indices`` index the rows of the full snapshot.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from uniseg3d_ros.inference.engine import InferenceEngine, QueryResult
from uniseg3d_ros.inference.results import instance_stats

__all__ = ["TileConfig", "TileResult", "TiledEngine", "merge_tile_instances", "tile_rows"]

_TILE_VERSIONS = itertools.count(-2, -1)  # snapshot versions of tiles: never equal to a map version


@dataclass
class TileConfig:
    tile_size: float = 6.0  # metres, xy square per tile (a large room)
    overlap: float = 1.0  # metres of neighbour context on each side
    merge_fraction: float = 0.5  # share of the smaller instance's common-region points to merge
    min_points: int = 200  # tiles with fewer points are skipped
    #: keep each tile's engine entry (encoding, final decoder layer, KD-tree; ~400 B per tile point)
    #: so refer / clicks cost a decoder pass; False bounds memory by one tile, and a prompted query
    #: re-encodes the tiles it asks
    keep_entries: bool = True


@dataclass
class TileResult:
    """One tile's segment answer in global rows. rows (K,) int64 sorted snapshot rows of the tile;
    masks: per instance (M_i,) int64 sorted snapshot rows; classes, scores, labels per instance;
    semantic (K,) int64 per tile row."""

    key: tuple[int, int]
    rows: np.ndarray
    masks: list[np.ndarray]
    classes: list[int]
    scores: list[float]
    labels: list[str]
    semantic: np.ndarray
    fingerprint: tuple = ()
    entry: Any = None  # the engine's cache entry of this tile (prompted queries reuse it)
    snapshot: Any = None


def tile_rows(points: np.ndarray, cfg: TileConfig) -> dict[tuple[int, int], np.ndarray]:
    """(N, 3) map points -> {(ix, iy): sorted rows within ``overlap`` of square (ix, iy)}."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    ts, ov = cfg.tile_size, cfg.overlap
    lo = np.floor((xy - ov) / ts).astype(np.int64)  # a point belongs to every tile whose
    hi = np.floor((xy + ov) / ts).astype(np.int64)  # expanded square contains it
    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for dx in range(int(np.ceil(2 * ov / ts)) + 1):
        for dy in range(int(np.ceil(2 * ov / ts)) + 1):
            ix, iy = lo[:, 0] + dx, lo[:, 1] + dy
            ok = np.flatnonzero((ix <= hi[:, 0]) & (iy <= hi[:, 1]))
            if ok.size == 0:
                continue
            code = ix[ok] * (1 << 32) + (iy[ok] + (1 << 31))
            order = np.argsort(code, kind="stable")
            code, ok = code[order], ok[order]
            starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
            for a, b in zip(starts, np.r_[starts[1:], len(code)]):
                key = (int(code[a] >> 32), int((code[a] & 0xFFFFFFFF) - (1 << 31)))
                out.setdefault(key, []).append(ok[a:b])
    return {k: np.sort(np.concatenate(v)) for k, v in sorted(out.items())}


def merge_tile_instances(tiles: list[TileResult], merge_fraction: float = 0.5) -> list[tuple]:
    """Union of the tiles' instances across borders; returns [(rows, class, score, label)] sorted
    by descending score. See the module docstring for the rule."""
    ids = [(t, i) for t in range(len(tiles)) for i in range(len(tiles[t].masks))]
    index = {tid: k for k, tid in enumerate(ids)}
    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    labels = []
    for t in tiles:  # per tile row: instance id (best score wins where a tile's masks overlap)
        lab = np.full(len(t.rows), -1, np.int64)
        for i in np.argsort(t.scores, kind="stable"):  # ascending: the best score is written last
            lab[np.searchsorted(t.rows, t.masks[i])] = i
        labels.append(lab)
    for s, t in itertools.combinations(range(len(tiles)), 2):
        common, ps, pt = np.intersect1d(tiles[s].rows, tiles[t].rows, assume_unique=True, return_indices=True)
        if common.size == 0:
            continue
        ls, lt = labels[s][ps], labels[t][pt]
        size_s = np.bincount(ls[ls >= 0], minlength=len(tiles[s].masks))
        size_t = np.bincount(lt[lt >= 0], minlength=len(tiles[t].masks))
        both = (ls >= 0) & (lt >= 0)
        if not both.any():
            continue
        pairs, shared = np.unique(np.stack([ls[both], lt[both]], 1), axis=0, return_counts=True)
        for (i, j), n in zip(pairs, shared):
            same = tiles[s].classes[i] == tiles[t].classes[j]
            if same and n >= merge_fraction * min(size_s[i], size_t[j]):
                parent[find(index[(s, int(i))])] = find(index[(t, int(j))])
    groups: dict[int, list[tuple[int, int]]] = {}
    for k, tid in enumerate(ids):
        groups.setdefault(find(k), []).append(tid)
    out = []
    for members in groups.values():
        rows = np.unique(np.concatenate([tiles[t].masks[i] for t, i in members]))
        best = max(members, key=lambda m: (len(tiles[m[0]].masks[m[1]]), tiles[m[0]].scores[m[1]]))
        score = max(tiles[t].scores[i] for t, i in members)
        out.append((rows, tiles[best[0]].classes[best[1]], score, tiles[best[0]].labels[best[1]]))
    return sorted(out, key=lambda r: -r[2])


@dataclass
class TiledEngine:
    """An :class:`InferenceEngine` answering over tiles of a large map (see module docstring)."""

    engine: InferenceEngine
    cfg: TileConfig = field(default_factory=TileConfig)
    tiles: dict[tuple[int, int], TileResult] = field(default_factory=dict)
    encoded_last: int = 0  # tiles encoded by the last segment call

    def _tile_snapshot(self, snap: Any, rows: np.ndarray) -> Any:
        from uniseg3d_ros.mapping.scene_map import MapSnapshot

        return MapSnapshot(points=snap.points[rows], colors=snap.colors[rows], counts=snap.counts[rows],
                           last_seen=snap.last_seen[rows], version=next(_TILE_VERSIONS),
                           voxel_size=snap.voxel_size, keys=snap.keys[rows] if len(snap.keys) else snap.keys)

    def segment(self, snapshot: Any, score_threshold: float = 0.0) -> QueryResult:
        """Segment every tile (cached ones by fingerprint) and merge. point_indices: snapshot rows."""
        n = len(snapshot.points)
        layout = tile_rows(snapshot.points, self.cfg)
        self.encoded_last = 0
        results = []
        for key, rows in layout.items():
            if len(rows) < self.cfg.min_points:
                continue
            fp = (len(rows), int(snapshot.counts[rows].sum()), float(snapshot.last_seen[rows].max()),
                  int(rows[0]), int(rows[-1]))
            cached = self.tiles.get(key)
            if cached is None or cached.fingerprint != fp or not np.array_equal(cached.rows, rows):
                cached = self._segment_tile(key, snapshot, rows, fp, score_threshold)
                self.encoded_last += 1
            results.append(cached)
        self.tiles = {t.key: t for t in results}
        merged = merge_tile_instances(results, self.cfg.merge_fraction)[: self.engine.cfg.max_instances]
        semantic = np.full(n, -1, np.int64)
        for t in results:  # the tile that holds a point in its square labels it; overlaps fill gaps
            semantic[t.rows] = np.where(semantic[t.rows] < 0, t.semantic, semantic[t.rows])
        pts = np.asarray(snapshot.points)
        insts, mask = [], np.zeros(n, bool)  # one (N,) mask at a time: no (M, N) array on big maps
        for k, (rows, cls, score, label) in enumerate(merged):
            mask[rows] = True
            insts += instance_stats(pts, mask[None], [cls], [score], [label], first_id=k)
            mask[rows] = False
        msg = f"{len(insts)} instances over {len(results)} tiles ({self.encoded_last} encoded)"
        return QueryResult(True, msg, insts, class_names=list(self.engine.class_names), semantic=semantic,
                           points=snapshot.points, colors=snapshot.colors, map_version=int(snapshot.version))

    def _segment_tile(self, key, snapshot, rows, fp, thr) -> TileResult:
        sub = self._tile_snapshot(snapshot, rows)
        res = self.engine.segment(sub, thr)
        if not res.success:
            raise RuntimeError(f"tile {key}: {res.message}")
        # what prompted queries need later, slimmed: the prompt-free pass's final layer only, and the
        # entry's own point / colour copies as the tile's snapshot (no second copy)
        entry, kept = None, None
        if self.cfg.keep_entries:
            entry = self.engine._prep
            entry.base_out = replace(entry.base_out, layers=[entry.base_out.final])
            kept = replace(sub, points=entry.scene.points, colors=entry.scene.colors, counts=sub.counts[:0],
                           last_seen=sub.last_seen[:0], keys=sub.keys[:0])
        else:
            self.engine.invalidate()  # memory bounded by one tile: drop the entry
        insts = res.instances
        return TileResult(key, rows, [rows[i.point_indices] for i in insts], [int(i.class_id) for i in insts],
                          [float(i.score) for i in insts], [i.label for i in insts],
                          np.asarray(res.semantic, np.int64), fp, entry, kept)

    def _ask(self, snapshot: Any, tile: TileResult, fn: Any) -> QueryResult:
        if tile.entry is None:  # keep_entries=False: encode the tile again (its rows of ``snapshot``)
            res = fn(self._tile_snapshot(snapshot, tile.rows))
        else:
            self.engine._prep = tile.entry  # the tile's cache entry: the query costs a decoder pass
            res = fn(tile.snapshot)
        for inst in res.instances:
            inst.point_indices = tile.rows[inst.point_indices]
        return res

    def refer(self, snapshot: Any, text: str) -> QueryResult:
        """The best-scored referring mask over all tiles (call :meth:`segment` first)."""
        ask = lambda s: self.engine.refer(s, text, 1)  # noqa: E731
        answers = [self._ask(snapshot, t, ask) for t in self.tiles.values()]
        answers = [a for a in answers if a.success and a.instances]
        if not answers:
            return QueryResult.failure("no tile answered: segment the map first", "refer")
        best = max(answers, key=lambda a: a.instances[0].score)
        best.points, best.colors = snapshot.points, snapshot.colors
        return best

    def interactive(self, snapshot: Any, clicks: Any) -> QueryResult:
        """Clicks (K, 3): each goes to the tile whose square holds it."""
        pts = np.asarray(clicks, dtype=np.float64).reshape(-1, 3)
        out = []
        for k, c in enumerate(pts):
            key = (int(np.floor(c[0] / self.cfg.tile_size)), int(np.floor(c[1] / self.cfg.tile_size)))
            tile = self.tiles.get(key)
            if tile is None:
                return QueryResult.failure(f"clicks[{k}] lies in no segmented tile", "interactive")
            res = self._ask(snapshot, tile, lambda s, c=c: self.engine.interactive(s, c[None]))
            if not res.success:
                return res
            inst = res.instances[0]
            inst.id = k
            out.append(inst)
        names = list(self.engine.class_names)
        return QueryResult(True, f"{len(out)} clicks segmented", out, class_names=names,
                           points=snapshot.points, colors=snapshot.colors)
