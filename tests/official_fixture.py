"""The released UniSeg3D checkpoint's state dict: every tensor name and shape, derived from the
official code (dk-liang/UniSeg3D @ c272954), plus random official-named state dicts for tests.

The released ``model_best.pth`` (config ``configs/uniseg3d_1xb4_scannet_scanrefer_scannet200_
unified.py``) holds 626 tensors, 171.0M values. :func:`official_shapes` at full widths reproduces
both numbers (626 tensors, 170,993,048 values = 171.0M; see :func:`count`). How each group is derived
(official file:line at c272954; "uniseg3d.py" = ``uniseg3d/uniseg3d.py`` and so on):

=========================  ====  ==========  =================================================
group                      n     values      derivation
=========================  ====  ==========  =================================================
``unet.*``                 268   10,963,756  spconv_unet.py:108-199 (SpConvUNet, planes
                                             32,64,96,128,160 from the config's
                                             ``num_planes=[num_channels*(i+1) for i in
                                             range(5)]``, block_reps 2, normalize_before):
                                             per level ``blocks.block{0,1}`` (ResidualBlock
                                             c->c, :24-56: ``i_branch`` is Identity, ``conv_
                                             branch`` = BN, ReLU, SubM 3^3, BN, ReLU, SubM 3^3),
                                             ``conv`` (BN, ReLU, SparseConv3d k2 s2), ``u``
                                             (next level), ``deconv`` (BN, ReLU,
                                             SparseInverseConv3d k2), ``blocks_tail.block0``
                                             (2c->c: ``i_branch.0`` SubM 1^3 + conv branch)
                                             and ``blocks_tail.block1`` (c->c); the innermost
                                             level has ``blocks`` only.
``input_conv.0``           1     5,184       uniseg3d.py:346-353 (SubM 3^3, 6->32, no bias)
``output_layer.0``         5     129         uniseg3d.py:354-356 (BN 32, eps 1e-4)
``decoder.*``              142   7,269,120   query_decoder.py:189-219 (input_proj, query_proj
                                             as num_instance_queries == 0, 6 x cross/self
                                             attention + FFN, out_norm, x_mask; no out_cls /
                                             out_score since sphere_cls and objectness_flag
                                             False) and :409-432 (cls_proj, cls_proj_sem,
                                             mask_pooling_proj, mask_pooling_proj_sem). The
                                             ``cls_embed`` and ``logit_scale`` buffers are
                                             registered with persistent=False (:406, :420) and
                                             are NOT in the state dict.
``type_embedding``         1     96          uniseg3d.py:327 (Embedding(3, num_channels))
``pred_iou_proj.*``        6     131,841     uniseg3d.py:335-338 (256-256-256-1, ReLU)
``lang.Mlp.*``             4     615,200     lang_module.py:13-36, :56 (fc1 768->768, fc2
                                             768->32; 768 = text_proj.shape[1])
``lang.text_encoder.*``    198   152,007,721 openclip_backbone.py:45-51: the frozen text tower
                                             of open_clip convnext_large_d_320
                                             (open_clip/model_configs/convnext_large_d_320.json:
                                             width 768, heads 12, layers 16, context 77, vocab
                                             49408, embed_dim 768). Attributes text_transformer
                                             (open_clip/transformer.py:189-215,288-308:
                                             ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj; 12
                                             tensors per block, ls_* are Identity), text_
                                             token_embedding, text_pe and text_proj (nn
                                             Parameters), text_ln_final, and the buffer
                                             ``text_attn_mask`` (77 x 77, registered
                                             persistent, :51: the causal mask, -inf above
                                             the diagonal). Frozen (lang_module.py:52-54) but
                                             still saved.
``criterion.*``            1     1           contrastive_criterion.py:19 (``logit_scale``
                                             Parameter, scalar). The other criteria are plain
                                             classes (not nn.Module), unified_criterion.py:
                                             12-16; their nn losses hold no tensors.
=========================  ====  ==========  =================================================

Totals: 626 tensors = 268 + 1 + 5 + 142 + 1 + 6 + 4 + 198 + 1; values = 170,993,048 (text
tower 152.0M, backbone 10.97M, decoder 7.27M). The 45 BatchNorms (44 in ``unet``, 1 in
``output_layer``) each hold weight, bias, running_mean, running_var and an int64 scalar
``num_batches_tracked`` (counted as 1 value). At 0.1M resolution the total pins D = 768 (D = 512
would give 170.86M) but cannot tell whether ``text_attn_mask`` (5,929 values) is saved; the
code says it is (persistent buffer).

Weight layouts: spconv 2.x convolutions store KRSC ``(out, k, k, k, in)`` (spconv/pytorch/
conv.py:137-138, ``ALL_WEIGHT_IS_KRSC`` in spconv/constants.py), for SparseInverseConv3d too
(``out`` = the inverse conv's output channels).

Class embedding file (``scannet_cls_embedding.pth``): loaded at query_decoder.py:391 with
``torch.load(vocabulary_cls_embedding_path)`` (config: ``data/scannet/scannet_cls_embedding.pth``)
as ONE tensor (K, P, D): K = 20 ScanNet semantic classes, P prototypes (any count; the max over P
is taken, :438), D = CLIP embedding width (768: the checkpoint's ``decoder.cls_proj.4.weight``
is (D, 256), :408-412). A zero background row is appended (K+1, P, D) and the buffer is kept
as (D, K+1, P) (:403-406). Instance logits use rows 2..K (18 thing classes + background). The
official constructor makes the zero row with ``device='cuda'`` (:397), so it needs a GPU even
to build the model. Neither the file nor the buffer is in the checkpoint: a converter needs the
file. Our model has one text width for the CLIP joint width (``text_proj`` columns, lang.Mlp
input) and the prototype width D; both are 768 in the release, so reduced-width tests set
``embed_dim == cls_dim``.

open_clip weights (``open_clip_pytorch_model.bin``): a plain state dict of the CLIP model
(open_clip/model.py:187-211): ``transformer.resblocks.{i}.*``, ``token_embedding.weight``,
``positional_embedding``, ``ln_final.{weight,bias}``, ``text_projection`` (and ``visual.*``,
``logit_scale``); ``attn_mask`` is a persistent=False buffer there and is not saved.
:func:`openclip_text_key_map` gives the name map to ``lang.text_encoder.*``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch


@dataclass(frozen=True)
class OfficialWidths:
    """Widths of the released model (config + convnext_large_d_320.json). Shrinking any field
    keeps every state-dict NAME except ``text_layers`` / ``decoder_layers`` / ``levels``,
    which change the set of names (keep them for name-complete tests)."""

    in_channels: int = 6          # rgb + xyz-centred (uniseg3d.py:396-397)
    channels: int = 32            # num_channels; planes = channels * (1..levels)
    levels: int = 5
    d_model: int = 256
    ffn_hidden: int = 1024
    num_heads: int = 8
    decoder_layers: int = 6
    cls_dim: int = 768            # D of scannet_cls_embedding.pth
    text_width: int = 768
    text_heads: int = 12
    text_layers: int = 16
    vocab_size: int = 49408
    context_length: int = 77
    embed_dim: int = 768          # CLIP joint width: text_proj (text_width, embed_dim)
    num_semantic_classes: int = 20

    @property
    def planes(self) -> list[int]:
        return [self.channels * (i + 1) for i in range(self.levels)]

    @classmethod
    def small(cls) -> OfficialWidths:
        """All 626 names at tiny widths (fast CPU tests)."""
        return cls(channels=8, d_model=32, ffn_hidden=64, num_heads=4, cls_dim=24,
                   text_width=16, text_heads=2, vocab_size=64, context_length=12, embed_dim=20)


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(prefix + "weight", (c,)), (prefix + "bias", (c,)), (prefix + "running_mean", (c,)),
            (prefix + "running_var", (c,)), (prefix + "num_batches_tracked", ())]


def _residual_block(prefix: str, cin: int, cout: int) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    if cin != cout:
        out.append((prefix + "i_branch.0.weight", (cout, 1, 1, 1, cin)))
    out += _bn(prefix + "conv_branch.0.", cin)
    out.append((prefix + "conv_branch.2.weight", (cout, 3, 3, 3, cin)))
    out += _bn(prefix + "conv_branch.3.", cout)
    out.append((prefix + "conv_branch.5.weight", (cout, 3, 3, 3, cout)))
    return out


def _unet(prefix: str, planes: list[int]) -> list[tuple[str, tuple[int, ...]]]:
    c = planes[0]
    out = _residual_block(prefix + "blocks.block0.", c, c)
    out += _residual_block(prefix + "blocks.block1.", c, c)
    if len(planes) > 1:
        c1 = planes[1]
        out += _bn(prefix + "conv.0.", c) + [(prefix + "conv.2.weight", (c1, 2, 2, 2, c))]
        out += _unet(prefix + "u.", planes[1:])
        out += _bn(prefix + "deconv.0.", c1) + [(prefix + "deconv.2.weight", (c, 2, 2, 2, c1))]
        out += _residual_block(prefix + "blocks_tail.block0.", 2 * c, c)
        out += _residual_block(prefix + "blocks_tail.block1.", c, c)
    return out


def _linear(prefix: str, cin: int, cout: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(prefix + "weight", (cout, cin)), (prefix + "bias", (cout,))]


def _ln(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(prefix + "weight", (c,)), (prefix + "bias", (c,))]


def _mha(prefix: str, d: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(prefix + "in_proj_weight", (3 * d, d)), (prefix + "in_proj_bias", (3 * d,)),
            (prefix + "out_proj.weight", (d, d)), (prefix + "out_proj.bias", (d,))]


def _decoder(w: OfficialWidths) -> list[tuple[str, tuple[int, ...]]]:
    d, c, p = w.d_model, w.channels, "decoder."
    out = _linear(p + "input_proj.0.", c, d) + _ln(p + "input_proj.1.", d)
    out += _linear(p + "query_proj.0.", c, d) + _linear(p + "query_proj.2.", d, d)
    for i in range(w.decoder_layers):
        out += _mha(f"{p}cross_attn_layers.{i}.attn.", d) + _ln(f"{p}cross_attn_layers.{i}.norm.", d)
    for i in range(w.decoder_layers):
        out += _mha(f"{p}self_attn_layers.{i}.attn.", d) + _ln(f"{p}self_attn_layers.{i}.norm.", d)
    for i in range(w.decoder_layers):
        q = f"{p}ffn_layers.{i}."
        out += _linear(q + "net.0.", d, w.ffn_hidden) + _linear(q + "net.3.", w.ffn_hidden, d)
        out += _ln(q + "norm.", d)
    out += _ln(p + "out_norm.", d)
    out += _linear(p + "x_mask.0.", c, d) + _linear(p + "x_mask.2.", d, d)
    for head in ("cls_proj.", "cls_proj_sem."):
        out += _linear(p + head + "0.", d, d) + _linear(p + head + "2.", d, d)
        out += _linear(p + head + "4.", d, w.cls_dim)
    for head in ("mask_pooling_proj.", "mask_pooling_proj_sem."):
        out += _ln(p + head + "0.", d) + _linear(p + head + "1.", d, d)
    return out


def _text_tower(prefix: str, w: OfficialWidths) -> list[tuple[str, tuple[int, ...]]]:
    tw = w.text_width
    out = [(prefix + "text_pe", (w.context_length, tw)), (prefix + "text_proj", (tw, w.embed_dim)),
           (prefix + "text_attn_mask", (w.context_length, w.context_length))]
    for i in range(w.text_layers):
        q = f"{prefix}text_transformer.resblocks.{i}."
        out += _ln(q + "ln_1.", tw) + _mha(q + "attn.", tw) + _ln(q + "ln_2.", tw)
        out += _linear(q + "mlp.c_fc.", tw, 4 * tw) + _linear(q + "mlp.c_proj.", 4 * tw, tw)
    out.append((prefix + "text_token_embedding.weight", (w.vocab_size, tw)))
    out += _ln(prefix + "text_ln_final.", tw)
    return out


def official_shapes(widths: OfficialWidths | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the released checkpoint's state dict, in the order the
    official module registers them (uniseg3d.py:309-338: unet, decoder, lang, criterion,
    input_conv, output_layer, type_embedding, pred_iou_proj)."""
    w = widths or OfficialWidths()
    c, d = w.channels, w.d_model
    items = _unet("unet.", w.planes) + _decoder(w)
    items += _text_tower("lang.text_encoder.", w)
    items += _linear("lang.Mlp.fc1.", w.embed_dim, w.embed_dim)
    items += _linear("lang.Mlp.fc2.", w.embed_dim, c)
    items.append(("criterion.contrastive_criterion.logit_scale", ()))
    items.append(("input_conv.0.weight", (c, 3, 3, 3, w.in_channels)))
    items += _bn("output_layer.0.", c)
    items.append(("type_embedding.weight", (3, c)))
    items += _linear("pred_iou_proj.0.", d, d) + _linear("pred_iou_proj.2.", d, d)
    items += _linear("pred_iou_proj.4.", d, 1)
    shapes = OrderedDict(items)
    assert len(shapes) == len(items), "duplicate official name"
    return shapes


