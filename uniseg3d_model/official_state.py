"""Every tensor of a released UniSeg3D checkpoint -> a ``ModelConfig.official()`` model.

:func:`convert_official_model` maps the 626 tensors of ``model_best_2.pth`` (names and shapes:
tests/official_fixture.py) plus the two files the released model needs besides:

================================================  =============================================
official                                          ours
================================================  =============================================
``input_conv.*``, ``unet.*``, ``output_layer.*``  ``backbone.*`` (spconv_unet_weights:
                                                  spconv KRSC kernels -> our layout)
``decoder.input_proj/query_proj/out_norm``        same names
``decoder.x_mask.{0,2}``                          ``decoder.mask_proj.{0,2}``
``decoder.{cross_attn,self_attn}_layers.i.attn``  ``decoder.layers.i.{cross_attn,self_attn}``
``decoder.{cross_attn,self_attn}_layers.i.norm``  ``decoder.layers.i.{cross_norm,self_norm}``
``decoder.ffn_layers.i.{net.0,net.3,norm}``       ``decoder.layers.i.{ffn.0,ffn.3,ffn_norm}``
``decoder.mask_pooling_proj{,_sem}.{0,1}``        ``decoder.head.{pool_proj,sem_pool_proj}``
``decoder.cls_proj{,_sem}.{0,2,4}``               ``decoder.head.{class_proj,sem_class_proj}``
``pred_iou_proj.{0,2,4}``                         ``decoder.head.iou_head.{0,2,4}``
``type_embedding`` (0 text, 1 click, 2 unified)   ``query_builder.type_embedding``
``lang.Mlp.fc{1,2}``                              ``query_builder.text_mlp.fc{1,2}``
``criterion.contrastive_criterion.logit_scale``   ``contrastive_logit_scale`` = log(s) (the
                                                  official multiplies by s, ours by exp)
``lang.text_encoder.text_*`` (frozen CLIP tower)  the checkpoint's embedded ``text_tower``
                                                  (open_clip names; see checkpoint.py)
``lang.text_encoder.text_attn_mask`` (buffer)     checked equal to the causal mask; our tower
                                                  rebuilds it (non-persistent ``attn_mask``)
``scannet_cls_embedding.pth`` (K, P, D) tensor    ``class_prototypes`` (persistent buffer)
================================================  =============================================

Not in the official state dict, fixed in code on both sides (official non-persistent
buffers): the class logit scale exp(4.6052) and the zero background prototype
(:mod:`official_heads`). ``open_clip_pytorch_model.bin`` (``--text-weights``) supplies the text
tower when the checkpoint lacks it, and is otherwise compared with the checkpoint's tower.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

TEXT_PREFIX = "lang.text_encoder."
TEXT_MASK_KEY = TEXT_PREFIX + "text_attn_mask"
CONTRASTIVE_KEY = "criterion.contrastive_criterion.logit_scale"
BACKBONE_PREFIXES = ("input_conv.", "unet.", "output_layer.")

_ATTN = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_WB = r"(weight|bias)"
#: (official regex, our template); every target must exist in our model with the same shape
RULES: list[tuple[str, str]] = [
    (rf"decoder\.input_proj\.([01])\.{_WB}", r"decoder.input_proj.\1.\2"),
    (rf"decoder\.query_proj\.([02])\.{_WB}", r"decoder.query_proj.\1.\2"),
    (rf"decoder\.x_mask\.([02])\.{_WB}", r"decoder.mask_proj.\1.\2"),
    (rf"decoder\.cross_attn_layers\.(\d+)\.attn\.{_ATTN}", r"decoder.layers.\1.cross_attn.\2"),
    (rf"decoder\.cross_attn_layers\.(\d+)\.norm\.{_WB}", r"decoder.layers.\1.cross_norm.\2"),
    (rf"decoder\.self_attn_layers\.(\d+)\.attn\.{_ATTN}", r"decoder.layers.\1.self_attn.\2"),
    (rf"decoder\.self_attn_layers\.(\d+)\.norm\.{_WB}", r"decoder.layers.\1.self_norm.\2"),
    (rf"decoder\.ffn_layers\.(\d+)\.net\.([03])\.{_WB}", r"decoder.layers.\1.ffn.\2.\3"),
    (rf"decoder\.ffn_layers\.(\d+)\.norm\.{_WB}", r"decoder.layers.\1.ffn_norm.\2"),
    (rf"decoder\.out_norm\.{_WB}", r"decoder.out_norm.\1"),
    (rf"decoder\.mask_pooling_proj\.([01])\.{_WB}", r"decoder.head.pool_proj.\1.\2"),
    (rf"decoder\.mask_pooling_proj_sem\.([01])\.{_WB}", r"decoder.head.sem_pool_proj.\1.\2"),
    (rf"decoder\.cls_proj\.([024])\.{_WB}", r"decoder.head.class_proj.\1.\2"),
    (rf"decoder\.cls_proj_sem\.([024])\.{_WB}", r"decoder.head.sem_class_proj.\1.\2"),
    (rf"pred_iou_proj\.([024])\.{_WB}", r"decoder.head.iou_head.\1.\2"),
    (r"type_embedding\.weight", r"query_builder.type_embedding.weight"),
    (rf"lang\.Mlp\.(fc[12])\.{_WB}", r"query_builder.text_mlp.\1.\2"),
]

#: official text-tower names (under ``lang.text_encoder.``) -> open_clip CLIP names
TEXT_TOWER_NAMES = {
    "text_token_embedding.": "token_embedding.",
    "text_pe": "positional_embedding",
    "text_transformer.": "transformer.",
    "text_ln_final.": "ln_final.",
    "text_proj": "text_projection",
}

#: what the official model holds outside its state dict, and where ours has it
CONSTANTS = {
    "decoder.logit_scale (official buffer, persistent=False)": "exp(4.6052) fixed in official_heads",
    "decoder.cls_embed background row (official buffer, persistent=False)": "zero prototype, "
    "logit 0, fixed in official_heads",
    "decoder.cls_embed class rows (official buffer, persistent=False)": "class_prototypes, "
    "read from the class-embedding file",
    "text_tower.attn_mask (ours, persistent=False)": "causal mask rebuilt by CLIPTextTower; "
    "checked equal to the official lang.text_encoder.text_attn_mask",
}


@dataclass
class OfficialConversionReport:
    """mapped: ours <- official key (``text_tower.<open_clip name>`` for the embedded tower);
    from_files: ours <- file; checked: official keys verified rather than copied (with how);
    constants: values fixed in code on both sides; unmapped: official keys without a
    destination (empty on success); random_init: our state-dict keys left at initialisation
    (empty on success); notes: free text (e.g. the --text-weights comparison)."""

    mapped: dict[str, str] = field(default_factory=dict)
    from_files: dict[str, str] = field(default_factory=dict)
    checked: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=lambda: dict(CONSTANTS))
    unmapped: dict[str, str] = field(default_factory=dict)
    random_init: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def official_keys(self) -> list[str]:
        """Every official key consumed (mapped or checked), one entry per use."""
        return list(self.mapped.values()) + list(self.checked)

    def summary(self) -> str:
        return (
            f"mapped {len(self.mapped)} tensors ({sum(k.startswith('text_tower.') for k in self.mapped)} "
            f"into the embedded text tower), {len(self.checked)} checked, {len(self.from_files)} from "
            f"files, {len(self.unmapped)} official tensors unmapped, {len(self.random_init)} of ours "
            "left at random init"
        )


def text_tower_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ``lang.text_encoder.*`` tensors renamed to open_clip's CLIP names (the
    ``text_attn_mask`` buffer excluded)."""
    out = {}
    for key, value in official.items():
        if not key.startswith(TEXT_PREFIX) or key == TEXT_MASK_KEY:
            continue
        name = key[len(TEXT_PREFIX) :]
        for old, new in TEXT_TOWER_NAMES.items():
            if name.startswith(old):
                out[new + name[len(old) :]] = value.detach().clone()
                break
    return out


