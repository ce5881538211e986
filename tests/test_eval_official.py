"""Our metrics against small independent re-implementations of the official evaluation code,
written here from the official algorithms (ScanNet ``evaluate_semantic_instance.py`` as in
UniSeg3D, mmdet3d ``panoptic_seg_eval.py`` and ``seg_eval.py``), in the official data layout
(ScanNet-style ``1000 * class + instance`` ids, mmdet3d panoptic markup with an ignore class),
on random scenes with duplicates, class confusions, void and small instances."""

from __future__ import annotations

import numpy as np
import pytest

from uniseg3d_model.eval import InstanceAPEvaluator, PanopticEvaluator, SemanticEvaluator

IGNORE = -100


# ---------------------------------------------------------------- ScanNet instance AP, official layout
def _reference_scannet_ap(scenes: list, num_classes: int, min_region: int) -> dict:
    """scenes: (gt_instance (N,), gt_class (G,), masks (M, N), classes (M,), scores (M,)) tuples."""
    overlaps = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
    valid_ids = list(range(1, num_classes + 1))  # class c <-> label id c + 1
    matches = []
    for s, (gt_inst, gt_cls, masks, classes, scores) in enumerate(scenes):
        ids = np.zeros(len(gt_inst), np.int64)  # 0: unannotated
        for g in np.unique(gt_inst[gt_inst >= 0]):
            ids[gt_inst == g] = 1000 * (gt_cls[g] + 1) + g + 1
        gts = {c: [] for c in range(num_classes)}
        for gid in np.unique(ids):
            if gid != 0 and gid // 1000 in valid_ids:
                gts[gid // 1000 - 1].append({"id": gid, "count": int((ids == gid).sum()), "preds": []})
        void = ~np.isin(ids // 1000, valid_ids)
        preds = {c: [] for c in range(num_classes)}
        for m in range(len(masks)):
            num = int(masks[m].sum())
            if num < min_region:
                continue
            p = {"name": (s, m), "count": num, "conf": scores[m], "void": int((masks[m] & void).sum()),
                 "gts": []}
            for gt in gts[classes[m]]:
                inter = int(((ids == gt["id"]) & masks[m]).sum())
                if inter > 0:
                    gt["preds"].append({**p, "inter": inter})
                    p["gts"].append({**gt, "inter": inter})
            preds[classes[m]].append(p)
        matches.append((gts, preds))
    ap = np.zeros((num_classes, len(overlaps)))
    for oi, th in enumerate(overlaps):
        visited = set()
        for c in range(num_classes):
            y_true, y_score, hard_fn, has_gt, has_pred = [], [], 0, False, False
            for gts, preds in matches:
                valid = [g for g in gts[c] if g["count"] >= min_region]
                has_gt |= bool(valid)
                has_pred |= bool(preds[c])
                cur_true, cur_score = [1.0] * len(valid), [-np.inf] * len(valid)
                cur_match = [False] * len(valid)
                for gi, gt in enumerate(valid):
                    found = False
                    for p in gt["preds"]:
                        if p["name"] in visited:
                            continue
                        if p["inter"] / (gt["count"] + p["count"] - p["inter"]) > th:
                            if cur_match[gi]:
                                lo, hi = sorted((cur_score[gi], p["conf"]))
                                cur_score[gi] = hi
                                cur_true.append(0.0)
                                cur_score.append(lo)
                                cur_match.append(True)
                            else:
                                found, cur_match[gi], cur_score[gi] = True, True, p["conf"]
                                visited.add(p["name"])
                    hard_fn += not found
                keep = np.array(cur_match, bool)
                y_true += list(np.array(cur_true)[keep])
                y_score += list(np.array(cur_score)[keep])
                for p in preds[c]:
                    if any(g["inter"] / (g["count"] + p["count"] - g["inter"]) > th for g in p["gts"]):
                        continue
                    ignore = p["void"] + sum(g["inter"] for g in p["gts"] if g["count"] < min_region)
                    if ignore / p["count"] <= th:
                        y_true.append(0.0)
                        y_score.append(p["conf"])
            if has_gt and has_pred:
                order = np.argsort(y_score)
                ys, yt = np.array(y_score)[order], np.array(y_true)[order]
                cum = np.cumsum(yt)
                _, uniq = np.unique(ys, return_index=True)
                total = cum[-1] if len(cum) else 0
                cum = np.append(cum, 0)
                prec, rec = np.zeros(len(uniq) + 1), np.zeros(len(uniq) + 1)
                for i, idx in enumerate(uniq):
                    tp = total - cum[idx - 1]
                    fp = len(ys) - idx - tp
                    prec[i], rec[i] = tp / (tp + fp), tp / (tp + cum[idx - 1] + hard_fn)
                prec[-1], rec[-1] = 1.0, 0.0
                widths = np.convolve(np.append(np.append(rec[0], rec), 0.0), [-0.5, 0, 0.5], "valid")
                ap[c, oi] = np.dot(prec, widths)
            else:
                ap[c, oi] = 0.0 if has_gt else np.nan
    but25 = ~np.isclose(overlaps, 0.25)
    return {"ap": np.nanmean(ap[:, but25]), "ap50": np.nanmean(ap[:, np.isclose(overlaps, 0.5)]),
            "ap25": np.nanmean(ap[:, np.isclose(overlaps, 0.25)]), "table": ap}


def _random_instance_scene(rng: np.random.Generator, num_classes: int):
    n = 400
    gt_inst = np.full(n, -1)
    sizes = rng.integers(5, 60, size=8)
    starts = np.concatenate([[0], np.cumsum(sizes + rng.integers(0, 15, size=8))])[:8]
    for g, (a, s) in enumerate(zip(starts, sizes)):
        gt_inst[a:min(a + s, n)] = g
    present = np.unique(gt_inst[gt_inst >= 0])
    gt_cls = rng.integers(0, num_classes, size=8)
    masks, classes = [], []
    for g in present:
        for _ in range(rng.integers(0, 3)):  # 0..2 predictions per instance: misses and duplicates
            m = gt_inst == g
            m = m ^ (rng.random(n) < 0.04)  # flips, so IoUs spread over the thresholds
            masks.append(m)
            classes.append(gt_cls[g] if rng.random() < 0.8 else rng.integers(0, num_classes))
    for _ in range(3):  # blobs anywhere (void, several instances)
        a = rng.integers(0, n - 40)
        m = np.zeros(n, bool)
        m[a:a + rng.integers(8, 40)] = True
        masks.append(m)
        classes.append(rng.integers(0, num_classes))
    scores = np.round(rng.random(len(masks)), 1)  # coarse: tied confidences occur
    return gt_inst, gt_cls, np.array(masks, bool), np.array(classes), scores


@pytest.mark.parametrize("seed", range(6))
def test_instance_ap_equals_reference_scannet_evaluation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scenes = [_random_instance_scene(rng, 3) for _ in range(3)]
    ev = InstanceAPEvaluator(["a", "b", "c"], min_region_size=10)
    for gt_inst, gt_cls, masks, classes, scores in scenes:
        ev.add_scene(gt_inst, gt_cls, masks, classes, scores)
    ours = ev.compute()
    ref = _reference_scannet_ap(scenes, 3, 10)
    for key in ("ap", "ap50", "ap25"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 0.0 < ours["ap"] < 1.0  # the case is not degenerate


# ---------------------------------------------------------------- mmdet3d panoptic, official markup
def _reference_mmdet3d_pq(scenes: list, num_classes: int, stuff: list[int]) -> dict:
    """scenes: (gt_sem, gt_inst, pred_sem, pred_inst) in our layout; converted to the official
    markup (ignore = class num_classes; stuff instance = class index; things 2 + instance)."""
    def markup(sem, inst):
        sem = np.where(sem == IGNORE, num_classes, sem)
        out = np.where(inst >= 0, inst + len(stuff), -1)
        for i, c in enumerate(stuff):
            out[sem == c] = i
        return sem, out

    tp, fp, fn, iou_sum = (np.zeros(num_classes) for _ in range(4))
    offset = 2 ** 16
    for gt_sem, gt_inst, pr_sem, pr_inst in scenes:
        gs, gi = markup(gt_sem, gt_inst)
        ps, pi = markup(pr_sem, pr_inst)
        gi, pi = gi + 1, pi + 1
        keep = gs != num_classes
        gs, gi, ps, pi = gs[keep], gi[keep], ps[keep], pi[keep]
        for c in range(num_classes):
            p_in = pi * (ps == c)
            g_in = gi * (gs == c)
            up, cp = np.unique(p_in[p_in > 0], return_counts=True)
            ug, cg = np.unique(g_in[g_in > 0], return_counts=True)
            mp, mg = np.zeros(len(up), bool), np.zeros(len(ug), bool)
            both = (p_in > 0) & (g_in > 0)
            combo, inter = np.unique(p_in[both] + offset * g_in[both], return_counts=True)
            for k, i in zip(combo, inter):
                g, p = np.searchsorted(ug, k // offset), np.searchsorted(up, k % offset)
                iou = i / (cg[g] + cp[p] - i)
                if iou > 0.5:
                    tp[c] += 1
                    iou_sum[c] += iou
                    mg[g] = mp[p] = True
            fn[c] += np.sum(~mg & (cg >= 1))
            fp[c] += np.sum(~mp & (cp >= 1))
    sq = iou_sum / np.maximum(tp, 1e-15)
    rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-15)
    return {"pq": float((sq * rq).mean()), "per_class_pq": sq * rq}


def _random_panoptic_scene(rng: np.random.Generator, num_classes: int, stuff: list[int]):
    n = 500
    gt_sem = rng.choice(stuff, size=n)
    gt_inst = np.full(n, -1)
    things = [c for c in range(num_classes) if c not in stuff]
    a = 0
    for g in range(6):
        s = int(rng.integers(10, 50))
        gt_sem[a:a + s] = rng.choice(things)
        gt_inst[a:a + s] = g
        a += s + int(rng.integers(0, 20))
    gt_sem[rng.random(n) < 0.1] = IGNORE
    gt_inst[gt_sem == IGNORE] = -1
    pr_sem, pr_inst = gt_sem.copy(), gt_inst.copy()
    pr_sem[pr_sem == IGNORE] = rng.choice(stuff)
    flip = rng.random(n) < 0.15  # some points change segment
    pr_inst[flip] = rng.integers(-1, 8, size=flip.sum())
    pr_sem[flip & (pr_inst >= 0)] = rng.choice(things)
    pr_sem[flip & (pr_inst < 0)] = rng.choice(stuff)
    split = (pr_inst == 0) & (np.arange(n) % 2 == 0)  # one instance cut in two
    pr_inst[split] = 9
    return gt_sem, gt_inst, pr_sem, pr_inst


@pytest.mark.parametrize("seed", range(5))
def test_panoptic_equals_reference_mmdet3d(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["wall", "floor", "chair", "table", "sofa", "bed"]  # "bed": never present -> 0 in the mean
    scenes = [_random_panoptic_scene(rng, 5, [0, 1]) for _ in range(2)]
    ev = PanopticEvaluator(names, names[2:], min_points=1, rule="mmdet3d")
    for sc in scenes:
        ev.add_scene(*sc)
    ours = ev.compute()
    ref = _reference_mmdet3d_pq(scenes, 6, [0, 1])
    assert ours["pq"] == pytest.approx(ref["pq"], abs=1e-12)
    for i, name in enumerate(names):
        assert ours["per_class"][name]["pq"] == pytest.approx(ref["per_class_pq"][i], abs=1e-12), name
    assert ours["per_class"]["bed"]["pq"] == 0.0


# ---------------------------------------------------------------- mmdet3d seg_eval
def _reference_seg_eval(scenes: list, num_classes: int) -> float:
    """seg_eval with the ignore class appended at index num_classes, as UniSeg3D's label2cat."""
    k = num_classes + 1
    hist = np.zeros((k, k), np.int64)
    for gt, pred in scenes:
        gt = np.where(gt == IGNORE, num_classes, gt)
        pred = pred.copy()
        pred[gt == num_classes] = -1
        gt = np.where(gt == num_classes, -1, gt)
        valid = (gt >= 0) & (gt < k)
        hist += np.bincount(k * gt[valid] + pred[valid], minlength=k * k)[: k * k].reshape(k, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    iou[num_classes] = np.nan
    return float(np.nanmean(iou))


@pytest.mark.parametrize("seed", range(4))
def test_semantic_equals_reference_seg_eval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(3):
        gt = rng.integers(0, 4, size=300)  # classes 4, 5 never in ground truth; 5 never predicted
        gt[rng.random(300) < 0.2] = IGNORE
        pred = np.where(rng.random(300) < 0.7, np.where(gt == IGNORE, 0, gt), rng.integers(0, 5, size=300))
        scenes.append((gt, pred))
    ev = SemanticEvaluator(["a", "b", "c", "d", "e", "f"])
    for gt, pred in scenes:
        ev.add_scene(gt, pred)
    result = ev.compute()
    assert result["miou"] == pytest.approx(_reference_seg_eval(scenes, 6), abs=1e-12)
    assert result["per_class"]["e"] == 0.0  # predicted, never true: in the mean as 0
    assert np.isnan(result["per_class"]["f"])  # neither: left out