GROUPS = ("unet.", "input_conv.", "output_layer.", "decoder.", "type_embedding.",
          "pred_iou_proj.", "lang.Mlp.", "lang.text_encoder.", "criterion.")


def count(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int]]:
    """Group prefix -> (tensors, values); key "total" for all."""
    out = {}
    for g in (*GROUPS, ""):
        sel = [s for k, s in shapes.items() if k.startswith(g)]
        out[g or "total"] = (len(sel), sum(math.prod(s) for s in sel))
    return out


def causal_mask(n: int) -> torch.Tensor:
    """open_clip's text attention mask (model.py build_attention_mask): -inf above the
    diagonal, 0 elsewhere, float32 (n, n)."""
    return torch.full((n, n), float("-inf")).triu_(1)


def official_state_dict(seed: int = 0, widths: OfficialWidths | None = None,
                        ) -> OrderedDict[str, torch.Tensor]:
    """Random tensors under every official name/shape. Matrices ~ N(0, 1/fan_in) (activations
    stay O(1) through the network), norm weights ~ 1 + 0.1 N, biases ~ 0.1 N, BN running_var in
    [0.5, 1.5] (positive), num_batches_tracked int64, the text mask the real causal mask, the
    contrastive logit scale ln(1/0.07)-like positive."""
    w = widths or OfficialWidths()
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, shape in official_shapes(w).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            t = torch.tensor(1000 + seed, dtype=torch.int64)
        elif leaf == "running_var":
            t = 0.5 + torch.rand(shape, generator=g)
        elif leaf == "text_attn_mask":
            t = causal_mask(shape[0])
        elif name.startswith("criterion."):
            t = torch.tensor(math.log(1 / 0.07)) + 0.1 * torch.randn((), generator=g)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:]) if leaf == "weight" else shape[0]
            if name.endswith(("text_pe", "token_embedding.weight", "type_embedding.weight")):
                fan_in = 1
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif leaf == "weight" and len(shape) == 1:       # LayerNorm / BatchNorm scale
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:                                            # biases, running_mean
            t = 0.1 * torch.randn(shape, generator=g)
        sd[name] = t
    return sd