def _official_name(open_clip_name: str) -> str:
    for old, new in TEXT_TOWER_NAMES.items():
        if open_clip_name.startswith(new):
            return TEXT_PREFIX + old + open_clip_name[len(new) :]
    raise KeyError(open_clip_name)


def _text_tower(
    official: dict[str, torch.Tensor],
    text_weights: dict[str, torch.Tensor] | None,
    text_cfg: Any,
    report: OfficialConversionReport,
) -> dict[str, torch.Tensor]:
    """The embedded tower's state (open_clip names), checked against ``text_cfg``."""
    from uniseg3d_model.clip_text import CLIPTextTower, text_state_dict

    expected = {k: v.shape for k, v in CLIPTextTower(text_cfg).state_dict().items()}
    from_ckpt = text_tower_state_dict(official)
    if from_ckpt:
        state, source = from_ckpt, "checkpoint"
        for name in state:
            report.mapped["text_tower." + name] = _official_name(name)
    elif text_weights is not None:
        state, source = text_state_dict(text_weights), "text weights"
        for name in state:
            report.from_files["text_tower." + name] = "--text-weights"
    else:
        raise ValueError(
            "no text tower: the checkpoint has no lang.text_encoder.* and no text weights were given"
        )
    bad = sorted(set(expected) ^ set(state))
    if bad:
        raise ValueError(
            f"text tower ({source}) does not match the text config: key {bad[0]!r} (and {len(bad) - 1} more)"
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != tuple(shape):
            got = tuple(state[name].shape)
            raise ValueError(f"text tower ({source}) {name}: shape {got}, expected {tuple(shape)}")
    if TEXT_MASK_KEY in official:
        mask = official[TEXT_MASK_KEY]
        causal = torch.full(tuple(mask.shape), float("-inf"), device=mask.device).triu_(1)
        if not mask.is_meta and not torch.equal(mask, causal):
            raise ValueError(f"{TEXT_MASK_KEY} is not the causal mask our text tower rebuilds")
        report.checked[TEXT_MASK_KEY] = "equal to the causal mask (our non-persistent text_tower.attn_mask)"
    if from_ckpt and text_weights is not None:
        other = text_state_dict(text_weights)
        diffs = [
            (state[k] - other[k]).abs().max().item()
            for k in state
            if k in other and other[k].shape == state[k].shape
        ]
        worst = max(diffs, default=float("nan"))
        if len(diffs) == len(state) and worst == 0.0:
            report.notes.append("--text-weights equal the checkpoint's text tower")
        else:
            report.notes.append(
                f"--text-weights DIFFER from the checkpoint's text tower (max abs diff {worst}, "
                f"{len(diffs)} of {len(state)} tensors comparable); the checkpoint's is used"
            )
    return {k: v.detach().clone().float() for k, v in state.items()}


def convert_official_model(
    official: dict[str, torch.Tensor],
    cls_embedding: torch.Tensor,
    text_cfg: Any,
    text_weights: dict[str, torch.Tensor] | None = None,
    cfg: Any = None,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor], OfficialConversionReport]:
    """official: the released state dict; cls_embedding: (K, P, D) class prototypes; text_cfg:
    the CLIP text config (``clip_text.load_text_config`` input); text_weights: an open_clip
    state dict or None; cfg: the ModelConfig to fill (default ``ModelConfig.official()``; its
    ``class_prototypes`` is set to P).

    Returns (cfg, model state dict, text tower state dict, report). Raises ValueError naming
    the first key whose shape or presence does not fit. Meta tensors are accepted (a
    names-and-shapes check of the full-size model: run it under ``torch.device("meta")``)."""
    from uniseg3d_model.clip_text import load_text_config
    from uniseg3d_model.model import ModelConfig, UniSeg3D
    from uniseg3d_model.spconv_unet import SpconvUNetConfig
    from uniseg3d_model.spconv_unet_weights import official_backbone_state_dict

    if cls_embedding.dim() != 3:
        shape = tuple(cls_embedding.shape)
        raise ValueError(f"class embedding must be a (K, P, D) tensor, got shape {shape}")
    cfg = cfg if cfg is not None else ModelConfig.official()
    k, p, d = cls_embedding.shape
    if k != len(cfg.class_names):
        raise ValueError(f"class embedding has {k} classes, the model config {len(cfg.class_names)}")
    cfg = dataclasses.replace(cfg, class_prototypes=int(p))
    text_cfg = load_text_config(text_cfg)
    report = OfficialConversionReport()

    class _Dim:  # the text encoder only sets widths while building the model
        name, dim = "", int(d)

    model = UniSeg3D(cfg, _Dim())
    base = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    back, consumed = official_backbone_state_dict(official, SpconvUNetConfig(**cfg.spconv))
    for key, src in zip(back, consumed):
        out["backbone." + key] = back[key]
        report.mapped["backbone." + key] = src
    for key in sorted(official):
        if key.startswith(BACKBONE_PREFIXES) or key.startswith(TEXT_PREFIX) or key == CONTRASTIVE_KEY:
            continue
        for pattern, template in RULES:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            target = match.expand(template)
            if target not in base:
                raise ValueError(f"{key} -> {target}: no such tensor in the official model config")
            if base[target].shape != official[key].shape:
                shapes = f"{tuple(official[key].shape)} vs ours {tuple(base[target].shape)}"
                raise ValueError(f"{key} -> {target}: shape {shapes}")
            out[target] = official[key].detach().clone().to(base[target].dtype)
            report.mapped[target] = key
            break
        else:
            report.unmapped[key] = "no rule: not a released-UniSeg3D tensor"
    if CONTRASTIVE_KEY in official and official[CONTRASTIVE_KEY].is_meta:  # names/shapes-only run
        out["contrastive_logit_scale"] = torch.empty((), device="meta")
        report.mapped["contrastive_logit_scale"] = CONTRASTIVE_KEY
    elif CONTRASTIVE_KEY in official:
        scale = float(official[CONTRASTIVE_KEY])
        if scale <= 0:
            raise ValueError(f"{CONTRASTIVE_KEY} must be > 0 to convert, got {scale}")
        out["contrastive_logit_scale"] = torch.tensor(math.log(scale))
        report.mapped["contrastive_logit_scale"] = CONTRASTIVE_KEY
        report.notes.append(f"contrastive_logit_scale = log({CONTRASTIVE_KEY}) = log({scale:.6g})")
    out["class_prototypes"] = cls_embedding.detach().clone().float()
    report.from_files["class_prototypes"] = "--cls-embedding (K, P, D)"
    tower = _text_tower(official, text_weights, text_cfg, report)
    if text_cfg.embed_dim != d:
        raise ValueError(f"text tower embeds to {text_cfg.embed_dim}, class embedding has D = {d}")
    missing = [key for key in base if key not in out]
    if missing:
        raise ValueError(f"our {missing[0]!r} has no source: the checkpoint lacks it ({len(missing)} such)")
    if report.unmapped:
        first = next(iter(report.unmapped))
        raise ValueError(f"official tensor {first!r} has no destination ({len(report.unmapped)} such)")
    return cfg, out, tower, report
