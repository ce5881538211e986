"""Convert an official UniSeg3D checkpoint (dk-liang/UniSeg3D, mmdet3d) into our format.

The released model, every tensor (the usual use)::

    python -m uniseg3d_model.convert_official model_best_2.pth uniseg3d_official.pt \
        --cls-embedding scannet_cls_embedding.pth \
        [--text-weights open_clip_pytorch_model.bin] [--report report.json]

builds ``ModelConfig.official()`` (spconv U-Net, prototype class heads, semantic and IoU heads,
lang.Mlp text queries, official post-processing) and maps all 626 tensors of
``model_best_2.pth`` (table: :mod:`uniseg3d_model.official_state`); the class prototypes come from
``scannet_cls_embedding.pth`` (one (K, P, 768) tensor); the frozen CLIP text tower, which the
checkpoint carries under ``lang.text_encoder.*``, is embedded in the output checkpoint, so the
result loads with ``load_checkpoint(path)`` alone. ``--text-weights`` (open_clip's
``open_clip_pytorch_model.bin`` of convnext_large_d_320) supplies the tower for a checkpoint
without one and is otherwise compared with it (the report says whether they agree).
``--text-config`` names the tower's open_clip config (default ``convnext_large_d_320``, read
from the installed open-clip-torch package; or a JSON file). The report (``--report``) lists
every destination, the tensors checked instead of copied, what is fixed in code, and must show
0 unmapped and 0 left at random initialisation.

Our architecture, decoder only (legacy): with ``--model-config cfg.json`` naming a config with
``heads="ours"`` (e.g. ``ModelConfig.small()``/``paper()``), only the decoder tensors that our
architecture shares map (:func:`convert_state_dict`, rules below); the rest is reported unmapped
and keeps its value from ``--base`` or a fresh initialisation. ``--text-tower-out`` writes the
checkpoint's CLIP text tower as an open_clip state dict in either mode.

=====================================================  ==========================================
official (legacy mapping)                              ours
=====================================================  ==========================================
``decoder.input_proj.{0,1}``                           ``decoder.input_proj.{0,1}``
``decoder.query_proj.{0,2}``                           ``decoder.query_proj.{0,2}``
``decoder.x_mask.{0,2}``                               ``decoder.mask_proj.{0,2}``
``decoder.cross_attn_layers.i.{attn,norm}``            ``decoder.layers.i.{cross_attn,cross_norm}``
``decoder.self_attn_layers.i.{attn,norm}``             ``decoder.layers.i.{self_attn,self_norm}``
``decoder.ffn_layers.i.{net.0,net.3,norm}``            ``decoder.layers.i.{ffn.0,ffn.3,ffn_norm}``
``decoder.out_norm``                                   ``decoder.out_norm``
``decoder.mask_pooling_proj.{0,1}``                    ``decoder.pool_proj.{0,1}``
``decoder.cls_proj.{0,2,4}`` (instance head)           ``decoder.class_proj.{0,2,4}``
``type_embedding`` (0 text, 1 click, 2 unified)        ``query_builder.type_embedding``
``pred_iou_proj.*`` (if our score head has its shape)  ``decoder.score_head.*``
``criterion.contrastive_criterion.logit_scale`` = s    ``contrastive_logit_scale`` = log(s)
=====================================================  ==========================================

Legacy constants: ``decoder.logit_scale`` = 4.6052 (the official exp(4.6052) = 100.003),
``decoder.no_object`` = 0, ``query_builder.click_pe.linear`` = 0. User errors (missing file,
wrong shapes, a checkpoint that is not UniSeg3D) print one line naming the file or argument and
exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from uniseg3d_model.decoder import OFFICIAL_LOGIT_SCALE
from uniseg3d_model.official_state import text_tower_state_dict as official_text_tower

_ATTN = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_WB = r"(weight|bias)"
_LAYER = r"decoder\.{}_layers\.(\d+)\."
#: (official regex, our template, required). A *required* rule's target must exist with the
#: same shape; optional rules map as a group (all tensors under one of our prefixes) or not at all.
RULES: list[tuple[str, str, bool]] = [
    (rf"decoder\.input_proj\.([01])\.{_WB}", r"decoder.input_proj.\1.\2", True),
    (rf"decoder\.query_proj\.([02])\.{_WB}", r"decoder.query_proj.\1.\2", True),
    (rf"decoder\.x_mask\.([02])\.{_WB}", r"decoder.mask_proj.\1.\2", True),
    (_LAYER.format("cross_attn") + rf"attn\.{_ATTN}", r"decoder.layers.\1.cross_attn.\2", True),
    (_LAYER.format("cross_attn") + rf"norm\.{_WB}", r"decoder.layers.\1.cross_norm.\2", True),
    (_LAYER.format("self_attn") + rf"attn\.{_ATTN}", r"decoder.layers.\1.self_attn.\2", True),
    (_LAYER.format("self_attn") + rf"norm\.{_WB}", r"decoder.layers.\1.self_norm.\2", True),
    (_LAYER.format("ffn") + rf"net\.([03])\.{_WB}", r"decoder.layers.\1.ffn.\2.\3", True),
    (_LAYER.format("ffn") + rf"norm\.{_WB}", r"decoder.layers.\1.ffn_norm.\2", True),
    (rf"decoder\.out_norm\.{_WB}", r"decoder.out_norm.\1", True),
    (rf"decoder\.mask_pooling_proj\.([01])\.{_WB}", r"decoder.pool_proj.\1.\2", True),
    (rf"decoder\.cls_proj\.([024])\.{_WB}", r"decoder.class_proj.\1.\2", True),
    (r"type_embedding\.weight", r"query_builder.type_embedding.weight", True),
    (rf"pred_iou_proj\.(\d+)\.{_WB}", r"decoder.score_head.\1.\2", False),
]

#: official prefixes we cannot represent, with the reason written into the report
UNMAPPED_REASONS: list[tuple[str, str]] = [
    ("input_conv.", "backbone stem of the spconv SpConvUNet; our backbone is a MinkUNet"),
    ("unet.", "spconv SpConvUNet backbone (pre-norm residual U-Net); our backbone is a MinkUNet"),
    ("output_layer.", "backbone output BatchNorm of the SpConvUNet; our backbone is a MinkUNet"),
    ("decoder.cls_proj_sem.", "separate semantic class head; ours uses one class head for all tasks"),
    ("decoder.mask_pooling_proj_sem.", "separate semantic class head; ours uses one class head"),
    ("decoder.query.", "learned queries in d_model space; ours learns them in backbone-channel space"),
    ("lang.Mlp.", "768-768-32 GELU MLP over unnormalised CLIP features; ours: query_builder.text_proj"),
    ("lang.text_encoder.", "frozen CLIP text tower: written by --text-tower-out in open_clip names"),
    ("criterion.", "loss-module state without a counterpart"),
]

#: our tensors set to constants that reproduce the official model's fixed behaviour
SYNTHESIZED: dict[str, tuple[float, str]] = {
    "decoder.logit_scale": (OFFICIAL_LOGIT_SCALE, "official class logit scale, the constant exp(4.6052)"),
    "decoder.no_object.weight": (0.0, "official background prototype is a zero vector: logit 0"),
    "decoder.no_object.bias": (0.0, "official background prototype is a zero vector: logit 0"),
    "query_builder.click_pe.linear.weight": (0.0, "official click queries have no positional encoding"),
    "query_builder.click_pe.linear.bias": (0.0, "official click queries have no positional encoding"),
}

CONTRASTIVE_KEY = "criterion.contrastive_criterion.logit_scale"

@dataclass
class ConversionReport:
    mapped: dict[str, str] = field(default_factory=dict)  # ours <- official
    synthesized: dict[str, str] = field(default_factory=dict)  # ours -> reason
    unmapped: dict[str, str] = field(default_factory=dict)  # official -> reason
    kept: list[str] = field(default_factory=list)  # ours, value taken from the base model

    def summary(self) -> str:
        groups = sorted({k.split(".")[0] for k in self.unmapped})
        return (
            f"mapped {len(self.mapped)} tensors, set {len(self.synthesized)} constants, "
            f"{len(self.unmapped)} official tensors unmapped (prefixes: {', '.join(groups) or '-'}), "
            f"{len(self.kept)} of ours kept from the base model"
        )


def official_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint (mmengine wraps them in ``state_dict``)."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state:
        raise ValueError("official checkpoint holds no state dict")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _reason_unmapped(key: str) -> str:
    for prefix, reason in UNMAPPED_REASONS:
        if key.startswith(prefix):
            return reason
    return "no counterpart in our model"


def convert_state_dict(
    official: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map ``official`` tensors onto a copy of ``base`` (our model's state dict).

    The result has exactly ``base``'s keys and shapes (so it loads with ``strict=True``).
    Raises ValueError when a required decoder tensor is missing or has another shape (the
    model config does not match the checkpoint: layers, d_model, channels or text dim).
    """
    out = {k: v.clone() for k, v in base.items()}
    report = ConversionReport()
    groups: dict[str, list[tuple[str, str]]] = {}
    errors: list[str] = []
    for key in sorted(official):
        for pattern, template, required in RULES:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            target = match.expand(template)
            if required:
                if target not in base:
                    errors.append(f"{key} -> {target}: no such tensor in our model")
                elif base[target].shape != official[key].shape:
                    shapes = f"{tuple(official[key].shape)} vs ours {tuple(base[target].shape)}"
                    errors.append(f"{key} -> {target}: shape {shapes}")
                else:
                    out[target] = official[key].detach().clone().to(base[target].dtype)
                    report.mapped[target] = key
            else:
                groups.setdefault(target.rsplit(".", 2)[0], []).append((key, target))
            break
        else:
            if key != CONTRASTIVE_KEY:
                report.unmapped[key] = _reason_unmapped(key)
    for group, pairs in groups.items():
        prefix = group + "."
        fits = all(t in base and base[t].shape == official[k].shape for k, t in pairs)
        fits = fits and {t for _, t in pairs} == {k for k in base if k.startswith(prefix)}
        for key, target in pairs:
            if fits:
                out[target] = official[key].detach().clone().to(base[target].dtype)
                report.mapped[target] = key
            else:
                report.unmapped[key] = f"our {prefix}* has another structure/shape"
    core = ("decoder.layers.", "decoder.input_proj.", "decoder.class_proj.", "decoder.out_norm.")
    missing = [k for k in base if k.startswith(core) and k not in report.mapped]
    if missing:
        errors.append(f"{len(missing)} of our decoder tensors have no official source, e.g. {missing[:4]}")
    if errors:
        details = "\n  ".join(errors[:20])
        raise ValueError(f"official checkpoint does not match the model config:\n  {details}")
    for target, (value, reason) in SYNTHESIZED.items():
        if target in out:
            out[target] = torch.full_like(out[target], value)
            report.synthesized[target] = reason
    if CONTRASTIVE_KEY in official and "contrastive_logit_scale" in out:
        scale = float(official[CONTRASTIVE_KEY])
        if scale <= 0:
            raise ValueError(f"{CONTRASTIVE_KEY} must be > 0 to convert, got {scale}")
        out["contrastive_logit_scale"] = torch.full_like(out["contrastive_logit_scale"], math.log(scale))
        report.mapped["contrastive_logit_scale"] = f"log({CONTRASTIVE_KEY})"
    report.kept = sorted(k for k in base if k not in report.mapped and k not in report.synthesized)
    return out, report


