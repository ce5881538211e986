"""Saving and loading UniSeg3D checkpoints.

Format (``torch.save`` of a plain dict, loadable with ``weights_only=True``)::

    format_version  int, CHECKPOINT_VERSION
    model_config    dict, ModelConfig.to_dict()
    state_dict      the model's state dict (text encoder excluded: it is rebuilt by name)
    class_names     list[str], the training vocabulary
    text_encoder    str, the ``build_text_encoder`` name (e.g. "minilm")
    text_dim        int, the text embedding size the model was built for
    extra           dict, free-form (training step, metrics, ...)
    text_tower      optional dict: an embedded frozen OpenCLIP text tower (converted official
                    checkpoints: the released model carries its CLIP text tower), with
                    ``model`` (open_clip model name), ``config`` (CLIPTextConfig fields) and
                    ``state_dict`` (open_clip key names). When present and no text encoder is
                    passed, :func:`load_checkpoint` builds the encoder from it (no weights
                    file needed; the CLIP BPE vocabulary comes from the open-clip-torch package).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from uniseg3d_model.model import ModelConfig, UniSeg3D

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "state_dict", "class_names", "text_encoder", "text_dim")


def text_encoder_name(encoder: Any) -> str:
    """The name ``build_text_encoder`` rebuilds ``encoder`` from (its ``name`` attribute)."""
    name = getattr(encoder, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"text encoder {type(encoder).__name__} has no 'name' to rebuild it from")
    return name


def save_checkpoint(
    path: str | Path,
    model: UniSeg3D,
    extra: dict[str, Any] | None = None,
    text_tower: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename); ``text_tower`` embeds a text
    tower (see the module docstring). Returns the path."""
    path = Path(path)
    payload = {
        "format_version": CHECKPOINT_VERSION,
        "model_config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": list(model.cfg.class_names),
        "text_encoder": text_encoder_name(model.text_encoder),
        "text_dim": int(model.text_encoder.dim),
        "extra": dict(extra or {}),
    }
    if text_tower is not None:
        missing = {"model", "config", "state_dict"} - set(text_tower)
        if missing:
            raise ValueError(f"text_tower lacks {sorted(missing)}")
        payload["text_tower"] = dict(text_tower)
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, then ``os.replace``: a crash never leaves a
    partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (no model built)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: checkpoint must be a dict, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: checkpoint is missing key(s) {missing}")
    if data["format_version"] != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: format_version {data['format_version']!r} is not supported "
            f"(expected {CHECKPOINT_VERSION})"
        )
    if not isinstance(data["model_config"], dict):
        raise ValueError(f"{path}: model_config must be a dict")
    return data


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy a checkpoint's ``state`` into ``model``; keys must match both ways (a ValueError
    prefixed with ``where`` names the first ten that do not)."""
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(f"{where}: state_dict is missing key(s) {result.missing_keys[:10]}")
    if result.unexpected_keys:
        raise ValueError(f"{where}: state_dict has unexpected key(s) {result.unexpected_keys[:10]}")


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", text_encoder: Any = None
) -> tuple[UniSeg3D, dict[str, Any]]:
    """Rebuild the model (and its text encoder via ``build_text_encoder`` unless one is given)
    from ``path``; returns ``(model in eval mode on device, meta)`` where ``meta`` holds every
    checkpoint entry except the state dict and an embedded text tower."""
    data = read_checkpoint(path)
    cfg = ModelConfig.from_dict(data["model_config"])
    if list(cfg.class_names) != list(data["class_names"]):
        raise ValueError(f"{path}: class_names disagree with model_config.class_names")
    if text_encoder is None and "text_tower" in data:
        from uniseg3d_model.text_encoders import OpenCLIPTextEncoder

        tower = data["text_tower"]
        text_encoder = OpenCLIPTextEncoder(
            str(tower["model"]), weights=dict(tower["state_dict"]), config=dict(tower["config"])
        )
    elif text_encoder is None:
        from uniseg3d_model.text_encoders import build_text_encoder

        text_encoder = build_text_encoder(data["text_encoder"])
    if int(text_encoder.dim) != int(data["text_dim"]):
        given = getattr(text_encoder, "name", type(text_encoder).__name__)
        raise ValueError(
            f"{path}: text encoder {given!r} gives {text_encoder.dim}-d "
            f"embeddings, but the checkpoint was trained with {data['text_encoder']!r} "
            f"(text_dim {data['text_dim']}): use that encoder, or leave the text encoder unset"
        )
    model = UniSeg3D(cfg, text_encoder)
    load_model_state(model, data["state_dict"], str(path))
    model.to(device).eval()
    meta = {k: v for k, v in data.items() if k not in ("state_dict", "text_tower")}
    return model, meta
