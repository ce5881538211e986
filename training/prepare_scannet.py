"""Prepare raw ScanNet v2 (+ ScanRefer) into our per-scene ``.npz`` layout, or into the official
UniSeg3D prepared layout (``--layout official``: info pkl + .bin files, see
uniseg3d_model/data/official_data.py; pseudo masks are the documented stand-in, tokens by the
CLIP tokenizer when its vocabulary file is installed).

    python -m training.prepare_scannet --raw /data/scannet --out data/scannet_processed \
        [--splits train val] [--scanrefer ScanRefer_filtered_train.json ScanRefer_filtered_val.json] \
        [--label-map scannetv2-labels.combined.tsv] [--workers 4] [--skip-existing] [--axis-align] \
        [--layout ours|official]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uniseg3d_model.data.scannet import prepare_scannet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, help="ScanNet v2 root holding scans/ and the label tsv")
    ap.add_argument("--out", required=True, help="output root: <out>/<split>/<scene>.npz")
    ap.add_argument("--splits", nargs="+", default=["train", "val"])
    ap.add_argument("--scanrefer", nargs="*", default=[], help="ScanRefer JSON files to join")
    ap.add_argument("--label-map", default=None, help="path of scannetv2-labels.combined.tsv")
    ap.add_argument("--workers", type=int, default=0, help="processes (0: in this process)")
    ap.add_argument("--skip-existing", action="store_true", help="keep scenes already processed")
    ap.add_argument("--axis-align", action="store_true", help="apply <scene>.txt axisAlignment to the points")
    ap.add_argument("--layout", choices=["ours", "official"], default="ours",
                    help="ours: <out>/<split>/*.npz; official: the official UniSeg3D prepared layout")
    args = ap.parse_args(argv)
    if not Path(args.raw).is_dir():
        ap.error(f"--raw {args.raw}: no such directory (the ScanNet v2 root, or generate_synthetic's --out)")
    if args.workers < 0:
        ap.error(f"--workers must be >= 0, got {args.workers}")
    missing = [f for f in args.scanrefer if not Path(f).is_file()]
    if missing:
        ap.error(f"--scanrefer: no such file {missing[0]}")
    try:
        _prepare(args)
    except (FileNotFoundError, ValueError) as exc:  # a missing or malformed input file, named in exc
        ap.exit(2, f"{ap.prog}: error: {exc}\n")


def _prepare(args: argparse.Namespace) -> None:
    if args.layout == "official":
        from uniseg3d_model.clip_text import CLIPTokenizer
        from uniseg3d_model.data.official_export import export_official

        try:
            tokenizer = CLIPTokenizer()
        except FileNotFoundError:
            print("prepare_scannet: CLIP vocabulary not installed; text_token left empty", file=sys.stderr)
            tokenizer = None
        counts = export_official(args.raw, args.out, splits=args.splits, scanrefer=args.scanrefer,
                                 label_map_path=args.label_map, tokenizer=tokenizer)
        print(" ".join(f"{split}: {n} scenes" for split, n in counts.items()))
        return
    counts = prepare_scannet(args.raw, args.out, splits=args.splits, scanrefer=args.scanrefer,
                             label_map_path=args.label_map, workers=args.workers,
                             overwrite=not args.skip_existing, axis_align=args.axis_align)
    print(" ".join(f"{split}: {n} scenes" for split, n in counts.items()))


if __name__ == "__main__":
    main()
