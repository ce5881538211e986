"""training/evaluate.py end to end: an oracle decoder output built from the ground truth of a
prepared synthetic scene scores full marks on every task under both protocols (the official PQ
averages all 20 classes, so absent ones count 0), a corrupted one does not, and the CLI prints
the table, writes JSON for a real checkpoint and answers user mistakes with one line, exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scannet_scenes import write_processed
from training.evaluate import PAPER, Evaluation, default_protocol, format_table, is_scannet_val
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
    per click and one text query per sentence, each with the true mask, class and full confidence
    (prompt masks are the superpoint-majority masks, the official prompt ground truth)."""
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
    prompt_classes = np.asarray(scene.instance_class)[np.concatenate([click_t, text_t])]
    class_logits[torch.arange(len(classes), q), torch.as_tensor(prompt_classes, dtype=torch.long)] = 12.0
    layer = LayerPrediction(logits, class_logits, torch.full((q,), 12.0), torch.zeros(q, 4))
    return DecoderOutput(
        layers=[layer], num_unified=len(classes), num_clicks=len(click_t), num_texts=len(text_t),
        query_superpoints=torch.full((len(classes),), -1), vocabulary=tuple(vocabulary),
        superpoints=torch.as_tensor(np.asarray(scene.superpoints)), contrastive_scale=torch.tensor(1.0),
    )


def _evaluate(processed: Path, protocol: str, corrupt: bool = False) -> dict:
    closed = ScanNetDataset(processed, "val", num_clicks=1000, num_texts=1000)
    opened = ScanNetDataset(processed, "val", num_clicks=0, num_texts=0, label_set="scannet200")
    ev = Evaluation(list(SCANNET20_CLASSES), list(SCANNET200_CLASSES), list(SCANNET200_IS_THING), MIN_REGION,
                    protocol)
    scene, ov_scene = ev.prepare(closed[0]), opened[0]
    target = scene
    if corrupt:  # every prompt aimed at another instance
        target = ev.prepare(closed[0])
        target.click_instance = np.roll(target.click_instance, 1)
        target.text_instance = (np.asarray(target.text_instance) + 1) % target.num_instances
    ev.add_closed_set(oracle_output(target, SCANNET20_CLASSES), scene)
    ev.add_open_vocabulary(oracle_output(ov_scene, SCANNET200_CLASSES), ov_scene)
    return ev.result()


def _present(processed: Path) -> set[str]:
    scene = ScanNetDataset(processed, "val", num_clicks=0, num_texts=0)[0]
    sem = np.asarray(scene.semantic)
    return {SCANNET20_CLASSES[c] for c in np.unique(sem[sem >= 0])}


@pytest.mark.parametrize("protocol", ["official", "ours"])
def test_oracle_predictions_score_full_marks(processed: Path, protocol: str) -> None:
    result = _evaluate(processed, protocol)
    summary = result["summary"]
    for key in ("miou", "ap", "ap50", "ap25", "interactive_ap", "interactive_ap50", "referring_miou",
                "referring_acc25", "referring_acc50", "ov_ap", "ov_class_agnostic_ap"):
        assert summary[key] == pytest.approx(1.0), key
    assert result["interactive"]["num_prompts"] == ScanNetDataset(processed, "val")[0].num_instances
    present = _present(processed)
    per_class = result["panoptic"]["per_class"]
    for name in SCANNET20_CLASSES:
        if name in present:
            assert per_class[name]["pq"] == pytest.approx(1.0), name
        elif protocol == "official":  # mmdet3d: absent classes score 0 and stay in the mean
            assert per_class[name]["pq"] == 0.0, name
    expected_pq = len(present) / len(SCANNET20_CLASSES) if protocol == "official" else 1.0
    assert 2 <= len(present) < len(SCANNET20_CLASSES)  # the generated room lacks some classes
    assert summary["pq"] == pytest.approx(expected_pq)


def test_official_protocol_clicks_every_instance_far_from_background(processed: Path) -> None:
    ev = Evaluation(list(SCANNET20_CLASSES), list(SCANNET200_CLASSES), list(SCANNET200_IS_THING), MIN_REGION)
    scene = ScanNetDataset(processed, "val", num_clicks=1000, num_texts=0)[0]
    centroid_clicks = np.asarray(scene.clicks).copy()
    ev.prepare(scene)
    assert sorted(np.asarray(scene.click_instance).tolist()) == list(range(scene.num_instances))
    points, instance = np.asarray(scene.points), np.asarray(scene.instance)
    for click, target in zip(np.asarray(scene.clicks), scene.click_instance):
        on = np.flatnonzero(np.all(points == click, axis=1))
        assert len(on) and instance[on[0]] == target
    assert not np.allclose(np.asarray(scene.clicks), centroid_clicks)  # not the dataset's centroid clicks


