"""Score a checkpoint on held-out generated rooms AS THE NODE FUSES THEM (the node's own domain).

    python -m training.generate_synthetic --out data/heldout_raw --num-scenes 10 --seed 7001 \
        --start-index 500 --val-fraction 0.999 --fused-out data/heldout_fused
    python -m training.evaluate_fused --checkpoint uniseg3d_model/weights/default.pt \
        --data data/heldout_fused --out fused_eval.json

Two passes per room:

1. the benchmark metrics of :func:`training.evaluate.evaluate` on the fused processed samples
   (semantic mIoU, instance AP / AP50, PQ, interactive mIoU / AP with one click per instance,
   referring mIoU / Acc@0.5, open-vocabulary AP over the ScanNet200 names, split into names the
   model was trained on ("seen": its closed-set class names) and the others ("unseen"));
2. the node's own answers (:class:`uniseg3d_ros.inference.engine.InferenceEngine`, default
   thresholds): ``~/segment`` objects found at IoU >= 0.5 WITH the right label (and, per true
   class, the objects found under another label or not found at all),
   ``~/open_vocab`` on ``--vocabulary``: how many returned instances are mostly wall / floor, and
   ``~/refer``'s score on the room's sentences answered right (IoU >= 0.5) against the same
   sentences naming a class the room lacks ("absent"): ``refer_score_separation`` is the share of
   (right, absent) pairs the score orders right, 1.0 when every absent sentence scores lower.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from uniseg3d_model.data.labels import SCANNET20_CLASSES

DEMO_VOCABULARY = ["chair", "table", "bed", "lamp", "sofa"]
STUFF = (SCANNET20_CLASSES.index("wall"), SCANNET20_CLASSES.index("floor"))


def seen_unseen_ap(per_class: dict[str, dict[str, float]], seen_names: list[str]) -> dict[str, float]:
    """Mean open-vocabulary AP over the classes with a value, split by whether the name is one the
    model was trained on (``seen_names``)."""
    seen = [v["ap"] for k, v in per_class.items() if k in seen_names and not math.isnan(v["ap"])]
    unseen = [v["ap"] for k, v in per_class.items() if k not in seen_names and not math.isnan(v["ap"])]
    return {
        "ov_ap_seen": float(np.mean(seen)) if seen else math.nan,
        "ov_ap_unseen": float(np.mean(unseen)) if unseen else math.nan,
        "ov_seen_classes": len(seen),
        "ov_unseen_classes": len(unseen),
    }


def room_snapshot(sample: dict[str, np.ndarray], version: int) -> SimpleNamespace:
    """A fused room as the engine's map snapshot (``version``: the engine caches per version)."""
    return SimpleNamespace(points=sample["points"], colors=sample["colors"], version=version)


def node_answers(engine: Any, sample: dict[str, np.ndarray], version: int, vocabulary: list[str]) -> dict:
    """The node's ``~/segment`` and ``~/open_vocab`` answers on one fused room, scored."""
    snap = room_snapshot(sample, version)
    sem, inst = sample["semantic20"], sample["instance"]
    seg = engine.segment(snap)
    cls = sample["instance_class"]
    gt = [(k, inst == k) for k in range(len(cls)) if cls[k] >= 0 and (inst == k).sum() >= 100]
    found, mislabelled, missed = 0, [], []
    for k, mask in gt:
        name = SCANNET20_CLASSES[cls[k]]
        hits = []  # (IoU, label) of every answer instance over this object at IoU >= 0.5
        for p in seg.instances:
            pm = np.zeros(len(mask), bool)
            pm[p.point_indices] = True
            iou = (pm & mask).sum() / max((pm | mask).sum(), 1)
            if iou >= 0.5:
                hits.append((float(iou), p.label))
        if any(label == name for _, label in hits):
            found += 1
        elif hits:
            mislabelled.append([name, max(hits)[1]])
        else:
            missed.append(name)
    ov = engine.open_vocab(snap, vocabulary)
    on_stuff = 0
    for p in ov.instances:
        labels = sem[p.point_indices]
        if len(labels) and np.isin(labels, STUFF).mean() > 0.5:
            on_stuff += 1
    return {"objects": len(gt), "found_with_label": found, "mislabelled": mislabelled, "missed": missed,
            "ov_instances": len(ov.instances), "ov_on_stuff": on_stuff}


#: the ScanNet20 thing names a sentence can be re-aimed at ("otherfurniture" is no word)
ABSENT_WORDS = [c for c in SCANNET20_CLASSES if c not in ("wall", "floor", "otherfurniture")]


def sentence_scores(engine: Any, sample: dict[str, np.ndarray], entries: list[dict],
                    version: int) -> dict[str, list[float]]:
    """``~/refer`` scores on one fused room: ``right``, its sentences whose answer hits the described
    object (IoU >= 0.5); ``absent``, each sentence with the object's name replaced by a thing class
    the room has no instance of (so the map lacks what it asks for)."""
    snap = room_snapshot(sample, version)
    inst, cls = sample["instance"], sample["instance_class"]
    present = {SCANNET20_CLASSES[c] for c in np.asarray(cls).tolist() if c >= 0}
    absent = [w for w in ABSENT_WORDS if w not in present]
    right: list[float] = []
    swapped: list[float] = []
    for k, e in enumerate(entries):
        text = str(e["description"])
        res = engine.refer(snap, text, 1)
        if res.success and res.instances:
            pm = np.zeros(len(inst), bool)
            pm[res.instances[0].point_indices] = True
            gt = inst == int(e["instance"])
            if (pm & gt).sum() / max((pm | gt).sum(), 1) >= 0.5:
                right.append(float(res.instances[0].score))
        name = str(e.get("object_name", ""))
        if absent and name and name in text:
            res = engine.refer(snap, text.replace(name, absent[k % len(absent)]), 1)
            swapped.append(float(res.instances[0].score) if res.success and res.instances else 0.0)
    return {"right": right, "absent": swapped}


