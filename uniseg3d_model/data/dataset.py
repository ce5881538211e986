"""Processed ScanNet scenes -> :class:`SceneSample` with multi-task prompts.

``ScanNetDataset(root, split)`` reads ``<root>/<split>/*.npz`` (written by
:func:`uniseg3d_model.data.scannet.prepare_scannet`) and ``<root>/<split>_referring.json``.
Each item carries every task's supervision at once (UniSeg3D trains all tasks jointly):

- panoptic/semantic/instance labels in the chosen label set (``scannet20`` or ``scannet200``);
  instances are the objects whose class is a "thing" of that set, re-indexed 0..I-1;
- interactive: one click per instance (up to ``num_clicks``; None = every instance, the
  official setting), see :mod:`.prompts` (``click_instance`` is the target);
- referring: ScanRefer sentences of the scene, one per described object (up to ``num_texts``;
  None = every object, official) (``text_instance``);
- training augmentation (:mod:`.augment`), ``voxel_points`` when the elastic distortion only
  moves the voxel placement (official), and ``pseudo_masks`` when the scene has them.

:func:`make_sample` is shared with the reader of the official prepared data
(:mod:`.official_data`), so both layouts give the same sample for the same scene.

Randomness (augmentation, prompt sampling) comes from a Generator seeded by
``(seed, epoch, index)``, so an item is a pure function of those: resumable and worker-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d_model.data.augment import AugmentConfig, augment_scene
from uniseg3d_model.data.labels import IGNORE_INDEX, LABEL_SET_IS_THING, LABEL_SETS
from uniseg3d_model.data.prompts import CLICK_MODES, TEXT_MODES, sample_clicks, sample_texts
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


def make_sample(data: dict, referring: list[dict], label_set: str, rng: np.random.Generator | None,
                augment_cfg: AugmentConfig, num_clicks: int | None, num_texts: int | None, scene_id: str,
                vocabulary: list[str] | None, click_mode: str = "official",
                text_mode: str = "per_object") -> SceneSample:
    """One training/evaluation sample from a scene's arrays (keys of :data:`scannet.PROCESSED_KEYS`,
    optionally ``pseudo_masks`` (M, S) bool); ``rng`` None = no augmentation, deterministic prompts."""
    suffix = "20" if label_set == "scannet20" else "200"
    instance, inst_cls, old_to_new = select_instances(
        data["instance"], data["instance_class" if suffix == "20" else "instance_class200"],
        LABEL_SET_IS_THING[label_set])
    points, colors, voxel_points = data["points"], data["colors"], None
    if rng is not None:
        points, colors, voxel_points = augment_scene(points, colors, rng, augment_cfg)
    clicks, click_inst = sample_clicks(points, instance, len(inst_cls), num_clicks, rng, mode=click_mode)
    texts, text_inst = sample_texts(referring, old_to_new, num_texts, rng, mode=text_mode)
    pseudo = data.get("pseudo_masks")
    return SceneSample(points=points, colors=colors, superpoints=data["superpoints"], scene_id=scene_id,
                       semantic=data[f"semantic{suffix}"], instance=instance, instance_class=inst_cls,
                       clicks=clicks, click_instance=click_inst, texts=texts, text_instance=text_inst,
                       vocabulary=vocabulary, voxel_points=voxel_points,
                       pseudo_masks=None if pseudo is None else np.asarray(pseudo, bool))


def check_prompt_args(label_set: str, num_clicks: int | None, num_texts: int | None, click_mode: str,
                      text_mode: str) -> None:
    if label_set not in LABEL_SETS:
        raise ValueError(f"label_set must be one of {sorted(LABEL_SETS)}, got {label_set!r}")
    if (num_clicks is not None and num_clicks < 0) or (num_texts is not None and num_texts < 0):
        raise ValueError(f"num_clicks/num_texts must be >= 0 or None, got {num_clicks}/{num_texts}")
    if click_mode not in CLICK_MODES or text_mode not in TEXT_MODES:
        raise ValueError(f"click_mode must be one of {CLICK_MODES} and text_mode one of {TEXT_MODES}, "
                         f"got {click_mode!r}/{text_mode!r}")


class PromptedScenes:
    """What both dataset layouts share: the prompt and augmentation settings, the epoch that
    changes the draws, and the sample assembly (:func:`make_sample`); a subclass reads scene
    ``index`` (:meth:`_read`) and says how many there are."""

    def _settings(self, augment: bool, num_clicks: int | None, num_texts: int | None, label_set: str,
                  seed: int, augment_cfg: AugmentConfig | None, vocabulary: list[str] | None,
                  click_mode: str, text_mode: str, use_pseudo_masks: bool) -> None:
        check_prompt_args(label_set, num_clicks, num_texts, click_mode, text_mode)
        self.augment, self.num_clicks, self.num_texts = augment, num_clicks, num_texts
        self.click_mode, self.text_mode, self.use_pseudo_masks = click_mode, text_mode, use_pseudo_masks
        self.label_set, self.seed, self.epoch = label_set, seed, 0
        self.augment_cfg = augment_cfg or AugmentConfig()
        self.vocabulary = vocabulary

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation/prompt draws (call before each epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    def _read(self, index: int) -> tuple[dict, list[dict], str]:
        """(scene arrays, referring entries, scene id) of scene ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> SceneSample:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        data, referring, scene_id = self._read(index)
        if not self.use_pseudo_masks:
            data.pop("pseudo_masks", None)
        return make_sample(data, referring, self.label_set, rng, self.augment_cfg, self.num_clicks,
                           self.num_texts, scene_id, self.vocabulary, self.click_mode, self.text_mode)


class ScanNetDataset(PromptedScenes):
    """Map-style dataset over ``<root>/<split>/*.npz``; ``ds[i] -> SceneSample``.

    ``augment``: training augmentation (:class:`AugmentConfig`) and random prompt sampling;
    without it the clicks/sentences are deterministic. ``label_set``: ``"scannet20"`` or
    ``"scannet200"`` (the latter sets ``vocabulary`` to the 200 class names).
    ``click_mode`` / ``text_mode``: see :mod:`.prompts` (defaults: the official recipe);
    ``use_pseudo_masks=False`` drops the stand-in pseudo masks.
    """

    def __init__(self, root: str | Path, split: str, augment: bool = False, num_clicks: int | None = 8,
                 num_texts: int | None = 4, label_set: str = "scannet20", seed: int = 0,
                 augment_cfg: AugmentConfig | None = None, vocabulary: list[str] | None = None,
                 scenes: list[str] | None = None, click_mode: str = "official",
                 text_mode: str = "per_object", use_pseudo_masks: bool = True) -> None:
        if vocabulary is None and label_set == "scannet200":
            vocabulary = list(LABEL_SETS[label_set])
        self._settings(augment, num_clicks, num_texts, label_set, seed, augment_cfg, vocabulary, click_mode,
                       text_mode, use_pseudo_masks)
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

    def __len__(self) -> int:
        return len(self.files)

    @property
    def scene_ids(self) -> list[str]:
        return [f.stem for f in self.files]

    def _read(self, index: int) -> tuple[dict, list[dict], str]:
        path = self.files[index]
        return load_processed(path), self.referring.get(path.stem, []), path.stem


__all__ = ["PromptedScenes", "ScanNetDataset", "collate_scenes", "make_sample", "sample_clicks",
           "sample_texts", "select_instances"]
