"""ScanNetDataset: labels per label set, clicks and sentences with their targets, seeding, batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scannet_scenes import write_processed
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.labels import IGNORE_INDEX, IS_THING, SCANNET200_CLASSES
from uniseg3d_model.data.scannet import ScanNetDataset as ScanNetDatasetFromContract
from uniseg3d_model.data.scannet import load_processed
from uniseg3d_model.structures import SceneSample, collate_scenes


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed(tmp_path_factory.mktemp("data"))


def test_item_is_a_scene_sample_with_scannet20_labels(processed: Path) -> None:
    ds = ScanNetDataset(processed, "train", num_clicks=10, num_texts=5)
    assert len(ds) == 2 and ds.scene_ids == ["scene0000_00", "scene0001_00"]
    assert ScanNetDatasetFromContract is ScanNetDataset  # the contract names data.scannet.ScanNetDataset
    s = ds[0]
    raw = load_processed(processed / "train" / "scene0000_00.npz")
    assert isinstance(s, SceneSample) and s.vocabulary is None
    np.testing.assert_array_equal(s.semantic, raw["semantic20"])
    np.testing.assert_array_equal(s.points, raw["points"])
    kept = [i for i, c in enumerate(raw["instance_class"]) if c >= 0 and IS_THING[c]]
    np.testing.assert_array_equal(s.instance_class, raw["instance_class"][kept])
    assert set(np.unique(s.instance)) == {IGNORE_INDEX, *range(len(kept))}
    for new, old in enumerate(kept):
        np.testing.assert_array_equal(s.instance == new, raw["instance"] == old)
        assert np.all(s.semantic[s.instance == new] == s.instance_class[new])


def test_scannet200_uses_200_labels_and_sets_vocabulary(processed: Path) -> None:
    s = ScanNetDataset(processed, "train", label_set="scannet200")[0]
    raw = load_processed(processed / "train" / "scene0000_00.npz")
    assert s.vocabulary == list(SCANNET200_CLASSES)
    np.testing.assert_array_equal(s.semantic, raw["semantic200"])
    np.testing.assert_array_equal(s.instance_class, raw["instance_class200"])
    np.testing.assert_array_equal(s.instance, raw["instance"])


def test_eval_clicks_are_the_points_nearest_each_instance_centre(processed: Path) -> None:
    s = ScanNetDataset(processed, "train", num_clicks=2)[0]
    assert s.clicks.shape == (2, 3) and s.clicks.dtype == np.float32
    np.testing.assert_array_equal(s.click_instance, [0, 1])
    for click, inst in zip(s.clicks, s.click_instance):
        pts = s.points[s.instance == inst]
        nearest = pts[np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1))]
        np.testing.assert_array_equal(click, nearest)


def test_training_clicks_lie_inside_their_target_instance(processed: Path) -> None:
    ds = ScanNetDataset(processed, "train", augment=True, num_clicks=3, seed=5)
    for epoch in range(3):
        ds.set_epoch(epoch)
        s = ds[1]
        assert len(s.clicks) == 3 and len(set(s.click_instance.tolist())) == 3
        for click, inst in zip(s.clicks, s.click_instance):
            hit = np.flatnonzero(np.all(s.points == click, axis=1))
            assert hit.size and np.all(s.instance[hit] == inst)


@pytest.mark.parametrize("num_texts", [3, 1000])
def test_sentences_target_the_scanrefer_object(processed: Path, num_texts: int) -> None:
    refs = json.loads((processed / "train_referring.json").read_text())
    ds = ScanNetDataset(processed, "train", num_texts=num_texts, label_set="scannet200")
    for index, sid in enumerate(ds.scene_ids):
        s = ds[index]
        raw = load_processed(processed / "train" / f"{sid}.npz")
        want = [(r["description"], r["object_id"]) for r in refs if r["scene_id"] == sid]
        assert len(s.texts) == min(num_texts, len(want)) and len(s.text_instance) == len(s.texts)
        got = []
        for text, inst in zip(s.texts, s.text_instance):
            old = np.flatnonzero(raw["instance_object_id"] == dict(want)[text])[0]
            np.testing.assert_array_equal(s.instance == inst, raw["instance"] == old)
            got.append((text, int(raw["instance_object_id"][old])))
        assert set(got) <= set(want)
        if num_texts >= len(want):
            assert sorted(got) == sorted(want)


def test_num_limits_and_zero_prompts(processed: Path) -> None:
    s = ScanNetDataset(processed, "train", num_clicks=0, num_texts=1)[0]
    assert s.clicks.shape == (0, 3) and len(s.texts) == 1 and s.text_instance.shape == (1,)


def test_augmented_items_are_seeded_by_seed_epoch_index(processed: Path) -> None:
    a = ScanNetDataset(processed, "train", augment=True, seed=1)
    b = ScanNetDataset(processed, "train", augment=True, seed=1)
    np.testing.assert_array_equal(a[0].points, b[0].points)
    np.testing.assert_array_equal(a[0].clicks, b[0].clicks)
    b.set_epoch(1)
    assert not np.allclose(a[0].points, b[0].points)
    plain = ScanNetDataset(processed, "train")[0]
    np.testing.assert_array_equal(a[0].semantic, plain.semantic)  # labels unchanged by augmentation
    np.testing.assert_array_equal(a[0].instance, plain.instance)
    np.testing.assert_array_equal(a[0].superpoints, plain.superpoints)


def test_dataloader_batches_lists_of_scenes(processed: Path) -> None:
    loader = torch.utils.data.DataLoader(ScanNetDataset(processed, "train"), batch_size=2,
                                         collate_fn=collate_scenes)
    batch = next(iter(loader))
    assert isinstance(batch, list) and [s.scene_id for s in batch] == ["scene0000_00", "scene0001_00"]


def test_bad_arguments_raise_clear_errors(processed: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_set"):
        ScanNetDataset(processed, "train", label_set="nyu40")
    with pytest.raises(FileNotFoundError, match="test"):
        ScanNetDataset(processed, "test")
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="no processed scenes"):
        ScanNetDataset(tmp_path, "train")
