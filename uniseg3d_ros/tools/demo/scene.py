"""The demo's ground truth side, pure numpy: a seeded synthetic room recorded as an RGB-D sequence,
labels transferred from the room's mesh to the fused map, and the scores of query answers.

Frames and units: everything is in the map frame (REP 105, z up, metres), the frame the generator
builds the room in and the node fuses into (the sequence's poses are camera optical frame -> map).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniseg3d_model.data.labels import NYU40_TO_SCANNET20, SCANNET20_CLASSES
from uniseg3d_model.synthetic.scene import SyntheticObject, SyntheticScene
from uniseg3d_model.synthetic.sentences import Referral

STRUCTURE = ("wall", "floor")


@dataclass
class DemoRoom:
    """A generated room and where its recording lives. ``referrals``: ScanRefer-style sentences
    about it, each naming its target ``object_id`` (the ground truth of ``~/refer``)."""

    scene: SyntheticScene
    sequence_dir: Path
    referrals: list[Referral]
    num_frames: int


def make_room(
    out: Path, seed: int, frames: int, width: int, height: int, room_type: str | None = None
) -> DemoRoom:
    """Generate room ``seed`` (optionally of ``room_type``), render ``frames`` RGB-D frames of
    ``width`` x ``height`` along a loop around it into ``out/sequence`` and write its ground truth
    (``out/ground_truth.npz``: mesh vertices, NYU40 / ScanNet20 / objectId per vertex;
    ``out/ground_truth.json``: objects and sentences). Raises ValueError for bad sizes."""
    from uniseg3d_model.data.rgbd_sequence import write_sequence
    from uniseg3d_model.synthetic.render import CameraConfig, render_sequence
    from uniseg3d_model.synthetic.scene import generate_scene
    from uniseg3d_model.synthetic.sentences import scene_referrals

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    cam = CameraConfig(width=width, height=height)  # validates the size
    scene = generate_scene(seed, f"demo{seed:04d}_00", room_type=room_type)
    referrals = scene_referrals(scene, np.random.default_rng(seed))
    seq_dir = write_sequence(
        out / "sequence",
        render_sequence(scene, frames, cam),
        fps=cam.fps,
        extra={"scene_id": scene.scene_id, "source": "uniseg3d_demo synthetic room", "seed": seed},
    )
    np.savez_compressed(
        out / "ground_truth.npz",
        vertices=scene.vertices,
        colors=scene.colors,
        nyu40=scene.semantic,
        semantic20=vertex_semantic20(scene),
        object_id=scene.instance,
    )
    meta = {
        "scene_id": scene.scene_id,
        "seed": seed,
        "room_type": scene.room_type,
        "objects": [
            {
                "object_id": o.object_id,
                "category": o.raw_category,
                "nyu40class": o.nyu40class,
                "color": o.color_name,
                "annotated": o.annotated,
                "center": np.round(o.center, 3).tolist(),
            }
            for o in scene.objects
        ],
        "sentences": [{"object_id": r.object_id, "description": r.description} for r in referrals],
    }
    (out / "ground_truth.json").write_text(json.dumps(meta, indent=1))
    return DemoRoom(scene, seq_dir, referrals, frames)


def vertex_semantic20(scene: SyntheticScene) -> np.ndarray:
    """(V,) int64 ScanNet20 class index per mesh vertex, -1 for unannotated / other classes."""
    lut = np.full(max(41, int(scene.semantic.max()) + 1), -1, np.int64)
    for nyu, idx in NYU40_TO_SCANNET20.items():
        lut[nyu] = idx
    return lut[scene.semantic]


@dataclass
class MapTruth:
    """Ground truth of the N fused map points. ``semantic``: (N,) ScanNet20 index (-1 none);
    ``object_id``: (N,) generator objectId (-1 when farther than the transfer radius);
    ``distance``: (N,) metres to the nearest mesh vertex."""

    semantic: np.ndarray
    object_id: np.ndarray
    distance: np.ndarray

    def mask(self, object_id: int) -> np.ndarray:
        """(N,) bool: map points of object ``object_id``."""
        return self.object_id == int(object_id)

    def point_counts(self) -> dict[int, int]:
        ids, counts = np.unique(self.object_id[self.object_id >= 0], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}


def transfer_labels(scene: SyntheticScene, points: np.ndarray, max_distance: float = 0.1) -> MapTruth:
    """Label map ``points`` (N, 3) float (map frame, metres) by their nearest mesh vertex
    (scipy cKDTree); points farther than ``max_distance`` metres get -1 labels."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    dist, idx = cKDTree(scene.vertices.astype(np.float64)).query(pts, k=1)
    near = dist <= max_distance
    sem = np.where(near, vertex_semantic20(scene)[idx], -1)
    obj = np.where(near, scene.instance[idx], -1)
    return MapTruth(sem.astype(np.int64), obj.astype(np.int64), dist)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (N,) bool masks (0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def indices_to_mask(indices: np.ndarray, n: int) -> np.ndarray:
    """(K,) point indices -> (n,) bool mask; raises ValueError on an index outside [0, n)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"point index {int(idx.max())} outside a map of {n} points")
    mask = np.zeros(n, bool)
    mask[idx] = True
    return mask


def best_match(mask: np.ndarray, truth: MapTruth, candidates: list[int] | None = None) -> tuple[int, float]:
    """(object_id, IoU) of the ground-truth object (among ``candidates``, default all) that
    overlaps ``mask`` (N,) best; (-1, 0.0) when nothing overlaps."""
    hit = truth.object_id[np.asarray(mask, bool)]
    hit = hit[hit >= 0]
    if candidates is not None:
        hit = hit[np.isin(hit, candidates)]
    best = (-1, 0.0)
    for oid in np.unique(hit):  # only the objects the mask touches (a handful)
        score = iou(mask, truth.mask(int(oid)))
        if score > best[1]:
            best = (int(oid), score)
    return best


def is_thing(obj: SyntheticObject) -> bool:
    """Annotated object of a ScanNet20 thing class (what ~/segment's instances aim at)."""
    return obj.annotated and obj.scannet20 >= 0 and obj.raw_category not in STRUCTURE


def matches_word(obj: SyntheticObject, word: str) -> bool:
    """Whether an open-vocabulary class name describes ``obj`` (its raw category, its NYU40 class
    or, for ScanNet's 'couch' -> 'sofa' style names, either)."""
    w = word.strip().lower()
    return obj.raw_category == w or obj.nyu40class == w or obj.raw_category.endswith(" " + w)


def pick_referrals(room: DemoRoom, truth: MapTruth, count: int, min_points: int = 200) -> list[Referral]:
    """Up to ``count`` sentences about distinct objects that the map saw (>= ``min_points``
    points), largest objects first, preferring objects of a category not picked yet (deterministic)."""
    seen = truth.point_counts()
    by_object: dict[int, Referral] = {}
    for r in room.referrals:
        if seen.get(r.object_id, 0) >= min_points and r.object_id not in by_object:
            by_object[r.object_id] = r
    order = sorted(by_object, key=lambda oid: (-seen[oid], oid))
    picked: list[int] = []
    for _ in range(min(count, len(order))):  # largest first, a new category whenever possible
        cats = {room.scene.object(p).raw_category for p in picked}
        rest = [oid for oid in order if oid not in picked]
        picked.append(next((oid for oid in rest if room.scene.object(oid).raw_category not in cats), rest[0]))
    return [by_object[oid] for oid in picked]


def pick_click_object(room: DemoRoom, truth: MapTruth, exclude: set[int], min_points: int = 200) -> int:
    """The largest visible piece of furniture not in ``exclude`` (else a wall-mounted thing such as a
    door, else an excluded one); -1 if the map saw no thing."""
    seen = truth.point_counts()
    things = [
        o.object_id for o in room.scene.objects if is_thing(o) and seen.get(o.object_id, 0) >= min_points
    ]
    mounted = ("door", "window", "picture", "curtain", "shower curtain")  # furniture first
    things.sort(
        key=lambda oid: (oid in exclude, room.scene.object(oid).raw_category in mounted, -seen[oid], oid)
    )
    return things[0] if things else -1


def click_point(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3,) the map point of ``mask`` nearest to the centroid of the masked points (a click on the
    object's centre, snapped to the map). Raises ValueError for an empty mask."""
    pts = np.asarray(points, dtype=np.float64)[np.asarray(mask, bool)]
    if len(pts) == 0:
        raise ValueError("cannot click an object with no map points")
    return pts[np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1))]


def semantic_scores(pred: np.ndarray, truth: MapTruth) -> tuple[float, float]:
    """(point accuracy, mean IoU over the classes present in the ground truth) of per-point ScanNet20
    labels ``pred`` (N,) on the points with a ground-truth label."""
    valid = truth.semantic >= 0
    p, t = np.asarray(pred)[valid], truth.semantic[valid]
    if len(t) == 0:
        return 0.0, 0.0
    acc = float(np.mean(p == t))
    k = len(SCANNET20_CLASSES)
    p = np.where((p >= 0) & (p < k), p, k)  # unknown predictions count as misses
    conf = np.bincount(t * (k + 1) + p, minlength=(k + 1) * k).reshape(k, k + 1)
    truth_count = conf.sum(1)  # includes points predicted as unknown
    conf = conf[:, :k]
    inter = np.diag(conf)
    union = conf.sum(0) + truth_count - inter
    present = np.flatnonzero(truth_count > 0)
    return acc, float(np.mean(inter[present] / np.maximum(union[present], 1)))
