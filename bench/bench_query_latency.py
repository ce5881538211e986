"""Query latency on a cached ~150k-point map, and light queries while a new map version is encoded.

Map: a generated living room (``uniseg3d_model.synthetic``, mesh vertices) fused at 2 cm; the
shipped model (``load_engine("")``: the official architecture at CPU widths, MiniLM text), one
thread.
1. ``segment`` on the new map (superpoints + backbone + decoder), then on the cached map:
   ``open_vocab`` with a new vocabulary each call (re-scoring the cached final queries; the
   MiniLM encoding of the new names included), the same vocabulary again, and for comparison
   the old way (a full decoder pass with the vocabulary + post-processing); ``refer``, ``interactive``.
2. A thread runs ``segment`` on a new map version (a frame was added); meanwhile ``refer``,
   ``interactive`` and ``open_vocab`` are called back to back from this thread: their latencies
   (they answer on the last finished encoding) against the build's duration.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_query_latency.py      # < 1 min
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniseg3d_model import postprocess  # noqa: E402
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene  # noqa: E402
from uniseg3d_ros.inference.loading import load_engine  # noqa: E402
from uniseg3d_ros.mapping.scene_map import SceneMap  # noqa: E402

VOCABS = [["chair", "table", "sofa"], ["lamp", "bed", "door"], ["cabinet", "desk", "window", "picture"],
          ["toilet", "sink", "bathtub"], ["bookshelf", "curtain", "refrigerator", "counter"]]


def ms(fn) -> float:
    t = time.perf_counter()
    res = fn()
    assert res.success, res.message
    return 1e3 * (time.perf_counter() - t)


def main() -> None:
    torch.set_num_threads(1)
    sc = generate_scene(3, config=SceneConfig(spacing=0.027), room_type="living room")
    m = SceneMap(0.02, max_voxels=2_000_000)
    m.integrate(sc.vertices, sc.colors, np.eye(4), stamp=1.0)
    snap = m.snapshot()
    engine = load_engine("")
    threads = os.environ.get("OMP_NUM_THREADS")
    print(f"map {len(snap):,} points (voxels); shipped model; OMP_NUM_THREADS={threads}, "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus; wall ms")
    seg = ms(lambda: engine.segment(snap))
    S = engine._prep.encodings[0].num_superpoints
    new = [ms(lambda v=v: engine.open_vocab(snap, v)) for v in VOCABS]
    same = [ms(lambda: engine.open_vocab(snap, VOCABS[0])) for _ in range(5)]
    prep = engine._prep
    old = []
    for v in VOCABS[:3]:
        t = time.perf_counter()
        scene = replace(prep.scene, vocabulary=v)
        with torch.inference_mode():
            out = engine.model.decode(prep.encodings, [scene])[0]
        postprocess.open_vocabulary(out, scene)
        old.append(1e3 * (time.perf_counter() - t))
    refer = [ms(lambda: engine.refer(snap, "the brown table")) for _ in range(5)]
    click = [ms(lambda: engine.interactive(snap, snap.points[[100]])) for _ in range(5)]
    med = statistics.median
    print(f"segment, new map ({S} superpoints): {seg:.0f}")
    print(f"open_vocab, new vocabulary: {med(new):.1f} (max {max(new):.1f}); same vocabulary again: "
          f"{med(same):.2f}; old way (full decode per vocabulary): {med(old):.0f} "
          f"-> {med(old) / med(new):.0f}x")
    print(f"refer (cached map): {med(refer):.1f}; interactive: {med(click):.1f}")

    m.integrate(sc.vertices[:5000] + np.float32([0, 0, 0.01]), sc.colors[:5000], np.eye(4), stamp=2.0)
    newer = m.snapshot()
    done = threading.Event()
    build = {}

    def run():
        t = time.perf_counter()
        build["res"] = engine.segment(newer)
        build["s"] = time.perf_counter() - t
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    while engine.building is None and not done.is_set():
        time.sleep(0.0005)
    lat = {"refer": [], "interactive": [], "open_vocab": []}
    stale = busy = 0
    while not done.is_set():
        for name, fn in (("refer", lambda: engine.refer(newer, "the brown table")),
                         ("interactive", lambda: engine.interactive(newer, snap.points[[100]])),
                         ("open_vocab", lambda: engine.open_vocab(newer, VOCABS[1]))):
            t = time.perf_counter()
            res = fn()
            lat[name].append(1e3 * (time.perf_counter() - t))
            stale += res.success and res.map_version == snap.version
            busy += not res.success  # "the encoding is being rebuilt": the caller retries
    thread.join()
    assert build["res"].success
    calls = sum(len(v) for v in lat.values())
    per = "; ".join(f"{k} median {med(v):.1f} max {max(v):.1f}" for k, v in lat.items() if v)
    print(f"during a {build['s']:.1f} s segment of the next map version: {calls} light calls, "
          f"{stale} answered on the last encoding, {busy} told it is being rebuilt, "
          f"{calls - stale - busy} answered on the new one; {per}")


if __name__ == "__main__":
    main()
