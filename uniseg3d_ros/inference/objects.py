"""Persistent objects, pure numpy: instance ids that survive map versions and segmentations.

Every ``~/segment`` run produces instances whose ids are only ranks within that run. The
:class:`ObjectMap` associates each new run's instances with the objects it already knows, by the
overlap of their voxel sets on a fixed grid in the map frame (``voxel_size``, the map's grid), so
"object 7" names the same chair a minute later while the map grows and the model is re-run.

Rules (``ObjectConfig``; documented in docs/ros_node.md, "Persistent objects"):

1. *Link*: a new instance n and a known object o are linked when
   ``|n ∩ o| / min(|n|, |o|) >= min_overlap`` (voxel counts). Dividing by the smaller set makes a
   partly seen object that grows with the map keep linking to its earlier, smaller self.
2. *Match*: links are taken greedily by intersection size (largest first; ties: older id first),
   one known object per new instance and one new instance per known object. A matched instance
   takes the object's id; the object's geometry (voxels, centroid, box, point count) becomes the
   instance's, ``last_seen`` the run's stamp.
3. *Merge*: a known object that is not matched but lies mostly inside a matched instance
   (``|n ∩ o| / |o| >= min_overlap``) merges into it: the merged object keeps the OLDEST
   (smallest) id of the group, the others are retired with ``merged_into`` set.
4. *Split*: a new instance linked only to objects that another instance took gets a new id and
   remembers the object it split from (``split_from``); the larger part keeps the old id (rule 2).
5. *New*: any other unmatched instance gets a new id; ids are never reused.
6. *Retire*: a known object that no instance matched is *missed*; it is retired after
   ``retire_after`` consecutive misses, or at once when less than ``min_present`` of its voxels
   are still in the map (cleared or evicted).

Class: each match adds the instance's score to a vote for its class; the object's class is the
class with the largest vote (a one-off flicker does not relabel it) and its score that vote
divided by the matches (mean confidence in that class).

Shapes: ``points`` (N, 3) float32/64 in the map frame [m]; ``point_indices`` (K,) int rows of it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = [
    "ObjectConfig",
    "ObjectMap",
    "ObjectUpdate",
    "PersistentObject",
    "voxel_keys",
]

_BITS = 21  # per axis: +-2^20 voxels (21 km at 2 cm) fit a packed int64 key
_OFFSET = 1 << (_BITS - 1)


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Sorted unique int64 keys of the grid cells ``floor(points / voxel_size)``; points (N, 3)."""
    cells = np.floor(np.asarray(points, dtype=np.float64).reshape(-1, 3) / voxel_size).astype(np.int64)
    cells = np.clip(cells + _OFFSET, 0, (1 << _BITS) - 1)
    keys = (cells[:, 0] << (2 * _BITS)) | (cells[:, 1] << _BITS) | cells[:, 2]
    return np.unique(keys)


@dataclass
class ObjectConfig:
    """Association rules (see the module docstring)."""

    voxel_size: float = 0.02
    min_overlap: float = 0.5
    retire_after: int = 3
    min_present: float = 0.5

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if not 0 < self.min_overlap <= 1:
            raise ValueError(f"min_overlap must be in (0, 1], got {self.min_overlap}")
        if self.retire_after < 1:
            raise ValueError(f"retire_after must be >= 1, got {self.retire_after}")
        if not 0 <= self.min_present <= 1:
            raise ValueError(f"min_present must be in [0, 1], got {self.min_present}")


@dataclass
class PersistentObject:
    """One tracked object. ``voxels`` sorted unique int64 keys; geometry in the map frame [m];
    ``first_seen`` / ``last_seen`` stamps [s] of the map data of the runs that saw it."""

    id: int
    class_id: int
    label: str
    score: float
    voxels: np.ndarray
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    point_count: int
    first_seen: float
    last_seen: float
    times_seen: int = 1
    misses: int = 0
    votes: dict[int, float] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)

    def vote(self, class_id: int, label: str, score: float) -> None:
        self.votes[class_id] = self.votes.get(class_id, 0.0) + float(score)
        self.labels.setdefault(class_id, label)
        best = max(self.votes, key=lambda c: (self.votes[c], -c))
        self.class_id, self.label = best, self.labels[best]
        self.score = self.votes[best] / max(1, self.times_seen)