def text_tower_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The frozen CLIP text tower of an official checkpoint, renamed to open_clip's names
    (loadable by ``build_text_encoder("openclip:convnext_large_d_320", weights=...)``)."""
    out = official_text_tower(official)
    if not out:
        raise ValueError("official checkpoint has no lang.text_encoder.* tensors")
    return out


def _load(path: Path, trust_pickle: bool, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if trust_pickle:
            raise ValueError(f"{what} {path}: not readable by torch.load ({type(exc).__name__})") from exc
        raise ValueError(
            f"{what} {path}: cannot be read with weights_only=True ({type(exc).__name__}); mmengine "
            "checkpoints pickle extra objects - pass --trust-pickle if you trust the file"
        ) from exc


class _TextDim:
    """Stands in for the text encoder while building the model for conversion: only its
    name (recorded in the checkpoint) and dim (the class head's output width) matter."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim = name, dim


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m uniseg3d_model.convert_official",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (uniseg3d_model/convert_official.py) for the mapping.",
    )
    parser.add_argument("official", type=Path, help="official UniSeg3D checkpoint (model_best_2.pth)")
    parser.add_argument("output", type=Path, help="converted checkpoint (our format)")
    parser.add_argument("--cls-embedding", type=Path,
                        help="scannet_cls_embedding.pth, (K, P, D) class prototypes (official model)")
    parser.add_argument("--text-weights", type=Path,
                        help="open_clip_pytorch_model.bin of the text tower (official model; optional)")
    parser.add_argument("--text-config", default="convnext_large_d_320",
                        help="open_clip model name or config JSON of the text tower (official model)")
    parser.add_argument("--model-config", type=Path,
                        help="JSON ModelConfig (default: ModelConfig.official(); heads='ours' = legacy)")
    parser.add_argument("--base", type=Path, help="legacy: our checkpoint filling what does not map")
    parser.add_argument("--text-encoder", default=None,
                        help="text encoder name recorded (default: openclip:<text config name>)")
    parser.add_argument("--text-tower-out", type=Path, help="also write the CLIP text tower (open_clip)")
    parser.add_argument("--report", type=Path, help="write the mapping report as JSON")
    parser.add_argument("--trust-pickle", action="store_true", help="allow full pickle loading")
    parser.add_argument("--seed", type=int, default=0, help="seed for freshly initialised tensors")
    return parser


