"""Initial weights the official recipe starts from (before any ``--resume``).

- Backbone: the official config's ``load_from = 'work_dirs/pretrained/sstnet_scannet.pth'``
  (the official README: "Download pretrained SSTNet model ``sstnet_scannet.pth``"): SSTNet's
  ScanNet-trained spconv U-Net. mmengine loads it into the whole UniSeg3D with ``strict=False``,
  so only the tensors whose names match the model's (``input_conv.*``, ``unet.*``,
  ``output_layer.*``: the SPFormer-family U-Net) take effect. :func:`load_sstnet_backbone`
  does that for our :class:`~uniseg3d_model.spconv_unet.SpconvUNet` through the official-key
  converter (:func:`~uniseg3d_model.spconv_unet_weights.official_backbone_state_dict`); every
  backbone tensor must be present with its official shape (an error names the first that is
  not), everything else in the file (SSTNet's heads, optimizer state) is ignored.
- Class prototypes: the official decoder's classifier is ``scannet_cls_embedding.pth``
  ((K, P, D) OpenCLIP embeddings of class-name prompts, config ``vocabulary_cls_embedding_
  path``). :func:`init_class_prototypes` fills the model's ``class_prototypes`` buffer from
  that file; without the file, from the configured text encoder's class-name embeddings
  (repeated over P): our stand-in, so the prototype heads train from scratch anywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uniseg3d_model.data.official_data import CLASS_EMBEDDING_FILE, read_class_embedding
from uniseg3d_model.spconv_unet_weights import OFFICIAL_PREFIXES, official_backbone_state_dict

CHECKPOINT_KEYS = ("state_dict", "model", "net")


def read_backbone_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (``state_dict`` / ``model`` / ``net`` entry or the top
    level), ``module.`` prefixes removed; loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal is a user-facing file problem
        raise ValueError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    for key in CHECKPOINT_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(data).__name__}")
    return {k.removeprefix("module."): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def load_sstnet_backbone(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy SSTNet's U-Net tensors into ``model.backbone`` (a SpconvUNet); returns the official
    keys used. ``ValueError`` when the model has no spconv U-Net or a tensor is missing/misshaped."""
    backbone = getattr(model, "backbone", None)
    cfg = getattr(backbone, "cfg", None)
    if cfg is None or not hasattr(cfg, "planes"):
        raise ValueError("train.init_backbone needs the official backbone (model.backbone_type: spconv_unet)")
    state = read_backbone_checkpoint(path)
    official = {k: v for k, v in state.items() if k.startswith(OFFICIAL_PREFIXES)}
    try:
        ours, used = official_backbone_state_dict(official, cfg)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    missing, unexpected = backbone.load_state_dict(ours, strict=False)
    if unexpected:
        raise ValueError(f"{path}: converted key {unexpected[0]!r} has no place in the backbone")
    left = [k for k in missing if not k.endswith("num_batches_tracked")]
    if left:
        raise ValueError(f"{path}: backbone tensor {left[0]!r} not provided by the checkpoint")
    return used


def init_class_prototypes(model: torch.nn.Module, data_root: str | Path | None,
                          path: str | Path | None = None) -> str:
    """Fill ``model.class_prototypes`` (official heads) and say from where; no-op ("none") for
    models without prototypes. ``path`` None: ``<data_root>/scannet_cls_embedding.pth`` when it
    exists, else the text encoder's class-name embeddings."""
    buf = getattr(model, "class_prototypes", None)
    if buf is None:
        return "none"
    if path is None and data_root is not None and (Path(data_root) / CLASS_EMBEDDING_FILE).is_file():
        path = Path(data_root) / CLASS_EMBEDDING_FILE
    if path is not None:
        path = Path(path)
        emb = read_class_embedding(path.parent, path.name)
        if tuple(emb.shape) != tuple(buf.shape):
            raise ValueError(f"{path}: class embedding of shape {tuple(emb.shape)}, the model's prototypes "
                             f"are {tuple(buf.shape)} (set model.class_prototypes to P, same text width)")
        buf.copy_(emb.to(buf))
        return str(path)
    with torch.no_grad():
        names = [model.cfg.class_template.format(n) for n in model.cfg.class_names]
        emb = torch.nn.functional.normalize(torch.as_tensor(model.text_encoder.encode(names)).float(), dim=-1)
    buf.copy_(emb[:, None, :].expand_as(buf).to(buf))
    return "text encoder"


def load_model_weights(model: torch.nn.Module, path: str | Path) -> int:
    """Fine-tuning start (``train.init_from``): copy a saved model checkpoint's weights into
    ``model``. The checkpoint must be of the same architecture (its ``model_config`` equal to the
    model's, the text encoder aside) and hold every tensor with the same shape, else a ValueError
    names the first difference. Returns the number of tensors copied."""
    from uniseg3d_model.checkpoint import load_model_state, read_checkpoint

    ckpt = read_checkpoint(path)
    theirs = type(model.cfg).from_dict(ckpt["model_config"]).to_dict()
    ours = model.cfg.to_dict()
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        k = differ[0]
        raise ValueError(f"train.init_from {path}: model config differs in {k!r} "
                         f"(checkpoint {theirs.get(k)!r}, this run {ours.get(k)!r})")
    try:
        load_model_state(model, ckpt["state_dict"], f"train.init_from {path}")
    except RuntimeError as exc:  # a tensor of another shape (torch lists every one, one per line)
        lines = str(exc).strip().splitlines()
        raise ValueError(f"train.init_from {path}: {(lines[1:] or lines)[0].strip()}") from exc
    return len(ckpt["state_dict"])
