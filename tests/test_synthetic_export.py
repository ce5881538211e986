"""ScanNet raw-layout export of synthetic scenes: file formats, exact aggregation, determinism."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from uniseg3d_model.synthetic.categories import TSV_COLUMNS
from uniseg3d_model.synthetic.ply import read_ply
from uniseg3d_model.synthetic.scannet_export import export_scene, segment_scene, write_label_map, write_splits
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene

CFG = SceneConfig(spacing=0.06)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet")
    scene = generate_scene(2, "scene0002_00", CFG, room_type="bedroom")
    segs = segment_scene(scene)
    export_scene(scene, root, segments=segs)
    write_label_map(root)
    write_splits(root, ["scene0002_00"], [])
    return root, scene, segs


def test_mesh_ply_round_trip(exported):
    root, scene, _ = exported
    v, f = read_ply(root / "scans/scene0002_00/scene0002_00_vh_clean_2.ply")
    assert v.dtype.names == ("x", "y", "z", "red", "green", "blue", "alpha")
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), scene.vertices)
    assert np.array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), scene.colors)
    assert np.all(v["alpha"] == 255)
    assert np.array_equal(f, scene.faces)
    header = (root / "scans/scene0002_00/scene0002_00_vh_clean_2.ply").read_bytes()[:400]
    assert b"format binary_little_endian 1.0" in header
    assert b"property list uchar int vertex_indices" in header


def test_labels_ply_holds_nyu40_ids(exported):
    root, scene, _ = exported
    v, f = read_ply(root / "scans/scene0002_00/scene0002_00_vh_clean_2.labels.ply")
    assert v.dtype["label"] == np.dtype("<u2")
    assert np.array_equal(v["label"].astype(np.int64), scene.semantic)
    assert len(f) == len(scene.faces)


def test_segs_json_covers_every_vertex(exported):
    root, scene, segs = exported
    data = json.loads((root / "scans/scene0002_00/scene0002_00_vh_clean_2.0.010000.segs.json").read_text())
    assert data["sceneId"] == "scene0002_00" and data["params"]["kThresh"] == "0.01"
    assert np.array_equal(np.array(data["segIndices"]), segs)
    assert len(np.unique(segs)) > len(scene.objects)  # an over-segmentation


def test_aggregation_segments_are_exactly_each_object(exported):
    root, scene, segs = exported
    agg = json.loads((root / "scans/scene0002_00/scene0002_00.aggregation.json").read_text())
    assert agg["sceneId"] == "scannet.scene0002_00" and agg["appId"] == "Aggregator.v2"
    assert agg["segmentsFile"] == "scannet.scene0002_00_vh_clean_2.0.010000.segs.json"
    annotated = [o for o in scene.objects if o.annotated]
    assert len(agg["segGroups"]) == len(annotated)
    covered = np.zeros(scene.num_vertices, dtype=int)
    for g in agg["segGroups"]:
        obj = scene.object(g["objectId"])
        assert g["label"] == obj.raw_category and g["id"] == g["objectId"]
        mask = np.isin(segs, g["segments"])
        assert np.array_equal(mask, scene.instance == obj.object_id)
        covered += mask
    assert np.all(covered == (scene.semantic > 0))  # unannotated vertices: in no segGroup


def test_label_map_has_real_columns_and_categories(exported):
    root, scene, _ = exported
    with open(root / "scannetv2-labels.combined.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert tuple(rows[0].keys()) == TSV_COLUMNS
    by_raw = {r["raw_category"]: r for r in rows}
    for obj in scene.objects:
        assert int(by_raw[obj.raw_category]["nyu40id"]) == obj.nyu40id
    assert by_raw["couch"]["nyu40class"] == "sofa" and by_raw["chair"]["id"] == "2"
    assert (root / "scannetv2_train.txt").read_text() == "scene0002_00\n"
    assert (root / "scannetv2_val.txt").read_text() == ""


def test_export_is_byte_identical_for_same_seed(tmp_path):
    for d in ("a", "b"):
        export_scene(generate_scene(5, "scene0005_00", CFG), tmp_path / d)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 5
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_segments_crossing_objects_are_rejected(tmp_path):
    scene = generate_scene(2, "scene0002_00", CFG, room_type="bathroom")
    with pytest.raises(ValueError, match="also cover other objects"):
        export_scene(scene, tmp_path, segments=np.zeros(scene.num_vertices, dtype=np.int64))
