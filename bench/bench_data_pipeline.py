"""Data pipeline figures: PLY reading (ours vs open3d), scene preparation, dataset items.

    python bench/bench_data_pipeline.py

Prints medians over repeats, measured in this run on this machine:
- ``read_ply`` on a ScanNet-sized binary mesh (150k vertices, 300k faces, with ``label``)
  against ``open3d.io.read_triangle_mesh`` on the same file (open3d drops ``label``);
- ``read_ply`` on the ASCII version of the mesh;
- ``prepare_scene`` (mesh + labels + segs + aggregation -> arrays) on a synthetic scene;
- ``ScanNetDataset[i]`` without and with augmentation (two-scale elastic distortion on).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from uniseg3d_model.data.augment import AugmentConfig  # noqa: E402
from uniseg3d_model.data.dataset import ScanNetDataset  # noqa: E402
from uniseg3d_model.data.scannet import prepare_scannet, prepare_scene  # noqa: E402
from uniseg3d_model.data.scannet_io import read_label_map, read_ply, write_ply  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # warm-up (page cache, imports)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_ply(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    n, f = 150_000, 300_000
    xyz = rng.uniform(0, 8, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    vertex = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0], "green": rgb[:, 1],
              "blue": rgb[:, 2], "alpha": np.full(n, 255, np.uint8),
              "label": rng.integers(0, 41, n).astype(np.uint16)}
    faces = rng.integers(0, n, (f, 3))
    write_ply(tmp / "bin.ply", vertex, faces, binary=True)
    write_ply(tmp / "ascii.ply", vertex, faces, binary=False)
    ours = median_time(lambda: read_ply(tmp / "bin.ply"))
    print(f"read_ply binary   {n} vertices {f} faces: {ours * 1e3:8.1f} ms (median of 5)")
    try:
        import open3d as o3d

        theirs = median_time(lambda: o3d.io.read_triangle_mesh(str(tmp / "bin.ply")))
        print(f"open3d read_triangle_mesh same file:        {theirs * 1e3:8.1f} ms  "
              f"(ours / open3d = {ours / theirs:.2f}; open3d drops 'label')")
    except ImportError:
        print("open3d not importable: no comparison")
    asc = median_time(lambda: read_ply(tmp / "ascii.ply"), repeats=3)
    print(f"read_ply ascii    same mesh:                {asc * 1e3:8.1f} ms (median of 3)")


def bench_prepare(tmp: Path) -> None:
    from uniseg3d_model.synthetic import SceneConfig, generate_scene
    from uniseg3d_model.synthetic.scannet_export import export_scene, write_label_map, write_splits

    raw = tmp / "raw"
    for i in range(3):
        export_scene(generate_scene(i, f"scene{i:04d}_00", SceneConfig(spacing=0.04)), raw)
    write_label_map(raw)
    write_splits(raw, ["scene0000_00", "scene0001_00"], ["scene0002_00"])
    label_map = read_label_map(raw / "scannetv2-labels.combined.tsv")
    scan = raw / "scans" / "scene0000_00"
    n = len(prepare_scene(scan, "scene0000_00", label_map)["points"])
    t = median_time(lambda: prepare_scene(scan, "scene0000_00", label_map))
    print(f"prepare_scene     synthetic scene, {n} vertices: {t * 1e3:8.1f} ms (median of 5)")
    prepare_scannet(raw, tmp / "processed", progress=False)
    plain = ScanNetDataset(tmp / "processed", "train", num_clicks=8, num_texts=3)
    aug = ScanNetDataset(tmp / "processed", "train", augment=True, num_clicks=8, num_texts=3,
                         augment_cfg=AugmentConfig(elastic_p=1.0))
    t_plain = median_time(lambda: plain[0])
    t_aug = median_time(lambda: aug[0])
    print(f"ScanNetDataset[i] no augmentation:          {t_plain * 1e3:8.1f} ms (median of 5)")
    print(f"ScanNetDataset[i] augmentation + elastic:   {t_aug * 1e3:8.1f} ms (median of 5, "
          f"{t_aug / t_plain:.1f}x)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        bench_ply(Path(d))
        bench_prepare(Path(d))
