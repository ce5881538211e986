"""The released UniSeg3D's prediction heads (``ModelConfig.heads == "official"``).

Per decoder stage, from the normalised queries ``q = out_norm(queries)`` (Q, d) and the mask
features ``m`` (S, d) (dk-liang/UniSeg3D ``query_decoder.py`` UnifiedQueryDecoder with
``sphere_cls``, ``uniseg3d.py`` ``pred_iou_proj``):

    masks    = q @ m.T                                                (Q, S)
    pooled   = mean of m over the superpoints with mask logit > 0      (Q, d)
    instance = exp(4.6052) * max_p cos(class_proj(pool_proj(pooled) + q), prototype[k, p])
               over the THING classes, + a background column of 0       (Q, V + 1)
    semantic = the same with sem_pool_proj / sem_class_proj over EVERY class (final stage)
    iou      = iou_head(q), a 3-layer ReLU MLP, raw (no sigmoid)          (Q,)

Prototypes are (V, P, D) class embeddings (``scannet_cls_embedding.pth``: K x P x 768 CLIP
text prototypes); only the query side is normalised, the prototypes are used as given. The
background prototype is a zero vector, so its logit is always 0. Stuff columns of the instance
head hold ``STUFF_LOGIT``: exp(STUFF_LOGIT - x) underflows to exactly 0 in float32, so a softmax
over all V + 1 columns equals the official softmax over the things + background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: official class logit temperature: ``logit_scale = 4.6052`` (a fixed buffer), used as exp()
LOGIT_SCALE_LOG = 4.6052
#: instance-head logit of a stuff class (never chosen; exactly zero softmax weight)
STUFF_LOGIT = -1.0e4


def _mlp3(d_model: int, out_dim: int) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear (indices 0, 2, 4 hold the weights, as the official)."""
    return nn.Sequential(
        nn.Linear(d_model, d_model),
        nn.ReLU(),
        nn.Linear(d_model, d_model),
        nn.ReLU(),
        nn.Linear(d_model, out_dim),
    )


def prototype_logits(embed: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """embed (Q, D) class embeddings (normalised here), prototypes (V, P, D) as given ->
    (Q, V) ``exp(4.6052) * max_p <embed / |embed|, prototypes[v, p]>``."""
    scale = torch.tensor(LOGIT_SCALE_LOG, dtype=torch.float32, device=embed.device).exp()
    cos = torch.einsum("nd,kpd->nkp", F.normalize(embed, dim=-1), prototypes)
    return scale * cos.max(-1).values


class OfficialHeads(nn.Module):
    """Instance head, semantic head and IoU head of the released model.

    d_model: decoder width (256 released); class_dim: prototype width D (768 released).
    State-dict names (official -> ours): ``decoder.mask_pooling_proj`` -> ``pool_proj``,
    ``decoder.cls_proj`` -> ``class_proj``, ``decoder.mask_pooling_proj_sem`` ->
    ``sem_pool_proj``, ``decoder.cls_proj_sem`` -> ``sem_class_proj``, ``pred_iou_proj`` ->
    ``iou_head``.
    """

    def __init__(self, d_model: int, class_dim: int) -> None:
        super().__init__()
        self.pool_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model))
        self.class_proj = _mlp3(d_model, class_dim)
        self.sem_pool_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model))
        self.sem_class_proj = _mlp3(d_model, class_dim)
        self.iou_head = _mlp3(d_model, 1)

    @staticmethod
    def mask_pool(masks: torch.Tensor, mask_feats: torch.Tensor) -> torch.Tensor:
        """masks (Q, S) logits, mask_feats (S, d) -> (Q, d) mean of the features where the
        logit is > 0 (no gradient through the mask; an empty mask pools to 0)."""
        weights = (masks.detach() > 0).to(mask_feats.dtype)
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-8)
        return weights @ mask_feats

    def forward(
        self,
        q: torch.Tensor,
        masks: torch.Tensor,
        mask_feats: torch.Tensor,
        prototypes: torch.Tensor,
        thing: torch.Tensor,
        final: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """q (Q, d) normalised queries; masks (Q, S); mask_feats (S, d); prototypes (V, P, D);
        thing (V,) bool, True for the classes the instance head scores.

        Returns class_logits (Q, V + 1), sem_logits (Q, V + 1) when ``final`` else None, and
        iou (Q,)."""
        pooled = self.mask_pool(masks, mask_feats)
        inst = prototype_logits(self.class_proj(self.pool_proj(pooled) + q), prototypes)
        inst = inst.masked_fill(~thing.to(inst.device), STUFF_LOGIT)
        background = inst.new_zeros(len(q), 1)
        class_logits = torch.cat([inst, background], dim=1)
        sem_logits = None
        if final:
            sem = prototype_logits(self.sem_class_proj(self.sem_pool_proj(pooled) + q), prototypes)
            sem_logits = torch.cat([sem, background], dim=1)
        return class_logits, sem_logits, self.iou_head(q).squeeze(-1)
