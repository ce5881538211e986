"""Referring sentences: true in the scene, unambiguous, ScanRefer's JSON layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniseg3d_model.synthetic.geometry import footprint_gap
from uniseg3d_model.synthetic.scene import generate_scene
from uniseg3d_model.synthetic.sentences import (
    Referral,
    SentenceConfig,
    family,
    scanrefer_entries,
    scene_referrals,
    tokenize,
    write_scanrefer,
)

CFG = SentenceConfig()


@pytest.fixture(scope="module")
def scenes():
    out = []
    for seed, rtype in ((11, "office"), (12, "kitchen"), (13, "living room")):
        s = generate_scene(seed, f"scene{seed:04d}_00", room_type=rtype)
        out.append((s, scene_referrals(s, np.random.default_rng(seed))))
    return out


def _matches(scene, target, spec) -> set[int]:
    """Independent reading of a clause: every object of the target's family it describes."""
    things = [o for o in scene.objects if o.raw_category not in ("wall", "floor") and o.annotated
              and o.scannet20 >= 0]
    fam = [o for o in things if family(o) == family(target)]
    kind = spec["kind"]
    if kind == "only":
        return {o.object_id for o in fam}
    if kind == "color":
        return {o.object_id for o in fam if o.color_name == spec["color"]}
    if kind in ("largest", "smallest"):
        best = (max if kind == "largest" else min)(fam, key=lambda o: o.volume)
        rest = [o.volume for o in fam if o is not best]
        ok = all(max(best.volume, v) / min(best.volume, v) >= CFG.volume_ratio for v in rest)
        return {best.object_id} if ok and rest else {o.object_id for o in fam}
    anchor = scene.object(spec["anchor_id"])
    if kind in ("closest", "farthest"):
        d = {o.object_id: np.linalg.norm(o.center[:2] - anchor.center[:2]) for o in fam}
        best = (min if kind == "closest" else max)(d, key=d.get)
        clear = all(abs(d[i] - d[best]) >= CFG.margin_m for i in d if i != best)
        return {best} if clear and len(d) > 1 else set(d)
    assert kind == "next_to"
    return {o.object_id for o in fam if footprint_gap(o.box, anchor.box) < CFG.near_m
            and spec.get("color", o.color_name) == o.color_name}


def test_every_sentence_picks_out_exactly_its_object(scenes):
    n = 0
    for scene, refs in scenes:
        for r in refs:
            target = scene.object(r.object_id)
            assert _matches(scene, target, r.spec) == {r.object_id}, r.description
            n += 1
    assert n > 30


def test_sentences_state_true_facts(scenes):
    for scene, refs in scenes:
        for r in refs:
            t = scene.object(r.object_id)
            assert t.raw_category in r.description and t.color_name in r.description
            if "anchor_id" in r.spec:
                anchor = scene.object(r.spec["anchor_id"])
                assert anchor.raw_category in r.description
                # the anchor is the only object of its family ("the <anchor>")
                assert sum(family(o) == family(anchor) for o in scene.objects) == 1


def test_ambiguous_color_clause_is_excluded():
    scene = generate_scene(11, room_type="office")
    refs = scene_referrals(scene, np.random.default_rng(0), SentenceConfig(max_per_object=100))
    emitted = {(r.object_id, r.spec.get("color")) for r in refs if r.spec["kind"] == "color"}
    things = [o for o in scene.objects if o.raw_category not in ("wall", "floor") and o.scannet20 >= 0]
    for t in things:
        same = [o for o in things if family(o) == family(t) and o.color_name == t.color_name]
        if len(same) > 1:  # e.g. two gray chairs: "the gray chair" must never be written
            assert (t.object_id, t.color_name) not in emitted
    assert any(len([o for o in things if family(o) == family(t)]) > 1 for t in things)


def test_referrals_are_deterministic():
    s = generate_scene(12)
    a = scene_referrals(s, np.random.default_rng(5))
    b = scene_referrals(s, np.random.default_rng(5))
    assert [(r.object_id, r.description) for r in a] == [(r.object_id, r.description) for r in b]


def test_scanrefer_json_layout(tmp_path, scenes):
    scene, refs = scenes[0]
    entries = scanrefer_entries(scene, refs)
    write_scanrefer(tmp_path / "ScanRefer_filtered_train.json", entries)
    back = json.loads((tmp_path / "ScanRefer_filtered_train.json").read_text())
    assert back == entries
    for e in back:
        assert set(e) == {"scene_id", "object_id", "object_name", "ann_id", "description", "token"}
        assert isinstance(e["object_id"], str) and isinstance(e["ann_id"], str)
        obj = scene.object(int(e["object_id"]))
        assert e["object_name"] == obj.raw_category.replace(" ", "_")
        assert e["token"] == tokenize(e["description"])
    pairs = [(e["object_id"], e["ann_id"]) for e in back]
    assert len(set(pairs)) == len(pairs)


def test_tokenize_splits_punctuation():
    assert tokenize("This is the red chair. It is next to the bed.") == [
        "this", "is", "the", "red", "chair", ".", "it", "is", "next", "to", "the", "bed", "."]


def test_unknown_clause_raises(scenes):
    from uniseg3d_model.synthetic.sentences import satisfying

    scene, _ = scenes[0]
    with pytest.raises(ValueError, match="kind"):
        satisfying(scene, scene.objects[6], Referral(6, "", {"kind": "under"}).spec)
