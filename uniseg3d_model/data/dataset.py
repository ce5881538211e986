"""Processed ScanNet scenes -> :class:`SceneSample` with multi-task prompts.

``ScanNetDataset(root, split)`` reads ``<root>/<split>/*.npz`` (written by
:func:`uniseg3d_model.data.scannet.prepare_scannet`) and ``<root>/<split>_referring.json``.
Each item carries every task's supervision at once (UniSeg3D trains all tasks jointly):

- panoptic/semantic/instance labels in the chosen label set (``scannet20`` or ``scannet200``);
  instances are the objects whose class is a "thing" of that set, re-indexed 0..I-1;
- interactive: up to ``num_clicks`` clicks, one per sampled instance, each a point of the
  instance near its centre (``click_instance`` is the target);
- referring: up to ``num_texts`` ScanRefer sentences of the scene (``text_instance``).

Randomness (augmentation, prompt sampling) comes from a Generator seeded by
``(seed, epoch, index)``, so an item is a pure function of those: resumable and worker-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d_model.data.augment import AugmentConfig, augment_scene
from uniseg3d_model.data.labels import IGNORE_INDEX, LABEL_SET_IS_THING, LABEL_SETS
from uniseg3d_model.data.scannet import load_processed
from uniseg3d_model.data.scanrefer import read_referring
from uniseg3d_model.structures import SceneSample, collate_scenes


@dataclass
class Prompts:
    clicks: np.ndarray  # (K, 3) float32 metres
    click_instance: np.ndarray  # (K,) int64
    texts: list[str]
    text_instance: np.ndarray  # (T,) int64


def select_instances(instance: np.ndarray, instance_class: np.ndarray,
                     is_thing: tuple[bool, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep instances whose class is a thing of the label set and that have points.

    Returns ``(instance (N,) re-indexed or IGNORE_INDEX, instance_class (I',), old_to_new (I,))``.
    """
    cls = np.asarray(instance_class, np.int64)
    thing = np.asarray(is_thing, bool)
    valid = (cls >= 0) & thing[np.clip(cls, 0, len(thing) - 1)]
    has_points = np.bincount(instance[instance >= 0], minlength=len(cls))[: len(cls)] > 0
    keep = valid & has_points
    old_to_new = np.full(len(cls) + 1, IGNORE_INDEX, np.int64)  # trailing slot absorbs IGNORE lookups
    old_to_new[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    new_instance = old_to_new[np.where(instance >= 0, instance, len(cls))]
    return new_instance.astype(np.int64), cls[keep], old_to_new[:-1]


def sample_clicks(points: np.ndarray, instance: np.ndarray, num_instances: int, num_clicks: int,
                  rng: np.random.Generator | None,
                  centre_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """One click for each of up to ``num_clicks`` instances (sampled without replacement).

    The click is a point of the instance among the ``centre_fraction`` closest to its centroid,
    drawn at random with ``rng``; with ``rng=None`` the point closest to the centroid, for the
    first ``num_clicks`` instances (deterministic evaluation). Returns ``((K,3) float32, (K,) int64)``.
    """
    k = min(num_clicks, num_instances)
    if k == 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    targets = np.sort(rng.choice(num_instances, k, replace=False)) if rng is not None else np.arange(k)
    clicks = np.empty((k, 3), np.float32)
    for j, inst in enumerate(targets):  # K instances, each vectorized over its points
        pts = points[instance == inst]
        dist = np.linalg.norm(pts - pts.mean(0), axis=1)
        if rng is None:
            clicks[j] = pts[np.argmin(dist)]
        else:
            m = max(1, int(np.ceil(centre_fraction * len(pts))))
            near = np.argpartition(dist, m - 1)[:m]
            clicks[j] = pts[near[rng.integers(m)]]
    return clicks, targets.astype(np.int64)


def sample_texts(entries: list[dict], old_to_new: np.ndarray, num_texts: int,
                 rng: np.random.Generator | None) -> tuple[list[str], np.ndarray]:
    """Up to ``num_texts`` sentences whose instance survives the label-set selection."""
    usable = [(e["description"], int(old_to_new[e["instance"]])) for e in entries
              if 0 <= e["instance"] < len(old_to_new) and old_to_new[e["instance"]] >= 0]
    t = min(num_texts, len(usable))
    order = np.sort(rng.choice(len(usable), t, replace=False)) if rng is not None else np.arange(t)
    return [usable[i][0] for i in order], np.array([usable[i][1] for i in order], np.int64)


class ScanNetDataset:
    """Map-style dataset over ``<root>/<split>/*.npz``; ``ds[i] -> SceneSample``.

    ``augment``: training augmentation (:class:`AugmentConfig`) and random prompt sampling;
    without it the clicks/sentences are deterministic. ``label_set``: ``"scannet20"`` or
    ``"scannet200"`` (the latter sets ``vocabulary`` to the 200 class names).
    """

    def __init__(self, root: str | Path, split: str, augment: bool = False, num_clicks: int = 8,
                 num_texts: int = 4, label_set: str = "scannet20", seed: int = 0,
                 augment_cfg: AugmentConfig | None = None, vocabulary: list[str] | None = None,
                 scenes: list[str] | None = None) -> None:
        if label_set not in LABEL_SETS:
            raise ValueError(f"label_set must be one of {sorted(LABEL_SETS)}, got {label_set!r}")
        if num_clicks < 0 or num_texts < 0:
            raise ValueError(f"num_clicks/num_texts must be >= 0, got {num_clicks}/{num_texts}")
        self.root, self.split = Path(root), split
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"processed split folder not found: {folder}")
        self.files = sorted(folder.glob("*.npz"))
        if scenes is not None:
            wanted = set(scenes)
            self.files = [f for f in self.files if f.stem in wanted]
        if not self.files:
            raise ValueError(f"{folder}: no processed scenes (*.npz)")
        self.referring = read_referring(self.root / f"{split}_referring.json")
        self.augment, self.num_clicks, self.num_texts = augment, num_clicks, num_texts
        self.label_set, self.seed, self.epoch = label_set, seed, 0
        self.augment_cfg = augment_cfg or AugmentConfig()
        self.vocabulary = vocabulary if vocabulary is not None else (
            list(LABEL_SETS[label_set]) if label_set == "scannet200" else None)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation/prompt draws (call before each epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    @property
    def scene_ids(self) -> list[str]:
        return [f.stem for f in self.files]

    def __getitem__(self, index: int) -> SceneSample:
        path = self.files[index]
        data = load_processed(path)
        suffix = "20" if self.label_set == "scannet20" else "200"
        semantic = data[f"semantic{suffix}"]
        instance, inst_cls, old_to_new = select_instances(
            data["instance"], data["instance_class" if suffix == "20" else "instance_class200"],
            LABEL_SET_IS_THING[self.label_set])
        points, colors = data["points"], data["colors"]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        if rng is not None:
            points, colors = augment_scene(points, colors, rng, self.augment_cfg)
        clicks, click_inst = sample_clicks(points, instance, len(inst_cls), self.num_clicks, rng)
        texts, text_inst = sample_texts(self.referring.get(path.stem, []), old_to_new, self.num_texts, rng)
        return SceneSample(points=points, colors=colors, superpoints=data["superpoints"], scene_id=path.stem,
                           semantic=semantic, instance=instance, instance_class=inst_cls, clicks=clicks,
                           click_instance=click_inst, texts=texts, text_instance=text_inst,
                           vocabulary=self.vocabulary)


__all__ = ["ScanNetDataset", "collate_scenes", "sample_clicks", "sample_texts", "select_instances"]
