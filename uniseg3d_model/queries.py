"""Building the decoder's queries for one scene: unified, interactive and referring.

All queries live in the backbone-channel space (C) of the superpoint features, as in
UniSeg3D; the decoder projects them to ``d_model``. A learnable type embedding marks each
group (0 = referring, 1 = interactive, 2 = unified).

- unified:     superpoint features chosen by query selection (OneFormer3D: a random subset
               of at least ``ratio`` of the superpoints while training, all of them, up to a
               cap, in evaluation) followed by ``num_learned`` learnable queries;
- interactive: click -> nearest scene point -> its superpoint -> that superpoint's feature
               plus a Fourier positional encoding of the click relative to the scene centre;
- referring:   sentence embedding from the (frozen) text encoder -> MLP into C: ours
               (``text_query="unit_proj"``) projects the unit embedding through ``text_proj``
               (Linear-ReLU-Linear via d_model); the released model (``"raw_mlp"``) applies
               ``text_mlp`` = fc1 (D->D), GELU, fc2 (D->C) to the UNnormalised CLIP feature
               (official ``lang.Mlp``).

``pe_bands=0`` gives click queries without positional encoding (the released model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

TYPE_TEXT, TYPE_CLICK, TYPE_UNIFIED = 0, 1, 2


def select_superpoints(
    num_superpoints: int, training: bool, ratio: float, max_train: int, max_eval: int, device: torch.device
) -> torch.Tensor:
    """Indices (Qs,) int64 of the superpoints used as unified queries.

    Training: a uniformly random subset of size ``U(ratio, 1) * S`` capped at ``max_train``
    (drawn from torch's global RNG). Evaluation: every superpoint when ``S <= max_eval``,
    else ``max_eval`` evenly spaced ids (deterministic).
    """
    s = num_superpoints
    if training and ratio < 1.0:
        frac = ratio + (1.0 - ratio) * float(torch.rand(()))
        n = min(max(1, int(frac * s)), max_train, s)
        return torch.randperm(s)[:n].sort().values.to(device)
    if s <= max_eval:
        return torch.arange(s, device=device)
    return torch.linspace(0, s - 1, max_eval, device=device).round().long().unique()


def click_superpoints(
    clicks: torch.Tensor, points: torch.Tensor, superpoints: torch.Tensor, chunk: int = 8
) -> torch.Tensor:
    """clicks (K, 3), points (N, 3) same frame -> (K,) int64 superpoint of each click's nearest
    point (exact Euclidean, brute force in chunks of clicks: O(chunk * N) memory)."""
    if clicks.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    if points.shape[0] == 0:
        raise ValueError("clicks given for a scene with no points")
    nearest = [((points[None] - c[:, None]) ** 2).sum(-1).argmin(dim=1) for c in clicks.split(chunk)]
    return superpoints[torch.cat(nearest)]


class FourierEncoding(nn.Module):
    """(K, 3) metres -> (K, out_dim): sin/cos at ``bands`` wavelengths from 8 cm to ~10 m,
    then a linear layer."""

    def __init__(self, bands: int, out_dim: int) -> None:
        super().__init__()
        wavelengths = torch.logspace(math.log10(0.08), math.log10(10.0), bands)
        self.register_buffer("freqs", 2 * math.pi / wavelengths, persistent=False)
        self.linear = nn.Linear(6 * bands, out_dim)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        phase = (xyz[:, :, None] * self.freqs).flatten(1)
        return self.linear(torch.cat([phase.sin(), phase.cos()], dim=1))


class TextMLP(nn.Module):
    """The released model's ``lang.Mlp``: fc1 (D -> D), GELU, fc2 (D -> C)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(text_dim, text_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(text_dim, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class QueryBuilder(nn.Module):
    """Holds the parameters that turn prompts into queries (type embeddings, learnable
    queries, click positional encoding, text projection)."""

    def __init__(
        self,
        channels: int,
        text_dim: int,
        d_model: int,
        num_learned: int,
        pe_bands: int,
        text_query: str = "unit_proj",
    ) -> None:
        super().__init__()
        if text_query not in ("unit_proj", "raw_mlp"):
            raise ValueError(f"text_query must be 'unit_proj' or 'raw_mlp', got {text_query!r}")
        self.text_query = text_query
        self.type_embedding = nn.Embedding(3, channels)
        self.learned = nn.Parameter(torch.randn(num_learned, channels) * 0.1) if num_learned else None
        self.click_pe = FourierEncoding(pe_bands, channels) if pe_bands > 0 else None
        if text_query == "raw_mlp":
            self.text_mlp = TextMLP(text_dim, channels)
        else:
            self.text_proj = nn.Sequential(
                nn.Linear(text_dim, d_model), nn.ReLU(), nn.Linear(d_model, channels)
            )

    def unified(self, sp_features: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """(Qs + num_learned, C): selected superpoint features, then learnable queries."""
        parts = [sp_features[selected]]
        if self.learned is not None:
            parts.append(self.learned)
        return torch.cat(parts) + self.type_embedding.weight[TYPE_UNIFIED]

    def clicks(
        self, sp_features: torch.Tensor, click_sp: torch.Tensor, clicks: torch.Tensor, center: torch.Tensor
    ) -> torch.Tensor:
        """(K, C) from each click's superpoint feature + PE(click - center) (no PE when built
        with ``pe_bands=0``)."""
        out = sp_features[click_sp] + self.type_embedding.weight[TYPE_CLICK]
        if self.click_pe is not None:
            out = out + self.click_pe(clicks - center)
        return out

    def texts(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(T, text_dim) sentence embeddings (unit rows for ``unit_proj``, raw CLIP features for
        ``raw_mlp``) -> (T, C)."""
        proj = self.text_mlp if self.text_query == "raw_mlp" else self.text_proj
        return proj(text_embeddings) + self.type_embedding.weight[TYPE_TEXT]


def interaction_mask(
    num_unified: int, num_prompts: int, isolate: bool, device: torch.device
) -> torch.Tensor | None:
    """(Q, Q) bool self-attention mask (True = may not attend), Q = num_unified + num_prompts.

    As in UniSeg3D: unified queries never see prompt queries, and (``isolate``) every prompt
    query sees only itself, so a prompt's answer does not depend on which other queries share
    the pass. Returns None when there are no prompt queries and nothing needs masking.
    """
    if num_prompts == 0:
        return None
    q = num_unified + num_prompts
    mask = torch.zeros(q, q, dtype=torch.bool, device=device)
    mask[:num_unified, num_unified:] = True
    if isolate:
        mask[num_unified:, :] = True  # the decoder re-opens the diagonal
    return mask
