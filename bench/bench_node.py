"""Node-side benchmark: what a query and a sensor message cost inside ``uniseg3d_node``.

1. Query latency of the inference engine (``uniseg3d_ros.inference.engine``) on fused maps of a synthetic
   room at two point densities, untrained ``ModelConfig.small()`` model, hash text encoder:
   the first ``segment`` on a new map version (superpoints + backbone + decoder), then
   ``segment`` / ``refer`` / ``interactive`` / ``open_vocab`` against the unchanged map
   (cached encoding; refer and clicks run a prompt-only decoder pass).
2. Sensor path: decode a PointCloud2 (``cloud_to_arrays``) + fuse it into the map
   (``SceneMap.integrate``) per cloud, the work a sensor callback does; at 30 Hz the budget is 33 ms.

Run: ``.venv/bin/python bench/bench_node.py [--repeats N]``. Medians in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic_room import make_room  # noqa: E402
from uniseg3d_ros.inference.loading import load_engine  # noqa: E402
from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays, points_to_cloud  # noqa: E402
from uniseg3d_ros.mapping.scene_map import SceneMap  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    engine = load_engine("random", text_encoder="hash")
    print("engine query latency, median ms (untrained small model, CPU)")
    print(f"{'map points':>10} {'superpoints':>11} {'segment new map':>15} {'segment':>8} {'refer':>6} "
          f"{'click':>6} {'open_vocab':>10}")
    for density in (150.0, 600.0):
        room = make_room(seed=1, density=density)
        scene_map = SceneMap()
        scene_map.integrate(room.points, room.colors, np.eye(4))
        snap = scene_map.snapshot()

        def fresh(snap=snap):
            engine.invalidate()
            assert engine.segment(snap).success

        first = median_ms(fresh, args.repeats)
        seg = median_ms(lambda snap=snap: engine.segment(snap), args.repeats)
        ref = median_ms(lambda snap=snap: engine.refer(snap, "the red chair near the corner"), args.repeats)
        click = median_ms(lambda snap=snap: engine.interactive(snap, snap.points[[10]], 0.2), args.repeats)
        ov = median_ms(lambda snap=snap: engine.open_vocab(snap, ["chair", "mug", "lamp"]), args.repeats)
        print(f"{len(snap.points):>10} {engine._prep.scene.num_superpoints:>11} {first:>15.0f} {seg:>8.1f} "
              f"{ref:>6.1f} {click:>6.1f} {ov:>10.0f}")

    print("\nsensor callback work per PointCloud2 (decode + integrate), median ms")
    rng = np.random.default_rng(0)
    for n in (10_000, 100_000, 300_000):
        pts = rng.uniform([0, 0, 0], [4, 4, 2], (n, 3)).astype(np.float32)
        msg = points_to_cloud(None, pts, rng.random((n, 3)).astype(np.float32))
        scene_map = SceneMap(max_voxels=400_000)

        def step(msg=msg, scene_map=scene_map):
            p, c = cloud_to_arrays(msg)
            scene_map.integrate(p, c, np.eye(4))

        print(f"{n:>8} points: {median_ms(step, max(args.repeats, 5)):7.1f} ms  (30 Hz budget 33 ms)")


if __name__ == "__main__":
    main()
