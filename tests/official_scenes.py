"""Small random scenes with superpoints, clicks and text for the official-reference tests."""

from __future__ import annotations

import torch

from tests.official_reference import OfficialScene


def random_scene(seed: int, n_points: int = 3000, extent: tuple[float, float, float] = (0.6, 0.5, 0.3),
                 cell: float = 0.08, n_clicks: int = 2, n_texts: int = 2, text_dim: int = 20,
                 ) -> OfficialScene:
    """Points uniformly in a box offset from the origin (xyz in metres, rgb 0..255 with a smooth
    spatial pattern), superpoints = occupied ``cell``-sized boxes renumbered 0..S-1 in order of
    first appearance, clicks = superpoint ids of random points, text = raw random features."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n_points, 3, generator=g) * torch.tensor(extent) + torch.tensor([1.3, -0.7, 0.2])
    rgb = (127.5 + 100 * torch.sin(7 * xyz + torch.rand(3, generator=g) * 6)).round()
    rgb = (rgb + torch.randint(-20, 21, (n_points, 3), generator=g)).clamp(0, 255)
    cells = ((xyz - xyz.min(0)[0]) / cell).long()
    _, sp = torch.unique(cells, dim=0, return_inverse=True)
    first = torch.full((int(sp.max()) + 1,), n_points, dtype=torch.long).scatter_reduce(
        0, sp, torch.arange(n_points), reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(len(first))
    clicks = sp[torch.randint(0, n_points, (n_clicks,), generator=g)]
    text = torch.randn(n_texts, text_dim, generator=g) * 2.0
    return OfficialScene(points=torch.cat([xyz, rgb], 1).float(), superpoints=rank[sp],
                         clicks=rank[clicks] if n_clicks else clicks.new_zeros(0),
                         text_features=text if n_texts else None)
