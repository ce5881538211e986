"""Evaluate a UniSeg3D checkpoint on a prepared split: all six tasks, one table.

    python -m training.evaluate --checkpoint uniseg3d_model/weights/default.pt \
        --data data/synth --split val --out results.json

Instances are scored with the paper's AP settings (score threshold 0, top 600, matrix NMS)
and masks under ``--min-region-size`` points are left out (ScanNet: 100). Per scene, one
``encode`` feeds two decoder passes: the ScanNet20 pass (unified
queries + one click per instance + every referring sentence) and, for the
open-vocabulary task, a pass whose vocabulary is the ScanNet200 class names
(or ``--ov-classes``). Metrics (``uniseg3d_model.eval``):

=================  ===========================================================
PQ                 ScanNet20 panoptic quality (things + stuff)
mIoU               ScanNet20 semantic segmentation
AP / AP50 / AP25   ScanNet20 instance segmentation (benchmark protocol)
Inter. AP          one click per instance, AP over IoU 0.50:0.95
Ref. mIoU, Acc     ScanRefer-style sentences: mean IoU, Acc@0.25, Acc@0.5
OV AP              ScanNet200 instance AP with the 200 names as vocabulary
=================  ===========================================================
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uniseg3d_model import postprocess
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.labels import (
    SCANNET200_CLASSES,
    SCANNET200_COMMON,
    SCANNET200_HEAD,
    SCANNET200_IS_THING,
    SCANNET200_TAIL,
    STUFF_CLASSES,
)
from uniseg3d_model.eval import (
    InstanceAPEvaluator,
    InteractiveEvaluator,
    PanopticEvaluator,
    ReferringEvaluator,
    SemanticEvaluator,
    split_ap,
)

#: the paper's ScanNet20 / ScanRefer / ScanNet200 numbers (Table 1), for the printed table
PAPER = {"pq": 71.3, "miou": 76.3, "ap": 59.1, "interactive_ap": 54.1, "referring_miou": 29.5, "ov_ap": 19.6}


def _class_map(source: list[str], target: list[str]) -> np.ndarray:
    """Index map source-vocabulary -> target list (-1 where the name is absent)."""
    where = {name: i for i, name in enumerate(target)}
    return np.array([where.get(name, -1) for name in source] + [-1], dtype=np.int64)


def _instance_masks(instance: np.ndarray, targets: np.ndarray) -> np.ndarray:
    instance = np.asarray(instance)
    return instance[None, :] == np.asarray(targets).reshape(-1, 1)


class Evaluation:
    """Accumulates every task's metrics over scenes; :meth:`result` returns the nested dict."""

    def __init__(self, class_names: list[str], ov_classes: list[str], ov_thing: list[bool],
                 min_region_size: int) -> None:
        self.class_names = list(class_names)
        self.thing_names = [c for c in self.class_names if c not in STUFF_CLASSES]
        self.ov_things = [c for c, t in zip(ov_classes, ov_thing) if t]
        self.ov_classes = list(ov_classes)
        self.semantic = SemanticEvaluator(self.class_names)
        self.panoptic = PanopticEvaluator(self.class_names, self.thing_names)
        self.instance = InstanceAPEvaluator(self.thing_names, min_region_size)
        self.interactive = InteractiveEvaluator()
        self.referring = ReferringEvaluator()
        self.open_vocab = InstanceAPEvaluator(self.ov_things, min_region_size)
        self._to_thing = _class_map(self.class_names, self.thing_names)
        self._ov_to_thing = _class_map(self.ov_classes, self.ov_things)
        # ground truth stays in ScanNet200 indices whatever vocabulary is asked
        self._gt200_to_thing = _class_map(list(SCANNET200_CLASSES), self.ov_things)

    def add_closed_set(self, out: Any, scene: Any) -> None:
        sem_gt = np.asarray(scene.semantic)
        inst_gt = np.asarray(scene.instance)
        self.semantic.add_scene(sem_gt, postprocess.semantic(out, scene))
        pan = postprocess.panoptic(out, scene)
        self.panoptic.add_scene(sem_gt, inst_gt, pan.semantic, pan.instance)
        inst = postprocess.instances(out, scene, score_threshold=0.0, top_k=600, nms="matrix")
        gt_thing = self._to_thing[np.asarray(scene.instance_class)]
        self.instance.add_scene(inst_gt, gt_thing, inst.masks, self._to_thing[inst.classes], inst.scores)
        if scene.clicks is not None and len(scene.clicks):
            masks = postprocess.interactive(out, scene)
            gt = _instance_masks(inst_gt, scene.click_instance)
            self.interactive.add_scene(masks, gt, postprocess.prompt_scores(out.clicks()))
        if scene.texts:
            masks, _ = postprocess.referring(out, scene)
            self.referring.add_scene(masks, _instance_masks(inst_gt, scene.text_instance))

    def add_open_vocabulary(self, out: Any, scene: Any) -> None:
        pred = postprocess.open_vocabulary(out, scene, score_threshold=0.0, top_k=600, nms="matrix")
        gt_cls = self._gt200_to_thing[np.asarray(scene.instance_class)]
        self.open_vocab.add_scene(np.asarray(scene.instance), gt_cls, pred.masks,
                                  self._ov_to_thing[pred.classes], pred.scores)

    def result(self) -> dict[str, Any]:
        inst = self.instance.compute()
        ov = self.open_vocab.compute()
        ref = self.referring.compute()
        pan = self.panoptic.compute()
        inter = self.interactive.compute()
        sem = self.semantic.compute()
        splits = split_ap(ov, {"head": SCANNET200_HEAD, "common": SCANNET200_COMMON, "tail": SCANNET200_TAIL})
        return {
            "summary": {
                "pq": pan["pq"], "miou": sem["miou"], "ap": inst["ap"], "ap50": inst["ap50"],
                "interactive_ap": inter["ap"], "referring_miou": ref["miou"], "referring_acc25": ref["acc25"],
                "referring_acc50": ref["acc50"], "ov_ap": ov["ap"], "ov_ap_head": splits["head"],
                "ov_ap_common": splits["common"], "ov_ap_tail": splits["tail"],
            },
            "panoptic": pan, "semantic": sem, "instance": inst, "interactive": inter,
            "referring": ref, "open_vocabulary": {**ov, "splits": splits},
        }


