"""Reference of the official UniSeg3D query decoder, heads and text path (eval), written with
plain tensor ops from an official-named state dict (tests only).

Official sources (dk-liang/UniSeg3D @ c272954), config uniseg3d_1xb4_scannet_scanrefer_
scannet200_unified.py (iter_pred, attn_mask, fix_attention, sphere_cls True; objectness_flag
False; num_instance_queries 0; dropout 0; gelu):
- query_decoder.py:223-246 ``_get_queries``: query_proj(queries) (no learned queries).
- query_decoder.py:531-585 ``forward_iter_pred``: a head on the projected queries first (its
  attention mask feeds layer 0), then per layer cross-attention (masked by the previous head),
  self-attention (with the interaction mask), FFN, head. ``contras_embeds`` = out_norm(queries).
- query_decoder.py:55-81 cross-attention with fix_attention: LN(attn(q, feats, feats) + q);
  :100-120 self-attention LN(attn(q, q, q, mask) + q); :143-160 FFN LN(q + W2 gelu(W1 q)).
- query_decoder.py:442-502 head: norm_query = out_norm(q); masks = norm_query @ mask_feats^T;
  mask pooling (:11-27: mean of mask_feats over superpoints with mask logit > 0, + 1e-8 in the
  denominator); cls = cls_proj(mask_pooling_proj(pool) + norm_query); semantic head
  (last layer only) the same with the *_sem modules; attention mask = sigmoid(mask) < 0.5, rows
  that block everything unblocked (:493-498).
- query_decoder.py:389-440 class logits: exp(4.6052) * max_P cos(cls_embd, prototypes); the
  prototype tensor is the file's (K, P, D) plus a zero background row, instance logits over rows
  2..K (18 things + background), semantic over all K+1 (:435-437).
- uniseg3d.py:499-518 IoU head: pred_iou_proj(contras_embeds), raw (no sigmoid).
- lang_module.py:59-71 + openclip_backbone.py:62-72: text query = Mlp(text tower(tokens)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]
LOGIT_SCALE = torch.tensor(4.6052, dtype=torch.float32)  # query_decoder.py:419, exp'd at :439


def linear(sd: State, p: str, x: torch.Tensor) -> torch.Tensor:
    return x @ sd[p + "weight"].T + sd[p + "bias"]


def layer_norm(sd: State, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"], eps=1e-5)


def attention(sd: State, p: str, q: torch.Tensor, kv: torch.Tensor, heads: int,
              blocked: torch.Tensor | None = None, additive: torch.Tensor | None = None
              ) -> torch.Tensor:
    """nn.MultiheadAttention on unbatched (L, d) queries and (S, d) keys/values.
    blocked: (L, S) bool, True = may not attend; additive: (L, S) float added to the logits."""
    d = q.shape[-1]
    w, b = sd[p + "in_proj_weight"], sd[p + "in_proj_bias"]
    qq = q @ w[:d].T + b[:d]
    kk = kv @ w[d:2 * d].T + b[d:2 * d]
    vv = kv @ w[2 * d:].T + b[2 * d:]
    qq, kk, vv = (t.reshape(len(t), heads, d // heads).transpose(0, 1) for t in (qq, kk, vv))
    logits = qq @ kk.transpose(1, 2) / math.sqrt(d // heads)
    if blocked is not None:
        logits = logits.masked_fill(blocked, float("-inf"))
    if additive is not None:
        logits = logits + additive
    out = (logits.softmax(-1) @ vv).transpose(0, 1).reshape(len(q), d)
    return out @ sd[p + "out_proj.weight"].T + sd[p + "out_proj.bias"]


def prototypes(cls_embedding: torch.Tensor) -> torch.Tensor:
    """File tensor (K, P, D) -> buffer (D, K+1, P) with a zero background row (:403-406)."""
    k, p, d = cls_embedding.shape
    return torch.cat([cls_embedding, torch.zeros(1, p, d)], dim=0).permute(2, 0, 1).contiguous()


def class_logits(embd: torch.Tensor, protos: torch.Tensor, semantic: bool) -> torch.Tensor:
    """(Q, D), (D, K+1, P) -> (Q, K+1) semantic or (Q, K-1) instance logits."""
    table = protos if semantic else protos[:, 2:, :]
    cos = torch.einsum("nd,dkp->nkp", F.normalize(embd, dim=-1), table)
    return LOGIT_SCALE.exp() * cos.max(-1).values


def head(sd: State, queries: torch.Tensor, mask_feats: torch.Tensor, protos: torch.Tensor,
         last: bool) -> dict[str, torch.Tensor]:
    """Prediction head for one scene: queries (Q, d), mask_feats (S, d)."""
    p = "decoder."
    norm_query = layer_norm(sd, p + "out_norm.", queries)
    masks = norm_query @ mask_feats.T                                     # (Q, S)
    keep = (masks > 0).to(masks.dtype)
    pooled = (keep / (keep.sum(-1, keepdim=True) + 1e-8)) @ mask_feats  # (Q, d)

    def mlp3(prefix: str, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(linear(sd, prefix + "0.", x))
        x = torch.relu(linear(sd, prefix + "2.", x))
        return linear(sd, prefix + "4.", x)

    def pool_proj(prefix: str) -> torch.Tensor:
        return linear(sd, prefix + "1.", layer_norm(sd, prefix + "0.", pooled))

    out = {"masks": masks, "contras_embeds": norm_query,
           "cls_preds": class_logits(mlp3(p + "cls_proj.", pool_proj(p + "mask_pooling_proj.")
                                          + norm_query), protos, semantic=False)}
    if last:
        sem = mlp3(p + "cls_proj_sem.", pool_proj(p + "mask_pooling_proj_sem.") + norm_query)
        out["sem_preds"] = class_logits(sem, protos, semantic=True)
    blocked = masks.sigmoid() < 0.5
    blocked[blocked.sum(-1) == blocked.shape[-1]] = False
    out["attn_mask"] = blocked
    return out


def decoder(sd: State, sp_feats: torch.Tensor, queries: torch.Tensor, protos: torch.Tensor,
            heads: int, interaction_mask: torch.Tensor | None) -> list[dict[str, torch.Tensor]]:
    """forward_iter_pred for one scene. sp_feats (S, C), queries (Q, C) before query_proj,
    interaction_mask (Q, Q) bool or None. Returns the heads of all layers (first = before
    layer 0, last = final output; only the last has ``sem_preds``)."""
    p = "decoder."
    inst_feats = torch.relu(layer_norm(sd, p + "input_proj.1.", linear(sd, p + "input_proj.0.",
                                                                       sp_feats)))
    mask_feats = linear(sd, p + "x_mask.2.", torch.relu(linear(sd, p + "x_mask.0.", sp_feats)))
    q = linear(sd, p + "query_proj.2.", torch.relu(linear(sd, p + "query_proj.0.", queries)))
    n_layers = sum(1 for k in sd if k.startswith(p + "cross_attn_layers.")
                   and k.endswith(".attn.in_proj_weight"))
    outs = [head(sd, q, mask_feats, protos, last=False)]
    for i in range(n_layers):
        c = f"{p}cross_attn_layers.{i}."
        q = layer_norm(sd, c + "norm.", attention(sd, c + "attn.", q, inst_feats, heads,
                                                  blocked=outs[-1]["attn_mask"]) + q)
        s = f"{p}self_attn_layers.{i}."
        q = layer_norm(sd, s + "norm.", attention(sd, s + "attn.", q, q, heads,
                                                  blocked=interaction_mask) + q)
        f = f"{p}ffn_layers.{i}."
        z = linear(sd, f + "net.3.", F.gelu(linear(sd, f + "net.0.", q)))
        q = layer_norm(sd, f + "norm.", z + q)
        outs.append(head(sd, q, mask_feats, protos, last=i == n_layers - 1))
    return outs


def iou_head(sd: State, contras: torch.Tensor) -> torch.Tensor:
    """pred_iou_proj (uniseg3d.py:335-338): (Q, d) -> (Q, 1), raw."""
    x = torch.relu(linear(sd, "pred_iou_proj.0.", contras))
    x = torch.relu(linear(sd, "pred_iou_proj.2.", x))
    return linear(sd, "pred_iou_proj.4.", x)


def lang_mlp(sd: State, text_features: torch.Tensor) -> torch.Tensor:
    """lang.Mlp (lang_module.py:13-36): raw text-tower output (T, E) -> (T, C)."""
    return linear(sd, "lang.Mlp.fc2.", F.gelu(linear(sd, "lang.Mlp.fc1.", text_features)))


def text_tower(sd: State, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenCLIPBackboneText.forward (openclip_backbone.py:62-72): tokens (T, L) int64 ->
    (T, E) = ln_final(transformer(emb + pe))[eot = argmax token] @ text_proj."""
    p = "lang.text_encoder."
    x = sd[p + "text_token_embedding.weight"][tokens] + sd[p + "text_pe"]
    mask = sd[p + "text_attn_mask"]
    n_layers = sum(1 for k in sd if k.startswith(p + "text_transformer.resblocks.")
                   and k.endswith(".attn.in_proj_weight"))
    rows = []
    for t in range(len(x)):
        h = x[t]
        for i in range(n_layers):
            b = f"{p}text_transformer.resblocks.{i}."
            h = h + attention(sd, b + "attn.", layer_norm(sd, b + "ln_1.", h),
                              layer_norm(sd, b + "ln_1.", h), heads, additive=mask)
            z = linear(sd, b + "mlp.c_proj.", F.gelu(linear(sd, b + "mlp.c_fc.",
                                                            layer_norm(sd, b + "ln_2.", h))))
            h = h + z
        rows.append(layer_norm(sd, p + "text_ln_final.", h)[tokens[t].argmax()])
    return torch.stack(rows) @ sd[p + "text_proj"]
