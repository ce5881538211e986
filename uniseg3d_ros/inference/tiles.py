"""Maps beyond one room: segment a large map snapshot as overlapping xy tiles and merge across borders.

:class:`TiledEngine` answers the same queries as :class:`InferenceEngine` (``segment``, ``refer``,
``open_vocab``, ``interactive``, same signatures and :class:`QueryResult`), over tiles laid out and
merged by :mod:`uniseg3d_ros.inference.tile_merge`. Every tile runs the ordinary engine pipeline
(superpoints, backbone, decoder) on its own points in a *private* cache slot of the engine
(:meth:`InferenceEngine.private`), so the engine's shared entry, build lock and ``building`` state
are never touched by tiles. Time grows with the number of tiles (linear in the map); peak memory
is one tile's working set plus int32 row bookkeeping. Tile answers are cached under the tile's
*fingerprint* (voxel count, sum of observation counts, last stamp, row span): a new frame changes
the fingerprints of the tiles it touched only, and only those are encoded again.

Concurrency mirrors the engine: one tiled build at a time (``segment`` waits for it); the finished
tiling of a map version is published by one assignment, so ``refer`` / ``open_vocab`` /
``interactive`` never wait: while another thread re-tiles they answer on the last finished tiling
(the message says which version) or say at once that the encoding is being rebuilt.

Queries: referring asks every tile and keeps the best-scored mask (the score weighs how well the
mask's semantic classes agree with the class the sentence's query predicts, which makes tiles
comparable: ``postprocess.class_agreement``; its ``top_k`` alternatives: the
merged segment instances that overlap it most); open-vocabulary instances are merged across borders
like ``segment``'s; each click goes to the tile whose square holds it. ``progress`` callbacks see
each encoded tile's stages (superpoints, backbone, decoder, postprocess; a callback with a ``tile``
keyword also gets ``tile=(number, count)``), then ``postprocess`` once more for the merge; a
:class:`Cancelled` raised between stages keeps the tiles finished so far in the cache.

All geometry in the map frame, metres; ``point_indices`` index the rows of the full snapshot.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from uniseg3d_ros.inference import checks
from uniseg3d_ros.inference.engine import STAGES, EncodingBusy, InferenceEngine
from uniseg3d_ros.inference.results import InstanceInfo, QueryResult, rank_by_iou
from uniseg3d_ros.inference.tile_merge import ROW, TileResult, merge_tile_instances, tile_rows

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

    @property
    def reach(self) -> int:
        """How many tiles apart (per axis) two tiles can share points."""
        return int(np.ceil(2 * self.overlap / self.tile_size))


@dataclass
class _Tiling:
    """One finished tiled segmentation of a map version (published by one assignment)."""

    version: int
    snapshot: Any
    tiles: dict[tuple[int, int], TileResult]
    semantic: np.ndarray  # (N,) int32 per snapshot row, -1 none
    threshold: float
    result: QueryResult


def extent(points: np.ndarray) -> float:
    """The longer side [m] of the xy bounding box of (N, 3) points (0 for none)."""
    if len(points) == 0:
        return 0.0
    xy = np.asarray(points)[:, :2]
    return float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1])))


def rows_instance(points: np.ndarray, rows: np.ndarray, k: int, cls: int, score: float,
                  label: str) -> InstanceInfo:
    """An instance of snapshot ``rows`` (sorted) of ``points`` (N, 3), id ``k``."""
    sel = np.asarray(points)[rows].astype(np.float64)
    zero = np.zeros(3)
    any_ = len(rows) > 0
    return InstanceInfo(k, int(cls), str(label), float(score), sel.mean(0) if any_ else zero,
                        sel.min(0) if any_ else zero, sel.max(0) if any_ else zero, rows.astype(np.int64))


class TiledEngine:
    """An :class:`InferenceEngine` answering over tiles of a large map (see module docstring)."""

    def __init__(self, engine: InferenceEngine, cfg: TileConfig | None = None) -> None:
        self.engine = engine
        self.cfg = cfg or TileConfig()
        self._cache: dict[tuple[int, int], TileResult] = {}  # tile answers (touched under the lock)
        self._tiling: _Tiling | None = None  # the last finished tiling (replaced atomically)
        self._build_lock = threading.Lock()
        self._building: tuple[int, float] | None = None
        self.encoded_last = 0  # tiles encoded by the last segment call

    # ----------------------------------------------------------------- state
    @property
    def tiles(self) -> dict[tuple[int, int], TileResult]:
        tiling = self._tiling
        return {} if tiling is None else tiling.tiles

    @property
    def building(self) -> tuple[int, float] | None:
        job = self._building
        return None if job is None else (job[0], time.monotonic() - job[1])

    def invalidate(self) -> None:
        self._tiling, self._cache = None, {}

    @staticmethod
    def _tile_snapshot(snap: Any, rows: np.ndarray | None = None, version: int | None = None) -> Any:
        """The points and colours of ``rows`` (None: all) of ``snap`` as a snapshot of its own
        (a new tile version unless given); the engine reads no other field, so they stay empty
        (and a kept snapshot holds no reference to the map's other arrays)."""
        from uniseg3d_ros.mapping.scene_map import MapSnapshot

        pts, cols = (snap.points, snap.colors) if rows is None else (snap.points[rows], snap.colors[rows])
        return MapSnapshot(points=pts, colors=cols, counts=np.zeros(0, np.int32),
                           last_seen=np.zeros(0, np.float64),
                           version=next(_TILE_VERSIONS) if version is None else version,
                           voxel_size=snap.voxel_size, keys=np.zeros(0, np.int64))

    # ----------------------------------------------------------------- building
    def _build(self, snapshot: Any, thr: float, progress: Any) -> _Tiling:
        """Tile, segment the tiles whose fingerprint (or threshold) changed, merge; publish. Runs
        under ``_build_lock``."""
        self.engine.invalidate()  # a whole-map entry of the plain path is no longer needed
        layout = tile_rows(snapshot.points, self.cfg.tile_size, self.cfg.overlap)
        self.encoded_last, results = 0, []
        for key in [k for k, rows in layout.items() if len(rows) < self.cfg.min_points]:
            del layout[key]
        for key in list(self._cache):
            if key not in layout:
                del self._cache[key]
        for number, (key, rows) in enumerate(layout.items(), 1):
            fp = (len(rows), int(snapshot.counts[rows].sum(dtype=np.int64)),
                  float(snapshot.last_seen[rows].max()), int(rows[0]), int(rows[-1]))
            tile = self._cache.get(key)
            fresh = tile is not None and tile.fingerprint == fp and np.array_equal(tile.rows, rows)
            if not fresh or tile.threshold != thr:
                reuse = tile if fresh and tile.entry is not None else None
                tile_progress = _per_tile(progress, number, len(layout))
                tile = self._segment_tile(key, snapshot, rows, fp, thr, tile_progress, reuse)
                self._cache[key] = tile  # a cancel later keeps the tiles finished so far
            results.append(tile)
        del layout
        if self.encoded_last == 0 and progress is not None:
            for stage in STAGES[:-1]:
                progress(stage, True)
        if progress is not None:
            progress(STAGES[-1], False)  # the merge
        n = len(snapshot.points)
        merged = merge_tile_instances(results, self.cfg.merge_fraction, self.cfg.reach)
        merged = merged[: self.engine.cfg.max_instances]
        semantic = np.full(n, -1, np.int32)
        for t in results:  # the first tile that holds a point labels it; later ones fill gaps
            cur = semantic[t.rows]
            semantic[t.rows] = np.where(cur < 0, t.semantic, cur)
        claimed, insts = np.zeros(n, bool), []  # disjoint masks, as the plain panoptic answer:
        for rows, cls, score, label in merged:  # a row shared by two tiles' instances goes to the
            rows = rows[~claimed[rows]]  # better-scored one
            if len(rows):
                claimed[rows] = True
                insts.append(rows_instance(snapshot.points, rows, len(insts), cls, score, label))
        del claimed
        msg = f"{len(insts)} instances over {len(results)} tiles ({self.encoded_last} encoded)"
        res = QueryResult(True, msg, insts, class_names=list(self.engine.class_names), semantic=semantic,
                          points=snapshot.points, colors=snapshot.colors, query="segment",
                          map_version=int(snapshot.version), cached=self.encoded_last == 0)
        slim = self._tile_snapshot(snapshot, None, int(snapshot.version))  # points and colours only
        tiling = _Tiling(int(snapshot.version), slim, {t.key: t for t in results}, semantic, thr, res)
        self._tiling = tiling
        return tiling

    def _segment_tile(self, key, snapshot, rows, fp, thr, progress, reuse) -> TileResult:
        """One tile's segment answer in a private engine slot (``reuse``: its kept entry, when only
        the threshold changed: postprocess only)."""
        if reuse is not None:
            sub, entry = reuse.snapshot, reuse.entry
        else:
            sub, entry = self._tile_snapshot(snapshot, rows), None
            self.encoded_last += 1
        with self.engine.private(entry) as slot:
            res = self.engine.segment(sub, thr, progress=progress)
        if not res.success:
            raise RuntimeError(f"tile {key}: {res.message}")
        entry, kept = None, None
        if self.cfg.keep_entries:  # slimmed: the final decoder layer, the entry's own point copies
            entry = slot.entry
            entry.base_out = replace(entry.base_out, layers=[entry.base_out.final])
            kept = replace(sub, points=entry.scene.points, colors=entry.scene.colors)
        insts = res.instances
        return TileResult(key, rows, [rows[i.point_indices].astype(ROW) for i in insts],
                          [int(i.class_id) for i in insts], [float(i.score) for i in insts],
                          [i.label for i in insts], np.asarray(res.semantic, np.int16), fp, entry, kept, thr)

    def segment(self, snapshot: Any, score_threshold: float = 0.0, progress: Any = None) -> QueryResult:
        """Segment every tile (cached ones by fingerprint) and merge; waits for a running build.
        ``progress(stage, cached)`` as :meth:`InferenceEngine.segment` (per encoded tile, then the
        merge); :class:`Cancelled` propagates. point_indices: snapshot rows."""
        t0 = time.perf_counter()
        thr, err = checks.score_threshold(score_threshold, self.engine.cfg.score_threshold)
        reason = err or checks.map_problem(snapshot, self.engine.cfg.min_points)
        if reason:
            return QueryResult.failure(reason, "segment")
        with self._build_lock:
            tiling = self._tiling
            if tiling is not None and tiling.version == int(snapshot.version) and tiling.threshold == thr:
                self.encoded_last = 0
                if progress is not None:
                    for stage in STAGES:
                        progress(stage, stage != STAGES[-1])
                res = replace(tiling.result, instances=[replace(i) for i in tiling.result.instances],
                              cached=True)
            else:
                self._building = (int(snapshot.version), time.monotonic())
                try:
                    res = self._build(snapshot, thr, progress).result
                except (RuntimeError, ValueError, IndexError) as exc:
                    return QueryResult.failure(f"segment inference failed: {type(exc).__name__}: {exc}",
                                               "segment")
                finally:
                    self._building = None
                res = replace(res, instances=[replace(i) for i in res.instances])
        res.latency_ms = 1e3 * (time.perf_counter() - t0)
        return res

    # ----------------------------------------------------------------- light queries
    def _light(self, snapshot: Any, query: str, probe: QueryResult, answer: Any) -> QueryResult:
        """Run ``answer(tiling)`` on the tiling of ``snapshot``'s version: built here when no other
        thread is building one, else the last finished tiling (or a busy answer). ``probe`` is the
        engine's answer to the same request on an empty map: its request checks run first."""
        t0 = time.perf_counter()
        if not probe.message.startswith("map is empty"):
            return probe  # a bad request, answered before any tiling
        reason = checks.map_problem(snapshot, self.engine.cfg.min_points)
        if reason:
            return QueryResult.failure(reason, query)
        tiling, note = self._tiling, ""
        if tiling is None or tiling.version != int(snapshot.version):
            if self._build_lock.acquire(blocking=False):
                try:
                    self._building = (int(snapshot.version), time.monotonic())
                    tiling = self._build(snapshot, self.engine.cfg.score_threshold, None)
                except (RuntimeError, ValueError, IndexError) as exc:
                    why = f"{query} inference failed: {type(exc).__name__}: {exc}"
                    return QueryResult.failure(why, query)
                finally:
                    self._building = None
                    self._build_lock.release()
            else:
                busy = EncodingBusy(None, self.building)
                if tiling is None:
                    return QueryResult.failure(busy.reason(), query)
                note = f" (on map version {tiling.version}; {busy.reason()})"
        res = answer(tiling)
        if res.success:
            res.message += note
            res.points, res.colors = tiling.snapshot.points, tiling.snapshot.colors
            res.map_version, res.cached = tiling.version, True
        res.query = query
        res.latency_ms = 1e3 * (time.perf_counter() - t0)
        return res

    def _ask(self, tiling: _Tiling, tile: TileResult, fn: Any) -> QueryResult:
        """``fn(tile snapshot)`` in the tile's private engine slot; instance rows -> snapshot rows."""
        snap = tile.snapshot if tile.entry is not None else self._tile_snapshot(tiling.snapshot, tile.rows)
        with self.engine.private(tile.entry):
            res = fn(snap)
        for inst in res.instances:
            inst.point_indices = tile.rows[inst.point_indices].astype(np.int64)
        return res

    def refer(self, snapshot: Any, text: str, top_k: int = 0) -> QueryResult:
        """The best-scored referring mask over all tiles; its ``top_k - 1`` alternatives are the merged
        ``segment`` instances ranked by overlap with it (IoU x score, as the plain engine ranks)."""
        def answer(tiling: _Tiling) -> QueryResult:
            asked = [self._ask(tiling, t, lambda s: self.engine.refer(s, text, 1))
                     for t in tiling.tiles.values()]
            found = [a for a in asked if a.success and a.instances]
            if not found:
                failed = [a for a in asked if not a.success]
                nothing = QueryResult.failure(f"'{text.strip()}' matched nothing in any tile", "refer")
                return failed[0] if failed else nothing
            best = max(found, key=lambda a: a.instances[0].score)
            best.semantic = tiling.semantic
            k = top_k or self.engine.cfg.top_k
            best.instances = best.instances[:1] + _ranked_alternatives(
                best.instances[0], tiling.result.instances, len(tiling.snapshot.points), k - 1)
            return best

        return self._light(snapshot, "refer", self.engine.refer(_EMPTY, text, top_k), answer)

    def open_vocab(self, snapshot: Any, class_names: list[str], score_threshold: float = 0.0) -> QueryResult:
        """Open-vocabulary instances of every tile, merged across borders like ``segment``'s."""
        def answer(tiling: _Tiling) -> QueryResult:
            parts = []
            for t in tiling.tiles.values():
                res = self._ask(tiling, t, lambda s: self.engine.open_vocab(s, class_names, score_threshold))
                if not res.success:
                    return res
                i = res.instances
                parts.append(TileResult(t.key, t.rows, [x.point_indices.astype(ROW) for x in i],
                                        [x.class_id for x in i], [x.score for x in i], [x.label for x in i],
                                        t.semantic[:0]))
            merged = merge_tile_instances(parts, self.cfg.merge_fraction, self.cfg.reach)
            merged = merged[: self.engine.cfg.max_instances]
            pts = tiling.snapshot.points
            insts = [rows_instance(pts, rows, k, cls, score, label)
                     for k, (rows, cls, score, label) in enumerate(merged)]
            names = [str(c).strip() for c in class_names]
            return QueryResult(True, f"{len(insts)} instances over {len(names)} classes", insts,
                               class_names=names)

        probe = self.engine.open_vocab(_EMPTY, class_names, score_threshold)
        return self._light(snapshot, "open_vocab", probe, answer)

    def interactive(self, snapshot: Any, clicks: Any, max_click_distance: float = 0.0) -> QueryResult:
        """Clicks (K, 3): each goes to the tile whose square holds it (id = click index)."""
        def answer(tiling: _Tiling) -> QueryResult:
            pts = np.asarray(clicks, dtype=np.float64).reshape(-1, 3)
            out = []
            for k, c in enumerate(pts):
                key = (int(np.floor(c[0] / self.cfg.tile_size)), int(np.floor(c[1] / self.cfg.tile_size)))
                tile = tiling.tiles.get(key)
                if tile is None:
                    return QueryResult.failure(
                        f"clicks[{k}] {np.round(c, 3).tolist()} is off the map (no segmented tile holds it)",
                        "interactive")
                res = self._ask(tiling, tile,
                                lambda s, c=c: self.engine.interactive(s, c[None], max_click_distance))
                if not res.success:
                    res.message = res.message.replace("clicks[0]", f"clicks[{k}]", 1)
                    return res
                inst = res.instances[0]
                inst.id = k
                out.append(inst)
            return QueryResult(True, f"{len(out)} clicks segmented", out,
                               class_names=list(self.engine.class_names), semantic=tiling.semantic)

        probe = self.engine.interactive(_EMPTY, clicks, max_click_distance)
        return self._light(snapshot, "interactive", probe, answer)


@dataclass
class _Empty:
    """An empty map snapshot: the engine's request checks answer it before looking at the map."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    version: int = -1


_EMPTY = _Empty()


def _per_tile(progress: Any, number: int, count: int) -> Any:
    """``progress`` for tile ``number`` of ``count``: a callback with a ``tile`` keyword gets
    ``tile=(number, count)`` with each stage (the merge afterwards: none); others as they are."""
    if progress is None:
        return None
    try:
        takes_tile = "tile" in inspect.signature(progress).parameters
    except (TypeError, ValueError):
        takes_tile = False
    return (lambda stage, cached: progress(stage, cached, tile=(number, count))) if takes_tile else progress


def _ranked_alternatives(referred: InstanceInfo, candidates: list[InstanceInfo], n: int,
                         k: int) -> list[InstanceInfo]:
    """Copies of the ``k`` ``candidates`` (instances over ``n`` snapshot rows) ranked as
    :func:`rank_by_overlap` ranks dense masks (IoU x score against ``referred``), scored by that,
    ids 1, 2, ...; IoU from point rows, so no (M, N) mask is built for a large map."""
    if k <= 0 or not candidates:
        return []
    mask = np.zeros(n, bool)
    mask[referred.point_indices] = True
    inter = np.array([np.count_nonzero(mask[c.point_indices]) for c in candidates], np.float64)
    union = np.array([c.point_count for c in candidates], np.float64) + referred.point_count - inter
    order, rank = rank_by_iou(inter / np.maximum(union, 1), np.array([c.score for c in candidates]), k)
    return [replace(candidates[j], id=m, score=float(r)) for m, (j, r) in enumerate(zip(order, rank), 1)]
