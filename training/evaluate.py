"""Evaluate a UniSeg3D checkpoint on a prepared split: all six tasks, one table.

    python -m training.evaluate --checkpoint uniseg3d_model/weights/default.pt \
        --data data/synth --split val --out results.json [--protocol official|ours]

Every value (table, JSON, training validation) is a FRACTION in [0, 1]; the paper's
percentages are printed as fractions too (71.3 -> 0.713).

Per scene, one ``encode`` feeds two decoder passes: the ScanNet20 pass (unified queries + one
click per instance + every referring sentence) and, for the open-vocabulary task, a pass whose
vocabulary is the ScanNet200 class names (or ``--ov-classes``). Predictions come from
:mod:`uniseg3d_model.postprocess` under the model's own post-processing protocol
(``ModelConfig.postprocess``); ``--protocol`` picks how they are scored (docs/evaluation.md):

``official`` (default when the checkpoint's model is official) -- as UniSeg3D's
``unified_metric.py``: PQ by mmdet3d's ``panoptic_seg_eval`` (mean over all 20 classes,
ignored points removed first), mIoU by mmdet3d's ``seg_eval``, instance AP by the ScanNet
benchmark (IoU 0.50:0.05:0.90), clicks at the instance point farthest from the background,
superpoint-level prompt ground truth, click confidence = probability of the true class.

``ours`` (default otherwise; our earlier protocol) -- COCO-style PQ over the classes present,
AP over 0.50:0.95, the dataset's clicks (point nearest the instance centroid), point-level
prompt ground truth, click confidence = predicted IoU x mask score.

=================  ===========================================================
PQ                 ScanNet20 panoptic quality (things + stuff)
mIoU               ScanNet20 semantic segmentation
AP / AP50 / AP25   ScanNet20 instance segmentation (18 thing classes)
Inter. AP          one click per instance, AP over IoU 0.50:0.05:0.95
Ref. mIoU, Acc     ScanRefer-style sentences: mean IoU, Acc@0.25, Acc@0.5
OV AP              ScanNet200 instance AP (198 thing classes), the 200 names as vocabulary
=================  ===========================================================
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uniseg3d_model import postprocess
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.labels import (
    SCANNET20_CLASSES,
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
from uniseg3d_model.eval.instance_ap import OFFICIAL_OVERLAPS, OURS_OVERLAPS
from uniseg3d_model.eval.prompt_protocol import (
    farthest_from_background_clicks,
    gt_class_confidence,
    superpoint_majority_masks,
)

#: the paper's ScanNet20 / ScanRefer / ScanNet200 numbers (Table 1), percent as published
PAPER_PERCENT = {"pq": 71.3, "miou": 76.3, "ap": 59.1, "interactive_ap": 54.1, "referring_miou": 29.5,
                 "ov_ap": 19.6}
#: the same as fractions, the unit of every number this module reports
PAPER = {k: v / 100 for k, v in PAPER_PERCENT.items()}
#: ScanNet v2 validation scenes: the paper's numbers are over all of them
SCANNET_VAL_SCENES = 312
#: sha256 of the sorted ScanNet v2 val scene ids joined by newlines (scannetv2_val.txt)
SCANNET_VAL_SHA256 = "c04425d97dcea788f68a05c87a38d91bec6f8b4f93220044fb7c80e426e63bd5"


def is_scannet_val(scene_ids: list[str]) -> bool:
    """True when ``scene_ids`` are exactly the 312 ScanNet v2 validation scenes."""
    digest = hashlib.sha256("\n".join(sorted(scene_ids)).encode()).hexdigest()
    return len(scene_ids) == SCANNET_VAL_SCENES and digest == SCANNET_VAL_SHA256


@dataclass(frozen=True)
class Protocol:
    """How predictions are scored (not how they are made: that is ``ModelConfig.postprocess``)."""

    name: str
    overlaps: tuple[float, ...]  # instance / OV AP IoU thresholds
    panoptic_rule: str  # PanopticEvaluator rule
    panoptic_min_points: int  # mmdet3d min_num_points (UniSeg3D: 1)
    prompt_eps: float  # IoU denominator term of the prompt metrics
    superpoint_gt: bool  # prompt ground truth at superpoint level (majority vote)
    official_clicks: bool  # clicks farthest from the background, one per instance
    click_confidence: str  # "gt_class" (official) | "quality" (predicted IoU x mask score)


PROTOCOLS: dict[str, Protocol] = {
    "official": Protocol("official", OFFICIAL_OVERLAPS, "mmdet3d", 1, 1e-8, True, True, "gt_class"),
    "ours": Protocol("ours", OURS_OVERLAPS, "coco", 0, 0.0, False, False, "quality"),
}


def default_protocol(model: torch.nn.Module) -> str:
    """"official" when the model post-processes as the released one, else "ours"."""
    return "official" if getattr(model.cfg, "postprocess", "tuned") == "official" else "ours"


def _class_map(source: list[str], target: list[str]) -> np.ndarray:
    """Index map source-vocabulary -> target list (-1 where the name is absent)."""
    where = {name: i for i, name in enumerate(target)}
    return np.array([where.get(name, -1) for name in source] + [-1], dtype=np.int64)


def _instance_masks(instance: np.ndarray, targets: np.ndarray) -> np.ndarray:
    instance = np.asarray(instance)
    return instance[None, :] == np.asarray(targets).reshape(-1, 1)


def _instance_kwargs(out: Any) -> dict[str, Any]:
    """Official models: their own test_cfg; tuned models: the paper's AP settings on our path."""
    if getattr(out, "protocol", "tuned") == "official":
        return {}
    return {"score_threshold": 0.0, "top_k": 600, "nms": "matrix"}


