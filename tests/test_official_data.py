"""The official prepared layout (info pkl + .bin files) read directly; it gives the same samples as our
own preparation of the same raw scenes; official prompt sampling; the SAM3D stand-in pseudo masks."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scannet_scenes import write_processed
from uniseg3d_model.clip_text import CLIPTokenizer
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.labels import NYU40_TO_SCANNET20
from uniseg3d_model.data.official_data import (
    OfficialScanNetDataset,
    load_infos,
    read_class_embedding,
    read_official_scene,
)
from uniseg3d_model.data.official_export import export_official
from uniseg3d_model.data.prompts import sample_clicks, sample_texts
from uniseg3d_model.data.pseudo_masks import pseudo_masks_from_objects

FIELDS = ("points", "colors", "superpoints", "semantic", "instance", "instance_class", "clicks",
          "click_instance", "text_instance", "voxel_points", "pseudo_masks")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(raw, our processed, official) for the same 2 train + 1 val generated scenes."""
    root = tmp_path_factory.mktemp("data")
    processed = write_processed(root, n_train=2, n_val=1)
    refs = [root / "raw" / f"ScanRefer_filtered_{s}.json" for s in ("train", "val")]
    export_official(root / "raw", root / "official", scanrefer=refs, tokenizer=CLIPTokenizer())
    return root / "raw", processed, root / "official"


def test_files_have_the_official_names_dtypes_and_keys(layouts: tuple[Path, Path, Path]) -> None:
    _, _, official = layouts
    infos = load_infos(official / "uniseg3d_infos_train.pkl")
    assert [i["lidar_points"]["lidar_path"] for i in infos] == ["scene0000_00.bin", "scene0001_00.bin"]
    info = infos[1]
    n = (official / "instance_mask/scene0001_00.bin").stat().st_size // 8  # int64
    assert (official / "points/scene0001_00.bin").stat().st_size == n * 6 * 4  # float32 x y z r g b
    assert (official / "semantic_mask/scene0001_00.bin").stat().st_size == n * 8
    assert (official / "super_points/scene0001_00.bin").stat().st_size == n * 8
    rgb = np.fromfile(official / "points/scene0001_00.bin", np.float32).reshape(-1, 6)[:, 3:]
    assert rgb.max() > 1.0 and rgb.max() <= 255.0  # colours stay 0..255 as in the official export
    objects = np.fromfile(official / "instance_mask/scene0001_00.bin", np.int64)
    nyu40 = np.fromfile(official / "semantic_mask/scene0001_00.bin", np.int64)
    assert objects.min() == 0 and set(np.unique(nyu40)) - {0} <= set(range(1, 41))
    key, text = next(iter(info["text_info"].items()))
    assert np.all(objects[text["pts_id"]] == int(key) + 1)  # keys: ScanRefer object_id = objectId
    assert len(text["text"]) == len(text["text_token"]) and text["text_token"][0].shape == (77,)
    assert text["text_token"][0][0] == 49406  # CLIP start-of-text
    assert text["label_id"] == NYU40_TO_SCANNET20[int(nyu40[text["pts_id"][0]])] - 2  # 18 thing classes
    assert info["sam3d_pseudo_sp_masks"].dtype == torch.bool
    assert "sam3d_pseudo_sp_masks" not in load_infos(official / "uniseg3d_infos_val.pkl")[0]


@pytest.mark.parametrize("augment", [False, True])
def test_both_preparations_give_the_same_samples(layouts: tuple[Path, Path, Path], augment: bool) -> None:
    _, processed, official = layouts
    ours = ScanNetDataset(processed, "train", augment=augment, num_clicks=None, num_texts=None, seed=4)
    theirs = OfficialScanNetDataset(official, "train", augment=augment, num_clicks=None, num_texts=None,
                                    seed=4)
    assert ours.scene_ids == theirs.scene_ids
    for epoch in (0, 1):
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        for i in range(len(ours)):
            a, b = ours[i], theirs[i]
            for name in FIELDS:
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None) == (y is None), name
                if x is not None:
                    np.testing.assert_array_equal(x, y, err_msg=name)
            assert a.texts == b.texts and len(a.texts) > 0


def test_restricted_unpickler_reads_arrays_and_tensors_and_refuses_code(tmp_path: Path) -> None:
    data = {"data_list": [{"a": np.arange(4, dtype=np.int64), "b": np.float32(1.5),
                           "c": torch.ones(2, 3, dtype=torch.bool), "d": [np.zeros((2, 2), np.float32)],
                           "e": "text"}]}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(data))
    (info,) = load_infos(tmp_path / "ok.pkl")
    np.testing.assert_array_equal(info["a"], np.arange(4)) and info["b"] == np.float32(1.5)
    assert torch.equal(info["c"], torch.ones(2, 3, dtype=torch.bool)) and info["e"] == "text"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"data_list": [{"x": Evil()}]}))
    with pytest.raises(ValueError, match="system"):
        load_infos(tmp_path / "evil.pkl")


