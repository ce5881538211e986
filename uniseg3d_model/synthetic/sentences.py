"""ScanRefer-style referring sentences that are true and unambiguous in a synthetic scene.

Each description pairs a fact about the target (its colour) with one identifying clause, and is
kept only when that clause picks out exactly one object among the target's *family* -- the
objects a reader could call by the same noun (same NYU40 class; for "otherfurniture" the same
raw category). Clauses:

* ``color``    -- "the red chair": the only one of its family with that colour;
* ``closest`` / ``farthest`` -- to a unique anchor object, by horizontal centre distance, with a
  clear margin (``margin_m``) to the runner-up;
* ``largest`` / ``smallest`` -- by box volume, at least ``volume_ratio`` apart from the runner-up;
* ``next_to``  -- "the brown cabinet next to the bed": footprints less than ``near_m`` apart,
  optionally with the colour, and no other family member (with that colour) that near;
* ``only``     -- the only object of its family in the room.

Targets and anchors are the annotated furniture of the ScanNet20 classes (not walls, floors or
small objects).

Entries follow ScanRefer's JSON: ``scene_id``, ``object_id`` (string), ``object_name`` (raw
category, spaces as underscores), ``ann_id`` (string), ``description``, ``token``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniseg3d_model.synthetic.geometry import footprint_gap
from uniseg3d_model.synthetic.scene import SyntheticObject, SyntheticScene

STRUCTURE = ("wall", "floor")


def referable(obj: SyntheticObject) -> bool:
    """Annotated furniture of a ScanNet20 thing class."""
    return obj.annotated and obj.scannet20 >= 0 and obj.raw_category not in STRUCTURE


@dataclass(frozen=True)
class SentenceConfig:
    max_per_object: int = 3
    margin_m: float = 0.3  # closest/farthest must beat the runner-up by this much
    volume_ratio: float = 1.25  # largest/smallest must differ from the runner-up by this factor
    near_m: float = 0.5  # footprint gap for "next to"


@dataclass(frozen=True)
class Referral:
    object_id: int
    description: str
    spec: dict = field(default_factory=dict)  # kind, color, anchor_id: enough to re-check the clause


def family(obj: SyntheticObject) -> tuple:
    """Objects in the same family could be called by the same noun."""
    return ("raw", obj.raw_category) if obj.nyu40id == 39 else ("nyu40", obj.nyu40id)


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation, as ScanRefer's ``token`` lists."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def satisfying(scene: SyntheticScene, target: SyntheticObject, spec: dict,
               cfg: SentenceConfig = SentenceConfig()) -> list[int]:
    """object_ids of the target's family that satisfy the clause ``spec`` (see module doc)."""
    fam = [o for o in scene.objects if referable(o) and family(o) == family(target)]
    kind = spec["kind"]
    if kind == "only":
        return [o.object_id for o in fam]
    if kind == "color":
        return [o.object_id for o in fam if o.color_name == spec["color"]]
    if kind in ("largest", "smallest"):
        vols = sorted(((o.volume, o.object_id) for o in fam), reverse=kind == "largest")
        if len(vols) < 2:
            return []
        ratio = vols[0][0] / vols[1][0] if kind == "largest" else vols[1][0] / vols[0][0]
        return [vols[0][1]] if ratio >= cfg.volume_ratio else [v[1] for v in vols]
    if kind not in ("closest", "farthest", "next_to"):
        raise ValueError(f"unknown clause kind {kind!r}")
    if "anchor_id" not in spec:
        raise ValueError(f"clause kind {kind!r} needs an 'anchor_id'")
    anchor = scene.object(spec["anchor_id"])
    if kind in ("closest", "farthest"):
        sign = 1.0 if kind == "closest" else -1.0  # sort so that the answer comes first
        d = sorted((sign * float(np.linalg.norm(o.center[:2] - anchor.center[:2])), o.object_id) for o in fam)
        if len(d) < 2:
            return []
        return [d[0][1]] if abs(d[1][0] - d[0][0]) >= cfg.margin_m else [x[1] for x in d]
    if kind == "next_to":
        color = spec.get("color")
        return [o.object_id for o in fam if footprint_gap(o.box, anchor.box) < cfg.near_m
                and (color is None or o.color_name == color)]