@pytest.mark.parametrize("protocol", ["official", "ours"])
def test_wrong_prompt_targets_score_low(processed: Path, protocol: str) -> None:
    summary = _evaluate(processed, protocol, corrupt=True)["summary"]
    assert summary["interactive_ap"] < 0.2
    assert summary["referring_miou"] < 0.2
    assert summary["ap"] == pytest.approx(1.0)  # the unified queries were left intact


def test_default_protocol_follows_the_models_post_processing() -> None:
    class Cfg:
        postprocess = "official"

    class Model:
        cfg = Cfg()

    assert default_protocol(Model()) == "official"
    Model.cfg = object()  # no postprocess field: our models
    assert default_protocol(Model()) == "ours"


def test_table_lists_every_task_and_the_paper_numbers_as_fractions() -> None:
    table = format_table({"pq": 0.5, "miou": 0.25, "ap": math.nan, "ov_ap_head": 0.1}, comparable=True)
    assert "Panoptic PQ" in table and "0.500" in table and "0.713" in table and "fraction" in table
    assert "Open-vocab AP" in table and "0.100 / - / -" in table
    assert "NOT comparable" not in table
    assert PAPER["interactive_ap"] == pytest.approx(0.541)


def test_generated_scene_ids_are_not_scannet_val() -> None:
    assert not is_scannet_val([f"scene{i:04d}_00" for i in range(312)])  # right count, wrong scenes
    assert not is_scannet_val(["scene0011_00"])


def test_table_marks_the_paper_column_when_not_comparable() -> None:
    table = format_table({"pq": 0.5}, comparable=False, note="1 scene(s) of data/synth/val")
    assert "paper*" in table
    assert "NOT comparable with this run: 1 scene(s) of data/synth/val" in table


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uniseg3d_model.checkpoint import save_checkpoint
    from uniseg3d_model.model import ModelConfig, UniSeg3D
    from uniseg3d_model.text_encoders import build_text_encoder

    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash"))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model)


def test_cli_runs_a_checkpoint_and_writes_json(processed: Path, checkpoint: Path, tmp_path: Path,
                                               capsys) -> None:
    from training.evaluate import main

    out = tmp_path / "res.json"
    main(["--checkpoint", str(checkpoint), "--data", str(processed), "--split", "val", "--out", str(out),
          "--min-region-size", str(MIN_REGION), "--ov-classes", "chair", "table", "lamp",
          "--protocol", "official"])
    printed = capsys.readouterr().out
    assert "Instance AP" in printed and f"wrote {out}" in printed
    assert "paper*" in printed and "NOT comparable" in printed  # 1 generated scene
    result = json.loads(out.read_text())
    assert result["num_scenes"] == 1 and result["protocol"] == "official" and result["unit"] == "fraction"
    assert result["paper_comparable"] is False and result["paper"]["pq"] == pytest.approx(0.713)
    assert set(result["summary"]) >= {"pq", "miou", "ap", "interactive_ap", "referring_miou", "ov_ap"}
    assert 0.0 <= result["summary"]["miou"] <= 1.0


@pytest.mark.parametrize("bad, named", [
    (["--protocol", "coco"], "--protocol"),
    (["--checkpoint", "/nonexistent/m.pt"], "--checkpoint"),
    (["--data", "/nonexistent/data"], "--data"),
])
def test_cli_user_mistakes_exit_2_with_one_line(processed: Path, checkpoint: Path, capsys, bad: list[str],
                                                named: str) -> None:
    from training.evaluate import main

    args = {"--checkpoint": str(checkpoint), "--data": str(processed), "--protocol": "official"}
    args.update(dict(zip(bad[::2], bad[1::2])))
    with pytest.raises(SystemExit) as exc:
        main([x for kv in args.items() for x in kv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "Traceback" not in err[0]


def test_cli_unreadable_checkpoint_exits_2(processed: Path, tmp_path: Path, capsys) -> None:
    from training.evaluate import main

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(junk), "--data", str(processed)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint" in err[0]


def test_cli_scores_an_official_model_with_the_official_protocol_by_default(processed: Path, tmp_path: Path,
                                                                            capsys) -> None:
    from training.evaluate import main
    from uniseg3d_model.checkpoint import save_checkpoint
    from uniseg3d_model.model import ModelConfig, UniSeg3D
    from uniseg3d_model.text_encoders import build_text_encoder

    torch.manual_seed(0)
    cfg = ModelConfig.official(spconv={"in_channels": 6, "planes": (8, 12)}, d_model=16, num_heads=2,
                               ffn_dim=32, num_layers=2)
    ckpt = save_checkpoint(tmp_path / "official.pt", UniSeg3D(cfg, build_text_encoder("hash:24")))
    out = tmp_path / "res.json"
    main(["--checkpoint", str(ckpt), "--data", str(processed), "--out", str(out),
          "--min-region-size", str(MIN_REGION), "--ov-classes", "chair", "table"])
    assert "protocol official" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["protocol"] == "official"
    assert all(v is None or 0.0 <= v <= 1.0 for v in result["summary"].values())
