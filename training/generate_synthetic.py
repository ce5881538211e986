"""Generate synthetic indoor scenes in ScanNet v2's raw layout (and optionally ScanRefer + RGB-D).

    python -m training.generate_synthetic --out data/synthetic --num-scenes 200 --seed 0 \
        --scanrefer --render-frames 30

Writes under ``--out``: ``scans/<scene_id>/`` (mesh, labels mesh, segs, aggregation, meta txt),
``scannetv2-labels.combined.tsv``, ``scannetv2_{train,val}.txt``, with ``--scanrefer``
``ScanRefer_filtered_{train,val}.json``, with ``--render-frames K`` an RGB-D sequence per scene in
``sequences/<scene_id>/`` (see ``uniseg3d_model.data.rgbd_sequence``), with ``--fused-out DIR`` the
node's view of each scene as a processed sample (``DIR/<split>/<scene_id>.npz`` +
``DIR/<split>_referring.json``:
rendered to RGB-D, fused by the node's SceneMap, node superpoints, labels from the mesh; see
``uniseg3d_ros.tools.fused_scene``; ``--fused-frames`` frames each), and ``generation.json``
(the arguments). The same arguments give byte-identical files. Prepare for training with
``python -m training.prepare_scannet``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from uniseg3d_model.data.rgbd_sequence import write_sequence
from uniseg3d_model.data.scannet import save_processed
from uniseg3d_model.data.scanrefer import join_scanrefer, read_referring, write_referring
from uniseg3d_model.synthetic.layout import ROOM_TYPES
from uniseg3d_model.synthetic.render import CameraConfig, render_sequence
from uniseg3d_model.synthetic.scannet_export import export_scene, write_label_map, write_splits
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene
from uniseg3d_model.synthetic.sentences import (
    SentenceConfig,
    scanrefer_entries,
    scene_referrals,
    write_scanrefer,
)


def scene_seed(seed: int, index: int, stream: int = 0) -> int:
    """Independent deterministic seed for scene ``index`` (stream 0: geometry, 1: sentences)."""
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1)[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.generate_synthetic",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output root (ScanNet raw layout)")
    p.add_argument("--num-scenes", type=int, required=True, help="number of scenes to generate")
    p.add_argument("--seed", type=int, default=0, help="master seed")
    p.add_argument("--start-index", type=int, default=0, help="first scene number (scene%%04d_00)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of scenes in the val split")
    p.add_argument("--spacing", type=float, default=0.04, help="max mesh edge length in metres")
    p.add_argument("--room-types", nargs="+", default=list(ROOM_TYPES), choices=list(ROOM_TYPES),
                   metavar="TYPE", help=f"room types to draw from: {', '.join(ROOM_TYPES)}")
    p.add_argument("--shelf-books", type=float, default=SceneConfig.shelf_books,
                   help="probability that a bookshelf compartment holds books (0: empty bookshelves, the "
                        "rooms as generated before books; the rest of each room is the same either way)")
    p.add_argument("--scanrefer", action="store_true", help="write ScanRefer-style sentences")
    p.add_argument("--sentences-per-object", type=int, default=3)
    p.add_argument("--render-frames", type=int, default=0, help="RGB-D frames per scene (0: none)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fused-out", type=Path, default=None,
                   help="also write each scene as the node fuses it (processed samples) under this folder; "
                        "scenes already there stay (their sentences too): a second run with another "
                        "--seed / --start-index adds rooms")
    p.add_argument("--fused-frames", type=int, default=48, help="RGB-D frames fused per scene (--fused-out)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.num_scenes < 1:
        p.error(f"--num-scenes must be >= 1, got {args.num_scenes}")
    if args.seed < 0 or args.start_index < 0:
        p.error("--seed and --start-index must be >= 0")
    if not 0.0 <= args.val_fraction < 1.0:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if not 0.0 <= args.shelf_books <= 1.0:
        p.error(f"--shelf-books must be in [0, 1], got {args.shelf_books}")
    if args.fused_frames < 1:
        p.error(f"--fused-frames must be >= 1, got {args.fused_frames}")
    if args.render_frames < 0 or args.sentences_per_object < 1:
        p.error("--render-frames must be >= 0 and --sentences-per-object >= 1")
    return args


def generate(args: argparse.Namespace) -> dict[str, list[str]]:
    """Write the data set described by ``args``; returns ``{"train": [...], "val": [...]}`` scene ids."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scene_cfg = SceneConfig(spacing=args.spacing, room_types=tuple(args.room_types),
                            shelf_books=args.shelf_books)
    cam_cfg = CameraConfig(width=args.width, height=args.height)
    sent_cfg = SentenceConfig(max_per_object=args.sentences_per_object)
    n_val = math.ceil(args.num_scenes * args.val_fraction) if args.val_fraction > 0 else 0
    splits: dict[str, list[str]] = {"train": [], "val": []}
    refer: dict[str, list[dict]] = {"train": [], "val": []}
    counts: Counter[str] = Counter()
    fused: dict[str, list[dict]] = {"train": [], "val": []}
    earlier = {split: {} for split in fused}  # the sentences of scenes already in --fused-out
    if args.fused_out is not None:
        earlier = {split: read_referring(args.fused_out / f"{split}_referring.json") for split in fused}
    for i in tqdm(range(args.num_scenes), desc="synthetic scenes", unit="scene", disable=args.no_progress):
        index = args.start_index + i
        sid = f"scene{index:04d}_00"
        scene = generate_scene(scene_seed(args.seed, index), sid, scene_cfg)
        export_scene(scene, out)
        counts.update(o.raw_category for o in scene.objects)
        split = "val" if i >= args.num_scenes - n_val else "train"
        splits[split].append(sid)
        entries: list[dict] = []
        if args.scanrefer or args.fused_out is not None:
            rng = np.random.default_rng(scene_seed(args.seed, index, 1))
            entries = scanrefer_entries(scene, scene_referrals(scene, rng, sent_cfg))
        if args.scanrefer:
            refer[split] += entries
        if args.fused_out is not None:
            fused[split] += _write_fused(scene, args, split, entries)
        if args.render_frames:
            frames = render_sequence(scene, args.render_frames, cam_cfg)
            write_sequence(out / "sequences" / sid, frames, fps=cam_cfg.fps,
                           extra={"scene_id": sid, "source": "uniseg3d synthetic render"})
    write_label_map(out, dict(counts))
    write_splits(out, splits["train"], splits["val"])
    if args.scanrefer:
        for split, entries in refer.items():
            write_scanrefer(out / f"ScanRefer_filtered_{split}.json", entries)
    if args.fused_out is not None:
        new = set(splits["train"] + splits["val"])
        for split, entries in fused.items():  # a folder that holds other scenes keeps their sentences
            kept = [e for sid, es in sorted(earlier[split].items()) if sid not in new for e in es]
            write_referring(args.fused_out / f"{split}_referring.json", kept + entries)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "no_progress"}
    (out / "generation.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return splits


def _write_fused(scene: Any, args: argparse.Namespace, split: str, entries: list[dict]) -> list[dict]:
    """Fuse ``scene`` like the node, save it under ``--fused-out/<split>/`` and return its ScanRefer
    ``entries`` joined to the fused sample's instances (sentences about unseen objects left out)."""
    from uniseg3d_ros.tools.fused_scene import FuseConfig, fused_sample

    sample = fused_sample(scene, FuseConfig(frames=args.fused_frames, width=args.width, height=args.height))
    (args.fused_out / split).mkdir(parents=True, exist_ok=True)
    save_processed(args.fused_out / split / f"{scene.scene_id}.npz", sample)
    entries = [{**e, "object_id": int(e["object_id"])} for e in entries]  # as load_scanrefer reads them
    joined, _ = join_scanrefer(entries, {scene.scene_id: sample["instance_object_id"]})
    return joined


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        splits = generate(args)
    except ValueError as exc:  # an existing --fused-out sentence file it cannot extend
        print(f"generate_synthetic: error: --fused-out: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(splits['train'])} train + {len(splits['val'])} val scenes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
