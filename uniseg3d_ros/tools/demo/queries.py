"""The demo's planner queries: each service call, its answer scored against the room's ground truth,
and the figures of the answers.

Indices in the answers (``InstanceResult.point_indices``) refer to the map snapshot the node
queried; the demo takes that snapshot's points from the ``~/segment`` answer's segmented cloud
(the map no longer changes once the replay has settled, and the node's ``map_version`` is
checked again after the last query).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_ros.tools.demo.report import Query
from uniseg3d_ros.tools.demo.ros_io import DemoError
from uniseg3d_ros.tools.demo.scene import (
    best_match,
    click_point,
    indices_to_mask,
    is_thing,
    matches_word,
    pick_click_object,
    pick_referrals,
    semantic_scores,
    transfer_labels,
)

if TYPE_CHECKING:
    import argparse

    from uniseg3d_model.synthetic.sentences import Referral
    from uniseg3d_ros.tools.demo.ros_io import Planner
    from uniseg3d_ros.tools.demo.scene import DemoRoom


class Demo(Protocol):
    """What the queries need of the running demo (``uniseg3d_ros.tools.demo.main.Demo``)."""

    args: argparse.Namespace
    out: Path
    room: DemoRoom

    def record(self, query: Query) -> Query: ...

    def step(self, text: str) -> None: ...

MIN_VISIBLE = 200  # map points an object needs to count as seen (about 0.08 m^2 of surface)
MATCH_IOU = 0.5


class QueryRunner:
    def __init__(self, demo: Demo, planner: Planner) -> None:
        self.demo, self.planner = demo, planner
        self.scene = demo.room.scene
        self.timeout = demo.args.timeout
        self.figure_jobs: list[tuple[Any, str, tuple]] = []  # (query, kind, payload)
        self.refer_targets: set[int] = set()
        self.segment_info: dict[str, Any] = {}

    def _object_name(self, oid: int) -> str:
        if oid < 0:
            return "-"
        o = self.scene.object(oid)
        return f"{o.color_name} {o.raw_category} #{oid}"

    def _mask(self, inst: Any) -> np.ndarray:
        return indices_to_mask(np.asarray(inst.point_indices, dtype=np.int64), len(self.points))

    # ----------------------------------------------------------------- segment
    def segment(self) -> None:
        from uniseg3d_msgs.srv import Segment

        from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays, read_points

        req = Segment.Request(score_threshold=0.0, publish=True, return_cloud=True)
        resp, rt = self.planner.call(Segment, "segment", req, self.timeout)
        q = Query("segment", "(whole map)", bool(resp.success), resp.message, resp.latency_ms, 1e3 * rt)
        if not resp.success:
            self.demo.record(q)
            raise DemoError(f"~/segment failed, nothing to score against: {resp.message}")
        self.points, colors = cloud_to_arrays(resp.segmented_cloud)
        self.colors = colors if colors is not None else np.full(self.points.shape, 0.5, np.float32)
        fields = read_points(resp.segmented_cloud, ["label", "instance"])
        self.pred_label = fields["label"].astype(np.int64)
        self.pred_instance = fields["instance"].astype(np.int64)
        self.truth = transfer_labels(self.scene, self.points)
        self.map_version = self.planner.stats.get("map_version")
        seen = self.truth.point_counts()
        things = [
            o.object_id for o in self.scene.objects if is_thing(o) and seen.get(o.object_id, 0) >= MIN_VISIBLE
        ]
        matched: set[int] = set()
        labelled: set[int] = set()  # found at IoU >= 0.5 AND called by the object's ScanNet20 class
        self.pred_to_truth: dict[int, int] = {}
        self.seg_instances: list[tuple[np.ndarray, str, float]] = []  # (mask, label, score)
        for inst in resp.instances:
            self.seg_instances.append((self._mask(inst), inst.label, float(inst.score)))
            oid, score = best_match(self._mask(inst), self.truth, things)
            if score >= MATCH_IOU:
                matched.add(oid)
                if inst.label == SCANNET20_CLASSES[self.scene.object(oid).scannet20]:
                    labelled.add(oid)
            self.pred_to_truth[int(inst.id)] = oid if score >= 0.25 else -1
            q.rows.append(
                dict(
                    id=int(inst.id),
                    label=inst.label,
                    score=round(float(inst.score), 3),
                    points=int(inst.point_count),
                    truth=self._object_name(oid),
                    iou=round(score, 3),
                )
            )
        acc, miou = semantic_scores(self.pred_label, self.truth)
        self.segment_info = dict(
            instances=len(resp.instances),
            semantic_accuracy=round(acc, 3),
            semantic_miou=round(miou, 3),
            things_visible=len(things),
            things_found=len(matched),
            things_found_labelled=len(labelled),
            points=len(self.points),
        )
        self.things = things
        q.figure = "panoptic.png"
        self.figure_jobs.append((q, "panoptic", ()))
        self.demo.record(q)

    # ----------------------------------------------------------------- refer
    def pick_sentences(self, count: int) -> list[Referral]:
        picked = pick_referrals(self.demo.room, self.truth, count, MIN_VISIBLE)
        if count and not picked:
            self.demo.step("no sentence targets an object the map saw; skipping ~/refer")
        return picked

    def refer(self, ref: Referral) -> None:
        from uniseg3d_msgs.srv import Refer


        resp, rt = self.planner.call(
            Refer, "refer", Refer.Request(text=ref.description, top_k=1), self.timeout
        )
        q = Query(
            "refer", f'"{ref.description}"', bool(resp.success), resp.message, resp.latency_ms, 1e3 * rt
        )
        truth = self.truth.mask(ref.object_id)
        self.refer_targets.add(ref.object_id)
        if resp.success:  # an empty answer (the model found nothing) scores IoU 0
            inst = resp.instances[0] if resp.instances else None
            answer = self._mask(inst) if inst is not None else np.zeros(len(self.points), bool)
            q.iou = _iou(answer, truth)
            q.rows.append(
                dict(
                    label=inst.label if inst is not None else "(nothing)",
                    score=round(float(inst.score), 3) if inst is not None else 0.0,
                    points=int(answer.sum()),
                    truth=self._object_name(ref.object_id),
                    truth_points=int(truth.sum()),
                )
            )
            q.figure = f"refer_{len(self.refer_targets)}.png"
            label = f"{inst.label} {float(inst.score):.2f}" if inst is not None else "(nothing)"
            title = f'~/refer "{ref.description}" -> IoU {q.iou:.2f}'
            name = self._object_name(ref.object_id)
            self.figure_jobs.append((q, "mask", (answer, truth, title, label, name, [])))
        self.demo.record(q)

    # ----------------------------------------------------------------- open vocabulary
    def open_vocab(self, vocabulary: list[str]) -> None:
        from uniseg3d_msgs.srv import OpenVocab


        req = OpenVocab.Request(class_names=vocabulary, score_threshold=0.0)
        resp, rt = self.planner.call(OpenVocab, "open_vocab", req, self.timeout)
        q = Query(
            "open_vocab",
            "[" + ", ".join(vocabulary) + "]",
            bool(resp.success),
            resp.message,
            resp.latency_ms,
            1e3 * rt,
        )
        seen = self.truth.point_counts()
        by_word = {
            w: [
                o.object_id
                for o in self.scene.objects
                if matches_word(o, w) and seen.get(o.object_id, 0) >= MIN_VISIBLE
            ]
            for w in vocabulary
        }
        self.vocab_truth = {w: len(ids) for w, ids in by_word.items()}
        answers: list[tuple[np.ndarray, str, str]] = []  # (mask, word, label text)
        truths = [
            (self.truth.mask(oid), w, f"{self.scene.object(oid).raw_category} #{oid}")
            for w, ids in by_word.items()
            for oid in ids
        ]
        if resp.success:
            for inst in resp.instances:
                mask = self._mask(inst)
                cands = by_word.get(inst.label, [])
                oid, score = best_match(mask, self.truth, cands) if cands else (-1, 0.0)
                answers.append((mask, inst.label, f"{inst.label} {float(inst.score):.2f}"))
                q.rows.append(
                    dict(
                        label=inst.label,
                        score=round(float(inst.score), 3),
                        points=int(inst.point_count),
                        truth=self._object_name(oid),
                        iou=round(score, 3),
                    )
                )
            q.figure = "open_vocab.png"
            found = sum(1 for r in q.rows if r["iou"] >= MATCH_IOU)
            title = (f"~/open_vocab [{', '.join(vocabulary)}]: {len(answers)} instances returned, "
                     f"{found} match a ground-truth object of their word at IoU >= {MATCH_IOU}")
            self.figure_jobs.append((q, "classes", (answers, truths, title)))
        self.demo.record(q)

    # ----------------------------------------------------------------- interactive
    def interactive(self) -> None:
        from geometry_msgs.msg import Point
        from uniseg3d_msgs.srv import Interactive


        oid = pick_click_object(self.demo.room, self.truth, self.refer_targets, MIN_VISIBLE)
        if oid < 0:
            self.demo.step("no object seen well enough to click; skipping ~/interactive")
            return
        truth = self.truth.mask(oid)
        click = click_point(self.points, truth)
        req = Interactive.Request(clicks=[Point(x=float(click[0]), y=float(click[1]), z=float(click[2]))])
        resp, rt = self.planner.call(Interactive, "interactive", req, self.timeout)
        where = "(" + ", ".join(f"{v:.2f}" for v in click) + ")"
        q = Query(
            "interactive",
            f"click {where} on the {self._object_name(oid)}",
            bool(resp.success),
            resp.message,
            resp.latency_ms,
            1e3 * rt,
        )
        if resp.success:  # an empty answer scores IoU 0
            inst = resp.instances[0] if resp.instances else None
            answer = self._mask(inst) if inst is not None else np.zeros(len(self.points), bool)
            q.iou = _iou(answer, truth)
            q.rows.append(
                dict(
                    label=inst.label if inst is not None else "(nothing)",
                    points=int(answer.sum()),
                    truth=self._object_name(oid),
                    truth_points=int(truth.sum()),
                )
            )
            q.figure = "interactive.png"
            label = inst.label if inst is not None else "(nothing)"
            name = self._object_name(oid)
            title = f"~/interactive click at {where} (star) on the {name} -> IoU {q.iou:.2f}"
            self.figure_jobs.append((q, "mask", (answer, truth, title, label, name, [click])))
        self.demo.record(q)
        end_version = self.planner.stats.get("map_version")
        if end_version != self.map_version:
            self.demo.step(
                f"warning: the map changed during the queries (version {self.map_version} -> "
                f"{end_version}); scores may be off"
            )

    # ----------------------------------------------------------------- figures
    def figures(self) -> list[Path]:
        from uniseg3d_ros.tools.demo.figures import FigureMaker

        fm = FigureMaker(self.points, self.colors, self.demo.out / "figures")
        written = []
        for q, kind, payload in self.figure_jobs:
            if kind == "panoptic":
                path = self._panoptic_figure(fm, q.figure, list(SCANNET20_CLASSES))
            elif kind == "mask":
                answer, truth, title, label, truth_name, clicks = payload
                path = fm.mask_figure(answer, truth, q.figure, title, label, truth_name, clicks)
            else:
                path = fm.class_masks_figure(payload[0], payload[1], q.figure, payload[2])
            q.figure = str(path)
            written.append(path)
        return written

    def _panoptic_figure(self, fm: Any, name: str, class_names: list[str]) -> Path:
        """Prediction coloured by its own predicted classes (wall / floor per point, each instance
        by its label), ground truth by the true classes, same colour per class on both sides."""
        from uniseg3d_ros.tools.demo.figures import stuff_colors

        answers = [(m, lab, f"{lab} {score:.2f}") for m, lab, score in self.seg_instances]
        truths = []
        for oid in self.things:
            o = self.scene.object(oid)
            truths.append((self.truth.mask(oid), class_names[o.scannet20], f"{o.raw_category} #{oid}"))
        left = stuff_colors(self.pred_label, class_names, fm.grey)
        right = stuff_colors(self.truth.semantic, class_names, fm.grey)
        info = self.segment_info
        title = (
            f"~/segment: {info['instances']} instances, objects found (IoU >= {MATCH_IOU}) "
            f"{info['things_found']}/{info['things_visible']}, with the right label "
            f"{info['things_found_labelled']}/{info['things_visible']}, "
            f"semantic mIoU {info['semantic_miou']:.2f} (prediction coloured by its own class)"
        )
        return fm.class_masks_figure(
            answers, truths, name, title, background=(left, right),
            titles=("node's answer (predicted classes)", "ground truth (true classes)"),
        )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from uniseg3d_ros.tools.demo.scene import iou

    return round(iou(a, b), 3)