def evaluate(model: torch.nn.Module, data: str | Path, split: str = "val", max_scenes: int | None = None,
             ov_classes: list[str] | None = None, min_region_size: int = 100,
             progress: bool = True) -> dict[str, Any]:
    """Runs ``model`` over ``<data>/<split>`` and returns :meth:`Evaluation.result`."""
    closed = ScanNetDataset(data, split, num_clicks=10_000, num_texts=10_000, label_set="scannet20")
    ov_classes = list(ov_classes) if ov_classes else list(SCANNET200_CLASSES)
    ov_thing = list(SCANNET200_IS_THING) if ov_classes == list(SCANNET200_CLASSES) else \
        [c not in STUFF_CLASSES for c in ov_classes]
    opened = ScanNetDataset(data, split, num_clicks=0, num_texts=0, label_set="scannet200",
                            vocabulary=list(SCANNET200_CLASSES))
    names = list(model.cfg.class_names)
    ev = Evaluation(names, ov_classes, ov_thing, min_region_size)
    count = len(closed) if max_scenes is None else min(max_scenes, len(closed))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in tqdm(range(count), desc=f"evaluate {split}", unit="scene", disable=not progress):
            scene = closed[i]
            encoding = model.encode([scene])
            ev.add_closed_set(model.decode(encoding, [scene])[0], scene)
            ov_scene = opened[i]
            ov_scene.vocabulary = ov_classes
            ev.add_open_vocabulary(model.decode(encoding, [ov_scene])[0], ov_scene)
    model.train(was_training)
    result = ev.result()
    result["num_scenes"] = count
    return result


def format_table(summary: dict[str, float]) -> str:
    """The six headline numbers (percent) next to the paper's."""
    rows = [
        ("Panoptic PQ", "pq"), ("Semantic mIoU", "miou"), ("Instance AP", "ap"), ("Instance AP50", "ap50"),
        ("Interactive AP", "interactive_ap"), ("Referring mIoU", "referring_miou"),
        ("Referring Acc@0.25", "referring_acc25"), ("Referring Acc@0.5", "referring_acc50"),
        ("Open-vocab AP", "ov_ap"), ("  head / common / tail", None),
    ]
    lines = [f"{'task':<24}{'ours':>8}{'paper':>8}", "-" * 40]
    for label, key in rows:
        if key is None:
            parts = [summary.get(f"ov_ap_{s}", math.nan) for s in ("head", "common", "tail")]
            text = " / ".join("-" if math.isnan(p) else f"{100 * p:.1f}" for p in parts)
            lines.append(f"{label:<24}{text}")
            continue
        value = summary.get(key, math.nan)
        ours = "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"
        paper = f"{PAPER[key]:.1f}" if key in PAPER else ""
        lines.append(f"{label:<24}{ours:>8}{paper:>8}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from uniseg3d_model.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint in our format (see checkpoint.py)")
    parser.add_argument("--data", required=True, help="processed root (training/prepare_scannet.py output)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument("--min-region-size", type=int, default=100,
                        help="ScanNet benchmark minimum instance size in points (default 100)")
    parser.add_argument("--ov-classes", nargs="*", default=None,
                        help="open-vocabulary class names (default: the 200 ScanNet200 classes)")
    args = parser.parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint, device=args.device)
    result = evaluate(model, args.data, args.split, args.max_scenes, args.ov_classes, args.min_region_size)
    print(format_table(result["summary"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(_json_safe(result), indent=2))
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
