"""Convert an official UniSeg3D checkpoint (dk-liang/UniSeg3D, mmdet3d) into our format.

    python -m uniseg3d_model.convert_official official.pth converted.pt \
        [--model-config cfg.json] [--text-tower-out convnext_text.pt] [--report report.json]

What maps (official name -> ours; shapes checked; the decoder is the same architecture):

=====================================================  ==========================================
official                                               ours
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
``lang.text_encoder.text_*`` (frozen CLIP text tower)  ``--text-tower-out`` file in open_clip names
=====================================================  ==========================================

Set to constants that reproduce the official behaviour: ``decoder.logit_scale`` = ln 100
(a fixed buffer there), ``decoder.no_object`` = 0 (the official background prototype is a zero
vector, so its logit is always 0), ``query_builder.click_pe.linear`` = 0 (official click
queries carry no positional encoding).

Not representable, reported as unmapped (the target keeps its value from ``--base`` or from
a fresh initialisation): the backbone (official ScanNet model: ``input_conv`` + spconv
``SpConvUNet`` (``unet.*``, pre-norm residual blocks, planes 32..160) + ``output_layer``; ours
is a MinkUNet), the separate semantic head (``decoder.cls_proj_sem``,
``decoder.mask_pooling_proj_sem``; ours classifies semantics with the one class head), and
``lang.Mlp`` (768-768-32 GELU MLP over unnormalised CLIP features; ours projects unit
embeddings through ``query_builder.text_proj``). A converted model therefore needs its backbone
and text projection trained (or taken from ``--base``) before it is useful; the report says
exactly which tensors came from where.
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
    "decoder.logit_scale": (math.log(100.0), "official class logit scale is a fixed buffer, ln(100)"),
    "decoder.no_object.weight": (0.0, "official background prototype is a zero vector: logit 0"),
    "decoder.no_object.bias": (0.0, "official background prototype is a zero vector: logit 0"),
    "query_builder.click_pe.linear.weight": (0.0, "official click queries have no positional encoding"),
    "query_builder.click_pe.linear.bias": (0.0, "official click queries have no positional encoding"),
}

CONTRASTIVE_KEY = "criterion.contrastive_criterion.logit_scale"

#: official text-tower names (under ``lang.text_encoder.``) -> open_clip CLIP names
TEXT_TOWER_NAMES = {
    "text_token_embedding.": "token_embedding.",
    "text_pe": "positional_embedding",
    "text_transformer.": "transformer.",
    "text_ln_final.": "ln_final.",
    "text_proj": "text_projection",
}


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
    out = {}
    for key, value in official.items():
        if not key.startswith("lang.text_encoder."):
            continue
        name = key[len("lang.text_encoder.") :]
        for old, new in TEXT_TOWER_NAMES.items():
            if name.startswith(old):
                out[new + name[len(old) :]] = value.detach().clone()
                break
    if not out:
        raise ValueError("official checkpoint has no lang.text_encoder.* tensors")
    return out


def _load(path: Path, trust_pickle: bool) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if trust_pickle:
            raise
        raise ValueError(
            f"{path}: cannot be read with weights_only=True ({type(exc).__name__}); mmengine "
            "checkpoints pickle extra objects - pass --trust-pickle if you trust the file"
        ) from exc


class _TextDim:
    """Stands in for the text encoder while building the model for conversion: only its
    name (recorded in the checkpoint) and dim (the class head's output width) matter."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim = name, dim


def main(argv: list[str] | None = None) -> int:
    from uniseg3d_model.checkpoint import load_checkpoint, save_checkpoint
    from uniseg3d_model.model import ModelConfig, UniSeg3D

    parser = argparse.ArgumentParser(
        prog="python -m uniseg3d_model.convert_official", description=__doc__.split("\n")[0]
    )
    parser.add_argument("official", type=Path, help="official UniSeg3D checkpoint (.pth)")
    parser.add_argument("output", type=Path, help="converted checkpoint (our format)")
    parser.add_argument("--model-config", type=Path, help="JSON ModelConfig (default: ModelConfig.paper())")
    parser.add_argument("--base", type=Path, help="our checkpoint whose tensors fill what does not map")
    parser.add_argument("--text-encoder", default="openclip:convnext_large_d_320", help="name recorded")
    parser.add_argument("--text-tower-out", type=Path, help="also write the CLIP text tower (open_clip)")
    parser.add_argument("--report", type=Path, help="write the mapping report as JSON")
    parser.add_argument("--trust-pickle", action="store_true", help="allow full pickle loading")
    parser.add_argument("--seed", type=int, default=0, help="seed for freshly initialised tensors")
    args = parser.parse_args(argv)

    official = official_state_dict(_load(args.official, args.trust_pickle))
    if "decoder.cls_proj.4.weight" not in official:
        raise ValueError(f"{args.official}: no decoder.cls_proj.4.weight, not a UniSeg3D checkpoint")
    text_dim = int(official["decoder.cls_proj.4.weight"].shape[0])
    if args.base is not None:
        model, _ = load_checkpoint(args.base, text_encoder=_TextDim(args.text_encoder, text_dim))
    else:
        cfg = ModelConfig.paper()
        if args.model_config is not None:
            cfg = ModelConfig.from_dict(json.loads(args.model_config.read_text()))
        torch.manual_seed(args.seed)
        model = UniSeg3D(cfg, _TextDim(args.text_encoder, text_dim))
    state, report = convert_state_dict(official, model.state_dict())
    model.load_state_dict(state, strict=True)
    extra = {"converted_from": str(args.official), "conversion": asdict(report)}
    save_checkpoint(args.output, model, extra)
    if args.text_tower_out is not None:
        args.text_tower_out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(text_tower_state_dict(official), args.text_tower_out)
    if args.report is not None:
        args.report.write_text(json.dumps(asdict(report), indent=1))
    print(report.summary())
    for reason in sorted(set(report.unmapped.values())):
        keys = [k for k, r in report.unmapped.items() if r == reason]
        print(f"  unmapped ({len(keys)} tensors, e.g. {keys[0]}): {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
