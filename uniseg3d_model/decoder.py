"""The one transformer decoder shared by every task, and its prediction heads.

Each layer: masked cross-attention from the queries to the superpoint features (the mask
comes from the previous stage's mask prediction, Mask2Former / OneFormer3D style), then
self-attention among the queries (with an optional "interaction mask" that keeps task
groups apart), then an FFN; post-norm residual blocks as in UniSeg3D. Heads run on the
initial queries and after every layer, so a pass yields ``num_layers + 1`` predictions.

Class prediction is open-vocabulary: a projected query embedding is compared (scaled
cosine, learnable temperature) with the text embeddings of the class names, so any list of
class names can be asked at run time; a separate linear head gives the "no object" logit.
``head="official"`` swaps these heads for the released model's (:mod:`official_heads`:
prototype classifier over thing classes, separate semantic head, raw IoU head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uniseg3d_model.encoding import LayerPrediction
from uniseg3d_model.official_heads import OfficialHeads

#: the official class-logit scale is exp(4.6052) = 100.003 (query_decoder.py); ours is learned, capped there
OFFICIAL_LOGIT_SCALE = 4.6052


def _mlp(dims: list[int], final_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2 or final_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, post-norm residuals."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        for p in self.cross_attn.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def project_sources(self, sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, d) source features -> per-head keys and values (heads, S, d / heads), which depend
        only on the scene, so a cached scene pays for them once."""
        d = sources.shape[1]
        w, b = self.cross_attn.in_proj_weight, self.cross_attn.in_proj_bias
        h = self.cross_attn.num_heads
        k = F.linear(sources, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(sources, w[2 * d :], b[2 * d :])
        k = k.view(-1, h, d // h).transpose(0, 1).contiguous()
        return k, v.view(-1, h, d // h).transpose(0, 1).contiguous()

    def forward(
        self,
        queries: torch.Tensor,
        keys_values: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """queries (Q, d); keys_values from :meth:`project_sources`; cross_mask (Q, S) bool,
        True = may NOT attend; self_mask (Q, Q) bool, same convention. Returns (Q, d)."""
        k, v = keys_values
        n, d = queries.shape
        h = self.cross_attn.num_heads
        w, b = self.cross_attn.in_proj_weight, self.cross_attn.in_proj_bias
        qh = F.linear(queries, w[:d], b[:d]).view(n, h, d // h).transpose(0, 1)
        allowed = None if cross_mask is None else ~cross_mask
        p = self.cross_attn.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=allowed, dropout_p=p)
        out = self.cross_attn.out_proj(out.transpose(0, 1).reshape(n, d))
        q = self.cross_norm(queries + self.dropout(out)).unsqueeze(0)
        out, _ = self.self_attn(q, q, q, attn_mask=self_mask, need_weights=False)
        q = self.self_norm(q + self.dropout(out))
        q = self.ffn_norm(q + self.dropout(self.ffn(q)))
        return q.squeeze(0)


@dataclass
class SourceCache:
    """Everything the decoder derives from a scene's superpoint features alone:
    mask_feats (S, d) and, per layer, cross-attention keys and values (heads, S, d / heads)."""

    mask_feats: torch.Tensor
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]


class UnifiedDecoder(nn.Module):
    """Queries in backbone-channel space -> per-stage mask / class / score predictions.

    in_channels: C, channels of the superpoint features and of the raw queries
    text_dim:    dimension of the class-name text embeddings (the prototypes' D)
    head:        "ours" (cosine vs. class-name embeddings + no-object + score logit) or
                 "official" (the released UniSeg3D heads, :class:`OfficialHeads` as ``head``)
    """

    def __init__(
        self,
        in_channels: int,
        text_dim: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        ffn_dim: int,
        dropout: float = 0.0,
        mask_attention: bool = True,
        head: str = "ours",
    ) -> None:
        super().__init__()
        if head not in ("ours", "official"):
            raise ValueError(f"head must be 'ours' or 'official', got {head!r}")
        self.head_kind = head
        self.mask_attention = mask_attention
        self.input_proj = nn.Sequential(nn.Linear(in_channels, d_model), nn.LayerNorm(d_model), nn.ReLU())
        self.mask_proj = _mlp([in_channels, d_model, d_model])
        self.query_proj = _mlp([in_channels, d_model, d_model])
        self.layers = nn.ModuleList(
            [DecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)]
        )
        self.out_norm = nn.LayerNorm(d_model)
        if head == "official":
            self.head = OfficialHeads(d_model, text_dim)
            return
        # class head: mask-pooled feature + query -> text space, cosine with class embeddings
        self.pool_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model))
        self.class_proj = _mlp([d_model, d_model, d_model, text_dim])
        self.no_object = nn.Linear(d_model, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))
        self.score_head = _mlp([d_model, d_model, 1])

    def heads(
        self,
        queries: torch.Tensor,
        mask_feats: torch.Tensor,
        class_embeddings: torch.Tensor,
        thing: torch.Tensor | None = None,
        final: bool = True,
    ) -> LayerPrediction:
        """queries (Q, d); mask_feats (S, d); class_embeddings (V, text_dim) unit rows (ours) or
        (V, P, text_dim) prototypes (official); thing (V,) bool classes of the official instance
        head (None = all); final: whether this is the last stage (official semantic head)."""
        q = self.out_norm(queries)
        masks = q @ mask_feats.t()
        if self.head_kind == "official":
            if thing is None:
                thing = torch.ones(class_embeddings.shape[0], dtype=torch.bool, device=q.device)
            protos = class_embeddings if class_embeddings.dim() == 3 else class_embeddings[:, None]
            class_logits, sem_logits, iou = self.head(q, masks, mask_feats, protos, thing, final)
            return LayerPrediction(masks, class_logits, iou, F.normalize(q, dim=-1), sem_logits, iou)
        weights = (masks.detach() > 0).to(mask_feats.dtype)
        pooled = (weights @ mask_feats) / weights.sum(1, keepdim=True).clamp_min(1.0)
        cls_embed = F.normalize(self.class_proj(self.pool_proj(pooled) + q), dim=-1)
        scale = self.logit_scale.clamp(max=OFFICIAL_LOGIT_SCALE).exp()
        class_logits = torch.cat([scale * cls_embed @ class_embeddings.t(), self.no_object(q)], dim=1)
        scores = self.score_head(q).squeeze(1)
        return LayerPrediction(masks, class_logits, scores, F.normalize(q, dim=-1))

    def attention_mask(self, masks: torch.Tensor) -> torch.Tensor | None:
        """(Q, S) logits -> (Q, S) bool "may not attend" mask; rows that would block every
        superpoint are opened fully (an empty mask must not produce NaNs)."""
        if not self.mask_attention:
            return None
        blocked = masks.detach() < 0  # sigmoid(x) < 0.5
        blocked[blocked.all(dim=1)] = False
        return blocked

    def prepare(self, sp_features: torch.Tensor) -> SourceCache:
        """sp_features (S, C) -> the per-scene part of a decoder pass."""
        sources = self.input_proj(sp_features)
        return SourceCache(
            self.mask_proj(sp_features), [layer.project_sources(sources) for layer in self.layers]
        )

    def forward(
        self,
        sp_features: torch.Tensor,
        queries: torch.Tensor,
        class_embeddings: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cache: SourceCache | None = None,
        thing: torch.Tensor | None = None,
    ) -> list[LayerPrediction]:
        """sp_features (S, C); queries (Q, C) in feature space; class_embeddings (V, text_dim)
        or (V, P, text_dim) (see :meth:`heads`); self_mask (Q, Q) bool, True = may not attend;
        cache: ``prepare(sp_features)`` computed earlier with the current weights; thing (V,)
        bool (official heads). Returns num_layers + 1 predictions."""
        if cache is None:
            cache = self.prepare(sp_features)
        q = self.query_proj(queries)
        if self_mask is not None:
            # every query always sees itself (keeps a row from being fully blocked)
            self_mask = self_mask & ~torch.eye(len(q), dtype=torch.bool, device=q.device)
        last = len(self.layers)
        pred = self.heads(q, cache.mask_feats, class_embeddings, thing, final=last == 0)
        out = [pred]
        for i, (layer, kv) in enumerate(zip(self.layers, cache.keys_values)):
            q = layer(q, kv, self.attention_mask(pred.masks), self_mask)
            pred = self.heads(q, cache.mask_feats, class_embeddings, thing, final=i == last - 1)
            out.append(pred)
        out[-1].queries = q  # the heads' input, for UniSeg3D.classify (re-scoring a vocabulary)
        return out
