"""Tiled segmentation of maps beyond one room: overlapping tile layout, merging of instances cut by
tile borders, per-tile caching (a new frame re-encodes only the tiles it touched), and referring /
clicks over all tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.synthetic_room import make_room
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.text_encoders import build_text_encoder
from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine
from uniseg3d_ros.inference.tiles import TileConfig, TiledEngine, TileResult, merge_tile_instances, tile_rows
from uniseg3d_ros.mapping.scene_map import SceneMap

CFG = TileConfig(tile_size=1.0, overlap=0.3, min_points=10)


@pytest.fixture(scope="module")
def room():
    return make_room(seed=0, density=250.0)


def test_every_point_is_in_its_square_and_border_points_in_both_neighbours(room):
    layout = tile_rows(room.points, CFG.tile_size, CFG.overlap)
    member = {key: set(rows.tolist()) for key, rows in layout.items()}
    square = np.floor(room.points[:, :2] / CFG.tile_size).astype(int)
    for i in range(0, len(room.points), 97):
        assert i in member[tuple(square[i])]
        x = room.points[i, 0]
        near = x - np.floor(x / CFG.tile_size) * CFG.tile_size  # distance past the square's left edge
        if near < CFG.overlap - 1e-6:
            assert i in member[(square[i, 0] - 1, square[i, 1])]


def oracle_tiles(room, layout) -> list[TileResult]:
    """Each tile's instances = the true objects restricted to the tile (a perfect per-tile model)."""
    out = []
    for key, rows in layout.items():
        inst = room.instance[rows]
        ids = [i for i in np.unique(inst) if i >= 0]
        masks = [rows[inst == i] for i in ids]
        classes = [int(room.instance_class[i]) for i in ids]
        out.append(TileResult(key, rows, masks, classes, [1.0] * len(ids), [str(c) for c in classes],
                              np.zeros(len(rows), np.int64)))
    return out


def test_objects_cut_by_tile_borders_come_back_as_one_instance(room):
    layout = tile_rows(room.points, CFG.tile_size, CFG.overlap)
    tiles = oracle_tiles(room, layout)
    cut = [i for i in np.unique(room.instance) if i >= 0
           and sum(np.any(room.instance[r] == i) for r in layout.values()) > 1]
    assert cut, "no object spans two tiles: make the tiles smaller"
    merged = merge_tile_instances(tiles, CFG.merge_fraction)
    truth = {int(i): np.flatnonzero(room.instance == i) for i in np.unique(room.instance) if i >= 0}
    assert len(merged) == len(truth)
    for rows, *_ in merged:
        i = int(room.instance[rows[0]])
        np.testing.assert_array_equal(rows, truth[i])


def _two_tiles(a_masks, a_classes, b_masks, b_classes):
    """Tiles (0, 0) rows 0-199 and (1, 0) rows 100-299 (common region: rows 100-199)."""
    def tile(key, rows, masks, classes):
        masks = [np.arange(lo, hi, dtype=np.int32) for lo, hi in masks]
        return TileResult(key, np.arange(*rows, dtype=np.int32), masks, classes, [0.9] * len(masks),
                          [f"class {c}" for c in classes], np.zeros(rows[1] - rows[0], np.int16))
    return [tile((0, 0), (0, 200), a_masks, a_classes), tile((1, 0), (100, 300), b_masks, b_classes)]


def test_one_region_named_differently_by_two_tiles_merges_a_small_object_inside_a_bigger_one_does_not():
    # a couch seen as class 5 by one tile, class 3 by the other: 80 of the 100 common rows shared
    merged = merge_tile_instances(_two_tiles([(50, 180)], [5], [(100, 251)], [3]), 0.5)
    assert len(merged) == 1
    rows, cls, _, label = merged[0]
    np.testing.assert_array_equal(rows, np.arange(50, 251))
    assert (cls, label) == (3, "class 3")  # the larger part's class
    # a 20-row chair inside a 200-row table of the other tile: the same class would merge, another not
    same = merge_tile_instances(_two_tiles([(120, 140)], [3], [(100, 300)], [3]), 0.5)
    other = merge_tile_instances(_two_tiles([(120, 140)], [2], [(100, 300)], [7]), 0.5)
    assert len(same) == 1 and len(other) == 2


@pytest.fixture(scope="module")
def tiled():
    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash")).eval()
    return TiledEngine(InferenceEngine(model, EngineConfig(score_threshold=0.05, max_click_distance=0.2)),
                       TileConfig(tile_size=1.2, overlap=0.3, min_points=50))


def test_a_new_frame_re_encodes_only_the_tiles_it_touched(tiled, room):
    m = SceneMap(0.02)
    m.integrate(room.points, room.colors, np.eye(4), stamp=1.0)
    first = tiled.segment(m.snapshot())
    assert first.success and tiled.encoded_last == len(tiled.tiles) >= 3
    again = tiled.segment(m.snapshot())
    assert again.success and tiled.encoded_last == 0
    same = [i.point_indices.tolist() for i in first.instances]
    assert [i.point_indices.tolist() for i in again.instances] == same
    corner = np.float32([[0.6, 0.6, 0.02], [0.62, 0.6, 0.02]])  # inside one square, away from overlaps
    m.integrate(corner, None, np.eye(4), stamp=2.0)
    snap = m.snapshot()
    third = tiled.segment(snap)
    assert third.success and tiled.encoded_last == 1
    for inst in third.instances:  # indices address the full snapshot
        assert inst.point_indices.max() < len(snap.points)


