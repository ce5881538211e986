"""Light queries never wait behind a build: while one thread encodes a new map version (superpoints,
backbone, prompt-free decode), ``refer`` / ``interactive`` / ``open_vocab`` from other threads answer
on the last finished encoding, or at once that the encoding is being built when there is none."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.synthetic_room import make_room
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.text_encoders import build_text_encoder
from uniseg3d_ros.inference.engine import EngineConfig, InferenceEngine
from uniseg3d_ros.mapping.scene_map import SceneMap


def new_engine() -> InferenceEngine:
    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash")).eval()
    return InferenceEngine(model, EngineConfig(max_click_distance=0.2))


@pytest.fixture(scope="module")
def maps():
    """A small room (version 1) and the same map after a large second room was fused (version 2)."""
    small, big = make_room(seed=0, density=150.0), make_room(seed=1, density=2500.0, size=3.0)
    m = SceneMap(voxel_size=0.02)
    m.integrate(small.points, small.colors, np.eye(4), stamp=1.0)
    first = m.snapshot()
    m.integrate(big.points + np.float32([3.5, 0.0, 0.0]), big.colors, np.eye(4), stamp=2.0)
    return first, m.snapshot()


class Build:
    """engine.segment(snapshot) in a thread; waits until the engine reports the build running."""

    def __init__(self, engine: InferenceEngine, snapshot) -> None:
        self.result = None
        self.thread = threading.Thread(target=lambda: setattr(self, "result", engine.segment(snapshot)))
        self.thread.start()
        deadline = time.monotonic() + 30.0
        while engine.building is None:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the build never started"
            time.sleep(0.001)

    def finish(self):
        self.thread.join(timeout=600)
        assert self.result is not None and self.result.success, self.result
        return self.result


def test_light_queries_answer_on_the_last_encoding_during_a_build(maps):
    first, second = maps
    engine = new_engine()
    assert engine.segment(first).success
    build = Build(engine, second)
    answers = [
        engine.refer(second, "the red chair"),
        engine.interactive(second, first.points[[10]]),
        engine.open_vocab(second, ["chair", "table"]),
    ]
    assert engine.building is not None, "the build ended before the light queries: make the map larger"
    for res in answers:
        assert res.success, res.message
        assert res.map_version == first.version and f"on map version {first.version}" in res.message
        assert res.latency_ms < 1000.0, res.latency_ms  # a decoder pass, not an encode (seconds)
    assert build.finish().map_version == second.version
    after = engine.refer(second, "the red chair")
    assert after.success and after.map_version == second.version and after.cached


def test_light_queries_say_at_once_that_the_first_encoding_is_being_built(maps):
    first, _ = maps
    engine = new_engine()
    build = Build(engine, first)
    t = time.perf_counter()
    res = engine.refer(first, "the red chair")
    waited = time.perf_counter() - t
    assert engine.building is not None
    assert not res.success and "being encoded" in res.message and waited < 0.5
    build.finish()
    assert engine.refer(first, "the red chair").success


def test_segment_waits_for_the_running_build_instead_of_encoding_twice(maps):
    first, _ = maps
    engine = new_engine()
    build = Build(engine, first)
    second_caller = engine.segment(first)  # blocks on the build, then reuses its entry
    assert second_caller.success and second_caller.cached
    build.finish()
    assert engine.encode_count == 1
