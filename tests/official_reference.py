"""Independent reference of the official UniSeg3D forward and ``predict`` (eval), in plain
torch, driven by an official-named state dict (tests/official_fixture.py names). Written from
dk-liang/UniSeg3D @ c272954 only; one scene per call (the official test batch size is 1 and
``predict_by_feat`` reads element 0).

Pieces: tests/official_reference_backbone.py (input pipeline, dense-grid spconv U-Net,
superpoint pooling), tests/official_reference_decoder.py (decoder, heads, IoU head, text path),
tests/official_reference_post.py (instance / semantic / panoptic / prompt post-processing).

Queries and masks (uniseg3d.py:746-828, ``predict``):
- unified queries = ALL superpoint features in superpoint order (eval, :789);
- click queries (``add_point_prompt_queries``, :685-744): the clicked superpoint's feature +
  type_embedding[1]; when the ``point_prompts`` key is present (always in the official test
  pipeline, PointPromptTest) the unified queries get + type_embedding[2] (:690-691), even when
  the scene has no click; pass ``clicks=None`` to model a pipeline without that key;
- text queries (``add_text_prompt_queries``, :655-683): lang.Mlp(raw text-tower output) +
  type_embedding[0] (always, :666), appended after the clicks;
- interaction mask (set_query_mask, set_all_mask; :801-815): unified rows may not attend prompt
  columns; prompt rows may not attend unified columns; prompts attend only to themselves;
- outputs are split text-last, then clicks (:819-824); the IoU head runs on the unified
  queries only (:826-827).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tests.official_reference_backbone import scene_superpoint_features
from tests.official_reference_decoder import decoder, iou_head, lang_mlp, prototypes, text_tower
from tests.official_reference_post import OfficialTestCfg, predict

State = dict[str, torch.Tensor]


@dataclass
class OfficialScene:
    """points (N, 6) float32: xyz [m], rgb 0..255; superpoints (N,) int64 ids 0..S-1;
    clicks (M,) int64 clicked SUPERPOINT ids (``point_prompt_sp_ids``) or None;
    text_features (T, E) raw text-tower outputs, or text_tokens (T, L) int64 to run the
    official text tower from the state dict (features win when both are given);
    click_points (M,) int64: indices of the clicked points, when known (not used here)."""

    points: torch.Tensor
    superpoints: torch.Tensor
    clicks: torch.Tensor | None = None
    text_features: torch.Tensor | None = None
    text_tokens: torch.Tensor | None = None
    click_points: torch.Tensor | None = None


def interaction_mask(n_unified: int, n_total: int) -> torch.Tensor:
    """(Q, Q) bool, True = blocked (uniseg3d.py:801-812 with set_all_mask)."""
    m = torch.zeros(n_total, n_total, dtype=torch.bool)
    m[:n_unified, n_unified:] = True
    m[n_unified:, :n_unified] = True
    n_prompt = n_total - n_unified
    if n_prompt > 0:
        m[n_unified:, n_unified:] = ~torch.eye(n_prompt, dtype=torch.bool)
    return m


def build_queries(sd: State, sp_feats: torch.Tensor, scene: OfficialScene, text_heads: int
                  ) -> tuple[torch.Tensor, int, int]:
    """-> queries (S + M + T, C) before query_proj, M, T."""
    queries = sp_feats.clone()
    type_emb = sd["type_embedding.weight"]
    n_clicks = 0
    if scene.clicks is not None:
        queries = queries + type_emb[2].unsqueeze(0)
        if len(scene.clicks):
            queries = torch.cat([queries, sp_feats[scene.clicks] + type_emb[1]], 0)
            n_clicks = len(scene.clicks)
    text = scene.text_features
    if text is None and scene.text_tokens is not None and len(scene.text_tokens):
        text = text_tower(sd, scene.text_tokens, text_heads)
    n_texts = 0 if text is None else len(text)
    if n_texts:
        queries = torch.cat([queries, lang_mlp(sd, text) + type_emb[0]], 0)
    return queries, n_clicks, n_texts


def forward(sd: State, scene: OfficialScene, cls_embedding: torch.Tensor, heads: int = 8,
            text_heads: int = 12, voxel_size: float = 0.02) -> dict:
    """Official eval forward for one scene. cls_embedding: the (K, P, D) file tensor.

    Returns {"sp_feats": (S, C), "layers": all decoder heads (unsplit), "unified": {cls_preds
    (S, 19), sem_preds (S, 21), masks (S, S), contras_embeds, preds_iou (S, 1)}, "clicks" and
    "texts": {cls_preds, sem_preds, masks (M|T, S), contras_embeds}}."""
    sp_feats = scene_superpoint_features(sd, scene.points, scene.superpoints, voxel_size)
    queries, n_clicks, n_texts = build_queries(sd, sp_feats, scene, text_heads)
    n_unified = len(sp_feats)
    mask = interaction_mask(n_unified, len(queries))
    layers = decoder(sd, sp_feats, queries, prototypes(cls_embedding), heads, mask)
    final = {k: v for k, v in layers[-1].items() if k != "attn_mask"}
    end_clicks = n_unified + n_clicks
    unified = {k: v[:n_unified] for k, v in final.items()}
    unified["preds_iou"] = iou_head(sd, unified["contras_embeds"])
    return {"sp_feats": sp_feats, "layers": layers, "unified": unified,
            "clicks": {k: v[n_unified:end_clicks] for k, v in final.items()},
            "texts": {k: v[end_clicks:end_clicks + n_texts] for k, v in final.items()}}


def reference_predict(sd: State, scene: OfficialScene, cls_embedding: torch.Tensor,
                      heads: int = 8, text_heads: int = 12,
                      cfg: OfficialTestCfg | None = None) -> tuple[dict, dict]:
    """forward + predict: (raw outputs, per-point results; see official_reference_post)."""
    with torch.no_grad():
        out = forward(sd, scene, cls_embedding, heads, text_heads)
        return out, predict(out, scene.superpoints, cfg)
