"""The shipped default model (uniseg3d_model/weights/default.pt) loads and segments a generated
room it never saw far better than an untrained model: the out-of-the-box node and demo rely on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scannet_scenes import write_processed
from training.evaluate import evaluate
from uniseg3d_model.checkpoint import load_checkpoint
from uniseg3d_model.model import UniSeg3D

WEIGHTS = Path(__file__).resolve().parents[1] / "uniseg3d_model" / "weights"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the default was trained on master seeds 2000, 3000, ..., 11500 (SeedSequence per room): 9000 is new
    return write_processed(tmp_path_factory.mktemp("heldout"), n_train=1, n_val=1, spacing=0.04, seed=9000)


@pytest.fixture(scope="module")
def held_out_fused(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One new room (seed 9100) as the node fuses it: 48 RGB-D frames 320x240, SceneMap at the
    node's 2 cm voxels, the node's superpoints, labels from the mesh (the node's own domain)."""
    from training.generate_synthetic import main as generate

    root = tmp_path_factory.mktemp("heldout_fused")
    args = ["--out", str(root / "raw"), "--num-scenes", "1", "--seed", "9100", "--val-fraction", "0.5",
            "--fused-out", str(root / "fused"), "--no-progress"]
    assert generate(args) == 0
    return root / "fused"


@pytest.fixture(scope="module")
def default_model():
    torch.manual_seed(0)
    model, meta = load_checkpoint(WEIGHTS / "default.pt")
    return model, meta


def test_default_checkpoint_loads_with_its_text_encoder(default_model) -> None:
    model, meta = default_model
    assert isinstance(model, UniSeg3D) and not model.training
    assert meta["text_encoder"] == "minilm"
    recorded = json.loads((WEIGHTS / "default.json").read_text())
    # the node-domain figures README quotes meet the targets they are quoted against
    targets = {"miou", "ap50", "interactive_miou", "referring_acc50", "open_vocab_on_stuff"}
    assert set(recorded["targets"]) == targets
    for key, target in recorded["targets"].items():
        got = recorded["summary"][key]
        assert (got == 0) if key == "open_vocab_on_stuff" else (got >= target), (key, got, target)
    assert model.cfg.heads == "official" and model.cfg.postprocess == "official"  # the published model's path


@pytest.mark.slow
def test_default_model_segments_an_unseen_room(default_model, held_out: Path) -> None:
    model, _ = default_model
    trained = evaluate(model, held_out, "val", min_region_size=50, progress=False)["summary"]
    torch.manual_seed(0)
    untrained = UniSeg3D(model.cfg, model.text_encoder).eval()
    baseline = evaluate(untrained, held_out, "val", min_region_size=50, progress=False)["summary"]
    # the shipped model is trained on fused maps (the node's domain); on mesh vertices it is weaker
    # but far from random
    assert trained["miou"] > 0.15 and trained["miou"] > baseline["miou"] + 0.1
    assert trained["ap50"] > 0.1 and trained["ap50"] > baseline["ap50"] + 0.1
    assert trained["interactive_ap"] > baseline["interactive_ap"] + 0.1
    assert trained["referring_miou"] > baseline["referring_miou"] + 0.1


# The shipped (node-domain, official architecture) model on the fused room (seed 9100), measured by
# this test: mIoU 0.925, AP50 1.000, interactive mIoU 0.934, referring mIoU 0.901 / Acc@0.5 0.914,
# ~/segment 11 of 13 objects with the right label (10 rooms: default.json; stage 6 before it: 0.925,
# 0.958, 0.935, 0.859 / 0.829, 11 of 13). The floors sit a little under them, so a regression in the
# weights or in the node's data path (fusion, superpoints) fails.
FUSED_FLOOR = {"miou": 0.85, "ap50": 0.9, "interactive_miou": 0.88, "referring_miou": 0.84,
               "referring_acc50": 0.85}


@pytest.mark.slow  # fuses one room (48 frames) and evaluates it: ~1 min on 2 busy cores
def test_default_model_on_an_unseen_room_as_the_node_fuses_it(default_model, held_out_fused: Path) -> None:
    model, _ = default_model
    got = evaluate(model, held_out_fused, "val", min_region_size=100, progress=False)
    summary = {**got["summary"], "interactive_miou": got["interactive"]["miou"]}
    print({k: round(v, 3) for k, v in summary.items() if isinstance(v, float)})
    for key, floor in FUSED_FLOOR.items():
        assert summary[key] >= floor, (key, summary[key])
    # the node's own answers on that room: ~/segment objects found with the right label, and
    # ~/open_vocab never hands back the wall or floor under a requested name
    from training.evaluate_fused import DEMO_VOCABULARY, node_answers
    from uniseg3d_model.data.scannet import load_processed
    from uniseg3d_ros.inference.loading import load_engine

    engine = load_engine(str(WEIGHTS / "default.pt"))
    room = next(iter(sorted((held_out_fused / "val").glob("*.npz"))))
    sample = load_processed(room)  # every query below asks map version 1: one encoding
    node = node_answers(engine, sample, 1, DEMO_VOCABULARY)
    print(node)
    assert node["ov_on_stuff"] == 0 and node["ov_instances"] >= 1
    assert node["found_with_label"] >= 0.8 * node["objects"], node  # measured: 11 of 13
    # ~/refer's score tells a planner when the map lacks what a sentence asks for: the room's own
    # sentences answered right against the same sentences naming a class the room has none of
    # (measured: 32 right, median 0.75; 21 absent, median 0.15)
    from training.evaluate_fused import room_snapshot, sentence_scores, separation
    from uniseg3d_model.data.scanrefer import read_referring

    sentences = read_referring(held_out_fused / "val_referring.json")[room.stem]
    said = sentence_scores(engine, sample, sentences, 1)
    print({k: (len(v), round(float(np.median(v)), 3)) for k, v in said.items()})
    assert len(said["right"]) >= 20 and len(said["absent"]) >= 15
    assert np.median(said["right"]) >= 0.6 and np.median(said["absent"]) <= 0.3
    assert separation(said["right"], said["absent"]) >= 0.8
    # and the answer says so when the mask lies on another class than the sentence asks for (a
    # kitchen has no bathtub; measured: score 0.000, the mask on the floor)
    res = engine.refer(room_snapshot(sample, 1), "this is a white bathtub. it is against the wall.")
    assert res.success and res.instances[0].score < 0.2, res.message
    assert "asks for a bathtub" in res.message and "may not hold" in res.message, res.message
    assert engine.encode_count == 1  # one encoding served every query on the room
