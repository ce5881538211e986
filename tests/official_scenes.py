"""Small random scenes with superpoints, clicks and text for the official-reference tests."""

from __future__ import annotations

import torch

from tests.official_reference import OfficialScene


def random_scene(seed: int, n_points: int = 3000,
                 extent: tuple[float, float, float] = (0.6, 0.5, 0.3), cell: float = 0.08,
                 n_clicks: int = 2, n_texts: int = 2, text_dim: int = 20) -> OfficialScene:
    """Points uniformly in a box offset from the origin (xyz in metres; the two first points
    sit on opposite corners, so the voxel extent is exactly ``extent`` / 2 cm), rgb 0..255 one
    random colour per superpoint plus noise; superpoints = occupied ``cell``-sized boxes
    renumbered 0..S-1 in order of first appearance; clicks = the superpoints of random points
    (``click_points`` holds those point indices); text = raw random text-tower features."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor(extent)
    xyz = torch.rand(n_points, 3, generator=g) * size
    xyz[0], xyz[1] = 0.0, size
    xyz = xyz + torch.tensor([1.3, -0.7, 0.2])
    cells = ((xyz - xyz.min(0)[0]) / cell).long()
    _, sp = torch.unique(cells, dim=0, return_inverse=True)
    sp_rgb = torch.rand(int(sp.max()) + 1, 3, generator=g) * 255
    noise = torch.randint(-20, 21, (n_points, 3), generator=g)
    rgb = (sp_rgb[sp] + noise).clamp(0, 255).round()
    first = torch.full((int(sp.max()) + 1,), n_points, dtype=torch.long).scatter_reduce(
        0, sp, torch.arange(n_points), reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(len(first))
    click_points = torch.randint(0, n_points, (n_clicks,), generator=g)
    text = torch.randn(n_texts, text_dim, generator=g) * 2.0
    return OfficialScene(points=torch.cat([xyz, rgb], 1).float(), superpoints=rank[sp],
                         clicks=rank[sp[click_points]], text_features=text if n_texts else None,
                         click_points=click_points)


def lively_state_dict(sd: dict[str, torch.Tensor], mask_shift: float = 0.0
                      ) -> dict[str, torch.Tensor]:
    """Rescale a random official state dict so that its predictions are not degenerate (queries
    keep their identity through the decoder, masks are sharp): matrices outside the text tower
    x1.5, decoder attention output projections x0.1, the mask-feature projection x4 more;
    ``mask_shift`` adds about that much to every mask logit (out_norm bias and x_mask bias
    share a direction), which widens the masks."""
    out = {}
    for k, v in sd.items():
        if v.dim() >= 2 and not k.startswith("lang.text_encoder."):
            v = v * 1.5
        if k.startswith("decoder.") and k.endswith("out_proj.weight"):
            v = v * 0.1
        if k == "decoder.x_mask.2.weight":
            v = v * 4
        out[k] = v
    if mask_shift:
        u = torch.nn.functional.normalize(out["decoder.out_norm.bias"], dim=0)
        out["decoder.out_norm.bias"] = out["decoder.out_norm.bias"] + u
        out["decoder.x_mask.2.bias"] = out["decoder.x_mask.2.bias"] + mask_shift * u
    return out
