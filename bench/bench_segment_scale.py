"""``~/segment`` cost against superpoint count on fused ~150k-voxel rooms of three kinds of clouds.

Clouds (generated living rooms, ``uniseg3d_model.synthetic``), each fused into a SceneMap at 2 cm:
  dense     mesh vertices at 1.5-2.5 cm spacing (a mesh-vertex cloud, the densest input)
  lidar     30 % of the vertices of a dense mesh, 5 mm noise (sparse, irregular, holes)
  noisy     vertices with 15 mm surface noise (noisy depth)
For each: superpoints with the old defaults (2 cm graph, no bound) and with the engine's defaults
(``EngineConfig.superpoint_kwargs``: 4 cm graph, ``max_superpoints`` bound), then the whole
``InferenceEngine.segment`` on a fresh map version with the shipped model (superpoints + backbone +
decoder + panoptic post-processing), one thread. "purity": fraction of map points whose superpoint's
majority object is their own (1.0 = no superpoint straddles two objects).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_segment_scale.py        # ~2 min
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniseg3d_model.superpoints import segment_points  # noqa: E402
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene  # noqa: E402
from uniseg3d_ros.inference.engine import EngineConfig  # noqa: E402
from uniseg3d_ros.inference.loading import load_engine  # noqa: E402
from uniseg3d_ros.mapping.scene_map import SceneMap  # noqa: E402


def cloud(kind: str, seed: int = 3):
    """(points, colors uint8, instance ids) of one living room of the given kind."""
    rng = np.random.default_rng(seed)
    if kind == "dense":
        sc = generate_scene(seed, config=SceneConfig(spacing=0.025), room_type="living room")
        return sc.vertices, sc.colors, sc.instance
    if kind == "lidar":
        sc = generate_scene(seed, config=SceneConfig(spacing=0.012), room_type="living room")
        keep = rng.random(sc.num_vertices) < 0.3
        pts = sc.vertices[keep] + rng.normal(0, 0.005, (int(keep.sum()), 3)).astype(np.float32)
        return pts, sc.colors[keep], sc.instance[keep]
    sc = generate_scene(seed, config=SceneConfig(spacing=0.025, surface_noise=0.015), room_type="living room")
    return sc.vertices, sc.colors, sc.instance


def fused(points, colors, instance):
    """Fuse at 2 cm; returns the snapshot and each voxel's majority instance."""
    m = SceneMap(0.02, max_voxels=10_000_000)
    m.integrate(points, colors, np.eye(4))
    snap = m.snapshot()
    keys = np.floor(points.astype(np.float32) / np.float32(0.02)).astype(np.int64)
    # voxel of each point in snapshot order: match via a dict of the packed keys
    from uniseg3d_ros.mapping.voxel_hash import pack_keys

    row = {k: i for i, k in enumerate(snap.keys.tolist())}
    vox = np.array([row.get(k, -1) for k in pack_keys(keys).tolist()])
    ok = vox >= 0
    votes = np.zeros(len(snap), np.int64) - 1
    order = np.lexsort((instance[ok], vox[ok]))
    v, inst = vox[ok][order], instance[ok][order]
    votes[v] = inst  # last vote per voxel after sorting: a stable, cheap majority proxy
    return snap, votes


def purity(segments: np.ndarray, labels: np.ndarray) -> float:
    ok = labels >= 0
    seg, lab = segments[ok], labels[ok]
    pair = seg.astype(np.int64) * (lab.max() + 1) + lab
    uniq, counts = np.unique(pair, return_counts=True)
    best = np.zeros(seg.max() + 1, np.int64)
    np.maximum.at(best, uniq // (lab.max() + 1), counts)
    return float(best.sum() / len(seg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="dense,lidar,noisy")
    ap.add_argument("--sweep", default="300,600,1200,2400,4800", help="bounds for the S sweep ('' = none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = load_engine("")
    defaults = EngineConfig().superpoint_kwargs
    print(f"engine superpoint defaults {defaults}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus; seconds, one run each")
    head = (f"{'cloud':<7}{'points':>9}{'voxels':>9} | {'S old':>6}{'sp s':>6}{'purity':>7} | "
            f"{'S new':>6}{'sp s':>6}{'purity':>7} | {'segment s (old S)':>17} | {'segment s (new)':>15}")
    print(head)
    print("-" * len(head))
    for kind in [k for k in args.kinds.split(",") if k]:
        pts, cols, inst = cloud(kind)
        snap, votes = fused(pts, cols, inst)
        p, c = np.array(snap.points), np.array(snap.colors)
        t = time.perf_counter()
        old = segment_points(p, c)
        t_old = time.perf_counter() - t
        t = time.perf_counter()
        new = segment_points(p, c, **defaults)
        t_new = time.perf_counter() - t
        engine.cfg.superpoint_kwargs = {}
        engine.invalidate()
        t = time.perf_counter()
        assert engine.segment(snap).success
        seg_old = time.perf_counter() - t
        engine.cfg.superpoint_kwargs = dict(defaults)
        engine.invalidate()
        t = time.perf_counter()
        assert engine.segment(snap).success
        seg_new = time.perf_counter() - t
        print(f"{kind:<7}{len(pts):>9,}{len(snap):>9,} | {old.max() + 1:>6}{t_old:>6.2f}"
              f"{purity(old, votes):>7.3f} | {new.max() + 1:>6}{t_new:>6.2f}{purity(new, votes):>7.3f} | "
              f"{seg_old:>17.2f} | {seg_new:>15.2f}")
    if args.sweep:
        sweep(engine, [int(b) for b in args.sweep.split(",")])


def sweep(engine, budgets: list[int]) -> None:
    """``segment`` time against the superpoint count on one map (the dense room): the bound varies."""
    pts, cols, inst = cloud("dense")
    snap, _ = fused(pts, cols, inst)
    print(f"\nsegment time against superpoints S (dense room, {len(snap):,} voxels, 2 cm graph, "
          "max_superpoints varied)")
    print(f"{'max_superpoints':>15} {'S':>6} {'segment s':>10}")
    for budget in budgets:
        engine.cfg.superpoint_kwargs = {"voxel_size": 0.02, "max_superpoints": budget}
        engine.invalidate()
        t = time.perf_counter()
        assert engine.segment(snap).success
        seconds = time.perf_counter() - t
        print(f"{budget:>15} {engine._prep.encodings[0].num_superpoints:>6} {seconds:>10.2f}")


if __name__ == "__main__":
    main()
