"""Prepare raw ScanNet v2 (+ ScanRefer) into the processed per-scene ``.npz`` layout.

    python -m training.prepare_scannet --raw /data/scannet --out data/scannet_processed \
        [--splits train val] [--scanrefer ScanRefer_filtered_train.json ScanRefer_filtered_val.json] \
        [--label-map scannetv2-labels.combined.tsv] [--workers 4] [--skip-existing] [--axis-align]
"""

from __future__ import annotations

import argparse

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
    args = ap.parse_args(argv)
    counts = prepare_scannet(args.raw, args.out, splits=args.splits, scanrefer=args.scanrefer,
                             label_map_path=args.label_map, workers=args.workers,
                             overwrite=not args.skip_existing, axis_align=args.axis_align)
    print(" ".join(f"{split}: {n} scenes" for split, n in counts.items()))


if __name__ == "__main__":
    main()
