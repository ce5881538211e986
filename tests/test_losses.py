"""Targets, Hungarian matching and the UniSeg3D criterion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.synthetic_room import BOXES, C, make_room, text_encoder
from uniseg3d_model.data.labels import IGNORE_INDEX, SCANNET20_CLASSES
from uniseg3d_model.losses import LossConfig, UniSeg3DCriterion, build_targets, hungarian_match
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.structures import SceneSample

V = len(SCANNET20_CLASSES)


@pytest.fixture(scope="module")
def room():
    return make_room(seed=0, density=100.0)


@pytest.fixture(scope="module")
def outputs(room):
    torch.manual_seed(0)
    model = UniSeg3D(dataclasses.replace(ModelConfig.small(), num_layers=2), text_encoder()).train()
    other = make_room(seed=5, density=80.0)
    return model, model([room, other]), [room, other]


def test_targets_use_majority_vote_per_superpoint():
    # superpoint 0: 3 points of instance 0 + 1 unlabelled; superpoint 1: 1 point of instance 0, 2 none
    sp = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    inst = np.array([0, 0, 0, -100, 0, -100, -100, -100, -100])
    sem = np.array([4, 4, 4, 4, 4, 1, 1, IGNORE_INDEX, IGNORE_INDEX])
    scene = SceneSample(
        np.zeros((9, 3)), np.zeros((9, 3)), sp, semantic=sem, instance=inst, instance_class=np.array([4])
    )
    tg = build_targets(scene, 3, V, [0, 1], torch.device("cpu"))
    assert tg.masks.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # chair, then the floor segment
    assert tg.labels.tolist() == [4, 1]
    assert tg.sp_semantic.tolist() == [4, 1, IGNORE_INDEX]
    assert tg.instance_to_target.tolist() == [0]


def test_targets_of_the_room_cover_every_box_and_stuff(room):
    tg = build_targets(room, room.num_superpoints, V, [0, 1], torch.device("cpu"))
    assert tg.labels.tolist() == [C[b[2]] for b in BOXES] + [C["wall"], C["floor"]]
    sp = torch.as_tensor(room.superpoints)
    for i in range(len(BOXES)):
        point_mask = tg.masks[i][sp] > 0
        assert torch.equal(point_mask, torch.as_tensor(room.instance) == i)  # grid superpoints respect labels


def test_targets_reject_out_of_range_labels(room):
    bad = dataclasses.replace(room, instance_class=np.array([99, 4, 3, 2]))
    with pytest.raises(ValueError, match="instance_class"):
        build_targets(bad, bad.num_superpoints, V, [], torch.device("cpu"))
    with pytest.raises(ValueError, match="training needs"):
        build_targets(
            dataclasses.replace(room, semantic=None), room.num_superpoints, V, [], torch.device("cpu")
        )


def test_hungarian_match_recovers_a_permutation():
    tgt = torch.tensor([[1.0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1]])
    labels = torch.tensor([2, 3, 4])
    perm = torch.tensor([2, 0, 1])  # query q predicts target perm[q]
    masks = (tgt[perm] * 2 - 1) * 8
    noise = torch.full((2, 5), -8.0)  # two background queries
    logits = torch.full((5, 6), -5.0)
    logits[torch.arange(3), labels[perm]] = 5.0
    logits[3:, -1] = 5.0
    q, g = hungarian_match(torch.cat([masks, noise]), logits, tgt, labels)
    assert dict(zip(q.tolist(), g.tolist())) == {0: 2, 1: 0, 2: 1}


def test_sparse_matching_only_pairs_queries_inside_their_target():
    tgt = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    masks = torch.zeros(2, 4)
    logits = torch.zeros(2, 3)
    # query 0 comes from superpoint 2 (target 1), query 1 from superpoint 3 (target 1 too)
    q, g = hungarian_match(masks, logits, tgt, torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert g.tolist() == [1] and len(q) == 1
    q, g = hungarian_match(masks, logits, tgt, torch.tensor([0, 1]), torch.tensor([2, -1]))
    assert sorted(g.tolist()) == [0, 1]  # the learnable query (-1) takes the other target


def test_all_components_are_finite_and_backpropagate(outputs):
    model, outs, scenes = outputs
    loss, logs = UniSeg3DCriterion(LossConfig())(outs, scenes)
    assert torch.isfinite(loss)
    for key in (
        "unified_cls",
        "unified_bce",
        "unified_dice",
        "unified_score",
        "click_bce",
        "text_dice",
        "aux_unified_bce",
        "kd_unified",
        "kd_referring",
        "contrastive",
        "ranking",
    ):
        assert key in logs and np.isfinite(logs[key]), key
    model.zero_grad()
    loss.backward(retain_graph=True)
    assert model.contrastive_logit_scale.grad is not None
    assert model.query_builder.text_proj[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("switch", "gone"),
    [
        ({"use_unified": False}, ["unified_cls", "kd_unified"]),
        ({"use_clicks": False}, ["click_bce"]),
        ({"use_texts": False}, ["text_bce"]),
        ({"aux": False}, ["aux_unified_bce"]),
        ({"kd_unified_weight": 0.0}, ["kd_unified"]),
        ({"kd_referring_weight": 0.0}, ["kd_referring"]),
        ({"contrastive_weight": 0.0}, ["contrastive"]),
        ({"ranking_weight": 0.0}, ["ranking"]),
    ],
)
def test_each_switch_removes_its_term(outputs, switch, gone):
    _, outs, scenes = outputs
    full_loss, full = UniSeg3DCriterion(LossConfig())(outs, scenes)
    loss, logs = UniSeg3DCriterion(LossConfig(**switch))(outs, scenes)
    for key in gone:
        assert key in full and key not in logs
    assert loss.item() < full_loss.item()


def test_weights_scale_the_total(outputs):
    _, outs, scenes = outputs
    base = LossConfig(
        use_clicks=False,
        use_texts=False,
        aux=False,
        kd_unified_weight=0.0,
        kd_referring_weight=0.0,
        contrastive_weight=0.0,
        ranking_weight=0.0,
    )
    l1, logs = UniSeg3DCriterion(base)(outs, scenes)
    l2, _ = UniSeg3DCriterion(dataclasses.replace(base, dice_weight=3.0))(outs, scenes)
    torch.testing.assert_close(l2.item() - l1.item(), 2.0 * logs["unified_dice"], rtol=1e-4, atol=1e-5)


def test_contrastive_loss_prefers_aligned_embeddings(outputs):
    _, outs, _ = outputs
    crit = UniSeg3DCriterion()
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    pairs_good = [(e[i], e[i], (0, i)) for i in range(4)]
    pairs_bad = [(e[i], e[(i + 1) % 4], (0, i)) for i in range(4)]
    scale = torch.tensor(10.0)
    good, rank_good = crit._contrastive(pairs_good, scale)
    bad, rank_bad = crit._contrastive(pairs_bad, scale)
    assert float(good) < float(bad) and float(rank_good) <= float(rank_bad)


def test_prompt_instance_count_mismatch_raises(outputs):
    _, outs, scenes = outputs
    broken = [dataclasses.replace(scenes[0], click_instance=np.array([0, 1])), scenes[1]]
    with pytest.raises(ValueError, match="prompt instance ids"):
        UniSeg3DCriterion()(outs, broken)


def test_scene_without_instances_or_prompt_targets_still_gives_a_finite_loss(outputs):
    model, _, _ = outputs
    room = make_room(seed=4, density=60.0)
    stuff_only = dataclasses.replace(
        room,
        instance=np.full(room.num_points, IGNORE_INDEX),
        instance_class=np.zeros(0, np.int64),
        click_instance=None,
        text_instance=None,
    )
    loss, logs = UniSeg3DCriterion()(model([stuff_only]), [stuff_only])
    assert torch.isfinite(loss) and logs["click_bce"] == 0.0
    loss.backward()


def test_training_with_a_larger_vocabulary_finds_stuff_by_name(outputs):
    model, _, _ = outputs
    vocab = ["lamp", *SCANNET20_CLASSES, "plant"]  # labels shift by one: remap them
    room = make_room(seed=7, density=60.0)
    shifted = dataclasses.replace(
        room,
        vocabulary=vocab,
        semantic=np.where(room.semantic == IGNORE_INDEX, IGNORE_INDEX, room.semantic + 1),
        instance_class=room.instance_class + 1,
    )
    (out,) = model([shifted])
    assert out.final.class_logits.shape[1] == len(vocab) + 1
    tg = build_targets(
        shifted,
        out.num_superpoints,
        len(vocab),
        [vocab.index("wall"), vocab.index("floor")],
        torch.device("cpu"),
    )
    assert tg.labels.tolist()[-2:] == [vocab.index("wall"), vocab.index("floor")]
    loss, logs = UniSeg3DCriterion()([out], [shifted])
    assert torch.isfinite(loss) and logs["unified_cls"] > 0
