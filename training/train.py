"""Train UniSeg3D on processed ScanNet scenes: one process, or many with ``torchrun``.

    python -m training.train --config training/configs/small_cpu.yaml --data DIR --out runs/x \
        [--resume] [--max-steps N] [--device cpu|cuda|auto]
    torchrun --nproc_per_node 8 -m training.train --config training/configs/unified_scannet.yaml ...

``data.format`` picks the reader: our prepared ``<root>/<split>/*.npz`` (training.prepare_scannet)
or the official prepared layout (``uniseg3d_infos_<split>.pkl`` + ``.bin`` files). ``loss.recipe``
picks the criterion (``official``: the released code's terms). An ``--out`` that already holds a
run is refused unless ``--resume`` is given; user mistakes (config key, missing data) are one line
and exit code 2.

With ``WORLD_SIZE > 1`` (set by torchrun) it joins a process group (NCCL on CUDA, Gloo on
CPU), wraps the model in DistributedDataParallel and shards scenes with a
DistributedSampler (``set_epoch`` every epoch). AMP (bf16/fp16 autocast, GradScaler for
fp16) runs on CUDA only. Every ``checkpoint_every`` steps rank 0 writes a checkpoint that
resumes exactly (see :mod:`training.train_state`); ``metrics.csv`` gets one row per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training import train_state as ts
from training.config import TrainConfig, load_config, save_config
from training.init_weights import init_class_prototypes, load_model_weights, load_sstnet_backbone
from uniseg3d_model.checkpoint import read_checkpoint, save_checkpoint
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.official_data import INFO_FILE, OfficialScanNetDataset
from uniseg3d_model.structures import collate_scenes

BASE_COLUMNS = ("step", "epoch", "lr", "loss", "grad_norm", "seconds")
RUN_MARKERS = ("config.yaml", "metrics.csv", "checkpoints")


def check_out_dir(out: Path, resume: bool) -> None:
    """``FileExistsError`` when ``out`` already holds a run and ``resume`` is off."""
    found = [m for m in RUN_MARKERS if (Path(out) / m).exists()]
    if found and not resume:
        raise FileExistsError(f"--out {out} already holds a training run ({', '.join(found)}); pass --resume "
                              f"to continue it, or choose a new --out")


def check_recipe(cfg: TrainConfig) -> None:
    """``ValueError`` for a model/criterion pair that cannot train: the official heads (the instance
    head scores things only, wall / floor columns at -1e4) need the official criterion, which takes
    stuff from the semantic head; our criterion would ask the instance head for stuff (CE ~1e3)."""
    heads = cfg.model_config().heads
    recipe = cfg.loss_config().recipe
    if heads == "official" and recipe != "official":
        raise ValueError(f"loss.recipe {recipe!r} cannot train the official heads (model.heads 'official' "
                         f"score things only; stuff comes from the semantic head): set loss.recipe: official")


def check_data(cfg: TrainConfig) -> None:
    """``FileNotFoundError`` naming the missing data and how to make it."""
    root, split = Path(str(cfg.data.root)), cfg.data.train_split
    if cfg.data.format == "official":
        info = root / INFO_FILE.format(split=split)
        if not info.is_file():
            raise FileNotFoundError(
                f"official data file {info} not found: lay out the official prepared data there "
                f"(docs/training.md) or write it with: python -m training.prepare_scannet --raw <ScanNet v2 "
                f"root> --out {root} --layout official")
    elif not (root / split).is_dir():
        raise FileNotFoundError(f"data folder {root / split} not found: prepare it first with: python -m "
                                f"training.prepare_scannet --raw <ScanNet v2 root> --out {root}")
    files = (("train.init_backbone", cfg.train.init_backbone), ("train.init_from", cfg.train.init_from),
             ("data.class_embedding", cfg.data.class_embedding))
    for key, path in files:
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{key}: file {path} not found")


def make_dataset(cfg: TrainConfig, split: str, train: bool) -> ScanNetDataset | OfficialScanNetDataset:
    """The training (augmented, random prompts) or validation dataset of ``cfg.data``."""
    dc = cfg.data
    kwargs = {"num_clicks": dc.num_clicks, "num_texts": dc.num_texts, "label_set": dc.label_set,
              "click_mode": dc.click_mode, "text_mode": dc.text_mode}
    if train:
        kwargs.update(augment=dc.augment, seed=cfg.seed, augment_cfg=dc.augment_cfg)
    kwargs["use_pseudo_masks"] = dc.use_pseudo_masks
    if dc.format == "official":
        return OfficialScanNetDataset(dc.root, split, **kwargs)
    return ScanNetDataset(dc.root, split, **kwargs)


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_distributed(device: str = "auto", timeout_min: float = 120.0) -> Dist:
    """Read torchrun's environment, pick the device, join the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # generous timeout: other ranks wait in a barrier while rank 0 validates
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=timedelta(minutes=timeout_min))
    return Dist(rank, world, local, dev)


