"""Superpoint benchmark: ScanNet-segmentator mesh segmentation, point-cloud segmentation of
fused maps, and superpoint pooling, on CPU.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_superpoints.py`` (``--quick`` for a smoke
run). Times are medians over ``--repeats`` runs in seconds. "purity" is the fraction of
vertices/points whose superpoint's majority object (synthetic objectId; floor and walls count
as objects) is their own object: 1.0 means no superpoint straddles two objects.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from uniseg3d_model.superpoints import pool, segment_mesh, segment_points
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def purity(segments: np.ndarray, labels: np.ndarray) -> float:
    _, lab = np.unique(labels, return_inverse=True)
    joint = np.zeros((segments.max() + 1, lab.max() + 1), dtype=np.int64)
    np.add.at(joint, (segments, lab.reshape(-1)), 1)
    return float(joint.max(axis=1).sum() / len(segments))


def grid_mesh(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n*n-vertex noisy floor (6 m square) with a box-shaped bump, two triangles per cell."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(0, 6, n), np.linspace(0, 6, n), indexing="ij")
    z = np.where((xs > 2) & (xs < 3) & (ys > 2) & (ys < 3), 0.5, 0.0) + rng.normal(0, 0.003, xs.shape)
    v = np.stack([xs.ravel(), ys.ravel(), z.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    return v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(1)

    print("segment_mesh (k_thresh 0.01, min_verts 20)")
    print(f"{'mesh':<34}{'vertices':>10}{'faces':>10}{'segments':>10}{'seconds':>10}{'purity':>8}")
    n = 100 if args.quick else 317
    v, f = grid_mesh(n)
    segment_mesh(*grid_mesh(10))  # warm-up: numba compiles or loads its cache on first use
    t, seg = median_time(lambda: segment_mesh(v, f), repeats)
    print(f"{'noisy grid floor + box':<34}{len(v):>10}{len(f):>10}{seg.max() + 1:>10}{t:>10.3f}{'':>8}")
    os.environ["UNISEG3D_NO_NUMBA"] = "1"
    t_py, seg_py = median_time(lambda: segment_mesh(v, f), repeats)
    os.environ.pop("UNISEG3D_NO_NUMBA")
    print(f"{'  same, pure-Python union-find':<34}{len(v):>10}{len(f):>10}{seg_py.max() + 1:>10}{t_py:>10.3f}"
          f"{'':>8}  (x{t_py / t:.1f} the default backend)")
    seeds = (1,) if args.quick else (1, 2, 3)
    for seed in seeds:
        scene = generate_scene(seed, config=SceneConfig(spacing=0.04))
        t, seg = median_time(lambda s=scene: segment_mesh(s.vertices, s.faces), repeats)
        name = f"synthetic {scene.room_type} (seed {seed})"
        print(f"{name:<34}{scene.num_vertices:>10}{len(scene.faces):>10}{seg.max() + 1:>10}{t:>10.3f}"
              f"{purity(seg, scene.instance):>8.3f}")

    print("\nsegment_points (voxel 2 cm, defaults) on synthetic rooms sampled as fused maps")
    print(f"{'scene':<34}{'points':>10}{'voxels':>10}{'segments':>10}{'seconds':>10}{'purity':>8}")
    for seed in seeds:
        scene = generate_scene(seed, config=SceneConfig(spacing=0.015))
        pts, cols = scene.vertices.astype(np.float32), scene.colors.astype(np.float32) / 255.0
        voxels = len(np.unique(np.floor(pts / 0.02).astype(np.int64), axis=0))
        t, seg = median_time(lambda p=pts, c=cols: segment_points(p, c), repeats)
        name = f"synthetic {scene.room_type} (seed {seed})"
        print(f"{name:<34}{len(pts):>10}{voxels:>10}{seg.max() + 1:>10}{t:>10.3f}"
              f"{purity(seg, scene.instance):>8.3f}")

    print("\npool (scatter mean, float32, C=32), forward + backward")
    print(f"{'points':>10}{'superpoints':>12}{'seconds':>10}")
    for n_points, n_sp in ((50_000, 500), (300_000, 3_000)):
        feats = torch.randn(n_points, 32, requires_grad=True)
        sp = torch.randint(0, n_sp, (n_points,))

        def run(feats=feats, sp=sp, n_sp=n_sp):
            pool(feats, sp, n_sp).sum().backward()

        t, _ = median_time(run, max(repeats, 3))
        print(f"{n_points:>10}{n_sp:>12}{t:>10.4f}")


if __name__ == "__main__":
    main()
