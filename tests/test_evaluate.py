"""training/evaluate.py end to end: an oracle decoder output built from the ground truth of a
prepared synthetic scene must score (close to) 100 on every task, a corrupted one must not, and
the CLI prints the table and writes JSON for a real checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scannet_scenes import write_processed
from training.evaluate import Evaluation, format_table
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.labels import (
    SCANNET20_CLASSES,
    SCANNET200_CLASSES,
    SCANNET200_IS_THING,
    STUFF_CLASSES,
)
from uniseg3d_model.encoding import DecoderOutput, LayerPrediction

MIN_REGION = 20


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed(tmp_path_factory.mktemp("eval"), n_train=1, n_val=1, spacing=0.06)


def _superpoint_masks(scene, point_masks: np.ndarray) -> torch.Tensor:
    """(Q, N) point masks -> (Q, S) superpoint masks by majority vote."""
    sp = np.asarray(scene.superpoints)
    counts = np.stack([np.bincount(sp, weights=m, minlength=scene.num_superpoints) for m in point_masks])
    sizes = np.bincount(sp, minlength=scene.num_superpoints)
    return torch.as_tensor(counts / np.maximum(sizes, 1) > 0.5)


def oracle_output(scene, vocabulary: tuple[str, ...]) -> DecoderOutput:
    """One unified query per ground-truth instance and per stuff class present, one click query
    per click and one text query per sentence, each with the true mask, class and full confidence."""
    instance = np.asarray(scene.instance)
    semantic = np.asarray(scene.semantic)
    masks, classes = [], []
    for i, cls in enumerate(scene.instance_class):
        masks.append(instance == i)
        classes.append(int(cls))
    for name in STUFF_CLASSES:
        c = vocabulary.index(name)
        if np.any(semantic == c):
            masks.append(semantic == c)
            classes.append(c)
    click_t = np.asarray(scene.click_instance if scene.clicks is not None else [], dtype=np.int64)
    text_t = np.asarray(scene.text_instance if scene.texts else [], dtype=np.int64)
    prompted = [instance == t for t in np.concatenate([click_t, text_t])]
    all_masks = np.array(masks + prompted, dtype=bool).reshape(-1, scene.num_points)
    sp_masks = _superpoint_masks(scene, all_masks)
    q = len(all_masks)
    logits = torch.where(sp_masks, 12.0, -12.0)
    class_logits = torch.full((q, len(vocabulary) + 1), -12.0)
    class_logits[torch.arange(len(classes)), torch.as_tensor(classes, dtype=torch.long)] = 12.0
    class_logits[len(classes):, -1] = 12.0
    layer = LayerPrediction(logits, class_logits, torch.full((q,), 12.0), torch.zeros(q, 4))
    return DecoderOutput(
        layers=[layer], num_unified=len(classes), num_clicks=len(click_t), num_texts=len(text_t),
        query_superpoints=torch.full((len(classes),), -1), vocabulary=tuple(vocabulary),
        superpoints=torch.as_tensor(np.asarray(scene.superpoints)), contrastive_scale=torch.tensor(1.0),
    )


def _evaluate(processed: Path, corrupt: bool = False) -> dict:
    closed = ScanNetDataset(processed, "val", num_clicks=1000, num_texts=1000)
    opened = ScanNetDataset(processed, "val", num_clicks=0, num_texts=0, label_set="scannet200")
    ev = Evaluation(list(SCANNET20_CLASSES), list(SCANNET200_CLASSES), list(SCANNET200_IS_THING), MIN_REGION)
    scene, ov_scene = closed[0], opened[0]
    if corrupt:  # every instance query shifted onto the next instance; prompts likewise
        scene.click_instance = np.roll(scene.click_instance, 1)
        scene.text_instance = (np.asarray(scene.text_instance) + 1) % scene.num_instances
    out = oracle_output(scene, SCANNET20_CLASSES)
    if corrupt:
        scene = closed[0]
    ev.add_closed_set(out, scene)
    ev.add_open_vocabulary(oracle_output(ov_scene, SCANNET200_CLASSES), ov_scene)
    return ev.result()


def test_oracle_predictions_score_full_marks(processed: Path) -> None:
    summary = _evaluate(processed)["summary"]
    for key in ("ap", "ap50", "interactive_ap", "referring_miou", "referring_acc50", "ov_ap"):
        assert summary[key] == pytest.approx(1.0), key
    # ground-truth instances below the 20-point minimum stay in PQ as misses; semantic is exact
    assert summary["miou"] == pytest.approx(1.0)
    assert summary["pq"] > 0.9


def test_wrong_prompt_targets_score_low(processed: Path) -> None:
    summary = _evaluate(processed, corrupt=True)["summary"]
    assert summary["interactive_ap"] < 0.2
    assert summary["referring_miou"] < 0.2
    assert summary["ap"] == pytest.approx(1.0)  # the unified queries were left intact


def test_table_lists_every_task_and_the_paper_numbers() -> None:
    table = format_table({"pq": 0.5, "miou": 0.25, "ap": math.nan, "ov_ap_head": 0.1})
    assert "Panoptic PQ" in table and "50.0" in table and "71.3" in table
    assert "Open-vocab AP" in table and "10.0 / - / -" in table


def test_cli_runs_a_checkpoint_and_writes_json(processed: Path, tmp_path: Path, capsys) -> None:
    from training.evaluate import main
    from uniseg3d_model.checkpoint import save_checkpoint
    from uniseg3d_model.model import ModelConfig, UniSeg3D
    from uniseg3d_model.text_encoders import build_text_encoder

    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash"))
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "res.json"
    main(["--checkpoint", str(ckpt), "--data", str(processed), "--split", "val", "--out", str(out),
          "--min-region-size", str(MIN_REGION), "--ov-classes", "chair", "table", "lamp"])
    printed = capsys.readouterr().out
    assert "Instance AP" in printed and f"wrote {out}" in printed
    result = json.loads(out.read_text())
    assert result["num_scenes"] == 1
    assert set(result["summary"]) >= {"pq", "miou", "ap", "interactive_ap", "referring_miou", "ov_ap"}
    assert 0.0 <= result["summary"]["miou"] <= 1.0