def separation(right: list[float], absent: list[float]) -> float:
    """Share of (right, absent) score pairs with the right one higher (ties count half); nan if
    either list is empty."""
    if not right or not absent:
        return math.nan
    r, a = np.asarray(right)[:, None], np.asarray(absent)[None, :]
    return float(((r > a).sum() + 0.5 * (r == a).sum()) / (r.size * a.size))


def evaluate_fused(checkpoint: str, data: Path, split: str, vocabulary: list[str],
                   max_scenes: int | None = None) -> dict[str, Any]:
    from training.evaluate import evaluate
    from uniseg3d_model.data.scannet import load_processed
    from uniseg3d_model.data.scanrefer import read_referring
    from uniseg3d_ros.inference.loading import load_engine

    engine = load_engine(checkpoint)
    model = engine.model
    result = evaluate(model, data, split, max_scenes, progress=False)
    files = sorted((Path(data) / split).glob("*.npz"))[:max_scenes]
    sentences = read_referring(Path(data) / f"{split}_referring.json")
    node, said = [], []
    for i, f in enumerate(files):  # one read and one encoding per room: both ask map version i + 1
        sample = load_processed(f)
        node.append(node_answers(engine, sample, i + 1, vocabulary))
        said.append(sentence_scores(engine, sample, sentences.get(f.stem, []), i + 1))
    right = [x for s in said for x in s["right"]]
    absent = [x for s in said for x in s["absent"]]
    summary = dict(result["summary"])
    summary["interactive_miou"] = result["interactive"]["miou"]
    summary.update(seen_unseen_ap(result["open_vocabulary"]["per_class"], list(model.cfg.class_names)))
    objects = sum(n["objects"] for n in node)
    summary["segment_found_with_label"] = sum(n["found_with_label"] for n in node) / max(objects, 1)
    summary["segment_objects"] = objects
    summary["segment_mislabelled"] = dict(Counter(f"{t} as {p}" for n in node for t, p in n["mislabelled"])
                                          .most_common())
    summary["segment_missed"] = dict(Counter(m for n in node for m in n["missed"]).most_common())
    summary["open_vocab_on_stuff"] = sum(n["ov_on_stuff"] for n in node)
    summary["open_vocab_instances"] = sum(n["ov_instances"] for n in node)
    summary["refer_score_right_median"] = float(np.median(right)) if right else math.nan
    summary["refer_score_absent_median"] = float(np.median(absent)) if absent else math.nan
    summary["refer_score_separation"] = separation(right, absent)
    summary["refer_sentences_right"], summary["refer_sentences_absent"] = len(right), len(absent)
    return {"summary": summary, "num_scenes": result["num_scenes"], "per_room_node": node,
            "vocabulary": vocabulary, "full": result}


ROWS = [
    ("Semantic mIoU", "miou"), ("Instance AP", "ap"), ("Instance AP50", "ap50"), ("Panoptic PQ", "pq"),
    ("Interactive mIoU", "interactive_miou"), ("Interactive AP", "interactive_ap"),
    ("Referring mIoU", "referring_miou"), ("Referring Acc@0.5", "referring_acc50"),
    ("Open-vocab AP (all)", "ov_ap"), ("Open-vocab AP seen", "ov_ap_seen"),
    ("Open-vocab AP unseen", "ov_ap_unseen"), ("~/segment found+label", "segment_found_with_label"),
    ("~/refer score, right", "refer_score_right_median"),
    ("~/refer score, absent", "refer_score_absent_median"),
    ("~/refer score separation", "refer_score_separation"),
]


def format_table(summary: dict[str, Any]) -> str:
    # fractions in [0, 1], the unit of training/evaluate.py and training validation
    lines = [f"{'metric (fused rooms, 0-1)':<26}{'value':>8}", "-" * 34]
    for label, key in ROWS:
        v = summary.get(key, math.nan)
        lines.append(f"{label:<26}{'-' if v is None or math.isnan(v) else f'{v:.3f}':>8}")
    lines.append(f"{'~/open_vocab on wall/floor':<26}{summary['open_vocab_on_stuff']:>5} of "
                 f"{summary['open_vocab_instances']}")
    for key, what in (("segment_mislabelled", "found, wrong label"), ("segment_missed", "not found")):
        counts = summary.get(key) or {}
        if counts:
            head = f"~/segment objects {what} ({sum(counts.values())} of {summary['segment_objects']})"
            lines.append(head + ": " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate_fused", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="", help="checkpoint ('' = the shipped default model)")
    ap.add_argument("--data", required=True, type=Path,
                    help="fused processed root (generate_synthetic --fused-out)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--vocabulary", nargs="+", default=DEMO_VOCABULARY, help="~/open_vocab class list")
    ap.add_argument("--max-scenes", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    if not (args.data / args.split).is_dir():
        ap.error(f"--data {args.data}: no {args.split}/ folder of fused rooms "
                 "(write them with generate_synthetic --fused-out)")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        ap.error(f"--checkpoint {args.checkpoint}: no such file")
    res = evaluate_fused(args.checkpoint, args.data, args.split, args.vocabulary, args.max_scenes)
    print(f"{res['num_scenes']} fused rooms from {args.data}/{args.split}")
    print(format_table(res["summary"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_json_safe({k: v for k, v in res.items() if k != "full"}), indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