def _where(t: SyntheticObject) -> str:
    if t.raw_category in ("door", "window", "picture"):
        return "on the wall"
    if t.raw_category in ("curtain", "shower curtain"):
        return "hanging from the ceiling"
    return "against the wall" if t.wall >= 0 else "standing in the room"


def _clauses(t: SyntheticObject, anchors: list[SyntheticObject], single: bool) -> list[tuple[str, dict]]:
    """Candidate (description, spec) pairs for target ``t`` (not yet checked for uniqueness).

    ``single``: the target is the only one of its family (colour and size clauses add nothing).
    """
    n, c = t.raw_category, t.color_name
    if single:
        out = [(f"this is a {c} {n}. it is the only {n} in the room.", {"kind": "only"}),
               (f"there is only one {n} in this room. it is {c} and {_where(t)}.", {"kind": "only"})]
    else:
        out = [(f"this is the {c} {n}. it is {_where(t)}.", {"kind": "color", "color": c}),
               (f"the {n} that is {c}.", {"kind": "color", "color": c}),
               (f"this is the largest {n} in the room. it is {c}.", {"kind": "largest"}),
               (f"it is the smallest {n}. the {n} is {c}.", {"kind": "smallest"})]
    for a in anchors:
        if a.object_id == t.object_id or family(a) == family(t):
            continue
        an, aid = a.raw_category, a.object_id
        out.append((f"this {n} is next to the {an}. it is {c}.", {"kind": "next_to", "anchor_id": aid}))
        if not single:
            out += [(f"this is a {c} {n}. it is the {n} closest to the {an}.",
                     {"kind": "closest", "anchor_id": aid}),
                    (f"the {n} farthest from the {an}. it is {c}.", {"kind": "farthest", "anchor_id": aid}),
                    (f"the {c} {n} next to the {an}.", {"kind": "next_to", "anchor_id": aid, "color": c})]
    return out


def scene_referrals(scene: SyntheticScene, rng: np.random.Generator,
                    cfg: SentenceConfig = SentenceConfig()) -> list[Referral]:
    """Up to ``cfg.max_per_object`` true, unambiguous descriptions per furniture object."""
    things = [o for o in scene.objects if referable(o)]
    fam_count: dict[tuple, int] = {}
    for o in things:
        fam_count[family(o)] = fam_count.get(family(o), 0) + 1
    anchors = [o for o in things if fam_count[family(o)] == 1]  # "the <anchor>" must be unique
    out = []
    for t in things:
        valid = [(text, spec) for text, spec in _clauses(t, anchors, fam_count[family(t)] == 1)
                 if satisfying(scene, t, spec, cfg) == [t.object_id]]
        if not valid:
            continue
        pick = rng.choice(len(valid), size=min(cfg.max_per_object, len(valid)), replace=False)
        for i in sorted(int(k) for k in pick):
            out.append(Referral(t.object_id, valid[i][0], valid[i][1]))
    return out


def scanrefer_entries(scene: SyntheticScene, referrals: list[Referral]) -> list[dict]:
    """ScanRefer JSON records for ``referrals`` (ann_id counts per object)."""
    counts: dict[int, int] = {}
    out = []
    for r in referrals:
        obj = scene.object(r.object_id)
        ann = counts.get(r.object_id, 0)
        counts[r.object_id] = ann + 1
        out.append({"scene_id": scene.scene_id, "object_id": str(r.object_id),
                    "object_name": obj.raw_category.replace(" ", "_"), "ann_id": str(ann),
                    "description": r.description, "token": tokenize(r.description)})
    return out


def write_scanrefer(path: str | Path, entries: list[dict]) -> None:
    """Write ScanRefer-style records as one JSON list."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(entries))
