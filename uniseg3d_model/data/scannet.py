"""Raw ScanNet v2 -> our processed per-scene ``.npz`` files.

Raw layout (as downloaded)::

    <raw>/scans/<scene>/<scene>_vh_clean_2.ply                 mesh vertices: x y z red green blue
    <raw>/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json  per-vertex segment ids (superpoints)
    <raw>/scans/<scene>/<scene>.aggregation.json               objects: segGroups (objectId, label, segments)
    <raw>/scans/<scene>/<scene>_vh_clean_2.labels.ply          per-vertex NYU40 ``label``
    <raw>/scannetv2-labels.combined.tsv                         raw category -> id (ScanNet200), nyu40id
    <raw>/scannetv2_train.txt, scannetv2_val.txt                splits (optional)

Processed ``<out>/<split>/<scene_id>.npz`` (N mesh vertices, I instances):

    points (N,3) float32 metres, colors (N,3) float32 [0,1],
    superpoints (N,) int64 segIndices relabelled 0..S-1,
    semantic20 (N,) int64 ScanNet20 index (from the labels.ply NYU40 label), IGNORE_INDEX elsewhere,
    semantic200 (N,) int64 ScanNet200 index (aggregation label -> tsv id), IGNORE_INDEX elsewhere,
    instance (N,) int64 in [0,I) or IGNORE_INDEX: every annotated object except wall/floor,
    instance_class (I,) int64 ScanNet20 thing index or IGNORE_INDEX when the object is not one,
    instance_class200 (I,) int64 ScanNet200 index or IGNORE_INDEX,
    instance_object_id (I,) int64 aggregation objectId of each instance,
    pseudo_masks (M,S) bool class-agnostic pseudo masks (optional; the stand-in for the official
        SAM3D masks: objects outside ScanNet20, see :mod:`.pseudo_masks`).

ScanRefer sentences are joined into ``<out>/<split>_referring.json`` (see :mod:`.scanrefer`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from uniseg3d_model.data.labels import (
    IGNORE_INDEX,
    IS_THING,
    NYU40_TO_SCANNET20,
    SCANNET200_ID_TO_INDEX,
    SCANNET200_IS_THING,
)
from uniseg3d_model.data.pseudo_masks import pseudo_masks_from_objects
from uniseg3d_model.data.scannet_io import (
    read_aggregation,
    read_axis_alignment,
    read_label_map,
    read_ply,
    read_segs,
    read_split,
)
from uniseg3d_model.data.scanrefer import join_and_warn, load_scanrefer, write_referring

LABEL_MAP_NAME = "scannetv2-labels.combined.tsv"
PROCESSED_KEYS = ("points", "colors", "superpoints", "semantic20", "semantic200", "instance",
                  "instance_class", "instance_class200", "instance_object_id")
OPTIONAL_KEYS = ("pseudo_masks",)
_WALL_FLOOR_NYU40 = (1, 2)


def scene_files(scan_dir: Path, scene_id: str) -> dict[str, Path]:
    return {
        "mesh": scan_dir / f"{scene_id}_vh_clean_2.ply",
        "segs": scan_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json",
        "aggregation": scan_dir / f"{scene_id}.aggregation.json",
        "labels": scan_dir / f"{scene_id}_vh_clean_2.labels.ply",
        "meta": scan_dir / f"{scene_id}.txt",
    }


def _lookup(table: dict[int, int], keys: np.ndarray) -> np.ndarray:
    """Vectorized dict lookup: ``keys`` (any int array) -> mapped values, IGNORE_INDEX when absent."""
    size = max(max(table, default=0), int(keys.max(initial=0))) + 1
    lut = np.full(size, IGNORE_INDEX, np.int64)
    lut[np.fromiter(table.keys(), np.int64)] = np.fromiter(table.values(), np.int64)
    out = np.full(keys.shape, IGNORE_INDEX, np.int64)
    ok = keys >= 0
    out[ok] = lut[keys[ok]]
    return out


def _vertex_field(vertex: dict[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    if name not in vertex:
        raise ValueError(f"{path}: vertex property {name!r} missing (has {sorted(vertex)})")
    return vertex[name]


def prepare_scene(scan_dir: str | Path, scene_id: str, label_map: dict[str, tuple[int, int]],
                  with_labels: bool = True, axis_align: bool = False) -> dict[str, np.ndarray]:
    """Read one raw ScanNet scene and return the processed arrays (see module docstring).

    ``with_labels=False`` (``scans_test``) reads only the mesh and segments; label arrays are IGNORE.
    ``axis_align=True`` applies the ``axisAlignment`` of ``<scene>.txt`` to the points (walls
    parallel to x/y); by default points stay in the mesh frame (the frame ScanRefer uses).
    """
    files = scene_files(Path(scan_dir), scene_id)
    for key in ("mesh", "segs") + (("aggregation", "labels") if with_labels else ()):
        if not files[key].is_file():
            raise FileNotFoundError(f"scene {scene_id}: missing {key} file {files[key]}")
    mesh = read_ply(files["mesh"])
    if "vertex" not in mesh:
        raise ValueError(f"{files['mesh']}: no 'vertex' element")
    vtx = mesh["vertex"]
    points = np.stack([_vertex_field(vtx, k, files["mesh"]) for k in "xyz"], 1).astype(np.float32)
    if axis_align:
        m = read_axis_alignment(files["meta"])
        points = (points.astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)
    rgb = np.stack([_vertex_field(vtx, k, files["mesh"]) for k in ("red", "green", "blue")], 1)
    colors = (rgb.astype(np.float32) / 255.0).clip(0.0, 1.0)
    n = len(points)

    seg = read_segs(files["segs"])
    if len(seg) != n:
        raise ValueError(f"{files['segs']}: segIndices has {len(seg)} entries, mesh has {n} vertices")
    seg_values, superpoints = np.unique(seg, return_inverse=True)
    out = {"points": points, "colors": colors, "superpoints": superpoints.astype(np.int64)}
    if not with_labels:
        ignore = np.full(n, IGNORE_INDEX, np.int64)
        empty = np.zeros(0, np.int64)
        return {**out, "semantic20": ignore, "semantic200": ignore.copy(), "instance": ignore.copy(),
                "instance_class": empty, "instance_class200": empty.copy(),
                "instance_object_id": empty.copy()}

    labels_vtx = read_ply(files["labels"]).get("vertex", {})
    nyu40 = _vertex_field(labels_vtx, "label", files["labels"]).astype(np.int64)
    if len(nyu40) != n:
        raise ValueError(f"{files['labels']}: {len(nyu40)} labelled vertices, mesh has {n}")
    semantic20 = _lookup(NYU40_TO_SCANNET20, nyu40)

    groups = read_aggregation(files["aggregation"])
    group_raw_id = np.array([label_map.get(g["label"], (0, 0))[0] for g in groups], np.int64)
    group_nyu40 = np.array([label_map.get(g["label"], (0, 0))[1] for g in groups], np.int64)
    group_cls200 = _lookup(SCANNET200_ID_TO_INDEX, group_raw_id)
    group_cls20 = _lookup(NYU40_TO_SCANNET20, group_nyu40)
    unknown = sorted({g["label"] for g in groups} - set(label_map))
    if unknown:
        warnings.warn(f"{files['aggregation']}: labels not in the label map (ignored): {unknown[:5]}",
                      stacklevel=2)

    sp_group = np.full(len(seg_values), -1, np.int64)
    for gi, g in enumerate(groups):  # loop over objects (tens), not points
        segs = np.asarray(g["segments"], np.int64)
        pos = np.searchsorted(seg_values, segs).clip(0, len(seg_values) - 1)
        if segs.size and np.any(seg_values[pos] != segs):
            bad = segs[seg_values[pos] != segs][:3].tolist()
            raise ValueError(f"{files['aggregation']}: segGroups[{gi}] names segment(s) {bad} absent from "
                             f"{files['segs'].name}")
        sp_group[pos] = gi
    vertex_group = sp_group[superpoints]
    labelled = vertex_group >= 0
    semantic200 = np.full(n, IGNORE_INDEX, np.int64)
    semantic200[labelled] = group_cls200[vertex_group[labelled]]

    # Instances: every object with vertices that is not wall/floor in either label set.
    stuff200 = np.array([c >= 0 and not SCANNET200_IS_THING[c] for c in group_cls200], bool)
    has_vertices = np.bincount(vertex_group[labelled], minlength=len(groups)) > 0
    keep = has_vertices & ~np.isin(group_nyu40, _WALL_FLOOR_NYU40) & ~stuff200
    group_to_inst = np.full(len(groups) + 1, IGNORE_INDEX, np.int64)
    group_to_inst[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    instance = group_to_inst[vertex_group]  # vertex_group == -1 picks the trailing IGNORE entry
    thing20 = np.array([c >= 0 and IS_THING[c] for c in group_cls20], bool)
    inst_cls20 = np.where(thing20, group_cls20, IGNORE_INDEX)[keep]
    all_object_ids = np.array([g["object_id"] for g in groups], np.int64).reshape(-1)
    vertex_object = np.where(labelled, np.append(all_object_ids, -1)[vertex_group] + 1, 0)
    vertex_nyu40 = np.where(labelled, np.append(group_nyu40, 0)[vertex_group], 0)
    pseudo = pseudo_masks_from_objects(superpoints, vertex_object, vertex_nyu40, len(seg_values))
    return {**out, "semantic20": semantic20, "semantic200": semantic200, "instance": instance,
            "instance_class": inst_cls20.astype(np.int64),
            "instance_class200": group_cls200[keep].astype(np.int64),
            "instance_object_id": all_object_ids[keep], "pseudo_masks": pseudo}


def save_processed(path: str | Path, scene: dict[str, np.ndarray]) -> None:
    """Write one processed scene atomically (``.npz``, uncompressed)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{k: scene[k] for k in PROCESSED_KEYS + OPTIONAL_KEYS if k in scene})
    tmp.replace(path)


