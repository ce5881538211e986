"""UniSeg3D latency: encode (backbone + superpoint pooling) once per scene, then one
decoder pass per query against the cached encoding.

Usage: python bench/bench_model.py [--sizes 25000 50000 100000] [--config small paper official]
                                   [--repeats 5] [--threads 1] [--text-encoder minilm]
                                   [--device cpu|cuda]

``--config`` (alias ``--configs``): ``small`` / ``paper`` (ours, MinkUNet) and ``official``
(``ModelConfig.official()``: the released UniSeg3D, spconv U-Net, official heads and
post-processing; ``--backend`` picks the sparse backend of its backbone: ``torch`` (default,
our layers) or ``spconv`` (the library)). ``--device cuda`` times with CUDA synchronisation.

Scenes are synthetic rooms (floor, wall, four boxes) with superpoints from
``superpoints.segment_points`` (or a grid with ``--grid``, to get ScanNet-like superpoint
counts); weights are random (latency does not depend on them).
Prints medians (and minima, the uncontended estimate on a shared machine) in milliseconds.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic_room import make_room  # noqa: E402
from uniseg3d_model import postprocess  # noqa: E402
from uniseg3d_model.model import ModelConfig, UniSeg3D  # noqa: E402
from uniseg3d_model.structures import SceneSample  # noqa: E402
from uniseg3d_model.superpoints import segment_points  # noqa: E402
from uniseg3d_model.text_encoders import build_text_encoder  # noqa: E402


def scene_of_size(n: int, grid: float = 0.0) -> SceneSample:
    """A room of about ``n`` points (4 m x 4 m floor, 1.5 m wall, four boxes); superpoints from
    ``segment_points``, or from cubic cells of ``grid`` metres when > 0 (more superpoints)."""
    room = make_room(seed=0, density=n / 25.0, size=4.0)
    if grid > 0:
        cells = np.floor(np.asarray(room.points) / grid).astype(np.int64)
        sp = np.unique(cells, axis=0, return_inverse=True)[1].reshape(-1)
    else:
        sp = segment_points(np.asarray(room.points), np.asarray(room.colors))
    return SceneSample(points=room.points, colors=room.colors, superpoints=sp, scene_id=f"room{n}")


_FRESH = itertools.count()  # never-seen sentences, so the text encoder's cache cannot answer


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn`` in ms over ``repeats`` calls after one warm-up."""
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def build_config(name: str, backend: str) -> ModelConfig:
    """small / paper (ours) or official (the released architecture, its backbone on ``backend``)."""
    if name == "small":
        return ModelConfig.small()
    if name == "paper":
        return ModelConfig.paper()
    return ModelConfig.official(spconv={**ModelConfig.official().spconv, "backend": backend})


def bench(model: UniSeg3D, scene: SceneSample, repeats: int) -> dict[str, tuple[float, float]]:
    with torch.no_grad():
        enc = model.encode([scene])
        text = SceneSample(
            scene.points, scene.colors, scene.superpoints, texts=["the blue table in the middle"]
        )
        click = SceneSample(
            scene.points, scene.colors, scene.superpoints, clicks=np.asarray(scene.points[:1])
        )

        def new_sentence():
            fresh = SceneSample(
                scene.points, scene.colors, scene.superpoints, texts=[f"chair number {next(_FRESH)}"]
            )
            out = model.decode(enc, [fresh], unified=False)[0]
            postprocess.referring(out, fresh)

        def cached_sentence():
            out = model.decode(enc, [text], unified=False)[0]
            postprocess.referring(out, text)

        def one_click():
            out = model.decode(enc, [click], unified=False)[0]
            postprocess.interactive(out, click)

        def full():
            out = model.decode(enc, [scene])[0]
            postprocess.panoptic(out, scene)

        return {
            "encode": timed_ms(lambda: model.encode([scene]), repeats),
            "text (new sentence)": timed_ms(new_sentence, 4 * repeats),
            "text (cached sentence)": timed_ms(cached_sentence, 4 * repeats),
            "click": timed_ms(one_click, 4 * repeats),
            "full decode + panoptic": timed_ms(full, repeats),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    ap.add_argument("--config", "--configs", dest="configs", nargs="+", default=["small", "paper"],
                    choices=["small", "paper", "official"])
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda[:i]")
    ap.add_argument("--backend", default="torch", choices=["torch", "spconv"],
                    help="sparse backend of the official config's backbone")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared host)")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--grid", type=float, default=0.0, help="grid superpoint size (m); 0: segment_points")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available in this torch build")
    encoder = build_text_encoder(args.text_encoder)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, {args.threads} threads, text encoder {encoder.name}, "
          f"device {where}, load {load:.1f}")
    scenes = {n: scene_of_size(n, args.grid) for n in args.sizes}
    for name in args.configs:
        torch.manual_seed(0)
        try:
            cfg = build_config(name, args.backend)
            model = UniSeg3D(cfg, encoder).to(args.device).eval()
        except (ImportError, ValueError) as exc:
            print(f"\n== {name} config: cannot build ({exc})")
            continue
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"\n== {name} config ({params:.2f} M parameters): median (min) ms; encode/full over "
            f"{args.repeats} runs, prompt queries over {4 * args.repeats}"
        )
        header = None
        for scene in scenes.values():
            res = bench(model, scene, args.repeats)
            if header is None:
                header = ["points", "superpoints", *res]
                print(" | ".join(header))
            times = (f"{med:.1f} ({low:.1f})" for med, low in res.values())
            cells = [f"{scene.num_points}", f"{scene.num_superpoints}", *times]
            print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
