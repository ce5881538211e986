"""Hungarian matching of unified queries to targets on superpoint masks, and the mask
loss terms it shares with the criterion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

FORBIDDEN = 1e6


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of 1 - (2|p t| + 1) / (|p| + |t| + 1); logits, targets (M, S)."""
    p = logits.sigmoid()
    num = 2 * (p * targets).sum(-1)
    den = p.sum(-1) + targets.sum(-1)
    return (1 - (num + 1) / (den + 1)).mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M,) IoU of ``logits > 0`` with binary ``targets``, both (M, S); no gradient."""
    with torch.no_grad():
        p = (logits > 0).float()
        inter = (p * targets).sum(-1)
        union = p.sum(-1) + targets.sum(-1) - inter
        return inter / union.clamp_min(1e-6)


def match_costs(
    mask_logits: torch.Tensor, class_logits: torch.Tensor, tgt_masks: torch.Tensor, tgt_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairwise (Q, G) costs: -p(class), mean BCE, dice. mask_logits (Q, S), tgt_masks (G, S)."""
    s = mask_logits.shape[1]
    cost_class = -class_logits.softmax(-1)[:, tgt_labels]
    pos = F.softplus(-mask_logits)  # -log sigmoid(x)
    neg = F.softplus(mask_logits)  # -log (1 - sigmoid(x))
    cost_bce = (pos @ tgt_masks.t() + neg @ (1 - tgt_masks).t()) / max(s, 1)
    p = mask_logits.sigmoid()
    cost_dice = 1 - (2 * p @ tgt_masks.t() + 1) / (p.sum(-1)[:, None] + tgt_masks.sum(-1)[None, :] + 1)
    return cost_class, cost_bce, cost_dice


@torch.no_grad()
def hungarian_match(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    tgt_masks: torch.Tensor,
    tgt_labels: torch.Tensor,
    query_superpoints: torch.Tensor | None = None,
    weights: tuple[float, float, float] = (0.5, 1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one assignment minimising ``w_cls * cost_class + w_bce * cost_bce + w_dice * cost_dice``.

    mask_logits (Q, S); class_logits (Q, V + 1); tgt_masks (G, S) {0, 1}; tgt_labels (G,).
    query_superpoints (Q,): when given, sparse matching as in OneFormer3D - a query selected
    from superpoint ``s`` may only match a target containing ``s`` (-1 = learnable query,
    matches anything). Returns ``(query_idx, target_idx)`` int64 of the kept pairs.
    """
    dev = mask_logits.device
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    if mask_logits.shape[0] == 0 or tgt_masks.shape[0] == 0:
        return empty, empty
    c_cls, c_bce, c_dice = match_costs(mask_logits.float(), class_logits.float(), tgt_masks, tgt_labels)
    cost = weights[0] * c_cls + weights[1] * c_bce + weights[2] * c_dice
    allowed = None
    if query_superpoints is not None:
        learned = query_superpoints < 0
        inside = tgt_masks[:, query_superpoints.clamp_min(0)].t() > 0  # (Q, G)
        allowed = inside | learned[:, None]
        cost = torch.where(allowed, cost, torch.full_like(cost, FORBIDDEN))
    q_idx, g_idx = linear_sum_assignment(cost.cpu().numpy())
    q_idx = torch.as_tensor(q_idx, dtype=torch.long, device=dev)
    g_idx = torch.as_tensor(g_idx, dtype=torch.long, device=dev)
    if allowed is not None:
        ok = allowed[q_idx, g_idx]
        q_idx, g_idx = q_idx[ok], g_idx[ok]
    return q_idx, g_idx