@dataclass
class ObjectUpdate:
    """What one :meth:`ObjectMap.update` did. ``ids[i]``: persistent id of instance i."""

    ids: list[int]
    created: list[int] = field(default_factory=list)
    retired: dict[int, int] = field(default_factory=dict)  # retired id -> merged into (-1: not merged)
    split_from: dict[int, int] = field(default_factory=dict)  # new id -> the object it split from


class ObjectMap:
    """The node's persistent objects. Thread-safe (one lock around every method)."""

    def __init__(self, cfg: ObjectConfig | None = None) -> None:
        self.cfg = cfg or ObjectConfig()
        self.objects: dict[int, PersistentObject] = {}
        self.next_id = 1  # 0 is never an object id
        self.map_version = -1
        self.last_update = ObjectUpdate(ids=[])
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ queries
    def snapshot(self) -> list[PersistentObject]:
        """Copies of the live objects, ascending id."""
        with self._lock:
            return [replace(o) for _, o in sorted(self.objects.items())]

    def __len__(self) -> int:
        return len(self.objects)

    def lookup(self, points: np.ndarray, point_indices: np.ndarray) -> int:
        """The id of the object a mask (rows ``point_indices`` of ``points``) hits: the linked
        object (rule 1) with the largest intersection; -1 when none."""
        keys = voxel_keys(np.asarray(points)[np.asarray(point_indices, dtype=np.int64)], self.cfg.voxel_size)
        with self._lock:
            ids = sorted(self.objects)
            if not len(keys) or not ids:
                return -1
            inter = _intersections([keys], [self.objects[i].voxels for i in ids])[0]
            sizes = np.array([len(self.objects[i].voxels) for i in ids])
            linked = inter / np.maximum(np.minimum(sizes, len(keys)), 1) >= self.cfg.min_overlap
            if not linked.any():
                return -1
            best = np.flatnonzero(linked)[np.argmax(inter[linked])]
            return ids[int(best)]

    # ------------------------------------------------------------------ updates
    def clear(self) -> None:
        """Forget every object (ids keep counting: an id is never reused)."""
        with self._lock:
            retired = {i: -1 for i in self.objects}
            self.objects.clear()
            self.last_update = ObjectUpdate(ids=[], retired=retired)

    def update(
        self,
        points: np.ndarray,
        instances: Sequence[Any],
        stamp: float,
        map_version: int = -1,
    ) -> ObjectUpdate:
        """Associate one segmentation run with the known objects (rules in the module docstring).

        ``points`` (N, 3): the snapshot the run segmented (all of it: it also tells which known
        objects are still in the map); ``instances``: objects with ``point_indices``, ``class_id``,
        ``label``, ``score``, ``centroid``, ``bbox_min``, ``bbox_max``; ``stamp`` [s]."""
        cfg = self.cfg
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        new_keys = [
            voxel_keys(pts[np.asarray(i.point_indices, dtype=np.int64)], cfg.voxel_size) for i in instances
        ]
        present = voxel_keys(pts, cfg.voxel_size)
        with self._lock:
            old_ids = sorted(self.objects)
            old_keys = [self.objects[i].voxels for i in old_ids]
            inter = _intersections(new_keys, old_keys)  # (n_new, n_old)
            n_size = np.array([len(k) for k in new_keys], dtype=np.int64)
            o_size = np.array([len(k) for k in old_keys], dtype=np.int64)
            denom = np.maximum(np.minimum(n_size[:, None], o_size[None, :]), 1)
            linked = (inter / denom >= cfg.min_overlap) & (inter > 0)

            # rule 2: greedy one-to-one matching, largest intersection first, older id on ties
            pairs = sorted(zip(*np.nonzero(linked)), key=lambda p: (-inter[p], p[1], p[0]))
            new_to_old: dict[int, int] = {}
            old_taken: set[int] = set()
            for n, o in pairs:
                if n not in new_to_old and o not in old_taken:
                    new_to_old[int(n)] = int(o)
                    old_taken.add(int(o))

            update = ObjectUpdate(ids=[-1] * len(instances))
            # rule 3: unmatched objects mostly inside a matched instance merge into it
            for n, o in new_to_old.items():
                group = [o] + [
                    int(j)
                    for j in np.flatnonzero(linked[n])
                    if int(j) not in old_taken and inter[n, j] / max(o_size[j], 1) >= cfg.min_overlap
                ]
                old_taken.update(group)
                keep = min(old_ids[j] for j in group)
                merged = [self.objects[old_ids[j]] for j in group]
                target = self.objects[keep]
                for obj in merged:
                    if obj.id != keep:
                        _absorb(target, obj)
                        del self.objects[obj.id]
                        update.retired[obj.id] = keep
                target.times_seen += 1
                target.misses = 0
                _set_geometry(target, instances[n], new_keys[n], stamp)
                target.vote(int(instances[n].class_id), str(instances[n].label), float(instances[n].score))
                update.ids[n] = keep
            # rules 4 and 5: new ids (split parts remember their origin)
            for n, inst in enumerate(instances):
                if update.ids[n] != -1 or len(new_keys[n]) == 0:
                    continue
                obj = PersistentObject(
                    id=self.next_id,
                    class_id=-1,
                    label="",
                    score=0.0,
                    voxels=new_keys[n],
                    centroid=np.zeros(3),
                    bbox_min=np.zeros(3),
                    bbox_max=np.zeros(3),
                    point_count=0,
                    first_seen=float(stamp),
                    last_seen=float(stamp),
                )
                _set_geometry(obj, inst, new_keys[n], stamp)
                obj.vote(int(inst.class_id), str(inst.label), float(inst.score))
                self.objects[obj.id] = obj
                self.next_id += 1
                update.ids[n] = obj.id
                update.created.append(obj.id)
                parents = [old_ids[j] for j in np.flatnonzero(linked[n]) if int(j) in old_taken]
                if parents:
                    update.split_from[obj.id] = min(parents)
            # rule 6: misses and objects gone from the map
            for j, oid in enumerate(old_ids):
                if j in old_taken or oid not in self.objects:
                    continue
                obj = self.objects[oid]
                kept = np.isin(obj.voxels, present, assume_unique=True).mean() if len(obj.voxels) else 0.0
                obj.misses += 1
                if kept < cfg.min_present or obj.misses >= cfg.retire_after:
                    del self.objects[oid]
                    update.retired[oid] = -1
            self.map_version = int(map_version)
            self.last_update = update
            return update