def _text_config_name(value: str) -> str:
    return Path(value).stem if value.endswith(".json") else value


def _convert_official(
    args: argparse.Namespace, official: dict[str, torch.Tensor], cfg: Any
) -> dict[str, Any]:
    """Full conversion into ModelConfig.official(); returns the report as a dict."""
    from dataclasses import asdict as _asdict

    from uniseg3d_model.checkpoint import save_checkpoint
    from uniseg3d_model.model import UniSeg3D
    from uniseg3d_model.official_state import convert_official_model

    if args.cls_embedding is None:
        raise ValueError(
            "--cls-embedding is required for the official model (scannet_cls_embedding.pth)"
        )
    emb = _load(args.cls_embedding, False, "--cls-embedding")
    if not isinstance(emb, torch.Tensor) or emb.dim() != 3:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"--cls-embedding {args.cls_embedding}: expected one (K, P, D) tensor, got {shape}")
    weights = None
    if args.text_weights is not None:
        from uniseg3d_model.clip_text import load_weights_file

        if not args.text_weights.is_file():
            raise FileNotFoundError(f"--text-weights not found: {args.text_weights}")
        weights = load_weights_file(args.text_weights)
    config_name = _text_config_name(args.text_config)
    try:
        cfg, state, tower, report = convert_official_model(official, emb, args.text_config, weights, cfg)
    except ValueError as exc:
        raise ValueError(f"{args.official}: {exc}") from exc
    name = args.text_encoder or f"openclip:{config_name}"
    model = UniSeg3D(cfg, _TextDim(name, int(emb.shape[2])))
    model.load_state_dict(state, strict=True)
    from uniseg3d_model.clip_text import load_text_config

    text_cfg = _asdict(load_text_config(args.text_config))
    text_tower = {"model": config_name, "config": text_cfg, "state_dict": tower}
    extra = {"converted_from": str(args.official), "conversion": _asdict(report)}
    save_checkpoint(args.output, model, extra, text_tower=text_tower)
    print(report.summary())
    for note in report.notes:
        print("  " + note)
    return _asdict(report)


