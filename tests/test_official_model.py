"""The released UniSeg3D's pieces in our model, each against a hand computation: input pipeline,
prototype class heads, semantic head, raw IoU head, lang.Mlp text queries, click queries
without positional encoding, and the protocol every output carries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.official_heads import STUFF_LOGIT, OfficialHeads, prototype_logits
from uniseg3d_model.queries import TextMLP
from uniseg3d_model.structures import SceneSample
from uniseg3d_model.text_encoders import build_text_encoder
from uniseg3d_model.voxel_input import voxel_input

SMALL = dict(spconv={"in_channels": 6, "planes": (8, 12)}, d_model=16, num_heads=2, ffn_dim=32, num_layers=2)


def test_scene_min_grid_is_anchored_at_the_scene_minimum_and_averages_rgb_then_centred_xyz():
    pts = torch.tensor([[0.4, 0.0, 1.0], [0.6, 0.0, 1.0], [1.0, 0.0, 1.0], [1.5, 0.75, 1.0]])
    col = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0], [0.2, 0.2, 0.2], [0.4, 0.4, 0.4]])
    vin = voxel_input(pts, col, 0.5, True, "scene_min")
    # (x - 0.4) / 0.5 = 0, 0.4, 1.2, 2.2 -> 0, 0, 1, 2; the world grid floor(x / 0.5) splits 0.4 | 0.6
    assert vin.coords.tolist() == [[0, 0, 0], [1, 0, 0], [2, 1, 0]]
    assert vin.point_to_voxel.tolist() == [0, 0, 1, 2]
    world = voxel_input(pts, col, 0.5, True, "world")
    assert world.coords.shape[0] == 4
    centred = pts - pts.mean(0)
    first = torch.cat([(col[:2] * 2 - 1).mean(0), centred[:2].mean(0)])
    assert torch.allclose(vin.feats[0], first) and torch.allclose(vin.center, pts.mean(0))
    assert vin.feats.shape == (3, 6)


def test_elastic_grid_points_place_the_voxels_while_features_keep_the_points():
    """Official training distorts only the voxel coordinates (uniseg3d.py collate, elastic_coords)."""
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.6, 0.0, 0.0]])
    col = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    moved = pts.clone()
    moved[1, 0] = 0.1  # the distortion pulls point 1 into point 0's voxel
    vin = voxel_input(pts, col, 0.5, True, "scene_min", grid_points=moved)
    assert vin.point_to_voxel.tolist() == [0, 0, 1]
    centred = pts - pts.mean(0)  # features (and the scene mean) from the undistorted points
    assert torch.allclose(vin.feats[0], torch.cat([(col[:2] * 2 - 1).mean(0), centred[:2].mean(0)]))
    assert torch.allclose(vin.center, pts.mean(0))
    with pytest.raises(ValueError, match="grid_points"):
        voxel_input(pts, col, 0.5, True, "scene_min", grid_points=moved[:2])


def test_encode_voxelizes_a_scene_at_its_voxel_points(official_model):
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 1, (400, 3)).astype(np.float32)
    base = dict(points=pts, colors=rng.uniform(0, 1, (400, 3)).astype(np.float32),
                superpoints=np.arange(400) % 20)
    plain = official_model.encode([SceneSample(**base)])[0].sp_features
    same = official_model.encode([SceneSample(**base, voxel_points=pts.copy())])[0].sp_features
    shifted = official_model.encode([SceneSample(**base, voxel_points=pts * 0.5)])[0].sp_features
    assert torch.equal(plain, same) and not torch.allclose(plain, shifted)


def test_prototype_logits_are_scaled_max_cosine_over_prototypes():
    g = torch.Generator().manual_seed(0)
    embed, protos = torch.randn(3, 5, generator=g), torch.randn(4, 2, 5, generator=g)
    got = prototype_logits(embed, protos)
    scale = float(torch.tensor(4.6052).exp())
    for q in range(3):
        for k in range(4):
            unit = embed[q] / embed[q].norm()
            want = scale * max(float(unit @ protos[k, p]) for p in range(2))  # prototypes as given
            assert math.isclose(float(got[q, k]), want, rel_tol=1e-5)


def _heads(seed=0, d=6, dim=5):
    torch.manual_seed(seed)
    heads = OfficialHeads(d, dim)
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    g = torch.Generator().manual_seed(seed + 1)
    q, feats = torch.randn(4, d, generator=g), torch.randn(7, d, generator=g)
    masks = torch.randn(4, 7, generator=g)
    masks[3] = -1.0  # an empty mask pools to zero
    protos = torch.randn(3, 2, dim, generator=g)
    return heads, q, feats, masks, protos


def test_instance_head_scores_things_only_with_a_zero_background_logit():
    heads, q, feats, masks, protos = _heads()
    thing = torch.tensor([False, True, True])
    cls, sem, iou = heads(q, masks, feats, protos, thing, final=False)
    pos = (masks > 0).float()
    pooled = pos @ feats / (pos.sum(1, keepdim=True) + 1e-8)
    assert torch.equal(pooled[3], torch.zeros(6))
    x = heads.pool_proj[1](F.layer_norm(pooled, (6,), heads.pool_proj[0].weight, heads.pool_proj[0].bias)) + q
    c = heads.class_proj
    embed = c[4](F.relu(c[2](F.relu(c[0](x)))))
    want = prototype_logits(embed, protos)
    assert torch.allclose(cls[:, 1:3], want[:, 1:3], atol=1e-5)
    assert (cls[:, 0] == STUFF_LOGIT).all() and (cls[:, -1] == 0).all() and sem is None
    official_softmax = torch.cat([want[:, 1:3], torch.zeros(4, 1)], 1).softmax(-1)
    assert torch.allclose(cls.softmax(-1)[:, [1, 2, 3]], official_softmax, atol=1e-6)
    assert torch.equal(cls.softmax(-1)[:, 0], torch.zeros(4))
    r = heads.iou_head  # raw: no sigmoid, may leave [0, 1]
    assert torch.allclose(iou, r[4](F.relu(r[2](F.relu(r[0](q))))).squeeze(-1))


def test_semantic_head_runs_on_the_final_stage_over_every_class():
    heads, q, feats, masks, protos = _heads(seed=3)
    thing = torch.tensor([False, True, True])
    _, sem, _ = heads(q, masks, feats, protos, thing, final=True)
    pooled = OfficialHeads.mask_pool(masks, feats)
    x = heads.sem_pool_proj(pooled) + q
    c = heads.sem_class_proj
    want = prototype_logits(c[4](F.relu(c[2](F.relu(c[0](x))))), protos)
    assert torch.allclose(sem[:, :3], want, atol=1e-5) and (sem[:, 3] == 0).all()


def test_text_mlp_is_gelu_mlp_on_the_unnormalised_feature():
    torch.manual_seed(0)
    mlp = TextMLP(6, 4)
    x = torch.randn(2, 6) * 3
    want = mlp.fc2(0.5 * (mlp.fc1(x)) * (1 + torch.erf(mlp.fc1(x) / math.sqrt(2))))
    assert torch.allclose(mlp(x), want, atol=1e-6)
    assert not torch.allclose(mlp(x), mlp(F.normalize(x, dim=-1)))  # the norm matters


@pytest.fixture(scope="module")
def official_model():
    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.official(**SMALL), build_text_encoder("hash:24"))
    model.class_prototypes.normal_()
    return model.eval()


def _scene(n=600, seed=0, **kw):
    g = np.random.default_rng(seed)
    pts = (g.random((n, 3)) * [0.6, 0.5, 0.3] + [2.0, -1.0, 0.3]).astype(np.float32)
    sp = np.unique((np.floor(pts / 0.1) @ [100, 10, 1]).astype(np.int64), return_inverse=True)[1]
    return SceneSample(pts, g.random((n, 3)).astype(np.float32), sp.reshape(-1), **kw)


def test_official_model_outputs_carry_heads_protocol_and_one_query_per_superpoint(official_model):
    scene = _scene(clicks=np.array([[2.1, -0.9, 0.4]], np.float32), texts=["a chair"])
    with torch.no_grad():
        out = official_model([scene])[0]
    s = scene.num_superpoints
    assert out.protocol == "official" and out.num_unified == s
    assert torch.equal(out.query_superpoints, torch.arange(s))
    final = out.final
    assert final.sem_logits.shape == (s + 2, 21) and final.iou.shape == (s + 2,)
    assert all(layer.sem_logits is None for layer in out.aux) and all(la.iou is not None for la in out.layers)
    assert (final.class_logits[:, :2] == STUFF_LOGIT).all() and (final.class_logits[:, -1] == 0).all()
    assert official_model.query_builder.click_pe is None and official_model.query_builder.learned is None


def test_official_text_query_uses_the_raw_text_feature(official_model):
    raw = official_model.text_encoder.encode(["a chair"], normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(1))
    qb = official_model.query_builder
    want = qb.text_mlp.fc2(F.gelu(qb.text_mlp.fc1(raw))) + qb.type_embedding.weight[0]
    assert torch.allclose(official_model.text_queries(["a chair"]), want, atol=1e-6)


def test_click_query_is_the_superpoint_feature_plus_type_embedding(official_model):
    scene = _scene()
    enc = official_model.encode([scene])[0]
    click = torch.as_tensor(scene.points[5:6])
    q = official_model.query_builder.clicks(enc.sp_features, enc.superpoints[5:6], click, enc.center)
    want = enc.sp_features[enc.superpoints[5]] + official_model.query_builder.type_embedding.weight[1]
    assert torch.allclose(q[0], want)


def test_stored_prototypes_serve_the_config_vocabulary_and_the_text_encoder_others(official_model):
    cfg_vocab = official_model.class_embeddings(official_model.cfg.class_names)
    assert cfg_vocab is official_model.class_prototypes
    other = official_model.class_embeddings(("lamp", "chair", "wall"))
    assert other.shape == (3, 24) and torch.allclose(other.norm(dim=1), torch.ones(3))
    scene = _scene(vocabulary=["lamp", "chair", "wall"])
    with torch.no_grad():
        out = official_model([scene])[0]
    assert out.final.class_logits.shape[1] == 4 and (out.final.class_logits[:, 2] == STUFF_LOGIT).all()


def test_our_configs_keep_their_architecture_and_protocol():
    cfg = ModelConfig.small()
    kinds = (cfg.heads, cfg.postprocess, cfg.voxel_origin, cfg.backbone_type)
    assert kinds == ("ours", "tuned", "world", "minkunet")
    model = UniSeg3D(cfg, build_text_encoder("hash:24"))
    assert model.class_prototypes is None and not hasattr(model.decoder, "head")
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(heads="mine")


def test_classify_rescores_the_official_heads_like_a_decode_with_that_vocabulary(official_model):
    scene = _scene(seed=4)
    enc = official_model.encode([scene])
    with torch.no_grad():
        base = official_model.decode(enc, [scene])[0]
        vocab = ("chair", "wall", "lamp")
        direct = official_model.decode(enc, [SceneSample(scene.points, scene.colors, scene.superpoints,
                                                          vocabulary=list(vocab))])[0]
        rescored = official_model.classify(enc[0], base, vocab)
    assert torch.allclose(rescored.final.class_logits, direct.final.class_logits, atol=1e-5)
    assert torch.equal(rescored.final.masks, direct.final.masks)
