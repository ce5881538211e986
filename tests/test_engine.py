"""InferenceEngine on a real SceneMap snapshot of a small labelled room, with the untrained small model
(hash text encoder): validation answers, encode caching per map version, instance statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.synthetic_room import make_room
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.text_encoders import build_text_encoder
from uniseg3d_ros.inference.engine import (
    EngineConfig,
    InferenceEngine,
    QueryResult,
    instance_stats,
)
from uniseg3d_ros.inference.loading import load_engine
from uniseg3d_ros.mapping.scene_map import SceneMap


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash")).eval()
    return InferenceEngine(model, EngineConfig(score_threshold=0.3, max_click_distance=0.1))


@pytest.fixture(scope="module")
def room_map():
    room = make_room(seed=0, density=150.0)
    scene_map = SceneMap(voxel_size=0.02)
    scene_map.integrate(room.points, room.colors, np.eye(4), stamp=1.0)
    return scene_map


def check_geometry(result: QueryResult):
    """Every instance's stats are those of its points in the snapshot."""
    for inst in result.instances:
        p = result.points[inst.point_indices].astype(np.float64)
        assert inst.point_count == len(inst.point_indices) > 0
        assert np.all(np.diff(inst.point_indices) > 0)
        np.testing.assert_allclose(inst.centroid, p.mean(0), atol=1e-9)
        np.testing.assert_allclose(inst.bbox_min, p.min(0))
        np.testing.assert_allclose(inst.bbox_max, p.max(0))


def test_segment_returns_instances_with_consistent_geometry(engine, room_map):
    res = engine.segment(room_map.snapshot(), score_threshold=1e-6)
    assert res.success, res.message
    assert len(res.points) == len(room_map) and res.semantic.shape == (len(room_map),)
    assert len(res.instances) > 0
    check_geometry(res)
    assert all(
        0 <= i.class_id < len(res.class_names) and i.label == res.class_names[i.class_id]
        for i in res.instances
    )
    label, instance = res.point_labels()
    for inst in res.instances:  # segment instances are painted panoptically: disjoint masks
        np.testing.assert_array_equal(np.flatnonzero(instance == inst.id), inst.point_indices)
        assert (label[inst.point_indices] == inst.class_id).all()


def test_queries_on_an_unchanged_map_reuse_the_encoding(engine, room_map):
    snap = room_map.snapshot()
    before = engine.encode_count
    first = engine.segment(snap)
    second = engine.refer(snap, "the red chair")
    third = engine.open_vocab(snap, ["mug", "chair"])
    assert [first.success, second.success, third.success] == [True, True, True]
    assert engine.encode_count - before <= 1 and second.cached and third.cached
    room_map.integrate(np.array([[5.0, 5.0, 0.0]], np.float32), None, np.eye(4), stamp=2.0)
    changed = engine.segment(room_map.snapshot())
    assert not changed.cached and changed.map_version != first.map_version


def test_refer_ranks_the_text_mask_first(engine, room_map):
    res = engine.refer(room_map.snapshot(), "  the blue table in the middle ", top_k=3)
    assert res.success, res.message
    assert 1 <= len(res.instances) <= 3
    assert [i.id for i in res.instances] == list(range(len(res.instances)))
    check_geometry(res)


def test_open_vocab_labels_come_from_the_request(engine, room_map):
    names = ["mug", "laptop", "chair"]
    res = engine.open_vocab(room_map.snapshot(), names, score_threshold=1e-6)
    assert res.success and res.class_names == names
    assert all(i.label == names[i.class_id] for i in res.instances)
    check_geometry(res)


def test_open_vocab_lets_wall_and_floor_compete_unasked(room_map):
    """The model's stuff classes compete in every vocabulary without being returned: asking for
    [chair, table] gives exactly the chair / table instances of asking for [chair, table, wall,
    floor] (same masks, scores), and no instance lies mostly on the room's wall or floor. The
    shipped model (official heads: the instance head never scores stuff; a model with our heads
    would call a floor region "table" without the hidden competitors)."""
    from scipy.spatial import cKDTree

    from uniseg3d_model.data.labels import SCANNET20_CLASSES

    engine = load_engine("")
    snap = room_map.snapshot()
    # a low threshold: this toy room is unlike the fused rooms the model was trained on (at the
    # node's 0.3 it returns nothing here)
    asked = engine.open_vocab(snap, ["chair", "table"], score_threshold=0.05)
    full = engine.open_vocab(snap, ["chair", "table", "wall", "floor"], score_threshold=0.05)
    assert asked.success and full.success and asked.instances
    things = [i for i in full.instances if i.label in ("chair", "table")]
    assert [(i.label, round(i.score, 6), tuple(i.point_indices)) for i in asked.instances] == [
        (i.label, round(i.score, 6), tuple(i.point_indices)) for i in things
    ]
    room = make_room(seed=0, density=150.0)  # the map's room: ground truth by nearest point
    nearest = cKDTree(room.points).query(snap.points)[1]
    stuff = np.isin(room.semantic[nearest], [SCANNET20_CLASSES.index(n) for n in ("wall", "floor")])
    assert all(stuff[i.point_indices].mean() <= 0.5 for i in asked.instances)


