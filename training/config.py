"""Training configuration: plain YAML files -> dataclasses (no registries, no code in configs).

A config file has the sections below; every key is optional (defaults are the paper's
ScanNet setting where one exists) and an unknown key is an error naming it::

    seed: 1
    model: {preset: official|paper|small, ...ModelConfig overrides, backbone: {...}}
    text_encoder: {name: minilm}
    loss: {...LossConfig fields}
    data: {...DataConfig fields, augment_cfg: {...AugmentConfig fields}}
    optim: {...OptimConfig fields}
    train: {...RunConfig fields}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from uniseg3d_model.data.augment import AugmentConfig

DATA_FORMATS = ("processed", "official")


@dataclass
class DataConfig:
    root: str | None = None  # data root (CLI --data overrides)
    # "processed": our <root>/<split>/*.npz (training.prepare_scannet); "official": the official
    # prepared layout (<root>/uniseg3d_infos_<split>.pkl + points/ instance_mask/ ... .bin)
    format: str = "processed"
    train_split: str = "train"
    val_split: str = "val"
    label_set: str = "scannet20"
    augment: bool = True
    num_clicks: int | None = None  # clicks per scene, one per instance; null = every instance (official)
    num_texts: int | None = None  # sentences per scene; null = one per described object (official)
    click_mode: str = "official"  # "official" | "near_centre" (ours), see uniseg3d_model/data/prompts.py
    text_mode: str = "per_object"  # "per_object" (official) | "sentences" (ours)
    use_pseudo_masks: bool = True  # SAM3D (official data) / stand-in (ours) pseudo masks when present
    # official heads' class prototypes (K, P, D); null: <root>/scannet_cls_embedding.pth when it
    # exists, else the text encoder's class-name embeddings (training/init_weights.py)
    class_embedding: str | None = None
    num_workers: int = 0
    augment_cfg: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    """AdamW + polynomial decay, as in UniSeg3D/OneFormer3D (lr 1e-4, wd 0.05, clip 10, power 0.9)."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 10.0  # max global L2 norm; null disables
    poly_power: float = 0.9
    schedule_by: str = "epoch"  # "epoch": lr constant within an epoch (paper); "step": decays every step
    min_lr: float = 0.0


@dataclass
class RunConfig:
    epochs: int = 512
    batch_size: int = 4  # scenes per process (the paper: 4 per GPU)
    max_steps: int | None = None  # stop early after this many optimizer steps (total, not per run)
    amp: str = "bf16"  # "bf16" | "fp16" | "none"; used on CUDA only
    checkpoint_every: int = 1000  # steps; the last step always checkpoints
    keep_checkpoints: int = 3
    eval_every: int = 16  # epochs; 0 disables
    log_every: int = 1  # steps per CSV row
    find_unused_parameters: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    # backbone initialisation, the official ``load_from``: SSTNet's ScanNet weights
    # (work_dirs/pretrained/sstnet_scannet.pth); null = random initialisation
    init_backbone: str | None = None
    # whole-model initialisation (fine-tuning): a model checkpoint (uniseg3d_model/checkpoint.py
    # format, e.g. uniseg3d_model/weights/default.pt) of the same architecture; loaded strictly
    # before any --resume (a resumed run restores its own weights instead)
    init_from: str | None = None
    dist_timeout_min: float = 120.0  # process-group timeout; covers rank 0's validation


@dataclass
class TrainConfig:
    seed: int = 1
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})
    text_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "minilm"})
    loss: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def model_config(self) -> Any:
        """The :class:`ModelConfig`: the preset (``official``: the released architecture;
        ``paper``/``small``: ours) updated with the other keys."""
        from uniseg3d_model.model import ModelConfig

        spec = dict(self.model)
        preset = spec.pop("preset", "paper")
        presets = {"official": ModelConfig.official, "paper": ModelConfig.paper, "small": ModelConfig.small}
        if preset not in presets:
            raise ValueError(f"model.preset must be one of {sorted(presets)}, got {preset!r}")
        base = presets[preset]().to_dict()
        for key, value in spec.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return ModelConfig.from_dict(base)

    def loss_config(self) -> Any:
        from uniseg3d_model.losses import LossConfig

        return build_dataclass(LossConfig, self.loss, "loss")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples -> lists recursively, so ``yaml.safe_dump`` writes plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Coerce a YAML value to the annotated field type (nested dataclasses, tuples, numbers)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-4 as a string
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return value


def build_dataclass(cls: type, data: dict[str, Any] | None, where: str = "config") -> Any:
    """``cls(**data)`` with unknown keys rejected (naming them) and values coerced to field types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _validate(cfg: TrainConfig) -> TrainConfig:
    if cfg.train.amp not in ("bf16", "fp16", "none"):
        raise ValueError(f"train.amp must be bf16, fp16 or none, got {cfg.train.amp!r}")
    if cfg.optim.schedule_by not in ("epoch", "step"):
        raise ValueError(f"optim.schedule_by must be 'epoch' or 'step', got {cfg.optim.schedule_by!r}")
    for name in ("epochs", "batch_size", "checkpoint_every", "log_every"):
        if getattr(cfg.train, name) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {getattr(cfg.train, name)}")
    if cfg.train.max_steps is not None and cfg.train.max_steps < 1:
        raise ValueError(f"train.max_steps must be >= 1 or null, got {cfg.train.max_steps}")
    if cfg.data.format not in DATA_FORMATS:
        raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {cfg.data.format!r}")
    if cfg.data.click_mode not in ("official", "near_centre"):
        raise ValueError(f"data.click_mode must be official or near_centre, got {cfg.data.click_mode!r}")
    if cfg.data.text_mode not in ("per_object", "sentences"):
        raise ValueError(f"data.text_mode must be per_object or sentences, got {cfg.data.text_mode!r}")
    if "name" not in cfg.text_encoder:
        raise ValueError("text_encoder.name is required (e.g. minilm)")
    return cfg


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return _validate(build_dataclass(TrainConfig, data, "config"))


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config file into :class:`TrainConfig` (``ValueError`` naming the file and key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    try:
        return config_from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
