"""The official recipe end to end on generated scenes written in the official prepared layout:
two CPU processes (torchrun, gloo) run it, resume it exactly, and drive its loss down."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.scannet_scenes import write_synthetic_raw
from uniseg3d_model.data.official_export import export_official

REPO = Path(__file__).resolve().parents[1]
RECIPE = yaml.safe_load((REPO / "training/configs/unified_scannet.yaml").read_text())
TINY_MODEL = {  # the official architecture (spconv U-Net, instance/semantic/IoU heads), tiny
    "preset": "official",
    "voxel_size": 0.1,
    "d_model": 32,
    "num_heads": 2,
    "num_layers": 2,
    "ffn_dim": 64,
    "spconv": {"in_channels": 6, "planes": [8, 16]},
}


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic_raw(root / "raw", n_train=2, n_val=1)
    export_official(
        root / "raw",
        root / "official",
        scanrefer=[root / "raw" / f"ScanRefer_filtered_{s}.json" for s in ("train", "val")],
    )
    return root / "official"


def _config(tmp_path: Path, epochs: int) -> Path:
    """unified_scannet.yaml (the official recipe) with a tiny model, the hash text encoder, and a
    learning rate for a short run; data, losses, prompts and augmentation stay the recipe's."""
    cfg = {**RECIPE, "seed": 3, "model": TINY_MODEL, "text_encoder": {"name": "hash:32"}}
    cfg["data"] = {**RECIPE["data"], "format": "official", "num_workers": 0}
    cfg["optim"] = {**RECIPE["optim"], "lr": 2.0e-3}
    cfg["train"] = {
        **RECIPE["train"],
        "epochs": epochs,
        "batch_size": 1,
        "checkpoint_every": 100,
        "eval_every": 0,
        "log_every": 1,
    }
    path = tmp_path / "official.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cfg: Path, data: Path, out: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "training.train",
        "--config",
        str(cfg),
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def straight(official: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, run folder) of 30 uninterrupted steps on 2 processes."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = _config(tmp, epochs=30)  # 2 scenes on 2 processes: one step per epoch
    _torchrun(cfg, official, tmp / "run")
    return cfg, tmp / "run"


def test_two_processes_drive_the_official_loss_down(straight: tuple[Path, Path]) -> None:
    rows = _rows(straight[1])
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)
    assert any(float(r["unified_pseudo_bce"] or 0) > 0 for r in rows)  # the pseudo masks are supervised
    assert {
        "unified_iou",
        "aux_unified_dice",
        "click_cls",
        "text_dice",
        "contrastive",
        "ranking",
        "kd_referring",
    } <= set(rows[0])
    assert [r["lr"] for r in rows[:2]] == ["0.002", str(2.0e-3 * (1 - 1 / 30) ** 0.9)]  # PolyLR per epoch
    h0, h1 = ((straight[1] / f"param_hash_rank{r}.txt").read_text() for r in (0, 1))
    assert h0 == h1


def test_two_processes_resume_the_official_recipe_exactly(
    official: Path, straight: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg, run = straight
    _torchrun(cfg, official, tmp_path / "split", "--max-steps", "3")
    _torchrun(cfg, official, tmp_path / "split", "--max-steps", "6", "--resume")
    split = _rows(tmp_path / "split")
    assert [r["step"] for r in split] == ["1", "2", "3", "4", "5", "6"]
    keys = ("loss", "grad_norm", "lr")
    assert [[r[k] for k in keys] for r in split] == [[r[k] for k in keys] for r in _rows(run)[:6]]
