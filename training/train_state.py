"""What exact resume needs besides the model weights: optimizer, scheduler, grad scaler,
position (step, epoch, batch within the epoch) and every RNG stream of every rank.

Layout of one checkpoint (``<out>/checkpoints/step_XXXXXXXX/``)::

    model.pt          uniseg3d_model.checkpoint format (loads for inference anywhere)
    train_state.pt    optimizer / scheduler / scaler state, step, epoch, batch_in_epoch, world_size
    rng_rank<R>.pt    python, numpy, torch (and CUDA) RNG states of rank R

``<out>/checkpoints/latest`` names the newest complete checkpoint; it is written last.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from uniseg3d_model.checkpoint import atomic_torch_save


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after ``start_index`` of this rank's indices
    (the batches already consumed before a checkpoint). ``set_epoch`` works as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_index = 0

    def __iter__(self):  # noqa: ANN204 - Iterator[int]
        indices = list(super().__iter__())
        return iter(indices[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),  # noqa: NPY002
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:08d}"


def save_rng(ckpt: Path, rank: int) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(rng_state(), ckpt / f"rng_rank{rank}.pt")


def save_train_state(ckpt: Path, state: dict[str, Any]) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, ckpt / "train_state.pt")


def mark_latest(out: Path, ckpt: Path, keep: int) -> None:
    """Point ``latest`` at ``ckpt`` and delete all but the newest ``keep`` checkpoints."""
    root = out / "checkpoints"
    tmp = root / "latest.tmp"
    tmp.write_text(ckpt.name + "\n")
    os.replace(tmp, root / "latest")
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[: max(0, len(old) - keep)]:
        if p != ckpt:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(out: Path) -> Path | None:
    marker = out / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    ckpt = out / "checkpoints" / marker.read_text().strip()
    if not (ckpt / "train_state.pt").is_file():
        raise FileNotFoundError(f"{marker} names {ckpt}, which has no train_state.pt")
    return ckpt


def load_train_state(ckpt: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(train_state, this rank's rng state)``; our own files, so full unpickling is allowed."""
    state = torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=False)
    rng_file = ckpt / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(f"{rng_file} missing: resume with the same number of processes")
    return state, torch.load(rng_file, map_location="cpu", weights_only=False)


def parameter_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every trainable parameter (names and exact bytes), for cross-rank checks.

    Buffers are left out: BatchNorm running statistics follow each rank's own batches between
    DDP's buffer broadcasts (rank 0's are the ones checkpointed)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
