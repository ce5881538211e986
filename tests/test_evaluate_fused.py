"""``python -m training.evaluate_fused``: figures of a checkpoint on rooms as the node fuses them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate_fused import (
    ABSENT_WORDS,
    main,
    node_answers,
    seen_unseen_ap,
    sentence_scores,
    separation,
)
from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene
from uniseg3d_ros.inference.loading import load_engine
from uniseg3d_ros.tools.fused_scene import FuseConfig, fused_sample


def test_seen_unseen_ap_splits_by_the_trained_names():
    per_class = {"chair": {"ap": 0.8}, "table": {"ap": 0.6}, "lamp": {"ap": 0.1}, "ottoman": {"ap": math.nan}}
    got = seen_unseen_ap(per_class, ["chair", "table", "sofa"])
    assert got["ov_ap_seen"] == pytest.approx(0.7) and got["ov_ap_unseen"] == pytest.approx(0.1)
    assert (got["ov_seen_classes"], got["ov_unseen_classes"]) == (2, 1)
    assert math.isnan(seen_unseen_ap({}, ["chair"])["ov_ap_seen"])


def test_separation_is_the_share_of_pairs_the_score_orders_right():
    assert separation([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert separation([0.1], [0.9, 0.2]) == 0.0
    assert separation([0.5, 0.9], [0.5]) == pytest.approx(0.75)  # one tie, one right
    assert math.isnan(separation([], [0.1])) and math.isnan(separation([0.1], []))


def test_cli_rejects_a_folder_without_fused_rooms(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path)])
    assert exc.value.code == 2 and "--data" in capsys.readouterr().err
    (tmp_path / "val").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path), "--checkpoint", str(tmp_path / "none.pt")])
    assert exc.value.code == 2 and "--checkpoint" in capsys.readouterr().err


@pytest.mark.slow  # one fused room, one random-model encode (~20 s)
def test_node_answers_score_the_engine_on_a_fused_room():
    scene = generate_scene(12, "scene0012_00", SceneConfig(spacing=0.08), room_type="living room")
    sample = fused_sample(scene, FuseConfig(frames=6, width=96, height=72))
    engine = load_engine("random", text_encoder="hash")
    got = node_answers(engine, sample, 1, ["chair", "table"])
    things = [k for k in range(len(sample["instance_class"]))
              if sample["instance_class"][k] >= 0 and (sample["instance"] == k).sum() >= 100]
    assert got["objects"] == len(things) > 0
    assert 0 <= got["found_with_label"] <= got["objects"]
    # every object is found with its label, found under another label or missed
    assert got["found_with_label"] + len(got["mislabelled"]) + len(got["missed"]) == got["objects"]
    names = set(SCANNET20_CLASSES)
    assert all(t in names and p in names and t != p for t, p in got["mislabelled"])
    assert set(got["missed"]) <= names
    assert 0 <= got["ov_on_stuff"] <= got["ov_instances"]
    assert np.isfinite([v for v in got.values() if not isinstance(v, list)]).all()


@pytest.mark.slow  # one fused room, one random-model encode (~20 s)
def test_sentence_scores_ask_each_sentence_and_its_absent_twin():
    scene = generate_scene(12, "scene0012_00", SceneConfig(spacing=0.08), room_type="living room")
    sample = fused_sample(scene, FuseConfig(frames=6, width=96, height=72))
    engine = load_engine("random", text_encoder="hash")
    names = {SCANNET20_CLASSES[c] for c in sample["instance_class"] if c >= 0}
    entries = [{"description": f"this is the {SCANNET20_CLASSES[c]}.", "instance": k,
                "object_name": SCANNET20_CLASSES[c]}
               for k, c in enumerate(sample["instance_class"]) if c >= 0][:4]
    entries.append({"description": "a sentence without its name.", "instance": 0, "object_name": "lamp"})
    got = sentence_scores(engine, sample, entries, 1)
    assert len(got["absent"]) == 4 and len(got["right"]) <= 5  # the nameless one has no twin
    assert all(0.0 <= x <= 1.0 for x in got["right"] + got["absent"])
    assert set(ABSENT_WORDS) - names, "every thing class is in the room: no absent twin possible"
