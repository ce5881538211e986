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
