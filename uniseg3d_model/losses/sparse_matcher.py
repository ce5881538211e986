"""The official matcher: ``SparseMatcher(topk=1)`` (instance_criterion.py ~740-776, c272954).

Not a Hungarian assignment: every target independently takes the query of lowest cost among
the queries selected from one of its superpoints (``query_masks``), and only when that cost is
strictly below the next-lowest one (a tie matches nothing). One query may therefore serve two
targets. Costs (``QueryClassificationCost``, ``MaskBCECost``, ``MaskDiceCost``): -softmax
probability of the target class, mean BCE over superpoints, dice with +1 smoothing; the unified
matcher weighs them 0.5 / 1 / 1, the pseudo-mask matcher (``ov_matcher``) uses BCE + dice only.
"""

from __future__ import annotations

import torch

from uniseg3d_model.losses.matcher import match_costs

OUTSIDE = 1e8  # the official ``self.inf``: cost of a query outside the target


@torch.no_grad()
def sparse_topk_match(mask_logits: torch.Tensor, tgt_masks: torch.Tensor, allowed: torch.Tensor,
                      class_logits: torch.Tensor | None = None, tgt_labels: torch.Tensor | None = None,
                      weights: tuple[float, float, float] = (0.5, 1.0, 1.0),
                      topk: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query_idx, target_idx)`` int64 of the matched pairs, sorted by query then target.

    mask_logits (Q, S); tgt_masks (G, S) {0, 1}; allowed (Q, G) bool (query's superpoint lies in
    the target); class_logits (Q, V + 1) and tgt_labels (G,) for the class cost (None: no class
    cost, the pseudo-mask matcher); weights: (class, bce, dice).
    """
    dev = mask_logits.device
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    q, g = mask_logits.shape[0], tgt_masks.shape[0]
    if q == 0 or g == 0:
        return empty, empty
    labels = tgt_labels if tgt_labels is not None else torch.zeros(g, dtype=torch.long, device=dev)
    logits = class_logits if class_logits is not None else mask_logits.new_zeros(q, 1)
    c_cls, c_bce, c_dice = match_costs(mask_logits.float(), logits.float(), tgt_masks.float(), labels)
    cost = weights[1] * c_bce + weights[2] * c_dice
    if class_logits is not None:
        cost = cost + weights[0] * c_cls
    cost = torch.where(allowed, cost, torch.full_like(cost, OUTSIDE))
    if q > topk:
        threshold = cost.topk(topk + 1, dim=0, largest=False, sorted=True).values[-1:, :]
    else:  # fewer queries than topk + 1: the official topk would fail; keep every allowed query
        threshold = torch.full((1, g), OUTSIDE, device=dev)
    ids = torch.argwhere(cost < threshold)
    return ids[:, 0], ids[:, 1]