def test_interactive_gives_one_instance_per_click(engine, room_map):
    snap = room_map.snapshot()
    clicks = snap.points[[10, len(snap.points) // 2]]
    res = engine.interactive(snap, clicks)
    assert res.success, res.message
    assert [i.id for i in res.instances] == [0, 1]
    check_geometry(QueryResult(True, "", [i for i in res.instances if i.point_count], points=res.points))


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda e, s: e.refer(s, "   "), "text is empty"),
        (lambda e, s: e.refer(s, "chair", top_k=-1), "top_k"),
        (lambda e, s: e.open_vocab(s, []), "class_names is empty"),
        (lambda e, s: e.open_vocab(s, ["chair", " "]), r"class_names\[1\] is empty"),
        (lambda e, s: e.segment(s, score_threshold=1.5), "score_threshold"),
        (lambda e, s: e.interactive(s, np.zeros((0, 3))), "clicks is empty"),
        (lambda e, s: e.interactive(s, [[np.nan, 0, 0]]), r"clicks\[0\] is not finite"),
        (
            lambda e, s: e.interactive(s, [[1.0, 1.0, 0.05], [9.0, 9.0, 9.0]]),
            r"clicks\[1\].*max_click_distance",
        ),
    ],
)
def test_bad_requests_fail_with_a_reason(engine, room_map, call, reason):
    res = call(engine, room_map.snapshot())
    assert not res.success
    assert pytest.importorskip("re").search(reason, res.message), res.message


def test_empty_map_fails_every_query(engine):
    snap = SceneMap().snapshot()
    for res in (
        engine.segment(snap),
        engine.refer(snap, "chair"),
        engine.open_vocab(snap, ["chair"]),
        engine.interactive(snap, [[0.0, 0.0, 0.0]]),
    ):
        assert not res.success and "map is empty" in res.message


def test_instance_stats_of_known_masks():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 5, 5]], np.float32)
    masks = np.array([[1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    out = instance_stats(pts, masks, [3, 4, 5], [0.9, 0.5, 0.1], ["a", "b", "c"], first_id=7)
    assert [i.id for i in out] == [7, 8, 9]
    np.testing.assert_allclose(out[0].centroid, [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(out[0].bbox_max, [1, 2, 0])
    assert out[1].point_indices.tolist() == [3] and out[2].point_count == 0
    with pytest.raises(ValueError, match="lengths"):
        instance_stats(pts, masks, [1], [0.5], ["a"])


def test_missing_named_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_engine(str(tmp_path / "nope.pt"), text_encoder="hash")


def test_random_model_fallback_is_announced(monkeypatch, tmp_path):
    import uniseg3d_ros.inference.loading as engine_mod

    monkeypatch.setattr(engine_mod, "default_checkpoint", lambda: tmp_path / "absent.pt")
    eng = load_engine("", text_encoder="hash")
    assert any("RANDOMLY INITIALISED" in n for n in eng.notes)


def test_prompt_only_decode_matches_the_joint_decode(engine, room_map):
    from dataclasses import replace

    from uniseg3d_model import postprocess

    prep, _ = engine._prepare(room_map.snapshot())
    scene = replace(prep.scene, texts=["the red chair"], clicks=prep.scene.points[[5]])
    with torch.inference_mode():
        joint = engine.model.decode(prep.encodings, [scene])[0]
        alone = engine.model.decode(prep.encodings, [scene], unified=False)[0]
    assert engine.model.cfg.isolate_prompts
    for a, b in zip(postprocess.referring(joint, scene), postprocess.referring(alone, scene)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(
        postprocess.interactive(joint, scene), postprocess.interactive(alone, scene)
    )