def _convert_legacy(
    args: argparse.Namespace, official: dict[str, torch.Tensor], cfg: Any
) -> dict[str, Any]:
    from uniseg3d_model.checkpoint import load_checkpoint, save_checkpoint
    from uniseg3d_model.model import UniSeg3D

    text_dim = int(official["decoder.cls_proj.4.weight"].shape[0])
    name = args.text_encoder or f"openclip:{_text_config_name(args.text_config)}"
    if args.base is not None:
        model, _ = load_checkpoint(args.base, text_encoder=_TextDim(name, text_dim))
    else:
        torch.manual_seed(args.seed)
        model = UniSeg3D(cfg, _TextDim(name, text_dim))
    state, report = convert_state_dict(official, model.state_dict())
    model.load_state_dict(state, strict=True)
    save_checkpoint(args.output, model, {"converted_from": str(args.official), "conversion": asdict(report)})
    print(report.summary())
    for reason in sorted(set(report.unmapped.values())):
        keys = [k for k, r in report.unmapped.items() if r == reason]
        print(f"  unmapped ({len(keys)} tensors, e.g. {keys[0]}): {reason}")
    return asdict(report)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert as ``args`` say; returns the report dict. Raises FileNotFoundError / ValueError
    with a one-line message naming the file or argument."""
    from uniseg3d_model.model import ModelConfig

    official = official_state_dict(_load(args.official, args.trust_pickle, "official checkpoint"))
    if "decoder.cls_proj.4.weight" not in official:
        raise ValueError(f"{args.official}: no decoder.cls_proj.4.weight, not a UniSeg3D checkpoint")
    cfg = ModelConfig.official()
    if args.model_config is not None:
        if not args.model_config.is_file():
            raise FileNotFoundError(f"--model-config not found: {args.model_config}")
        try:
            cfg = ModelConfig.from_dict(json.loads(args.model_config.read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"--model-config {args.model_config}: {exc}") from exc
    if cfg.heads == "official":
        report = _convert_official(args, official, cfg)
    else:
        report = _convert_legacy(args, official, cfg)
    if args.text_tower_out is not None:
        args.text_tower_out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(text_tower_state_dict(official), args.text_tower_out)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {str(exc).splitlines()[0]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
