"""A small labelled synthetic room for the model tests: floor, wall and four coloured boxes
(ScanNet20 classes), superpoints from a 0.25 m grid split at label boundaries, one click
and one sentence per box."""

from __future__ import annotations

import numpy as np

from uniseg3d_model.data.labels import IGNORE_INDEX, SCANNET20_CLASSES
from uniseg3d_model.structures import SceneSample
from uniseg3d_model.text_encoders import build_text_encoder

C = {name: i for i, name in enumerate(SCANNET20_CLASSES)}
BOXES = [  # centre xy, size xyz, class, colour, sentence
    ((0.6, 0.6), (0.40, 0.40, 0.80), "chair", (0.85, 0.15, 0.10), "the red chair near the corner"),
    ((1.4, 1.4), (0.80, 0.60, 0.70), "table", (0.10, 0.20, 0.85), "the blue table in the middle"),
    ((1.5, 0.5), (0.70, 0.50, 0.40), "bed", (0.10, 0.75, 0.20), "the low green bed"),
    ((0.3, 1.6), (0.30, 0.50, 1.00), "cabinet", (0.90, 0.80, 0.10), "the tall yellow cabinet by the wall"),
]


def _plane(rng, origin, u, v, density):
    area = np.linalg.norm(u) * np.linalg.norm(v)
    n = max(8, int(area * density))
    a, b = rng.random((n, 1)), rng.random((n, 1))
    return np.asarray(origin) + a * np.asarray(u) + b * np.asarray(v)


def _box(rng, center_xy, size, density):
    (cx, cy), (sx, sy, sz) = center_xy, size
    x0, y0 = cx - sx / 2, cy - sy / 2
    faces = [
        ((x0, y0, sz), (sx, 0, 0), (0, sy, 0)),  # top
        ((x0, y0, 0), (sx, 0, 0), (0, 0, sz)),
        ((x0, y0 + sy, 0), (sx, 0, 0), (0, 0, sz)),
        ((x0, y0, 0), (0, sy, 0), (0, 0, sz)),
        ((x0 + sx, y0, 0), (0, sy, 0), (0, 0, sz)),
    ]
    return np.concatenate([_plane(rng, o, u, v, density) for o, u, v in faces])


def make_room(seed: int = 0, density: float = 250.0, size: float = 2.0) -> SceneSample:
    """A labelled room of roughly ``(size**2 + 1.5 size + boxes) * density`` points."""
    rng = np.random.default_rng(seed)
    pts, cols, sem, inst = [], [], [], []

    def add(p, color, label, instance):
        pts.append(p)
        cols.append(np.clip(np.asarray(color) + rng.normal(0, 0.03, (len(p), 3)), 0, 1))
        sem.append(np.full(len(p), label))
        inst.append(np.full(len(p), instance))

    floor = _plane(rng, (0, 0, 0), (size, 0, 0), (0, size, 0), density)
    for (cx, cy), (sx, sy, _), *_ in BOXES:  # no floor under boxes
        inside = (np.abs(floor[:, 0] - cx) < sx / 2) & (np.abs(floor[:, 1] - cy) < sy / 2)
        floor = floor[~inside]
    add(floor, (0.55, 0.55, 0.55), C["floor"], IGNORE_INDEX)
    add(
        _plane(rng, (0, 0, 0), (0, size, 0), (0, 0, 1.5), density), (0.9, 0.85, 0.75), C["wall"], IGNORE_INDEX
    )
    for i, (center, bsize, cls, color, _) in enumerate(BOXES):
        add(_box(rng, center, bsize, density), color, C[cls], i)
    points = np.concatenate(pts).astype(np.float32)
    semantic = np.concatenate(sem).astype(np.int64)
    instance = np.concatenate(inst).astype(np.int64)
    # superpoints: 0.25 m cells, split where the semantic/instance label changes
    cell = np.floor(points / 0.25).astype(np.int64)
    key = np.stack([cell[:, 0], cell[:, 1], cell[:, 2], semantic, instance], 1)
    _, superpoints = np.unique(key, axis=0, return_inverse=True)
    clicks, click_instance = [], []
    for i in range(len(BOXES)):
        idx = np.flatnonzero(instance == i)
        clicks.append(points[idx[rng.integers(len(idx))]])
        click_instance.append(i)
    return SceneSample(
        points=points,
        colors=np.concatenate(cols).astype(np.float32),
        superpoints=superpoints.reshape(-1).astype(np.int64),
        scene_id=f"room{seed}",
        semantic=semantic,
        instance=instance,
        instance_class=np.array([C[b[2]] for b in BOXES], dtype=np.int64),
        clicks=np.stack(clicks).astype(np.float32),
        click_instance=np.array(click_instance, dtype=np.int64),
        texts=[b[4] for b in BOXES],
        text_instance=np.arange(len(BOXES), dtype=np.int64),
    )


def text_encoder():
    """The deterministic, weight-free test text encoder."""
    return build_text_encoder("hash")
