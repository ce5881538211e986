"""Raw ScanNet v2 layout -> processed .npz: labels, superpoints, instances, ScanRefer, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scannet_scenes import TINY_OBJECTS, write_tiny_raw
from training.prepare_scannet import main as prepare_main
from uniseg3d_model.data.labels import (
    IGNORE_INDEX,
    NYU40_TO_SCANNET20,
    SCANNET20_CLASSES,
    SCANNET200_CLASSES,
)
from uniseg3d_model.data.scannet import load_processed, prepare_scannet, prepare_scene
from uniseg3d_model.data.scannet_io import read_label_map, read_ply, write_ply


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_raw(tmp_path_factory.mktemp("raw"))


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip_keeps_custom_properties_and_faces(tmp_path: Path, binary: bool) -> None:
    rng = np.random.default_rng(0)
    vertex = {"x": rng.normal(size=7).astype(np.float32), "y": rng.normal(size=7).astype(np.float32),
              "z": rng.normal(size=7).astype(np.float32), "red": rng.integers(0, 256, 7).astype(np.uint8),
              "label": rng.integers(0, 41, 7).astype(np.uint16)}
    faces = rng.integers(0, 7, (5, 3))
    write_ply(tmp_path / "m.ply", vertex, faces, binary=binary)
    got = read_ply(tmp_path / "m.ply")
    for k, v in vertex.items():
        np.testing.assert_allclose(got["vertex"][k], v, rtol=1e-6)
        assert got["vertex"][k].dtype == v.dtype
    np.testing.assert_array_equal(got["face"]["vertex_indices"], faces)


def test_prepared_labels_match_the_raw_annotation(raw: Path) -> None:
    scene = prepare_scene(raw / "scans" / "scene0000_00", "scene0000_00",
                          read_label_map(raw / "scannetv2-labels.combined.tsv"))
    truth = np.load(raw / "truth_scene0000_00.npz")
    np.testing.assert_allclose(scene["points"], truth["points"], atol=1e-6)
    assert scene["colors"].min() >= 0 and scene["colors"].max() <= 1
    # superpoints: 0..S-1, same partition as the raw segIndices
    sp, seg = scene["superpoints"], truth["seg"]
    assert set(np.unique(sp)) == set(range(len(np.unique(seg))))
    assert len(np.unique(sp * 10_000 + np.unique(seg, return_inverse=True)[1])) == len(np.unique(seg))
    labels = truth["object"]  # per-vertex index into TINY_OBJECTS, -1 unannotated
    for oi, (raw_name, _nyu40, name20, name200) in enumerate(TINY_OBJECTS):
        m = labels == oi
        want20 = SCANNET20_CLASSES.index(name20) if name20 else IGNORE_INDEX
        assert np.all(scene["semantic20"][m] == want20), raw_name
        assert np.all(scene["semantic200"][m] == SCANNET200_CLASSES.index(name200)), raw_name
    assert np.all(scene["semantic20"][labels < 0] == IGNORE_INDEX)
    assert np.all(scene["semantic200"][labels < 0] == IGNORE_INDEX)
    # instances: every non wall/floor object, each exactly its vertices
    things = [oi for oi, o in enumerate(TINY_OBJECTS) if o[0] not in ("wall", "floor")]
    assert len(scene["instance_class"]) == len(things)
    for inst, oi in enumerate(things):
        np.testing.assert_array_equal(scene["instance"] == inst, labels == oi)
        name20, name200 = TINY_OBJECTS[oi][2], TINY_OBJECTS[oi][3]
        want = SCANNET20_CLASSES.index(name20) if name20 else IGNORE_INDEX
        assert scene["instance_class"][inst] == want
        assert scene["instance_class200"][inst] == SCANNET200_CLASSES.index(name200)
    assert np.all(scene["instance"][np.isin(labels, [0, 1])] == IGNORE_INDEX)


def test_semantic20_follows_nyu40_mapping(raw: Path) -> None:
    scene = prepare_scene(raw / "scans" / "scene0000_00", "scene0000_00",
                          read_label_map(raw / "scannetv2-labels.combined.tsv"))
    nyu = read_ply(raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.labels.ply")["vertex"]["label"]
    want = np.array([NYU40_TO_SCANNET20.get(int(v), IGNORE_INDEX) for v in nyu])
    np.testing.assert_array_equal(scene["semantic20"], want)


def test_prepare_scannet_writes_splits_and_joins_scanrefer(raw: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="1 sentence"):
        counts = prepare_scannet(raw, tmp_path, scanrefer=[raw / "ScanRefer_filtered.json"], progress=False)
    assert counts == {"train": 2, "val": 1}
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["scene0000_00.npz", "scene0001_00.npz"]
    val = load_processed(tmp_path / "val" / "scene0002_00.npz")
    assert val["points"].dtype == np.float32 and val["superpoints"].dtype == np.int64
    refs = json.loads((tmp_path / "train_referring.json").read_text())
    assert len(refs) == 3  # the 4th train sentence names an object that does not exist
    for r in refs:
        scene = load_processed(tmp_path / "train" / f"{r['scene_id']}.npz")
        assert scene["instance_object_id"][r["instance"]] == r["object_id"]
    assert len(json.loads((tmp_path / "val_referring.json").read_text())) == 1


def test_cli_prepares_with_skip_existing(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare_main(["--raw", str(raw), "--out", str(tmp_path), "--splits", "val"])
    stamp = (tmp_path / "val" / "scene0002_00.npz").stat().st_mtime_ns
    prepare_main(["--raw", str(raw), "--out", str(tmp_path), "--splits", "val", "--skip-existing"])
    assert (tmp_path / "val" / "scene0002_00.npz").stat().st_mtime_ns == stamp
    assert "val: 1 scenes" in capsys.readouterr().out


def _copy_scene(raw: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "scene0000_00"
    dst.mkdir()
    for f in (raw / "scans" / "scene0000_00").iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("suffix", ["_vh_clean_2.ply", "_vh_clean_2.0.010000.segs.json", ".aggregation.json",
                                    "_vh_clean_2.labels.ply"])
def test_missing_file_error_names_it(raw: Path, tmp_path: Path, suffix: str) -> None:
    scan = _copy_scene(raw, tmp_path)
    (scan / f"scene0000_00{suffix}").unlink()
    with pytest.raises(FileNotFoundError, match=f"scene0000_00{suffix}"):
        prepare_scene(scan, "scene0000_00", read_label_map(raw / "scannetv2-labels.combined.tsv"))


def test_segs_length_mismatch_names_file(raw: Path, tmp_path: Path) -> None:
    scan = _copy_scene(raw, tmp_path)
    path = scan / "scene0000_00_vh_clean_2.0.010000.segs.json"
    seg = json.loads(path.read_text())
    path.write_text(json.dumps({"segIndices": seg["segIndices"][:-3]}))
    with pytest.raises(ValueError, match="segs.json.*segIndices"):
        prepare_scene(scan, "scene0000_00", read_label_map(raw / "scannetv2-labels.combined.tsv"))


@pytest.mark.parametrize("damage", ["truncate", "not_ply", "bad_json", "no_seggroups", "unknown_segment"])
def test_malformed_files_name_the_file(raw: Path, tmp_path: Path, damage: str) -> None:
    scan = _copy_scene(raw, tmp_path)
    mesh, agg = scan / "scene0000_00_vh_clean_2.ply", scan / "scene0000_00.aggregation.json"
    if damage == "truncate":
        mesh.write_bytes(mesh.read_bytes()[:-50])
        target = mesh
    elif damage == "not_ply":
        mesh.write_bytes(b"hello")
        target = mesh
    elif damage == "bad_json":
        agg.write_text("{not json")
        target = agg
    elif damage == "no_seggroups":
        agg.write_text(json.dumps({"sceneId": "x"}))
        target = agg
    else:
        data = json.loads(agg.read_text())
        data["segGroups"][2]["segments"].append(987654)
        agg.write_text(json.dumps(data))
        target = agg
    with pytest.raises(ValueError, match=target.name):
        prepare_scene(scan, "scene0000_00", read_label_map(raw / "scannetv2-labels.combined.tsv"))


def test_missing_scene_listed_in_split_file(raw: Path, tmp_path: Path) -> None:
    other = tmp_path / "raw"
    other.mkdir()
    (other / "scans").mkdir()
    (other / "scannetv2-labels.combined.tsv").write_text((raw / "scannetv2-labels.combined.tsv").read_text())
    (other / "scannetv2_train.txt").write_text("scene0999_00\n")
    with pytest.raises(FileNotFoundError, match="scene0999_00"):
        prepare_scannet(other, tmp_path / "out", splits=["train"], progress=False)