def write_official_checkpoint(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """An mmengine-style checkpoint as ``tools/test.py`` would load: {'meta', 'state_dict'}."""
    torch.save({"meta": {"mmengine_version": "0.10.x", "epoch": 512},
                "state_dict": dict(state_dict)}, path)
    return path


def cls_embedding(seed: int = 0, num_classes: int = 20, prototypes: int = 3,
                  dim: int = 768) -> torch.Tensor:
    """A random (K, P, D) class-prototype tensor in the ``scannet_cls_embedding.pth`` format
    (rows unit norm, like CLIP text embeddings; normalisation does not matter to the official
    math except through scale, query_decoder.py:435-439 normalises only the query side)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(num_classes, prototypes, dim, generator=g)
    return t / t.norm(dim=-1, keepdim=True)


def write_cls_embedding(path: Path, embedding: torch.Tensor) -> Path:
    """Save a (K, P, D) float tensor as the official loader expects (one bare tensor)."""
    if embedding.dim() != 3:
        raise ValueError(f"cls embedding must be (K, P, D), got {tuple(embedding.shape)}")
    torch.save(embedding.float().contiguous(), path)
    return path


def openclip_text_key_map(widths: OfficialWidths | None = None) -> dict[str, str]:
    """open_clip CLIP state-dict key -> official ``lang.text_encoder.*`` key (text tower only;
    the official buffer ``text_attn_mask`` has no counterpart in the .bin)."""
    out = {}
    for name in official_shapes(widths):
        if not name.startswith("lang.text_encoder."):
            continue
        leaf = name[len("lang.text_encoder."):]
        src = {"text_pe": "positional_embedding", "text_proj": "text_projection"}.get(leaf)
        if src is None and leaf.startswith("text_transformer."):
            src = "transformer." + leaf[len("text_transformer."):]
        elif src is None and leaf.startswith("text_token_embedding."):
            src = "token_embedding." + leaf[len("text_token_embedding."):]
        elif src is None and leaf.startswith("text_ln_final."):
            src = "ln_final." + leaf[len("text_ln_final."):]
        if src is not None:
            out[src] = name
    return out


def openclip_text_state_dict(official: dict[str, torch.Tensor],
                             widths: OfficialWidths | None = None) -> dict[str, torch.Tensor]:
    """The text-tower part of an ``open_clip_pytorch_model.bin`` built from official tensors."""
    return {src: official[dst] for src, dst in openclip_text_key_map(widths).items()}


def small_widths(**overrides: int) -> OfficialWidths:
    return replace(OfficialWidths.small(), **overrides)
