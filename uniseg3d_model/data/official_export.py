"""Write raw ScanNet v2 scenes (+ ScanRefer) in the official UniSeg3D prepared layout.

The official preparation is ``data/scannet/batch_load_scannet_data.py`` (votenet's export:
mesh vertices x y z r g b float32 in the mesh frame, per-vertex NYU40 label from the
aggregation label through the tsv, per-vertex ``objectId + 1``, segmentator superpoints),
``tools/create_data.py`` (``.bin`` files + info pkl) and the authors' additions to the train
pkl (``text_info`` from ScanRefer, tokenised by the OpenCLIP tokenizer; SAM3D pseudo masks;
dk-liang/UniSeg3D issue #8). This module writes the same files from any raw ScanNet layout,
our generated scenes included, so the reader :mod:`.official_data` is exercised on real
files; the superpoints are the scene's ``segs.json`` segments (what the segmentator yields on
the ScanNet mesh), and the SAM3D masks are replaced by the stand-in of :mod:`.pseudo_masks`.
See :mod:`.official_data` for the layout and the keys.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from uniseg3d_model.data.labels import IS_THING, NYU40_TO_SCANNET20
from uniseg3d_model.data.official_data import FOLDERS, INFO_FILE
from uniseg3d_model.data.pseudo_masks import pseudo_masks_from_objects
from uniseg3d_model.data.scannet import LABEL_MAP_NAME, scene_files
from uniseg3d_model.data.scannet_io import read_aggregation, read_label_map, read_ply, read_segs, read_split
from uniseg3d_model.data.scanrefer import load_scanrefer

Tokenizer = Callable[[list[str]], torch.Tensor]


def export_scene_arrays(scan_dir: Path, scene_id: str, label_map: dict[str, tuple[int, int]]
                        ) -> dict[str, np.ndarray]:
    """``points`` (N, 6) float32, ``semantic`` (N,) int64 NYU40, ``instance`` (N,) int64
    objectId + 1, ``superpoints`` (N,) int64 segment ids (as in the file)."""
    files = scene_files(scan_dir, scene_id)
    vtx = read_ply(files["mesh"])["vertex"]
    points = np.stack([vtx[k] for k in ("x", "y", "z", "red", "green", "blue")], 1).astype(np.float32)
    seg = read_segs(files["segs"])
    semantic = np.zeros(len(points), np.int64)
    instance = np.zeros(len(points), np.int64)
    for g in read_aggregation(files["aggregation"]):  # objects (tens), vectorized over vertices
        verts = np.isin(seg, np.asarray(g["segments"], np.int64))
        semantic[verts] = label_map.get(g["label"], (0, 0))[1]
        instance[verts] = g["object_id"] + 1
    return {"points": points, "semantic": semantic, "instance": instance, "superpoints": seg}


def text_info_of(arrays: dict[str, np.ndarray], entries: list[dict], tokenizer: Tokenizer | None) -> dict:
    """``text_info`` for the ScanRefer ``entries`` of one scene whose object is a ScanNet20 thing."""
    info: dict[str, dict] = {}
    for e in entries:
        pts = np.flatnonzero(arrays["instance"] == e["object_id"] + 1)
        cls = NYU40_TO_SCANNET20.get(int(arrays["semantic"][pts[0]]), -1) if len(pts) else -1
        if cls < 0 or not IS_THING[cls]:
            continue
        item = info.setdefault(str(e["object_id"]), {"text": [], "text_token": [], "label_id": cls - 2,
                                                     "pts_id": pts})
        item["text"].append(e["description"])
        if tokenizer is not None:
            item["text_token"].append(tokenizer([e["description"]])[0].numpy().astype(np.int64))
    return info


def export_official(raw_root: str | Path, out_root: str | Path, splits: Sequence[str] = ("train", "val"),
                    scanrefer: Sequence[str | Path] = (), label_map_path: str | Path | None = None,
                    tokenizer: Tokenizer | None = None,
                    pseudo_splits: Sequence[str] = ("train",)) -> dict[str, int]:
    """Write ``<out>/{points,instance_mask,semantic_mask,super_points}/<scene>.bin`` and
    ``<out>/uniseg3d_infos_<split>.pkl`` for the scenes of ``scannetv2_<split>.txt``; the
    stand-in pseudo masks go into the infos of ``pseudo_splits`` (the official train pkl only).
    Returns ``{split: number of scenes}``."""
    raw, out = Path(raw_root), Path(out_root)
    label_map = read_label_map(Path(label_map_path) if label_map_path else raw / LABEL_MAP_NAME)
    refs = [e for path in scanrefer for e in load_scanrefer(path)]
    for folder in FOLDERS.values():
        (out / folder).mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in splits:
        infos = []
        for sid in read_split(raw / f"scannetv2_{split}.txt"):
            arrays = export_scene_arrays(raw / "scans" / sid, sid, label_map)
            arrays["points"].tofile(out / FOLDERS["points"] / f"{sid}.bin")
            arrays["instance"].tofile(out / FOLDERS["instance"] / f"{sid}.bin")
            arrays["semantic"].tofile(out / FOLDERS["semantic"] / f"{sid}.bin")
            arrays["superpoints"].tofile(out / FOLDERS["superpoints"] / f"{sid}.bin")
            info = {"lidar_points": {"num_pts_feats": 6, "lidar_path": f"{sid}.bin"},
                    "pts_instance_mask_path": f"{sid}.bin", "pts_semantic_mask_path": f"{sid}.bin",
                    "super_pts_path": f"{sid}.bin", "sample_idx": sid,
                    "text_info": text_info_of(arrays, [e for e in refs if e["scene_id"] == sid], tokenizer)}
            if split in pseudo_splits:
                seg_values, dense = np.unique(arrays["superpoints"], return_inverse=True)
                masks = pseudo_masks_from_objects(dense, arrays["instance"], arrays["semantic"],
                                                  len(seg_values))
                full = np.zeros((len(masks), int(seg_values.max()) + 1), bool)
                full[:, seg_values] = masks
                info["sam3d_pseudo_sp_masks"] = torch.from_numpy(full)
            infos.append(info)
        with (out / INFO_FILE.format(split=split)).open("wb") as fh:
            pickle.dump({"metainfo": {"dataset": "scannet", "info_version": "1.1"}, "data_list": infos}, fh)
        counts[split] = len(infos)
    return counts