@pytest.mark.parametrize("keep", [True, False], ids=["kept_entries", "bounded_memory"])
def test_refer_and_clicks_search_all_tiles(tiled, room, keep):
    tiled.cfg.keep_entries = keep
    tiled.invalidate()
    m = SceneMap(0.02)
    m.integrate(room.points, room.colors, np.eye(4), stamp=1.0)
    snap = m.snapshot()
    seg = tiled.segment(snap)
    ref = tiled.refer(snap, "the red chair", top_k=4)
    assert ref.success and ref.instances[0].point_count > 0
    assert ref.instances[0].point_indices.max() < len(snap.points)
    # alternatives: the merged segment instances (whole objects across tiles), best IoU x score first
    referred, alts = set(ref.instances[0].point_indices.tolist()), ref.instances[1:]
    merged = {tuple(i.point_indices.tolist()): i.score for i in seg.instances}
    assert 1 <= len(alts) <= 3 and [a.id for a in alts] == list(range(1, len(alts) + 1))
    ranks = []
    for a in alts:
        rows = tuple(a.point_indices.tolist())
        inter = len(referred.intersection(rows))
        assert rows in merged and inter > 0
        ranks.append(inter / (len(referred) + len(rows) - inter) * merged[rows])
        assert a.score == pytest.approx(ranks[-1])
    assert ranks == sorted(ranks, reverse=True)
    far_apart = snap.points[[np.argmin(snap.points[:, 0]), np.argmax(snap.points[:, 0])]]
    clicks = tiled.interactive(snap, far_apart)
    assert clicks.success and len(clicks.instances) == 2
    for inst, c in zip(clicks.instances, far_apart):
        d = np.linalg.norm(snap.points[inst.point_indices] - c, axis=1).min()
        assert d < 0.05  # each click's mask lies at the click, in the tile that holds it


def test_light_queries_never_wait_for_a_tiled_build_and_tiles_leave_the_shared_entry_alone(tiled, room):
    import threading
    import time

    from uniseg3d_ros.inference.engine import Cancelled

    tiled.cfg.keep_entries = True
    tiled.invalidate()
    m = SceneMap(0.02)
    m.integrate(room.points, room.colors, np.eye(4), stamp=1.0)
    old = m.snapshot()
    assert tiled.segment(old).success
    click = old.points[np.argmax(old.points[:, 0])][None]
    m.integrate(np.float32([[0.6, 0.6, 0.02]]), None, np.eye(4), stamp=2.0)
    new = m.snapshot()
    in_tile, release = threading.Event(), threading.Event()
    seen: list = []

    def progress(stage, cached):  # the build of the new version stops inside its first tile
        seen.append(stage)
        if stage == "backbone":
            in_tile.set()
            release.wait(30)

    out: list = []
    worker = threading.Thread(target=lambda: out.append(tiled.segment(new, progress=progress)))
    worker.start()
    try:
        assert in_tile.wait(30)
        assert tiled.building is not None and tiled.building[0] == new.version
        assert tiled.engine.building is None and tiled.engine._prep is None  # tiles use private slots
        for ask in (lambda: tiled.refer(new, "the red chair"), lambda: tiled.interactive(new, click),
                    lambda: tiled.open_vocab(new, ["chair", "table"])):
            t0 = time.perf_counter()
            res = ask()
            assert time.perf_counter() - t0 < 5.0  # a decoder pass per tile, never the build
            assert res.success and f"on map version {old.version}" in res.message, res.message
            assert res.map_version == old.version and len(res.points) == len(old.points)
    finally:
        release.set()
        worker.join(60)
    assert out[0].success and out[0].map_version == new.version and tiled.encoded_last == 1
    assert seen[:4] == ["superpoints", "backbone", "decoder", "postprocess"] and seen[-1] == "postprocess"

    # a cancel between stages keeps the finished tiles; a new threshold re-runs postprocess only
    m.integrate(np.float32([[0.6, 0.6, 0.04], [2.2, 2.2, 0.02]]), None, np.eye(4), stamp=3.0)
    newer = m.snapshot()

    def cancel_second_tile(stage, cached, n=[0]):  # noqa: B006 - a counter
        n[0] += stage == "superpoints"
        if n[0] == 2:
            raise Cancelled(stage)

    with pytest.raises(Cancelled):
        tiled.segment(newer, progress=cancel_second_tile)
    assert tiled.segment(newer).success and tiled.encoded_last == 1  # the other touched tile
    before = tiled.engine.encode_count
    strict = tiled.segment(newer, score_threshold=0.9)
    assert strict.success and tiled.engine.encode_count == before
    assert all(i.score >= 0.9 for i in strict.instances)


def test_tiled_segment_masks_are_disjoint_and_index_the_snapshot(tiled, room):
    tiled.invalidate()
    m = SceneMap(0.02)
    m.integrate(room.points, room.colors, np.eye(4), stamp=1.0)
    snap = m.snapshot()
    res = tiled.segment(snap, score_threshold=0.01)
    rows = np.concatenate([i.point_indices for i in res.instances])
    assert res.success and len(rows) == len(np.unique(rows)) and rows.max() < len(snap.points)
    label, instance = res.point_labels()
    assert len(label) == len(snap.points) and (instance[rows] >= 0).all()
