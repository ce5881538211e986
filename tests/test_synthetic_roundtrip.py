"""Synthetic scene -> ScanNet raw files -> the data code's preparation: the same points and labels."""

from __future__ import annotations

import numpy as np
import pytest

from uniseg3d_model.data.labels import IGNORE_INDEX, NYU40_TO_SCANNET20, SCANNET200_CLASSES
from uniseg3d_model.synthetic.scannet_export import export_scene, segment_scene, write_label_map
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene

scannet = pytest.importorskip("uniseg3d_model.data.scannet")
scannet_io = pytest.importorskip("uniseg3d_model.data.scannet_io")


def test_prepared_scene_matches_generated_scene(tmp_path):
    cfg = SceneConfig(spacing=0.08, clutter=2.0, unannotated=0.5)
    scene = generate_scene(31, "scene0031_00", cfg, room_type="living room")
    segs = segment_scene(scene)
    export_scene(scene, tmp_path, segments=segs)
    label_map = scannet_io.read_label_map(write_label_map(tmp_path))
    p = scannet.prepare_scene(tmp_path / "scans" / "scene0031_00", "scene0031_00", label_map)

    assert np.array_equal(p["points"], scene.vertices)
    assert np.allclose(p["colors"] * 255.0, scene.colors, atol=1e-3)
    sem20 = np.array([NYU40_TO_SCANNET20.get(int(n), IGNORE_INDEX) for n in scene.semantic])
    assert np.array_equal(p["semantic20"], sem20)
    # superpoints are the exported segments, renumbered
    assert len(np.unique(p["superpoints"])) == len(np.unique(segs))
    pairs = np.unique(np.stack([p["superpoints"], segs], 1), axis=0)
    assert len(pairs) == len(np.unique(segs))
    # one instance per furniture object, same vertices, same class, same ScanRefer object id
    things = [o for o in scene.objects if o.raw_category not in ("wall", "floor") and o.annotated]
    assert any(not o.annotated for o in scene.objects) and any(o.scannet20 < 0 for o in things)
    assert len(p["instance_object_id"]) == len(things)
    for k, oid in enumerate(p["instance_object_id"]):
        obj = scene.object(int(oid))
        assert np.array_equal(p["instance"] == k, scene.instance == oid)
        assert p["instance_class"][k] == (obj.scannet20 if obj.scannet20 >= 0 else IGNORE_INDEX)
        assert SCANNET200_CLASSES[p["instance_class200"][k]] == obj.raw_category
    walls = np.isin(scene.semantic, [1, 2])
    assert np.all(p["instance"][walls] == IGNORE_INDEX)
    unannotated = scene.semantic == 0
    assert np.all(p["instance"][unannotated] == IGNORE_INDEX)
    assert np.all(p["semantic200"][unannotated] == IGNORE_INDEX)


def test_in_memory_sample_matches_prepared_dataset_labels(tmp_path):
    from uniseg3d_model.data.dataset import select_instances
    from uniseg3d_model.data.labels import IS_THING
    from uniseg3d_model.synthetic.sample import scene_to_sample
    from uniseg3d_model.synthetic.sentences import scene_referrals

    cfg = SceneConfig(spacing=0.08, clutter=2.0, unannotated=0.5)
    scene = generate_scene(36, "scene0036_00", cfg, room_type="office")
    segs = segment_scene(scene)
    export_scene(scene, tmp_path, segments=segs)
    label_map = scannet_io.read_label_map(write_label_map(tmp_path))
    p = scannet.prepare_scene(tmp_path / "scans" / "scene0036_00", "scene0036_00", label_map)
    instance, inst_cls, _ = select_instances(p["instance"], p["instance_class"], IS_THING)

    refs = scene_referrals(scene, np.random.default_rng(0))
    s = scene_to_sample(scene, segs, refs, num_clicks=4)
    assert np.array_equal(s.points, p["points"]) and np.allclose(s.colors, p["colors"])
    assert np.array_equal(s.superpoints, p["superpoints"])
    assert np.array_equal(s.semantic, p["semantic20"])
    assert np.array_equal(s.instance, instance) and np.array_equal(s.instance_class, inst_cls)
    assert len(s.texts) == len(refs) > 0
    for text, inst in zip(s.texts, s.text_instance):
        ref = next(r for r in refs if r.description == text)
        assert np.array_equal(s.instance == inst, scene.instance == ref.object_id)
    assert s.clicks.shape == (4, 3)
    for c, inst in zip(s.clicks, s.click_instance):  # each click is a vertex of its instance
        assert inst in s.instance[np.all(s.points == c, axis=1)]
