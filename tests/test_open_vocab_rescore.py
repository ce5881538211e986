"""Open vocabulary without a decoder pass: ``UniSeg3D.classify`` re-scores the cached final
queries of the prompt-free pass, and the engine answers ``open_vocab`` from it. The answers
must be those of a full decode with the vocabulary (plus the model's stuff classes, which compete
unasked) (small untrained model, hash text encoder, a fused synthetic room)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.synthetic_room import make_room
from uniseg3d_model import postprocess
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.text_encoders import build_text_encoder
from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine
from uniseg3d_ros.mapping.scene_map import SceneMap

VOCABS = [("chair", "table", "bed"), ("mug", "lamp", "sofa", "plant", "door"), ("chair",)]


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash")).eval()
    return InferenceEngine(model, EngineConfig(score_threshold=0.01))


@pytest.fixture(scope="module")
def snap():
    room = make_room(seed=3, density=150.0)
    scene_map = SceneMap(voxel_size=0.02)
    scene_map.integrate(room.points, room.colors, np.eye(4), stamp=1.0)
    return scene_map.snapshot()


def full_decode(engine, prep, vocab):
    scene = replace(prep.scene, vocabulary=list(vocab))
    with torch.inference_mode():
        return engine.model.decode(prep.encodings, [scene])[0], scene


@pytest.mark.parametrize("vocab", VOCABS)
def test_classify_equals_the_final_layer_of_a_full_decode(engine, snap, vocab):
    prep, _ = engine._prepare(snap)
    full, _ = full_decode(engine, prep, vocab)
    with torch.inference_mode():
        base = engine.model.decode(prep.encodings, [prep.scene])[0]
        fast = engine.model.classify(prep.encodings[0], base, vocab)
    assert fast.vocabulary == tuple(vocab) and len(fast.layers) == 1
    torch.testing.assert_close(fast.final.masks, full.final.masks, rtol=0, atol=0)
    torch.testing.assert_close(fast.final.class_logits, full.final.class_logits, rtol=1e-5, atol=1e-4)
    assert fast.final.class_logits.shape == (full.final.masks.shape[0], len(vocab) + 1)


@pytest.mark.parametrize("vocab", VOCABS)
def test_engine_open_vocab_gives_the_full_decode_answer(engine, snap, vocab):
    res = engine.open_vocab(snap, list(vocab), score_threshold=0.01)
    assert res.success, res.message
    prep, _ = engine._prepare(snap)
    # the engine lets the model's stuff classes compete unasked (wall / floor regions are then not
    # handed out under a requested name): the reference decodes them too and drops them
    scored = tuple(vocab) + tuple(n for n in engine.model.cfg.stuff_classes if n not in vocab)
    full, scene = full_decode(engine, prep, scored)
    ref = postprocess.open_vocabulary(full, scene)
    keep = np.flatnonzero((ref.scores >= 0.01) & (ref.classes < len(vocab)))[: engine.cfg.max_instances]
    assert len(res.instances) == len(keep) > 0
    for inst, k in zip(res.instances, keep):
        np.testing.assert_array_equal(inst.point_indices, np.flatnonzero(ref.masks[k]))
        assert inst.label == ref.labels[k] == vocab[inst.class_id]
        assert inst.score == pytest.approx(float(ref.scores[k]), rel=1e-4, abs=1e-6)


def test_repeated_vocabulary_is_answered_from_the_cache(engine, snap):
    first = engine.open_vocab(snap, ["chair", "table"], score_threshold=0.01)
    again = engine.open_vocab(snap, [" chair", "table "], score_threshold=0.01)
    assert first.success and again.success and again.cached
    assert [i.point_indices is j.point_indices for i, j in zip(first.instances, again.instances)] == [
        True
    ] * len(first.instances)
    other = engine.open_vocab(snap, ["chair", "table"], score_threshold=0.5)  # other threshold: new list
    assert all(i.score >= 0.5 for i in other.instances)
