"""training.train: configs, schedule, exact resume, two-process torchrun (gloo), loss going down."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.scannet_scenes import write_processed
from training.config import TrainConfig, config_from_dict, load_config
from training.train import main, poly_factor

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "seed": 3,
    "model": {"preset": "small", "voxel_size": 0.1, "d_model": 32, "num_heads": 2, "num_layers": 2,
              "ffn_dim": 64, "num_learned_queries": 4,
              "backbone": {"planes": [8, 16, 16, 16, 16, 16, 16, 16], "init_dim": 8}},
    "text_encoder": {"name": "hash:32"},
    "data": {"num_clicks": 2, "num_texts": 2, "augment_cfg": {"elastic_p": 0.5, "elastic": [[6.0, 10.0]]}},
    "optim": {"lr": 1.0e-3, "schedule_by": "step"},
    "train": {"epochs": 10, "batch_size": 1, "amp": "none", "checkpoint_every": 100, "eval_every": 0},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed(tmp_path_factory.mktemp("data"), n_train=4, n_val=1)


def _config(tmp_path: Path, **sections: dict) -> Path:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(run: Path) -> list[tuple[int, str]]:
    with (run / "metrics.csv").open() as fh:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(fh)]


def _train(cfg: Path, data: Path, out: Path, *extra: str) -> None:
    main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--device", "cpu", "--no-progress",
          *extra])


def test_shipped_configs_load_with_the_paper_schedule() -> None:
    paper = load_config(REPO / "training/configs/unified_scannet.yaml")
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.grad_clip, paper.optim.poly_power) == (
        1e-4, 0.05, 10.0, 0.9)
    assert (paper.train.epochs, paper.train.batch_size, paper.optim.schedule_by, paper.train.amp) == (
        512, 4, "epoch", "none")  # fp32, PolyLR stepped per epoch
    assert paper.data.num_clicks is None and paper.data.num_texts is None  # every object (num_ins unread)
    assert (paper.data.click_mode, paper.data.text_mode) == ("official", "per_object")
    aug = paper.data.augment_cfg
    assert aug.elastic == ((6.0, 40.0), (20.0, 160.0)) and aug.elastic_target == "voxels"
    assert aug.flip_x_p == aug.flip_y_p == 0.0 and aug.scale == (0.8, 1.2) and aug.translate_std == 0.1
    loss = paper.loss_config()
    assert (loss.recipe, loss.mask_rule, loss.class_weight, loss.semantic_weight, loss.prompt_weight) == (
        "official", "half", 0.5, 0.2, 0.1)
    assert paper.model_config().d_model == 256
    small = load_config(REPO / "training/configs/small_cpu.yaml")
    assert small.model_config().d_model < 256 and small.text_encoder["name"] == "minilm"


@pytest.mark.parametrize(("patch", "message"), [
    ({"optim": {"lrr": 1}}, r"optim: unknown key\(s\) \['lrr'\]"),
    ({"train": {"batch_size": "four"}}, "train.batch_size: expected an integer"),
    ({"train": {"amp": "fp8"}}, "train.amp"),
    ({"data": {"augment_cfg": {"scale": [0.8]}}}, "data.augment_cfg.scale"),
    ({"model": {"preset": "huge"}}, "model.preset"),
])
def test_bad_config_values_name_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict({**TINY, **patch}).model_config()


def test_poly_schedule_by_epoch_and_by_step() -> None:
    cfg = config_from_dict({"optim": {"poly_power": 0.9}, "train": {"epochs": 4}})
    f = poly_factor(cfg, steps_per_epoch=10)
    assert f(0) == f(9) == 1.0 and f(10) == pytest.approx(0.75 ** 0.9) and f(40) == 0.0
    cfg.optim.schedule_by = "step"
    f = poly_factor(cfg, steps_per_epoch=10)
    assert f(1) == pytest.approx((1 - 1 / 40) ** 0.9) and f(20) == pytest.approx(0.5 ** 0.9)


def test_resume_continues_bit_identically(data: Path, tmp_path: Path, one_thread: None) -> None:
    # one thread (conftest): with 2 intra-op threads the first step after a resume can differ in the
    # 7th significant digit (thread-partitioned float reductions are not reproducible across runs)
    cfg = _config(tmp_path)  # 4 scenes, batch 1: 4 steps per epoch, so 6 steps cross an epoch boundary
    _train(cfg, data, tmp_path / "straight", "--max-steps", "6")
    _train(cfg, data, tmp_path / "split", "--max-steps", "3")
    assert (tmp_path / "split/checkpoints/latest").read_text().strip() == "step_00000003"
    _train(cfg, data, tmp_path / "split", "--max-steps", "6", "--resume")
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert [s for s, _ in straight] == list(range(1, 7))
    assert split == straight  # every logged loss, as text, before and after the resume
    assert (tmp_path / "split/param_hash_rank0.txt").read_text() == (
        tmp_path / "straight/param_hash_rank0.txt").read_text()


def test_resume_without_checkpoint_warns_and_starts_fresh(data: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no checkpoint"):
        _train(_config(tmp_path), data, tmp_path / "run", "--max-steps", "1", "--resume")
    assert _losses(tmp_path / "run")[0][0] == 1


def _user_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train: error: ") and "Traceback" not in err
    return err


def test_missing_data_root_is_one_line_naming_the_prepare_command(tmp_path: Path, capsys) -> None:
    err = _user_error(capsys, "--config", str(_config(tmp_path)), "--data", str(tmp_path / "nowhere"),
                      "--out", str(tmp_path / "run"))
    assert str(tmp_path / "nowhere" / "train") in err and "python -m training.prepare_scannet" in err
    official = _config(tmp_path, data={"format": "official"})
    err = _user_error(capsys, "--config", str(official), "--data", str(tmp_path), "--out",
                      str(tmp_path / "r"))
    assert "uniseg3d_infos_train.pkl" in err and "--layout official" in err


def test_bad_config_key_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "optim": {"lrr": 1.0}}))
    err = _user_error(capsys, "--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert "lrr" in err


def test_existing_run_folder_without_resume_is_refused(data: Path, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path)
    _train(cfg, data, tmp_path / "run", "--max-steps", "1")
    before = (tmp_path / "run/metrics.csv").read_text()
    err = _user_error(capsys, "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
                      "--max-steps", "2", "--device", "cpu")
    assert str(tmp_path / "run") in err and "--resume" in err and "new --out" in err
    assert (tmp_path / "run/metrics.csv").read_text() == before  # the run is untouched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_gloo_ranks_agree(data: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, train={"checkpoint_every": 2})
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "training.train", "--config", str(cfg), "--data", str(data),
           "--out", str(out), "--max-steps", "3", "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    h0, h1 = ((out / f"param_hash_rank{r}.txt").read_text() for r in (0, 1))
    assert h0 == h1
    assert [s for s, _ in _losses(out)] == [1, 2, 3]  # rank 0 logs every step
    ckpt = out / "checkpoints" / (out / "checkpoints/latest").read_text().strip()
    assert {p.name for p in ckpt.iterdir()} >= {"model.pt", "train_state.pt", "rng_rank0.pt", "rng_rank1.pt"}
    assert "done: step 3" in proc.stdout


@pytest.mark.slow
def test_small_config_drives_the_loss_down(data: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "training/configs/small_cpu.yaml").read_text())
    cfg["train"].update({"epochs": 20, "eval_every": 20})  # 4 scenes, batch 2: 40 steps
    cfg["data"]["augment"] = False  # fit the same 4 scenes: the loss must fall steadily
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert isinstance(load_config(path), TrainConfig)
    _train(path, data, tmp_path / "run")
    losses = [float(v) for _, v in _losses(tmp_path / "run")]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    (val,) = [json.loads(line) for line in (tmp_path / "run/val_metrics.jsonl").read_text().splitlines()]
    assert val["step"] == 40 and val["epoch"] == 20 and val["val_loss"] > 0
    assert 0.0 <= val["val_miou"] <= 1.0 and 0.0 <= val["val_pq"] <= 1.0