def test_class_embedding_file_is_read_with_its_shape(tmp_path: Path) -> None:
    torch.save(torch.randn(20, 3, 8), tmp_path / "scannet_cls_embedding.pth")
    assert read_class_embedding(tmp_path).shape == (20, 3, 8)
    torch.save(torch.randn(20, 8), tmp_path / "scannet_cls_embedding.pth")
    with pytest.raises(ValueError, match="K, P, D"):
        read_class_embedding(tmp_path)


def test_a_missing_bin_file_is_named(layouts: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, official = layouts
    info = load_infos(official / "uniseg3d_infos_val.pkl")[0]
    with pytest.raises(FileNotFoundError, match="points file not found"):
        read_official_scene(tmp_path, info)


def test_pseudo_masks_are_the_objects_outside_scannet20_by_superpoint_majority() -> None:
    # 4 superpoints x 4 points; object 5 is a lamp (NYU40 35), object 6 a chair (NYU40 5)
    sp = np.repeat(np.arange(4), 4)
    objects = np.array([5, 5, 5, 0, 5, 5, 0, 0, 6, 6, 6, 6, 5, 0, 0, 0])
    nyu40 = np.where(objects == 5, 35, np.where(objects == 6, 5, 0))
    masks = pseudo_masks_from_objects(sp, objects, nyu40)
    # sp0: 3/4 lamp -> in; sp1: 2/4 -> not more than half -> out; sp2: chair; sp3: 1/4
    np.testing.assert_array_equal(masks, [[True, False, False, False]])
    assert pseudo_masks_from_objects(sp, np.where(objects == 5, 0, objects), nyu40).shape == (0, 4)


def test_training_samples_carry_the_pseudo_masks(layouts: tuple[Path, Path, Path]) -> None:
    _, processed, official = layouts
    s = OfficialScanNetDataset(official, "train", augment=True)[1]
    assert s.pseudo_masks.shape == (1, s.superpoints.max() + 1) and s.pseudo_masks.any()
    in_instances = np.zeros(s.superpoints.max() + 1, bool)
    in_instances[s.superpoints[s.instance >= 0]] = True
    assert not np.any(s.pseudo_masks[0] & in_instances)  # disjoint from the ScanNet20 objects
    assert OfficialScanNetDataset(official, "train", use_pseudo_masks=False)[1].pseudo_masks is None


def test_official_clicks_cover_every_instance_at_the_point_nearest_its_centroid() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, (60, 3)).astype(np.float32)
    instance = np.repeat(np.arange(4), 15)  # each instance has < 500 points: all are drawn
    clicks, targets = sample_clicks(points, instance, 4, None, np.random.default_rng(1))
    assert sorted(targets.tolist()) == [0, 1, 2, 3]
    orders = {tuple(sample_clicks(points, instance, 4, None, np.random.default_rng(s))[1]) for s in range(5)}
    assert len(orders) > 1  # instances come in a random order
    for click, inst in zip(clicks, targets):
        pts = points[instance == inst]
        np.testing.assert_array_equal(click, pts[np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1))])
    big = np.zeros(2000, np.int64)
    pts = rng.uniform(0, 1, (2000, 3)).astype(np.float32)
    (click,), _ = sample_clicks(pts, big, 1, None, np.random.default_rng(2))
    assert np.any(np.all(pts == click, axis=1))
    assert np.linalg.norm(click - pts.mean(0)) < 0.1  # near the centroid of a 500-point draw


def test_official_sentences_one_per_described_object() -> None:
    entries = [{"description": f"obj{o} sentence {k}", "instance": o} for o in (0, 1, 2) for k in range(3)]
    entries.append({"description": "not an instance", "instance": 3})
    old_to_new = np.array([0, 1, 2, -100])
    seen = set()
    for seed in range(6):
        texts, inst = sample_texts(entries, old_to_new, None, np.random.default_rng(seed))
        assert sorted(inst.tolist()) == [0, 1, 2]
        assert all(t.startswith(f"obj{i} ") for t, i in zip(texts, inst))
        seen.update(texts)
    assert len(seen) > 3  # the sentence of each object is drawn, not fixed
    texts, _ = sample_texts(entries, old_to_new, 2, np.random.default_rng(0))
    assert len(texts) == 2
