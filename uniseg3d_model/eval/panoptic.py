"""Panoptic quality (PQ, SQ, RQ; all, things and stuff) for point clouds, two rules.

A panoptic labelling gives every point a class and, for thing classes, an instance id.
Segments are (class, instance) groups; a stuff class is one segment per scene (its
instance ids are not read). A predicted and a ground-truth segment of the same class
match when their IoU is strictly above 0.5 (so matches are unique). Per class
PQ = SQ x RQ with SQ = sum(IoU of matches) / TP and RQ = TP / (TP + FP/2 + FN/2).

``rule="mmdet3d"`` (default; UniSeg3D's metric, mmdet3d ``evaluation/functional/
panoptic_seg_eval.py`` ``EvalPanoptic``):

- points whose ground truth is ignored are removed from both sides before anything else;
- an unmatched ground-truth segment is a false negative and an unmatched predicted
  segment a false positive when it keeps at least ``min_points`` points (UniSeg3D uses 1):
  a prediction lying partly on labelled points is a false positive whatever its ignored part;
- the means run over every class (things + stuff): a class with no ground truth and no
  prediction scores 0 (SQ and RQ divide by max(count, 1e-15)).

``rule="coco"`` (our earlier rule, COCO panoptic style): predicted segments with fewer than
``min_points`` points are dropped first; IoU leaves the ignored points out of the predicted
area; an unmatched predicted segment more than half on ignored points is not a false
positive; the means run over the classes that occur (in ground truth or prediction).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uniseg3d_model.data.labels import IGNORE_INDEX


def _segments(semantic: np.ndarray, instance: np.ndarray, is_thing: np.ndarray) -> np.ndarray:
    """Segment key per point: class * 2**32 + (instance for things, 0 for stuff); -1 for none."""
    c = len(is_thing)
    valid = (semantic >= 0) & (semantic < c)
    thing = np.zeros_like(valid)
    thing[valid] = is_thing[semantic[valid]]
    valid &= ~thing | (instance >= 0)
    inst = np.where(thing, instance + 1, 0)
    return np.where(valid, semantic.astype(np.int64) * (1 << 32) + inst, -1)


RULES = ("mmdet3d", "coco")


class PanopticEvaluator:
    def __init__(
        self,
        class_names: Sequence[str],
        thing_classes: Sequence[str],
        min_points: int = 0,
        ignore_index: int = IGNORE_INDEX,
        rule: str = "mmdet3d",
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        self.class_names = list(class_names)
        self.is_thing = np.array([n in set(thing_classes) for n in self.class_names])
        self.min_points = int(min_points)
        self.ignore_index = ignore_index
        c = len(self.class_names)
        self.iou_sum = np.zeros(c)
        self.tp = np.zeros(c, dtype=np.int64)
        self.fp = np.zeros(c, dtype=np.int64)
        self.fn = np.zeros(c, dtype=np.int64)

    def add_scene(
        self,
        gt_semantic: np.ndarray,
        gt_instance: np.ndarray,
        pred_semantic: np.ndarray,
        pred_instance: np.ndarray,
    ) -> None:
        """All (N,) int arrays; instance ids are ignored for stuff classes, negative = none."""
        arrays = [np.asarray(a).reshape(-1) for a in (gt_semantic, gt_instance, pred_semantic, pred_instance)]
        n = len(arrays[0])
        for name, a in zip(("gt_instance", "pred_semantic", "pred_instance"), arrays[1:]):
            if len(a) != n:
                raise ValueError(f"{name} has {len(a)} points, gt_semantic has {n}")
        gt_sem, gt_inst, pr_sem, pr_inst = arrays
        ignored = (gt_sem == self.ignore_index) | (gt_sem < 0) | (gt_sem >= len(self.class_names))
        if self.rule == "mmdet3d":
            keep = ~ignored
            self._add_mmdet3d(_segments(gt_sem[keep], gt_inst[keep], self.is_thing),
                              _segments(pr_sem[keep], pr_inst[keep], self.is_thing))
            return
        gt_seg = _segments(gt_sem, gt_inst, self.is_thing)
        gt_seg[ignored] = -1
        pr_seg = _segments(pr_sem, pr_inst, self.is_thing)

        gt_ids, gt_area = np.unique(gt_seg[gt_seg >= 0], return_counts=True)
        pr_ids_all, pr_area_all = np.unique(pr_seg[pr_seg >= 0], return_counts=True)
        keep = pr_area_all >= self.min_points
        pr_ids = pr_ids_all[keep]
        pr_seg = np.where(np.isin(pr_seg, pr_ids), pr_seg, -1)
        # areas after removing ignored points, and the ignored part of each prediction
        pr_valid_ids, pr_valid_area = np.unique(pr_seg[(pr_seg >= 0) & ~ignored], return_counts=True)
        pr_area = dict(zip(pr_valid_ids.tolist(), pr_valid_area.tolist()))
        ig_ids, ig_area = np.unique(pr_seg[(pr_seg >= 0) & ignored], return_counts=True)
        pr_ignored = dict(zip(ig_ids.tolist(), ig_area.tolist()))

        both = (gt_seg >= 0) & (pr_seg >= 0)
        pairs, inter = np.unique(np.stack([gt_seg[both], pr_seg[both]], 1), axis=0, return_counts=True)
        gt_area_d = dict(zip(gt_ids.tolist(), gt_area.tolist()))
        matched_gt: set[int] = set()
        matched_pr: set[int] = set()
        for (g, p), i in zip(pairs.tolist(), inter.tolist()):
            if g >> 32 != p >> 32:
                continue
            iou = i / (gt_area_d[g] + pr_area.get(p, 0) - i)
            if iou > 0.5:
                c = g >> 32
                self.tp[c] += 1
                self.iou_sum[c] += iou
                matched_gt.add(g)
                matched_pr.add(p)
        for g in gt_ids.tolist():
            if g not in matched_gt:
                self.fn[g >> 32] += 1
        for p in pr_ids.tolist():
            if p in matched_pr:
                continue
            total = pr_area.get(p, 0) + pr_ignored.get(p, 0)
            if pr_ignored.get(p, 0) / total > 0.5:
                continue
            self.fp[p >> 32] += 1

    def _add_mmdet3d(self, gt_seg: np.ndarray, pr_seg: np.ndarray) -> None:
        """gt_seg, pr_seg: (N',) segment keys of the non-ignored points (-1: no segment)."""
        gt_ids, gt_area = np.unique(gt_seg[gt_seg >= 0], return_counts=True)
        pr_ids, pr_area = np.unique(pr_seg[pr_seg >= 0], return_counts=True)
        both = (gt_seg >= 0) & (pr_seg >= 0) & (gt_seg >> 32 == pr_seg >> 32)
        matched_gt = np.zeros(len(gt_ids), bool)
        matched_pr = np.zeros(len(pr_ids), bool)
        if both.any():
            pairs, inter = np.unique(np.stack([gt_seg[both], pr_seg[both]], 1), axis=0, return_counts=True)
            gi = np.searchsorted(gt_ids, pairs[:, 0])
            pi = np.searchsorted(pr_ids, pairs[:, 1])
            iou = inter / (gt_area[gi] + pr_area[pi] - inter)
            tp = iou > 0.5
            cls = pairs[tp, 0] >> 32
            np.add.at(self.tp, cls, 1)
            np.add.at(self.iou_sum, cls, iou[tp])
            matched_gt[gi[tp]] = True
            matched_pr[pi[tp]] = True
        fn = ~matched_gt & (gt_area >= self.min_points)
        fp = ~matched_pr & (pr_area >= self.min_points)
        np.add.at(self.fn, gt_ids[fn] >> 32, 1)
        np.add.at(self.fp, pr_ids[fp] >> 32, 1)

    def compute(self) -> dict:
        if self.rule == "mmdet3d":
            return self._compute_mmdet3d()
        return self._compute_coco()

    def _compute_mmdet3d(self) -> dict:
        eps = 1e-15
        sq = self.iou_sum / np.maximum(self.tp, eps)
        rq = self.tp / np.maximum(self.tp + 0.5 * self.fp + 0.5 * self.fn, eps)
        pq = sq * rq
        out = {}
        for prefix, sel in (("", np.ones_like(self.is_thing)), ("things_", self.is_thing),
                            ("stuff_", ~self.is_thing)):
            for name, values in (("pq", pq), ("sq", sq), ("rq", rq)):
                out[prefix + name] = float(values[sel].mean()) if sel.any() else float("nan")
        out["per_class"] = {
            name: {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i])}
            for i, name in enumerate(self.class_names)
        }
        return out

    def _compute_coco(self) -> dict:
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        present = denom > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            pq = np.where(present, self.iou_sum / np.where(present, denom, 1), np.nan)
            sq = np.where(self.tp > 0, self.iou_sum / np.maximum(self.tp, 1), 0.0)
            rq = np.where(present, self.tp / np.where(present, denom, 1), np.nan)
        sq = np.where(present, sq, np.nan)

        def _mean(values: np.ndarray, sel: np.ndarray) -> float:
            values = values[sel & present]
            return float(values.mean()) if len(values) else float("nan")

        everything = np.ones_like(self.is_thing)
        out = {}
        for prefix, sel in (("", everything), ("things_", self.is_thing), ("stuff_", ~self.is_thing)):
            out[prefix + "pq"] = _mean(pq, sel)
            out[prefix + "sq"] = _mean(sq, sel)
            out[prefix + "rq"] = _mean(rq, sel)
        out["per_class"] = {
            name: {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i])}
            for i, name in enumerate(self.class_names)
        }
        return out
