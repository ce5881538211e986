"""UniSeg3D model: shapes, determinism and the encode/decode split on a synthetic room."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.synthetic_room import BOXES, make_room, text_encoder
from uniseg3d_model import postprocess
from uniseg3d_model.losses import LossConfig, UniSeg3DCriterion
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.queries import click_superpoints, interaction_mask, select_superpoints


def tiny_config(**kw) -> ModelConfig:
    return dataclasses.replace(ModelConfig.small(), **kw)


@pytest.fixture(scope="module")
def room():
    return make_room(seed=0, density=120.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UniSeg3D(tiny_config(), text_encoder()).eval()


def test_eval_forward_shapes_for_every_task(model, room):
    with torch.no_grad():
        (out,) = model([room])
    s, k, t, v = room.num_superpoints, len(room.clicks), len(room.texts), len(model.cfg.class_names)
    qu = s + model.cfg.num_learned_queries  # evaluation uses every superpoint as a query
    assert (out.num_unified, out.num_clicks, out.num_texts) == (qu, k, t)
    assert len(out.layers) == model.cfg.num_layers + 1
    for layer in out.layers:
        assert layer.masks.shape == (qu + k + t, s)
        assert layer.class_logits.shape == (qu + k + t, v + 1)
        assert layer.scores.shape == (qu + k + t,)
        assert torch.isfinite(layer.masks).all() and torch.isfinite(layer.class_logits).all()
    assert out.unified().masks.shape == (qu, s)
    assert out.clicks().masks.shape == (k, s) and out.texts().masks.shape == (t, s)
    assert out.vocabulary == model.cfg.class_names
    assert torch.equal(out.query_superpoints[:s], torch.arange(s))
    assert (out.query_superpoints[s:] == -1).all()


def test_eval_forward_is_deterministic(model, room):
    with torch.no_grad():
        a = model([room])[0]
        b = model([room])[0]
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.masks, lb.masks) and torch.equal(la.class_logits, lb.class_logits)


def test_decode_from_cached_encoding_equals_forward(model, room):
    with torch.no_grad():
        full = model([room])[0]
        enc = [e.detach() for e in model.encode([room])]
        cached = model.decode(enc, [room])[0]
    for la, lb in zip(full.layers, cached.layers):
        for name in ("masks", "class_logits", "scores", "embeddings"):
            assert torch.equal(getattr(la, name), getattr(lb, name)), name


def test_prompt_only_decode_matches_prompts_of_full_decode(model, room):
    with torch.no_grad():
        enc = model.encode([room])
        full = model.decode(enc, [room])[0]
        fast = model.decode(enc, [room], unified=False)[0]
    assert fast.num_unified == 0 and fast.num_clicks == len(room.clicks)
    torch.testing.assert_close(fast.texts().masks, full.texts().masks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.clicks().masks, full.clicks().masks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.texts().scores, full.texts().scores, atol=1e-4, rtol=1e-4)


def test_single_text_answer_is_independent_of_other_prompts(model, room):
    one = dataclasses.replace(
        room, clicks=None, click_instance=None, texts=room.texts[2:3], text_instance=None
    )
    with torch.no_grad():
        enc = model.encode([room])
        alone = model.decode(enc, [one], unified=False)[0]
        together = model.decode(enc, [room], unified=False)[0]
    torch.testing.assert_close(alone.texts().masks[0], together.texts().masks[2], atol=1e-4, rtol=1e-4)


def test_batch_of_two_scenes_matches_single_scene_decoding(model, room):
    other = make_room(seed=1, density=100.0)
    with torch.no_grad():
        both = model([room, other])
        single = model([other])[0]
    assert both[1].final.masks.shape == single.final.masks.shape
    torch.testing.assert_close(both[1].final.masks, single.final.masks, atol=1e-4, rtol=1e-4)


def test_vocabulary_replaces_class_columns_and_is_cached(model, room):
    scene = dataclasses.replace(room, vocabulary=["red chair", "lamp", "table"])
    with torch.no_grad():
        (out,) = model([scene])
    assert out.final.class_logits.shape[1] == 4
    assert out.vocabulary == ("red chair", "lamp", "table")
    assert ("red chair", "lamp", "table") in model._class_cache
    pred = postprocess.open_vocabulary(out, scene, min_points=1)
    assert set(pred.labels) <= {"red chair", "lamp", "table"}


def test_training_mode_selects_a_random_subset_of_superpoints(room):
    torch.manual_seed(1)
    m = UniSeg3D(tiny_config(query_ratio=0.5), text_encoder()).train()
    outs = m([room])
    s = room.num_superpoints
    sel = outs[0].query_superpoints[outs[0].query_superpoints >= 0]
    assert s // 2 <= len(sel) <= s
    assert len(torch.unique(sel)) == len(sel)
    loss, logs = UniSeg3DCriterion(LossConfig())(outs, [room])
    loss.backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert np.isfinite(logs["loss"])


def test_select_superpoints_caps_and_spreads_in_eval():
    ids = select_superpoints(10_000, False, 0.5, 3500, 1000, torch.device("cpu"))
    assert len(ids) == 1000 and ids[0] == 0 and ids[-1] == 9999


def test_click_maps_to_superpoint_of_nearest_point():
    points = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
    sp = torch.tensor([5, 7, 9])
    clicks = torch.tensor([[0.9, 0.1, 0.0], [0.1, 1.9, 0.2], [-1.0, 0, 0]])
    assert click_superpoints(clicks, points, sp).tolist() == [7, 9, 5]


def test_interaction_mask_keeps_task_groups_apart():
    m = interaction_mask(3, 2, True, torch.device("cpu"))
    assert not m[:3, :3].any()  # unified queries see each other
    assert m[:3, 3:].all()  # ... but never the prompts
    assert m[3:, :3].all()  # prompts do not see unified queries
    assert interaction_mask(3, 0, True, torch.device("cpu")) is None


def test_click_in_scene_picks_box_superpoint(model, room):
    with torch.no_grad():
        enc = model.encode([room])[0]
    sp = click_superpoints(torch.as_tensor(room.clicks), enc.points, enc.superpoints)
    inst_of_sp = np.asarray(room.instance)[np.argmax(np.asarray(room.superpoints)[:, None] == sp.numpy(), 0)]
    assert inst_of_sp.tolist() == list(range(len(BOXES)))


def test_bad_inputs_raise_clear_errors(model, room):
    enc = model.encode([room])
    with pytest.raises(ValueError, match="encodings"):
        model.decode(enc, [room, room])
    with pytest.raises(ValueError, match="points but its encoding"):
        model.decode(enc, [make_room(seed=1, density=100.0)])
    bare = dataclasses.replace(room, clicks=None, texts=[])
    with pytest.raises(ValueError, match="nothing to decode"):
        model.decode(enc, [bare], unified=False)
    with pytest.raises(ValueError, match="vocabulary"):
        model.decode(enc, [dataclasses.replace(room, vocabulary=[])])
    with pytest.raises(ValueError, match="num_heads"):
        tiny_config(d_model=90, num_heads=4)
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**ModelConfig.small().to_dict(), "bogus": 1})


def test_encoding_detach_and_to_keep_values(model, room):
    enc = model.encode([room])[0]
    d = enc.detach()
    assert not d.sp_features.requires_grad
    assert torch.equal(d.to("cpu").sp_features, d.sp_features)
    assert enc.num_points == room.num_points and enc.num_superpoints == room.num_superpoints


def test_config_round_trips_through_dict():
    cfg = ModelConfig.small()
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert ModelConfig.paper().d_model == 256 and ModelConfig.paper().num_layers == 6


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.slow
def test_tiny_model_overfits_one_scene():
    scene = make_room(seed=3, density=200.0)
    from uniseg3d_model.backbone import BackboneConfig

    torch.manual_seed(0)
    # faster BatchNorm running statistics so eval mode catches up within the short run
    cfg = tiny_config(backbone=BackboneConfig.small(in_channels=6, bn_momentum=0.1))
    m = UniSeg3D(cfg, text_encoder())
    crit = UniSeg3DCriterion(LossConfig(prompt_weight=1.0))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    for _ in range(120):
        loss, _ = crit(m([scene]), [scene])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        (out,) = m([scene])
    gt = [np.asarray(scene.instance) == i for i in range(len(BOXES))]
    inst = postprocess.instances(out, scene, min_points=5)
    best = [max((_iou(p, g) for p in inst.masks), default=0.0) for g in gt]
    assert np.mean(best) > 0.9, best
    top = [inst.labels[int(np.argmax([_iou(p, g) for p in inst.masks]))] for g in gt]
    assert top == [b[2] for b in BOXES]
    clicks = postprocess.interactive(out, scene)
    assert np.mean([_iou(clicks[k], gt[k]) for k in range(len(gt))]) > 0.9
    texts, _ = postprocess.referring(out, scene)
    assert np.mean([_iou(texts[k], gt[k]) for k in range(len(gt))]) > 0.9
    assert (postprocess.semantic(out, scene) == np.asarray(scene.semantic)).mean() > 0.95


def test_rgb_only_input_needs_a_three_channel_backbone(room):
    from uniseg3d_model.backbone import BackboneConfig

    with pytest.raises(ValueError, match="in_channels must be 3"):
        tiny_config(use_xyz=False)
    cfg = tiny_config(use_xyz=False, backbone=BackboneConfig.small(in_channels=3))
    with torch.no_grad():
        (out,) = UniSeg3D(cfg, text_encoder()).eval()([room])
    assert out.final.masks.shape[1] == room.num_superpoints


def test_paper_preset_runs_forward_and_backward_on_a_tiny_scene():
    scene = make_room(seed=6, density=50.0)
    torch.manual_seed(0)
    m = UniSeg3D(ModelConfig.paper(), text_encoder()).train()
    outs = m([scene])
    assert len(outs[0].layers) == 7 and outs[0].final.class_logits.shape[1] == 21
    loss, _ = UniSeg3DCriterion(LossConfig())(outs, [scene])
    loss.backward()
    assert torch.isfinite(loss)


def test_decoder_cache_is_reused_and_refreshed_when_weights_change(room):
    torch.manual_seed(0)
    m = UniSeg3D(tiny_config(), text_encoder()).eval()
    ask = dataclasses.replace(
        room, clicks=None, click_instance=None, texts=room.texts[:1], text_instance=None
    )
    with torch.no_grad():
        enc = m.encode([room])
        first = m.decode(enc, [ask], unified=False)[0]
        cached = enc[0].decoder_cache
        assert cached is not None
        again = m.decode(enc, [ask], unified=False)[0]
        assert enc[0].decoder_cache is cached and torch.equal(first.final.masks, again.final.masks)
        for p in m.decoder.mask_proj.parameters():
            p.mul_(2.0)  # in-place weight change, as an optimizer step or load_state_dict does
        changed = m.decode(enc, [ask], unified=False)[0]
        fresh = m.decode([e.detach() for e in m.encode([room])], [ask], unified=False)[0]
    assert enc[0].decoder_cache is not cached
    assert torch.equal(changed.final.masks, fresh.final.masks)
    assert not torch.equal(changed.final.masks, first.final.masks)
