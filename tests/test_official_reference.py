"""The official-UniSeg3D reference checked on its own: spconv op semantics against spconv 2.3.8,
matrix NMS and panoptic merging against hand computations, the text tower against torch's
MultiheadAttention, and an end-to-end run on a random scene."""

from __future__ import annotations

import pytest
import torch

from tests.official_fixture import OfficialWidths, cls_embedding, official_state_dict
from tests.official_reference import OfficialScene, interaction_mask, reference_predict
from tests.official_reference_backbone import (
    coarse_shape,
    down_conv,
    inverse_conv,
    subm_conv,
    voxelize,
)
from tests.official_reference_decoder import text_tower
from tests.official_reference_post import OfficialTestCfg, matrix_nms, panoptic
from tests.official_scenes import random_scene

W = OfficialWidths.small()


def _sparse_sites(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    idx = torch.randperm(size ** 3, generator=g)[:n]
    return torch.stack([idx // size ** 2, idx // size % size, idx % size], 1)


@pytest.mark.parametrize(("n_sites", "shape"), [(40, (16, 16, 16)), (200, (16, 16, 16)),
                                               (120, (15, 16, 13))])
def test_dense_ops_match_spconv_on_sparse_grids(n_sites, shape, one_thread):
    """Odd spatial shapes: spconv drops the last slice from the coarse level; so does the
    reference (sites on the last slice are included on purpose). One thread: spconv's CPU
    SubMConv3d returns wrong rows with two or more (docs/backbone.md)."""
    spconv = pytest.importorskip("spconv.pytorch")
    g = torch.Generator().manual_seed(n_sites)
    coords = _sparse_sites(g, n_sites, min(shape))
    coords[:10, 0] = shape[0] - 1
    coords[5:15, 2] = shape[2] - 1
    coords = torch.unique(coords, dim=0)
    n = len(coords)
    feats = torch.randn(n, 4, generator=g)
    indices = torch.cat([torch.zeros(n, 1, dtype=torch.long), coords], 1).int()
    x = spconv.SparseConvTensor(feats, indices, list(shape), 1)
    sub = spconv.SubMConv3d(4, 5, 3, padding=1, bias=False, indice_key="s")
    down = spconv.SparseConv3d(4, 6, 2, stride=2, bias=False, indice_key="d")
    up = spconv.SparseInverseConv3d(6, 3, 2, bias=False, indice_key="d")
    with torch.no_grad():
        for m in (sub, down, up):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g))
        y = sub(x)
        ref = subm_conv(feats, coords, sub.weight)
        assert torch.allclose(_at(y.features, y.indices[:, 1:].long(), coords), ref, atol=1e-4)
        yd = down(x)
        ref, coarse = down_conv(feats, coords, shape, down.weight)
        got = _at(yd.features, yd.indices[:, 1:].long(), coarse)
        assert len(coarse) == len(yd.features) and torch.allclose(got, ref, atol=1e-4)
        assert tuple(yd.spatial_shape) == coarse_shape(shape)
        up_in = torch.randn(len(coarse), 6, generator=g)
        yu = up(yd.replace_feature(_at(up_in, coarse, yd.indices[:, 1:].long())))
        ref_up = inverse_conv(up_in, coarse, coords, up.weight)
        assert torch.allclose(_at(yu.features, yu.indices[:, 1:].long(), coords), ref_up, atol=1e-4)
        if shape[0] % 2:
            dropped = coords[:, 0] == shape[0] - 1
            assert dropped.any() and not ref_up[dropped].any()


def test_kernel_one_subm_conv_reads_the_weight_as_spconv_conv1x1_does():
    """spconv's conv1x1 shortcut: features @ weight.view(in, out), whatever the KRSC shape says;
    the reference follows it (the official ``i_branch`` of ``blocks_tail.block0``)."""
    spconv = pytest.importorskip("spconv.pytorch")
    g = torch.Generator().manual_seed(5)
    coords = torch.unique(_sparse_sites(g, 60, 12), dim=0)
    feats = torch.randn(len(coords), 6, generator=g)
    indices = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1).int()
    conv = spconv.SubMConv3d(6, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        y = conv(spconv.SparseConvTensor(feats, indices, [12] * 3, 1))
        ref = subm_conv(feats, coords, conv.weight)
    assert torch.allclose(_at(y.features, y.indices[:, 1:].long(), coords), ref, atol=1e-5)
    assert not torch.allclose(ref, feats @ conv.weight.reshape(3, 6).T, atol=1e-2)


def _at(values: torch.Tensor, coords: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Reorder rows of ``values`` (at ``coords``) to the order of ``wanted`` coords."""
    key = {tuple(c): i for i, c in enumerate(coords.tolist())}
    return values[[key[tuple(c)] for c in wanted.tolist()]]


def test_voxelize_averages_point_features_per_voxel_on_the_min_anchored_grid():
    pts = torch.tensor([[0.5, 1.0, 2.0, 0.0, 0.0, 0.0], [0.519, 1.001, 2.01, 1.0, 0.0, 0.0],
                        [0.541, 1.0, 2.0, 0.0, 1.0, 0.0]])
    coords, feats, inverse = voxelize(pts, 0.02)
    assert coords.tolist() == [[0, 0, 0], [2, 0, 0]] and inverse.tolist() == [0, 0, 1]
    centred = pts[:, :3] - pts[:, :3].mean(0)
    assert torch.allclose(feats[0], torch.cat([pts[:2, 3:].mean(0), centred[:2].mean(0)]))


def test_matrix_nms_linear_decays_by_iou_with_compensation():
    # IoU(m0, m1) = IoU(m1, m2) = 2/6, IoU(m0, m2) = 0; m3 is another class overlapping m0 fully
    masks = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0],
                          [0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.float)
    labels = torch.tensor([0, 0, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    s, lab, m, keep = matrix_nms(masks, labels, scores, kernel="linear")
    # m1: (1 - 1/3) / (1 - 0) = 2/3 -> 0.5333; m2: min((1-0)/1, (1-1/3)/(1-1/3)) = 1 -> 0.7
    assert keep.tolist() == [0, 2, 3, 1]
    assert torch.allclose(s, torch.tensor([0.9, 0.7, 0.6, 0.8 * 2 / 3]))
    assert lab.tolist() == [0, 0, 1, 0] and torch.equal(m[3], masks[1])


def test_panoptic_merge_gives_overlaps_to_the_higher_score_and_drops_small_instances():
    cfg = OfficialTestCfg(topk_insts=4, npoint_thr=2, pan_score_thr=0.05, obj_normalization=False,
                          nms=False, num_classes=2, sp_score_thr=0.5)
    # 3 superpoint queries; instance classes 2 (+bg); semantic 4 stuff/thing classes (+bg)
    big = 50.0
    out = {"cls_preds": torch.tensor([[big, 0, 0], [0, big, 0], [big, 0, 0]]),
           "masks": torch.tensor([[9.0, 9.0, -9.0], [-9.0, 9.0, 9.0], [-9.0, -9.0, -9.0]]),
           "preds_iou": torch.tensor([[0.9], [0.5], [0.1]]),
           "sem_preds": torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [0, 1.0, 0, 0, 0]])}
    superpoints = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    sem, inst = panoptic(out, superpoints, cfg)
    # query 0 (class 0, score .9) covers sp 0,1; query 1 (class 1, .5) covers sp 1,2 -> sp1 to q0
    assert inst.tolist() == [3, 3, 3, 3, 3, 3, 2, 2, 2]
    assert sem.tolist() == [2, 2, 2, 2, 2, 2, 3, 3, 3]
    sem, inst = panoptic(out, superpoints, OfficialTestCfg(**{**cfg.__dict__, "npoint_thr": 3}))
    # with npoint_thr 3, query 1 keeps only 3 points after the merge and is dropped -> stuff
    assert inst.tolist() == [3, 3, 3, 3, 3, 3, 1, 1, 1] and sem.tolist() == [2] * 6 + [1] * 3


def test_interaction_mask_isolates_prompts():
    m = interaction_mask(3, 6)
    assert not m[:3, :3].any() and m[:3, 3:].all() and m[3:, :3].all()
    assert m[3:, 3:].tolist() == [[False, True, True], [True, False, True], [True, True, False]]


def test_text_tower_matches_torch_pre_norm_blocks():
    sd = official_state_dict(2, W)
    p = "lang.text_encoder."
    tokens = torch.tensor([[5, 9, 63, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 63, 0, 0, 0, 0, 0, 0]])
    ref = text_tower(sd, tokens, W.text_heads)
    x = sd[p + "text_token_embedding.weight"][tokens] + sd[p + "text_pe"]
    x = x.permute(1, 0, 2)
    for i in range(W.text_layers):
        b = f"{p}text_transformer.resblocks.{i}."
        attn = torch.nn.MultiheadAttention(W.text_width, W.text_heads)
        attn.load_state_dict({k[len(b + "attn."):]: v for k, v in sd.items() if k.startswith(b + "attn.")})
        ln1, ln2 = (torch.nn.LayerNorm(W.text_width) for _ in range(2))
        ln1.load_state_dict({"weight": sd[b + "ln_1.weight"], "bias": sd[b + "ln_1.bias"]})
        ln2.load_state_dict({"weight": sd[b + "ln_2.weight"], "bias": sd[b + "ln_2.bias"]})
        with torch.no_grad():
            h = ln1(x)
            x = x + attn(h, h, h, need_weights=False, attn_mask=sd[p + "text_attn_mask"])[0]
            z = torch.nn.functional.gelu(ln2(x) @ sd[b + "mlp.c_fc.weight"].T + sd[b + "mlp.c_fc.bias"])
            x = x + z @ sd[b + "mlp.c_proj.weight"].T + sd[b + "mlp.c_proj.bias"]
    x = torch.nn.functional.layer_norm(x.permute(1, 0, 2), (W.text_width,), sd[p + "text_ln_final.weight"],
                                       sd[p + "text_ln_final.bias"])
    expected = x[torch.arange(2), tokens.argmax(-1)] @ sd[p + "text_proj"]
    assert torch.allclose(ref, expected, atol=1e-5)


def test_reference_end_to_end_produces_every_official_output():
    sd = official_state_dict(0, W)
    scene = random_scene(0, text_dim=W.embed_dim)
    emb = cls_embedding(0, prototypes=3, dim=W.cls_dim)
    out, res = reference_predict(sd, scene, emb, heads=W.num_heads, text_heads=W.text_heads)
    s = int(scene.superpoints.max()) + 1
    n = len(scene.points)
    assert out["unified"]["cls_preds"].shape == (s, 19) and out["unified"]["sem_preds"].shape == (s, 21)
    assert out["unified"]["masks"].shape == (s, s) and out["unified"]["preds_iou"].shape == (s, 1)
    assert out["clicks"]["masks"].shape == (2, s) and out["texts"]["masks"].shape == (2, s)
    assert torch.allclose(out["unified"]["cls_preds"][:, -1], torch.zeros(s))  # zero background
    assert res["semantic"].shape == (n,) and int(res["semantic"].max()) < 20
    assert res["instance_masks"].shape[1] == n and (res["instance_masks"].sum(1) > 100).all()
    assert res["panoptic_semantic"].shape == res["panoptic_instance"].shape == (n,)
    assert res["interactive"].shape == (2, n) and res["referring"].shape == (2, n)
    # a text query with different features changes only the text outputs' inputs
    tokens_scene = OfficialScene(scene.points, scene.superpoints, scene.clicks,
                                 text_tokens=torch.randint(1, W.vocab_size - 1, (1, W.context_length)))
    out2, _ = reference_predict(sd, tokens_scene, emb, heads=W.num_heads, text_heads=W.text_heads)
    assert out2["texts"]["masks"].shape == (1, s)
    assert torch.allclose(out2["unified"]["masks"], out["unified"]["masks"], atol=1e-5)