def load_processed(path: str | Path) -> dict[str, np.ndarray]:
    """Read a processed scene; ``ValueError`` naming the file when a key is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"processed scene not found: {path}")
    with np.load(path) as data:
        missing = [k for k in PROCESSED_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: processed scene lacks array(s) {missing}")
        return {k: data[k] for k in PROCESSED_KEYS + OPTIONAL_KEYS if k in data.files}


def _find_split_file(raw: Path, split: str) -> Path | None:
    for cand in (raw / f"scannetv2_{split}.txt", raw / "Tasks" / "Benchmark" / f"scannetv2_{split}.txt"):
        if cand.is_file():
            return cand
    return None


def _process_one(item: tuple[str, str, Path], out_root: Path, label_map: dict, overwrite: bool,
                 axis_align: bool) -> tuple:
    split, scene_id, scan_dir = item
    target = out_root / split / f"{scene_id}.npz"
    if target.is_file() and not overwrite:
        with np.load(target) as data:
            return split, scene_id, data["instance_object_id"]
    scene = prepare_scene(scan_dir, scene_id, label_map, with_labels=split != "test", axis_align=axis_align)
    save_processed(target, scene)
    return split, scene_id, scene["instance_object_id"]


def prepare_scannet(raw_root: str | Path, out_root: str | Path, splits: Sequence[str] = ("train", "val"),
                    scanrefer: Sequence[str | Path] = (), label_map_path: str | Path | None = None,
                    workers: int = 0, overwrite: bool = True, progress: bool = True,
                    axis_align: bool = False) -> dict[str, int]:
    """Prepare every scene of ``splits`` and join ScanRefer; returns ``{split: number of scenes}``.

    Scenes come from ``scannetv2_<split>.txt`` when present (``test`` reads ``scans_test/``);
    without split files every scene under ``scans/`` goes to the first split.
    ``workers > 0`` uses a process pool; ``axis_align`` see :func:`prepare_scene`.
    """
    raw, out = Path(raw_root), Path(out_root)
    if not (raw / "scans").is_dir() and not (raw / "scans_test").is_dir():
        raise FileNotFoundError(f"no 'scans' directory under {raw} (expected the ScanNet v2 layout)")
    label_map = read_label_map(Path(label_map_path) if label_map_path else raw / LABEL_MAP_NAME)
    items: list[tuple[str, str, Path]] = []
    have_split_files = any(_find_split_file(raw, s) for s in splits)
    for si, split in enumerate(splits):
        scans = raw / ("scans_test" if split == "test" else "scans")
        split_file = _find_split_file(raw, split)
        if split_file is not None:
            ids = read_split(split_file)
        elif have_split_files or si > 0:
            warnings.warn(f"no scannetv2_{split}.txt under {raw}; split {split!r} left empty", stacklevel=2)
            ids = []
        else:
            ids = sorted(p.name for p in scans.iterdir() if p.is_dir())
        for sid in ids:
            if not (scans / sid).is_dir():
                raise FileNotFoundError(f"{split_file}: lists scene {sid} but {scans / sid} does not exist")
            items.append((split, sid, scans / sid))
        (out / split).mkdir(parents=True, exist_ok=True)

    work = partial(_process_one, out_root=out, label_map=label_map, overwrite=overwrite,
                   axis_align=axis_align)
    object_ids: dict[str, dict[str, np.ndarray]] = {s: {} for s in splits}
    bar = tqdm(total=len(items), desc="scenes", unit="scene", disable=not progress)
    if workers > 0:
        with get_context("spawn").Pool(workers) as pool:
            for split, sid, oids in pool.imap_unordered(work, items):
                object_ids[split][sid] = oids
                bar.update()
    else:
        for item in items:
            split, sid, oids = work(item)
            object_ids[split][sid] = oids
            bar.update()
    bar.close()

    entries = [e for path in scanrefer for e in load_scanrefer(path)]
    for split in splits:
        if scanrefer:
            write_referring(out / f"{split}_referring.json", join_and_warn(entries, object_ids[split], split))
    return {s: len(object_ids[s]) for s in splits}


def __getattr__(name: str) -> object:  # the contract names data.scannet.ScanNetDataset
    if name == "ScanNetDataset":
        from uniseg3d_model.data.dataset import ScanNetDataset

        return ScanNetDataset
    raise AttributeError(name)