def _intersections(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """(len(a), len(b)) int64 sizes of the intersections of sorted unique key arrays: one sorted
    index over every key of ``b`` (a key may belong to several arrays), one binary search per key
    of ``a``."""
    out = np.zeros((len(a), len(b)), dtype=np.int64)
    if not len(a) or not len(b):
        return out
    keys = np.concatenate(b)
    owner = np.repeat(np.arange(len(b)), [len(k) for k in b])
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    probe = np.concatenate(a)
    row = np.repeat(np.arange(len(a)), [len(k) for k in a])
    lo = np.searchsorted(keys, probe, "left")
    n = np.searchsorted(keys, probe, "right") - lo  # how many arrays of b hold each probed key
    total = int(n.sum())
    if total:
        hits = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(total)  # every matching row of keys
        pair = np.repeat(row, n) * len(b) + owner[hits]
        out += np.bincount(pair, minlength=len(a) * len(b)).reshape(len(a), len(b))
    return out


def _set_geometry(obj: PersistentObject, inst: Any, keys: np.ndarray, stamp: float) -> None:
    obj.voxels = keys
    obj.centroid = np.asarray(inst.centroid, dtype=np.float64).copy()
    obj.bbox_min = np.asarray(inst.bbox_min, dtype=np.float64).copy()
    obj.bbox_max = np.asarray(inst.bbox_max, dtype=np.float64).copy()
    obj.point_count = len(inst.point_indices)
    obj.last_seen = max(obj.last_seen, float(stamp))


def _absorb(target: PersistentObject, other: PersistentObject) -> None:
    """Fold ``other``'s history into ``target`` (a merge)."""
    target.first_seen = min(target.first_seen, other.first_seen)
    target.times_seen += other.times_seen
    for c, v in other.votes.items():
        target.votes[c] = target.votes.get(c, 0.0) + v
        target.labels.setdefault(c, other.labels.get(c, ""))