def class_agnostic_masks(out: Any, scene: Any, score_threshold: float = 0.6,
                         mask_threshold: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """The official open-vocabulary route's first stage (the commented block of ``predict``):
    unified-query masks whose mask score x predicted IoU exceeds 0.6, binarized at 0.4.
    Returns point masks (M, N) bool and scores (M,)."""
    pred = out.unified()
    with torch.no_grad():
        logits = pred.masks
        pos = (logits > 0).float()
        mask_score = (logits.sigmoid() * pos).sum(1) / (pos.sum(1) + 1e-6)
        iou = getattr(pred, "iou", None)
        quality = iou.reshape(-1) if iou is not None else pred.scores.reshape(-1).sigmoid()
        score = mask_score * quality
        keep = score > score_threshold
        masks = (logits[keep].sigmoid() > mask_threshold)[:, out.superpoints]
    return masks.cpu().numpy(), score[keep].cpu().numpy().astype(np.float64)


class Evaluation:
    """Accumulates every task's metrics over scenes; :meth:`result` returns the nested dict."""

    def __init__(self, class_names: list[str], ov_classes: list[str], ov_thing: list[bool],
                 min_region_size: int, protocol: str = "official") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        self.protocol = PROTOCOLS[protocol]
        p = self.protocol
        self.class_names = list(class_names)
        self.thing_names = [c for c in self.class_names if c not in STUFF_CLASSES]
        self.ov_things = [c for c, t in zip(ov_classes, ov_thing) if t]
        self.ov_classes = list(ov_classes)
        self.semantic = SemanticEvaluator(self.class_names)
        self.panoptic = PanopticEvaluator(self.class_names, self.thing_names, p.panoptic_min_points,
                                          rule=p.panoptic_rule)
        self.instance = InstanceAPEvaluator(self.thing_names, min_region_size, p.overlaps)
        self.interactive = InteractiveEvaluator(p.prompt_eps)
        self.referring = ReferringEvaluator(p.prompt_eps)
        self.open_vocab = InstanceAPEvaluator(self.ov_things, min_region_size, p.overlaps)
        self.agnostic = InstanceAPEvaluator(["object"], min_region_size, p.overlaps)
        self._to_thing = _class_map(self.class_names, self.thing_names)
        self._ov_to_thing = _class_map(self.ov_classes, self.ov_things)
        # ground truth stays in ScanNet200 indices whatever vocabulary is asked
        self._gt200_to_thing = _class_map(list(SCANNET200_CLASSES), self.ov_things)

    def prepare(self, scene: Any) -> Any:
        """Sets the protocol's clicks on ``scene`` (before decoding): official = one click per
        ground-truth instance, farthest from the background; ours = the dataset's clicks."""
        if self.protocol.official_clicks and scene.instance is not None:
            idx, targets = farthest_from_background_clicks(scene.points, scene.instance)
            scene.clicks = np.asarray(scene.points, np.float32)[idx].reshape(-1, 3)
            scene.click_instance = targets
        return scene

    def _prompt_gt(self, scene: Any, targets: np.ndarray) -> np.ndarray:
        masks = _instance_masks(scene.instance, targets)
        return superpoint_majority_masks(masks, scene.superpoints) if self.protocol.superpoint_gt else masks

    def add_closed_set(self, out: Any, scene: Any) -> None:
        sem_gt = np.asarray(scene.semantic)
        inst_gt = np.asarray(scene.instance)
        self.semantic.add_scene(sem_gt, postprocess.semantic(out, scene))
        pan = postprocess.panoptic(out, scene)
        self.panoptic.add_scene(sem_gt, inst_gt, pan.semantic, pan.instance)
        inst = postprocess.instances(out, scene, **_instance_kwargs(out))
        gt_thing = self._to_thing[np.asarray(scene.instance_class)]
        self.instance.add_scene(inst_gt, gt_thing, inst.masks, self._to_thing[inst.classes], inst.scores)
        if scene.clicks is not None and len(scene.clicks):
            masks = postprocess.interactive(out, scene)
            targets = np.asarray(scene.click_instance)
            if self.protocol.click_confidence == "gt_class":
                true_class = np.asarray(scene.instance_class)[targets]
                conf = gt_class_confidence(out.clicks().class_logits, true_class)
            else:
                conf = postprocess.prompt_scores(out.clicks())
            self.interactive.add_scene(masks, self._prompt_gt(scene, targets), conf)
        if scene.texts:
            masks, _ = postprocess.referring(out, scene)
            self.referring.add_scene(masks, self._prompt_gt(scene, np.asarray(scene.text_instance)))

    def add_open_vocabulary(self, out: Any, scene: Any) -> None:
        pred = postprocess.open_vocabulary(out, scene, **_instance_kwargs(out))
        gt_inst = np.asarray(scene.instance)
        gt_cls = self._gt200_to_thing[np.asarray(scene.instance_class)]
        self.open_vocab.add_scene(gt_inst, gt_cls, pred.masks, self._ov_to_thing[pred.classes], pred.scores)
        masks, scores = class_agnostic_masks(out, scene)
        self.agnostic.add_scene(gt_inst, np.where(gt_cls >= 0, 0, -1), masks, np.zeros(len(masks), np.int64),
                                scores)

    def result(self) -> dict[str, Any]:
        inst = self.instance.compute()
        ov = self.open_vocab.compute()
        agnostic = self.agnostic.compute()
        ref = self.referring.compute()
        pan = self.panoptic.compute()
        inter = self.interactive.compute()
        sem = self.semantic.compute()
        splits = split_ap(ov, {"head": SCANNET200_HEAD, "common": SCANNET200_COMMON, "tail": SCANNET200_TAIL})
        return {
            "protocol": self.protocol.name,
            "unit": "fraction",
            "summary": {
                "pq": pan["pq"], "miou": sem["miou"],
                "ap": inst["ap"], "ap50": inst["ap50"], "ap25": inst["ap25"],
                "interactive_ap": inter["ap"], "interactive_ap50": inter["ap50"],
                "interactive_miou": inter["miou"],
                "referring_miou": ref["miou"], "referring_acc25": ref["acc25"],
                "referring_acc50": ref["acc50"],
                "ov_ap": ov["ap"], "ov_ap_head": splits["head"], "ov_ap_common": splits["common"],
                "ov_ap_tail": splits["tail"], "ov_class_agnostic_ap": agnostic["ap"],
            },
            "panoptic": pan, "semantic": sem, "instance": inst, "interactive": inter,
            "referring": ref, "open_vocabulary": {**ov, "splits": splits, "class_agnostic": agnostic},
        }


def evaluate(model: torch.nn.Module, data: str | Path, split: str = "val", max_scenes: int | None = None,
             ov_classes: list[str] | None = None, min_region_size: int = 100,
             progress: bool = True, protocol: str | None = None) -> dict[str, Any]:
    """Runs ``model`` over ``<data>/<split>`` and returns :meth:`Evaluation.result` (fractions).
    ``protocol``: "official" | "ours" | None (= :func:`default_protocol`)."""
    protocol = default_protocol(model) if protocol is None else protocol
    closed = ScanNetDataset(data, split, num_clicks=10_000, num_texts=10_000, label_set="scannet20")
    ov_classes = list(ov_classes) if ov_classes else list(SCANNET200_CLASSES)
    ov_thing = list(SCANNET200_IS_THING) if ov_classes == list(SCANNET200_CLASSES) else \
        [c not in STUFF_CLASSES for c in ov_classes]
    opened = ScanNetDataset(data, split, num_clicks=0, num_texts=0, label_set="scannet200",
                            vocabulary=list(SCANNET200_CLASSES))
    names = list(model.cfg.class_names)
    if names != list(SCANNET20_CLASSES):
        raise ValueError(f"evaluation scores ScanNet20 labels; the model's class_names are {names}")
    ev = Evaluation(names, ov_classes, ov_thing, min_region_size, protocol)
    count = len(closed) if max_scenes is None else min(max_scenes, len(closed))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in tqdm(range(count), desc=f"evaluate {split}", unit="scene", disable=not progress):
            scene = ev.prepare(closed[i])
            encoding = model.encode([scene])
            ev.add_closed_set(model.decode(encoding, [scene])[0], scene)
            ov_scene = opened[i]
            ov_scene.vocabulary = ov_classes
            ev.add_open_vocabulary(model.decode(encoding, [ov_scene])[0], ov_scene)
    model.train(was_training)
    result = ev.result()
    result["num_scenes"] = count
    result["paper"] = dict(PAPER)
    result["paper_comparable"] = bool(protocol == "official" and is_scannet_val(closed.scene_ids[:count]))
    return result


def format_table(summary: dict[str, float], comparable: bool = False, note: str = "") -> str:
    """The headline numbers (fractions) next to the paper's (as fractions). Unless
    ``comparable`` (official protocol on exactly the ScanNet v2 val scenes), the paper column is
    marked and a footnote says why it is not comparable."""
    rows = [
        ("Panoptic PQ", "pq"), ("Semantic mIoU", "miou"), ("Instance AP", "ap"), ("Instance AP50", "ap50"),
        ("Interactive AP", "interactive_ap"), ("Referring mIoU", "referring_miou"),
        ("Referring Acc@0.25", "referring_acc25"), ("Referring Acc@0.5", "referring_acc50"),
        ("Open-vocab AP", "ov_ap"), ("  head / common / tail", None),
        ("OV class-agnostic AP", "ov_class_agnostic_ap"),
    ]
    paper_head = "paper" if comparable else "paper*"
    lines = [f"{'task (fraction, 0-1)':<24}{'ours':>8}{paper_head:>8}", "-" * 40]
    for label, key in rows:
        if key is None:
            parts = [summary.get(f"ov_ap_{s}", math.nan) for s in ("head", "common", "tail")]
            text = " / ".join("-" if p is None or math.isnan(p) else f"{p:.3f}" for p in parts)
            lines.append(f"{label:<24}{text}")
            continue
        value = summary.get(key, math.nan)
        ours = "-" if value is None or math.isnan(value) else f"{value:.3f}"
        paper = f"{PAPER[key]:.3f}" if key in PAPER else ""
        lines.append(f"{label:<24}{ours:>8}{paper:>8}")
    if not comparable:
        lines.append(f"* paper: ScanNet v2 val ({SCANNET_VAL_SCENES} scenes), official protocol, released "
                     f"model; NOT comparable with this run{': ' + note if note else ''}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class _Parser(argparse.ArgumentParser):
    """User mistakes: one line naming the argument, exit code 2, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(message)


def _fail(message: str) -> None:
    message = " ".join(str(message).split())  # one line, whatever the wrapped exception printed
    print(f"evaluate: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from uniseg3d_model.checkpoint import load_checkpoint

    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint in our format (see checkpoint.py)")
    parser.add_argument("--data", required=True, help="processed root (training/prepare_scannet.py output)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--protocol", default=None,
                        help=f"scoring protocol, one of {sorted(PROTOCOLS)} (default: official for an "
                             "official model, else ours)")
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument("--min-region-size", type=int, default=100,
                        help="ScanNet benchmark minimum instance size in points (default 100)")
    parser.add_argument("--ov-classes", nargs="*", default=None,
                        help="open-vocabulary class names (default: the 200 ScanNet200 classes)")
    args = parser.parse_args(argv)
    if args.protocol is not None and args.protocol not in PROTOCOLS:
        _fail(f"--protocol {args.protocol!r} is not one of {sorted(PROTOCOLS)}")
    if not Path(args.checkpoint).is_file():
        _fail(f"--checkpoint {args.checkpoint}: no such file")
    try:
        ScanNetDataset(args.data, args.split, num_clicks=0, num_texts=0)
    except (FileNotFoundError, ValueError) as exc:
        _fail(f"--data {args.data}: {exc}")
    if args.max_scenes is not None and args.max_scenes < 1:
        _fail(f"--max-scenes must be >= 1, got {args.max_scenes}")
    try:
        model, _ = load_checkpoint(args.checkpoint, device=args.device)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        _fail(f"--checkpoint {args.checkpoint}: cannot load: {exc}")
    if list(model.cfg.class_names) != list(SCANNET20_CLASSES):
        _fail(f"--checkpoint {args.checkpoint}: class_names {list(model.cfg.class_names)} "
              "are not ScanNet20's")
    result = evaluate(model, args.data, args.split, args.max_scenes, args.ov_classes, args.min_region_size,
                      protocol=args.protocol)
    note = f"{result['num_scenes']} scene(s) of {args.data}/{args.split}, protocol {result['protocol']}"
    print(format_table(result["summary"], result["paper_comparable"], note))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(_json_safe(result), indent=2))
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