def poly_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """lr multiplier after ``step`` optimizer steps: (1 - progress) ** power, floored at min_lr."""
    o, epochs = cfg.optim, cfg.train.epochs
    floor = o.min_lr / o.lr if o.lr > 0 else 0.0

    def factor(step: int) -> float:
        if o.schedule_by == "epoch":
            progress = min(step // steps_per_epoch, epochs) / epochs
        else:
            progress = min(step, epochs * steps_per_epoch) / (epochs * steps_per_epoch)
        return max((1.0 - progress) ** o.poly_power, floor)

    return factor


def build_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    from uniseg3d_model.model import UniSeg3D
    from uniseg3d_model.text_encoders import build_text_encoder

    spec = dict(cfg.text_encoder)
    encoder = build_text_encoder(spec.pop("name"), **spec)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    return UniSeg3D(cfg.model_config(), encoder).to(device)


def default_validation(model: torch.nn.Module, dataset: ScanNetDataset, criterion: Any,
                       device: torch.device) -> dict[str, float]:
    """Validation loss over ``dataset`` plus the six-task summary of :func:`training.evaluate.evaluate`
    (PQ, mIoU, AP, interactive AP, referring mIoU, open-vocabulary AP); rank 0, eval mode."""
    from training.evaluate import evaluate

    losses = []
    model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            scene = dataset[i]
            losses.append(float(criterion(model([scene]), [scene])[0]))
    # the six-task evaluation reads our prepared layout; on the official layout only the loss
    summary = (evaluate(model, dataset.root, dataset.split, progress=False)["summary"]
               if isinstance(dataset, ScanNetDataset) else {})
    model.train()
    result = {"val_loss": float(np.mean(losses))}
    result.update({f"val_{k}": float(v) for k, v in summary.items() if v is not None and math.isfinite(v)})
    return result


class LossModule(torch.nn.Module):
    """Model + criterion as one module, so DDP sees only the loss as output: parameters whose
    outputs the loss does not use this step (e.g. no sentences in a batch) are found unused."""

    def __init__(self, model: torch.nn.Module, criterion: Any) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, scenes: list) -> tuple[torch.Tensor, dict[str, float]]:
        return self.criterion(self.model(scenes), scenes)


