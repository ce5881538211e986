"""Raw ScanNet v2 layout -> processed .npz: labels, superpoints, instances, ScanRefer, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scannet_scenes import write_synthetic_raw
from training.prepare_scannet import main as prepare_main
from uniseg3d_model.data.labels import (
    IGNORE_INDEX,
    IS_THING,
    NYU40_TO_SCANNET20,
    SCANNET200_CLASSES,
)
from uniseg3d_model.data.scannet import load_processed, prepare_scannet, prepare_scene
from uniseg3d_model.data.scannet_io import read_label_map, read_ply, read_segs, write_ply
from uniseg3d_model.synthetic import SyntheticScene

SCENE = "scene0000_00"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, SyntheticScene]]:
    root = tmp_path_factory.mktemp("raw")
    return root, write_synthetic_raw(root)


@pytest.fixture(scope="module")
def raw(generated: tuple[Path, dict[str, SyntheticScene]]) -> Path:
    return generated[0]


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


def test_reads_the_generators_binary_meshes(generated: tuple[Path, dict[str, SyntheticScene]]) -> None:
    raw, scenes = generated
    mesh = read_ply(raw / "scans" / SCENE / f"{SCENE}_vh_clean_2.ply")
    np.testing.assert_allclose(np.stack([mesh["vertex"][k] for k in "xyz"], 1), scenes[SCENE].vertices,
                               atol=1e-6)
    np.testing.assert_array_equal(mesh["face"]["vertex_indices"], scenes[SCENE].faces)


def test_prepared_labels_match_the_generated_ground_truth(
        generated: tuple[Path, dict[str, SyntheticScene]]) -> None:
    raw, scenes = generated
    truth = scenes[SCENE]
    scene = prepare_scene(raw / "scans" / SCENE, SCENE, read_label_map(raw / "scannetv2-labels.combined.tsv"))
    np.testing.assert_allclose(scene["points"], truth.vertices, atol=1e-6)
    np.testing.assert_allclose(scene["colors"], truth.colors / 255.0, atol=1e-6)
    # superpoints: 0..S-1, the same partition as the raw segIndices
    seg = read_segs(raw / "scans" / SCENE / f"{SCENE}_vh_clean_2.0.010000.segs.json")
    sp = scene["superpoints"]
    assert set(np.unique(sp)) == set(range(len(np.unique(seg))))
    assert len(np.unique(np.stack([sp, seg]), axis=1).T) == len(np.unique(seg))
    want20 = np.array([NYU40_TO_SCANNET20.get(int(v), IGNORE_INDEX) for v in truth.semantic])
    np.testing.assert_array_equal(scene["semantic20"], want20)
    things = [o for o in truth.objects if o.annotated and o.raw_category not in ("wall", "floor")]
    assert len(scene["instance_class"]) == len(things) >= 3
    np.testing.assert_array_equal(scene["instance_object_id"], [o.object_id for o in things])
    for inst, obj in enumerate(things):
        mask = truth.instance == obj.object_id
        np.testing.assert_array_equal(scene["instance"] == inst, mask)
        assert np.all(scene["semantic200"][mask] == SCANNET200_CLASSES.index(obj.raw_category))
        assert scene["instance_class200"][inst] == SCANNET200_CLASSES.index(obj.raw_category)
        c20 = obj.scannet20
        assert scene["instance_class"][inst] == (c20 if c20 >= 0 and IS_THING[c20] else IGNORE_INDEX)
    for obj in truth.objects:
        if not obj.annotated:  # no segGroup: no instance, no ScanNet200 label (NYU40 0 -> IGNORE too)
            mask = truth.instance == obj.object_id
            assert np.all(scene["instance"][mask] == IGNORE_INDEX)
            assert np.all(scene["semantic200"][mask] == IGNORE_INDEX)
        elif obj.raw_category in ("wall", "floor"):
            mask = truth.instance == obj.object_id
            assert np.all(scene["instance"][mask] == IGNORE_INDEX)
            assert np.all(scene["semantic200"][mask] == SCANNET200_CLASSES.index(obj.raw_category))


def test_prepare_scannet_writes_splits_and_joins_scanrefer(
        generated: tuple[Path, dict[str, SyntheticScene]], tmp_path: Path) -> None:
    raw, scenes = generated
    entries = json.loads((raw / "ScanRefer_filtered_train.json").read_text())
    unannotated = [e for e in entries if not scenes[e["scene_id"]].object(int(e["object_id"])).annotated]
    entries = [e for e in entries if e not in unannotated]
    extra = tmp_path / "extra.json"  # one sentence naming an object the scene does not have
    extra.write_text(json.dumps([{**entries[0], "object_id": "999", "description": "a ghost"}]))
    with pytest.warns(UserWarning, match=f"{len(unannotated) + 1} sentence"):
        counts = prepare_scannet(raw, tmp_path / "out", progress=False,
                                 scanrefer=[raw / "ScanRefer_filtered_train.json", extra])
    assert counts == {"train": 2, "val": 1}
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "train").iterdir()) == ["scene0000_00.npz", "scene0001_00.npz"]
    val = load_processed(out / "val" / "scene0002_00.npz")
    assert val["points"].dtype == np.float32 and val["superpoints"].dtype == np.int64
    refs = json.loads((out / "train_referring.json").read_text())
    assert len(refs) == len(entries) > 0  # every sentence of an annotated object joined, the ghost left out
    for r in refs:
        scene = load_processed(out / "train" / f"{r['scene_id']}.npz")
        assert scene["instance_object_id"][r["instance"]] == r["object_id"]
    assert json.loads((out / "val_referring.json").read_text()) == []


def test_cli_prepares_with_skip_existing(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare_main(["--raw", str(raw), "--out", str(tmp_path), "--splits", "val"])
    stamp = (tmp_path / "val" / "scene0002_00.npz").stat().st_mtime_ns
    prepare_main(["--raw", str(raw), "--out", str(tmp_path), "--splits", "val", "--skip-existing"])
    assert (tmp_path / "val" / "scene0002_00.npz").stat().st_mtime_ns == stamp
    assert "val: 1 scenes" in capsys.readouterr().out


def _copy_scene(raw: Path, tmp_path: Path) -> Path:
    dst = tmp_path / SCENE
    dst.mkdir()
    for f in (raw / "scans" / SCENE).iterdir():
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


def test_worker_pool_gives_the_same_files(raw: Path, tmp_path: Path) -> None:
    prepare_main(["--raw", str(raw), "--out", str(tmp_path / "a"), "--splits", "train"])
    prepare_main(["--raw", str(raw), "--out", str(tmp_path / "b"), "--splits", "train", "--workers", "2"])
    for name in ("scene0000_00.npz", "scene0001_00.npz"):
        a, b = load_processed(tmp_path / "a/train" / name), load_processed(tmp_path / "b/train" / name)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_test_split_needs_only_mesh_and_segments(raw: Path, tmp_path: Path) -> None:
    other = tmp_path / "raw"
    (other / "scans_test" / SCENE).mkdir(parents=True)
    for suffix in ("_vh_clean_2.ply", "_vh_clean_2.0.010000.segs.json"):
        name = f"{SCENE}{suffix}"
        (other / "scans_test" / SCENE / name).write_bytes((raw / "scans" / SCENE / name).read_bytes())
    (other / "scannetv2-labels.combined.tsv").write_text((raw / "scannetv2-labels.combined.tsv").read_text())
    (other / "scannetv2_test.txt").write_text(SCENE + "\n")
    assert prepare_scannet(other, tmp_path / "out", splits=["test"], progress=False) == {"test": 1}
    scene = load_processed(tmp_path / "out" / "test" / f"{SCENE}.npz")
    assert len(scene["points"]) > 0 and scene["superpoints"].max() > 0
    assert np.all(scene["semantic20"] == IGNORE_INDEX) and np.all(scene["instance"] == IGNORE_INDEX)
    assert scene["instance_class"].shape == (0,)


def test_axis_alignment_from_the_meta_file(raw: Path, tmp_path: Path) -> None:
    scan = _copy_scene(raw, tmp_path)
    label_map = read_label_map(raw / "scannetv2-labels.combined.tsv")
    c, s = np.cos(0.3), np.sin(0.3)
    m = np.array([[c, -s, 0, 1.5], [s, c, 0, -2.0], [0, 0, 1, 0.1], [0, 0, 0, 1]])
    (scan / f"{SCENE}.txt").write_text("sceneType = Office\naxisAlignment = " + " ".join(map(str, m.ravel())))
    plain = prepare_scene(scan, SCENE, label_map)
    aligned = prepare_scene(scan, SCENE, label_map, axis_align=True)
    np.testing.assert_allclose(aligned["points"], plain["points"] @ m[:3, :3].T + m[:3, 3], atol=1e-5)
    np.testing.assert_array_equal(aligned["instance"], plain["instance"])
    (scan / f"{SCENE}.txt").write_text("axisAlignment = 1 0 0\n")
    with pytest.raises(ValueError, match=f"{SCENE}.txt.*16 values"):
        prepare_scene(scan, SCENE, label_map, axis_align=True)
