"""Tiny raw ScanNet v2 scenes for the data tests (exact file formats, a few hundred vertices).

Temporary: replaced by the synthetic generator (uniseg3d_model.synthetic) once it lands.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from uniseg3d_model.data.scannet_io import write_label_map, write_ply

#: (raw category, nyu40 id, ScanNet20 name or None, ScanNet200 name) per object of every scene.
TINY_OBJECTS: tuple[tuple[str, int, str | None, str], ...] = (
    ("wall", 1, "wall", "wall"),
    ("floor", 2, "floor", "floor"),
    ("chair", 5, "chair", "chair"),
    ("table", 7, "table", "table"),
    ("lamp", 35, None, "lamp"),
    ("couch", 6, "sofa", "couch"),
)
_TSV = [("wall", 1, 1), ("floor", 3, 2), ("chair", 2, 5), ("table", 4, 7), ("lamp", 28, 35), ("couch", 6, 6)]
_BOXES = {  # object -> (min corner, max corner), metres
    "wall": ((0.0, 2.0, 0.0), (3.0, 2.05, 1.5)), "floor": ((0.0, 0.0, -0.05), (3.0, 2.0, 0.0)),
    "chair": ((0.3, 0.3, 0.0), (0.8, 0.8, 0.9)), "table": ((1.2, 0.4, 0.0), (2.2, 1.2, 0.75)),
    "lamp": ((2.5, 1.5, 0.0), (2.7, 1.7, 1.2)), "couch": ((0.2, 1.3, 0.0), (1.5, 1.9, 0.8)),
}  # fmt: skip


def _scene(rng: np.random.Generator, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pts, obj, seg = [], [], []
    next_seg = 0
    for oi, (name, *_rest) in enumerate(TINY_OBJECTS):
        lo, hi = (np.asarray(b) for b in _BOXES[name])
        n = 60 if name in ("wall", "floor") else 30
        p = rng.uniform(lo, hi, (n, 3))
        p[:, 0] += shift
        k = 3 if name in ("wall", "floor") else 2
        cut = np.digitize(p[:, 0], np.quantile(p[:, 0], np.linspace(0, 1, k + 1)[1:-1]))
        pts.append(p)
        obj.append(np.full(n, oi))
        seg.append(next_seg + cut)
        next_seg += k
    clutter = rng.uniform((0, 0, 1.6), (3, 2, 2.0), (20, 3))  # unannotated points
    pts.append(clutter)
    obj.append(np.full(20, -1))
    seg.append(np.full(20, next_seg))
    points = np.concatenate(pts).astype(np.float32)
    seg_ids = np.concatenate(seg)
    raw_ids = rng.permutation(5000)[: seg_ids.max() + 1] * 7 + 3  # arbitrary, non-contiguous segment ids
    colors = rng.integers(0, 256, (len(points), 3)).astype(np.uint8)
    return points, colors, raw_ids[seg_ids], np.concatenate(obj)


def write_tiny_raw(root: Path, seed: int = 0) -> Path:
    """Write 3 scenes (2 train, 1 val), the label tsv, split files and a ScanRefer JSON under ``root``."""
    rng = np.random.default_rng(seed)
    write_label_map(root / "scannetv2-labels.combined.tsv", _TSV)
    scenes = {"scene0000_00": "train", "scene0001_00": "train", "scene0002_00": "val"}
    for split in ("train", "val"):
        (root / f"scannetv2_{split}.txt").write_text(
            "\n".join(s for s, sp in scenes.items() if sp == split) + "\n")
    for si, sid in enumerate(scenes):
        d = root / "scans" / sid
        d.mkdir(parents=True)
        points, colors, seg, obj = _scene(rng, shift=0.1 * si)
        faces = rng.integers(0, len(points), (len(points), 3))
        vertex = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "red": colors[:, 0],
                  "green": colors[:, 1], "blue": colors[:, 2], "alpha": np.full(len(points), 255, np.uint8)}
        write_ply(d / f"{sid}_vh_clean_2.ply", vertex, faces, binary=True)
        nyu = np.array([o[1] for o in TINY_OBJECTS] + [0])[obj].astype(np.uint16)
        write_ply(d / f"{sid}_vh_clean_2.labels.ply", {**vertex, "label": nyu}, faces, binary=si != 1)
        (d / f"{sid}_vh_clean_2.0.010000.segs.json").write_text(
            json.dumps({"sceneId": sid, "segIndices": seg.tolist()}))
        groups = [{"id": oi, "objectId": 10 + oi, "label": o[0],
                   "segments": np.unique(seg[obj == oi]).tolist()} for oi, o in enumerate(TINY_OBJECTS)]
        (d / f"{sid}.aggregation.json").write_text(json.dumps({"sceneId": sid, "segGroups": groups}))
        np.savez(root / f"truth_{sid}.npz", points=points, seg=seg, object=obj)
    refs = [("scene0000_00", 12, "the chair near the wall"), ("scene0000_00", 13, "a wooden table"),
            ("scene0001_00", 15, "the couch by the window"), ("scene0001_00", 99, "no such object"),
            ("scene0002_00", 14, "the tall lamp in the corner")]
    (root / "ScanRefer_filtered.json").write_text(json.dumps([
        {"scene_id": s, "object_id": str(o), "ann_id": "0", "object_name": "x", "description": t}
        for s, o, t in refs]))
    return root