class MetricsLog:
    """``metrics.csv``: one row per logged step: base columns + every loss term seen so far (a term
    that first appears later, e.g. a distillation term once every object is matched, adds a column
    and the file is rewritten once with it; earlier rows leave it empty)."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path, self.columns = path, None
        if path.is_file():  # drop rows past the resumed step so the log matches the weights
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows:
                self.columns = list(rows[0].keys())
            with path.open("w", newline="") as fh:
                if self.columns:
                    w = csv.DictWriter(fh, self.columns)
                    w.writeheader()
                    w.writerows(r for r in rows if int(r["step"]) <= resume_step)

    def write(self, row: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = list(BASE_COLUMNS) + sorted(k for k in row if k not in BASE_COLUMNS)
            with self.path.open("w", newline="") as fh:
                csv.DictWriter(fh, self.columns).writeheader()
        new = sorted(k for k in row if k not in self.columns)
        if new:
            with self.path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            self.columns = list(BASE_COLUMNS) + sorted({*self.columns, *new} - set(BASE_COLUMNS))
            with self.path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, self.columns)
                w.writeheader()
                w.writerows(rows)
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.columns, extrasaction="ignore").writerow(row)


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, device: str = "auto",
          progress: bool = True, validate: Callable | None = default_validation) -> dict[str, Any]:
    """Run (or resume) training; returns ``{"step", "epoch", "loss", "param_hash"}`` of this rank."""
    from uniseg3d_model.losses import build_criterion

    out = Path(out)
    d = setup_distributed(device, cfg.train.dist_timeout_min)
    if cfg.data.root is None:
        raise ValueError("data.root is not set (pass --data DIR)")
    check_out_dir(out, resume)  # every rank, before rank 0 writes anything
    d.barrier()
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    dc, rc = cfg.data, cfg.train
    dataset = make_dataset(cfg, dc.train_split, train=True)
    sampler = ts.ResumableDistributedSampler(dataset, num_replicas=d.world_size, rank=d.rank, shuffle=True,
                                             seed=cfg.seed)
    steps_per_epoch = sampler.num_samples // rc.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size {rc.batch_size} exceeds the {sampler.num_samples} scenes per "
                         f"process ({len(dataset)} scenes / {d.world_size} processes)")
    total = rc.epochs * steps_per_epoch
    stop = min(total, rc.max_steps) if rc.max_steps else total

    model = build_model(cfg, d.device)
    init_class_prototypes(model, dc.root, dc.class_embedding)
    if rc.init_backbone:
        load_sstnet_backbone(model, rc.init_backbone)
    if rc.init_from:
        load_model_weights(model, rc.init_from)
    criterion = build_criterion(cfg.loss_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_factor(cfg, steps_per_epoch))
    cuda = d.device.type == "cuda"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(rc.amp) if cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    step, epoch, batch_in_epoch = 0, 0, 0
    ckpt = ts.latest_checkpoint(out) if resume else None
    if resume and ckpt is None and d.main:
        warnings.warn(f"--resume: no checkpoint under {out}; starting from scratch", stacklevel=2)
    if ckpt is not None:
        state, rng = ts.load_train_state(ckpt, d.rank)
        if state["world_size"] != d.world_size:
            raise ValueError(f"{ckpt}: saved with {state['world_size']} processes, resuming with "
                             f"{d.world_size}; use the same number for an exact resume")
        model.load_state_dict(read_checkpoint(ckpt / "model.pt")["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if batch_in_epoch >= steps_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        ts.set_rng_state(rng)
    else:
        random.seed(cfg.seed + d.rank)
        np.random.seed(cfg.seed + d.rank)  # noqa: NPY002 - legacy global stream, seeded for any user
        torch.manual_seed(cfg.seed + d.rank)

    net: torch.nn.Module = LossModule(model, criterion)
    if d.distributed:
        net = DistributedDataParallel(net, device_ids=[d.device.index] if cuda else None,
                                      find_unused_parameters=rc.find_unused_parameters)
    loader_gen = torch.Generator()  # keeps DataLoader seeding off the global RNG (exact resume)
    loader_gen.manual_seed(cfg.seed + d.rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=rc.batch_size, sampler=sampler, drop_last=True,
                                         collate_fn=collate_scenes, num_workers=dc.num_workers,
                                         generator=loader_gen)
    log = MetricsLog(out / "metrics.csv", step) if d.main else None
    bar = tqdm(total=stop, initial=step, desc="train", unit="step", disable=not (progress and d.main))
    val_set = None
    val_exists = ((Path(dc.root) / INFO_FILE.format(split=dc.val_split)).is_file() if dc.format == "official"
                  else (Path(dc.root) / dc.val_split).is_dir())
    if validate is not None and rc.eval_every and d.main and val_exists:
        val_set = make_dataset(cfg, dc.val_split, train=False)
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype else nullcontext
    loss_value = math.nan
    model.train()

    def save(at_step: int, at_epoch: int, at_batch: int) -> None:
        path = ts.checkpoint_dir(out, at_step)
        ts.save_rng(path, d.rank)
        if d.main:
            save_checkpoint(path / "model.pt", model, {"step": at_step, "epoch": at_epoch})
            ts.save_train_state(path, {
                "step": at_step, "epoch": at_epoch, "batch_in_epoch": at_batch, "world_size": d.world_size,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "config": cfg.to_dict()})
        d.barrier()
        if d.main:
            ts.mark_latest(out, path, rc.keep_checkpoints)

    while step < stop and epoch < rc.epochs:
        sampler.set_epoch(epoch)
        sampler.start_index = batch_in_epoch * rc.batch_size
        dataset.set_epoch(epoch)
        for scenes in loader:
            t0 = time.perf_counter()
            with autocast():
                loss, logs = net(scenes)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {float(loss)} at step {step} (rank {d.rank})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step, batch_in_epoch = step + 1, batch_in_epoch + 1
            loss_t = loss.detach().float()
            if d.distributed:
                dist.all_reduce(loss_t)
                loss_t /= d.world_size
            loss_value = float(loss_t)
            if log is not None and step % rc.log_every == 0:
                log.write({"step": step, "epoch": epoch, "lr": lr, "loss": loss_value, "grad_norm": grad_norm,
                           "seconds": time.perf_counter() - t0, **{k: float(v) for k, v in logs.items()}})
            bar.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch, refresh=False)
            bar.update()
            if step % rc.checkpoint_every == 0 or step == stop:
                save(step, epoch, batch_in_epoch)
            if step >= stop:
                break
        if batch_in_epoch >= steps_per_epoch:  # epoch complete (also when it ends exactly at stop)
            epoch, batch_in_epoch = epoch + 1, 0
            if val_set is not None and epoch % rc.eval_every == 0:
                rng = ts.rng_state()  # validation must not shift the training RNG streams
                metrics = validate(model, val_set, criterion, d.device)
                ts.set_rng_state(rng)
                bar.write(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                with (out / "val_metrics.jsonl").open("a") as fh:
                    fh.write(json.dumps({"step": step, "epoch": epoch, **metrics}) + "\n")
            d.barrier()
    bar.close()
    digest = ts.parameter_hash(model)
    (out / f"param_hash_rank{d.rank}.txt").write_text(digest + "\n")
    d.barrier()
    if d.distributed:
        dist.destroy_process_group()
    return {"step": step, "epoch": epoch, "loss": loss_value, "param_hash": digest}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML file (training/configs/*.yaml)")
    ap.add_argument("--data", help="processed data root (overrides data.root)")
    ap.add_argument("--out", required=True, help="run directory (checkpoints, metrics.csv, config.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest")
    ap.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in total")
    ap.add_argument("--epochs", type=int, help="override train.epochs")
    ap.add_argument("--batch-size", type=int, help="override train.batch_size (scenes per process)")
    ap.add_argument("--checkpoint-every", type=int, help="override train.checkpoint_every (steps)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.data:
            cfg.data.root = args.data
        if cfg.data.root is None:
            raise ValueError("no data folder: pass --data DIR (or set data.root in the config)")
        for name in ("max_steps", "epochs", "batch_size", "checkpoint_every"):
            value = getattr(args, name)
            if value is not None:
                if value < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
                setattr(cfg.train, name, value)
        check_data(cfg)
        check_recipe(cfg)
        check_out_dir(Path(args.out), args.resume)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    result = train(cfg, args.out, resume=args.resume, device=args.device, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: step {result['step']} epoch {result['epoch']} loss {result['loss']:.4f} "
              f"params {result['param_hash'][:16]}")


if __name__ == "__main__":
    main()
