"""Raw ScanNet v2 layouts written by the synthetic generator, for the data and training tests.

Scenes are coarse (``spacing`` 0.12 m: a few thousand vertices) so tests stay fast; the files are
the real formats (binary PLY meshes, segs/aggregation JSON, label tsv, split files, ScanRefer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uniseg3d_model.data.scannet import prepare_scannet
from uniseg3d_model.synthetic import SceneConfig, SyntheticScene, generate_scene
from uniseg3d_model.synthetic.scannet_export import export_scene, write_label_map, write_splits
from uniseg3d_model.synthetic.sentences import scanrefer_entries, scene_referrals, write_scanrefer


def write_synthetic_raw(root: Path, n_train: int = 2, n_val: int = 1, spacing: float = 0.12,
                        seed: int = 0) -> dict[str, SyntheticScene]:
    """Write ``n_train + n_val`` scenes, the label tsv, split files and
    ``ScanRefer_filtered_{train,val}.json`` under ``root``; returns the scenes by id."""
    scenes: dict[str, SyntheticScene] = {}
    refs: dict[str, list[dict]] = {"train": [], "val": []}
    for i in range(n_train + n_val):
        sid = f"scene{i:04d}_00"
        scene = generate_scene(seed + i, sid, SceneConfig(spacing=spacing))
        export_scene(scene, root)
        scenes[sid] = scene
        split = "train" if i < n_train else "val"
        refs[split] += scanrefer_entries(scene, scene_referrals(scene, np.random.default_rng(seed + i)))
    write_label_map(root)
    ids = list(scenes)
    write_splits(root, ids[:n_train], ids[n_train:])
    for split, entries in refs.items():
        write_scanrefer(root / f"ScanRefer_filtered_{split}.json", entries)
    return scenes


def write_processed(root: Path, n_train: int = 2, n_val: int = 1, spacing: float = 0.12,
                    seed: int = 0) -> Path:
    """Raw synthetic scenes under ``root/raw`` prepared into ``root/processed`` (returned)."""
    write_synthetic_raw(root / "raw", n_train, n_val, spacing, seed)
    out = root / "processed"
    prepare_scannet(root / "raw", out, progress=False,
                    scanrefer=[root / "raw" / f"ScanRefer_filtered_{s}.json" for s in ("train", "val")])
    return out
