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
    tiled.segment(snap)
    ref = tiled.refer(snap, "the red chair")
    assert ref.success and ref.instances[0].point_count > 0
    assert ref.instances[0].point_indices.max() < len(snap.points)
    far_apart = snap.points[[np.argmin(snap.points[:, 0]), np.argmax(snap.points[:, 0])]]
    clicks = tiled.interactive(snap, far_apart)
    assert clicks.success and len(clicks.instances) == 2
    for inst, c in zip(clicks.instances, far_apart):
        d = np.linalg.norm(snap.points[inst.point_indices] - c, axis=1).min()
        assert d < 0.05  # each click's mask lies at the click, in the tile that holds it
