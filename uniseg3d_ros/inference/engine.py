"""Inference core of the node, pure Python: map snapshot -> superpoints -> encode -> per-task decode.

:class:`InferenceEngine` holds a :class:`uniseg3d_model.model.UniSeg3D` (with its text
encoder) and answers the node's five queries. The expensive part (superpoints, backbone
and superpoint pooling, a KD-tree for click checks) is cached per ``MapSnapshot.version``,
so queries against an unchanged map cost one decoder pass. Every query returns a
:class:`QueryResult`; bad requests (empty map, empty text, no classes, clicks off the map)
give ``success=False`` with a reason instead of raising.

All geometry is in the map's fixed frame, metres. ``point_indices`` index the rows of the
snapshot (``QueryResult.points``), which are also the rows of the segmented cloud.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from uniseg3d_ros.inference import checks
from uniseg3d_ros.inference.engine_cache import (  # noqa: F401 - STAGES, Cancelled, EncodingBusy: public here
    STAGES,
    VOCAB_CACHE,
    Cancelled,
    EncodingBusy,
    EntryCache,
    _bounded_put,
    _Prepared,
)
from uniseg3d_ros.inference.results import (
    InstanceInfo,
    QueryResult,
    instance_stats,
    majority_class,
    rank_by_overlap,
)

__all__ = [
    "STAGES",
    "Cancelled",
    "EncodingBusy",
    "EngineConfig",
    "InferenceEngine",
    "InstanceInfo",
    "QueryResult",
    "instance_stats",
]


@dataclass
class EngineConfig:
    """Defaults used when a request leaves a field at 0."""

    score_threshold: float = 0.3
    top_k: int = 1
    max_instances: int = 100
    nms_iou: float = 0.5
    max_click_distance: float = 0.2
    min_points: int = 10
    #: ``segment_points`` options for fused maps: a 4 cm graph (ScanNet's mesh spacing, not the
    #: 2 cm map voxels) and a hard bound, so S stays in ScanNet's range whatever the cloud's
    #: density or noise (bench/bench_segment_scale.py); the decoder is quadratic in S
    superpoint_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"voxel_size": 0.04, "max_superpoints": 1000}
    )


class InferenceEngine(EntryCache):
    """Answers segment / refer / open-vocab / interactive queries against map snapshots.

    ``model``: a UniSeg3D (``encode``/``decode``, ``class_names`` or ``cfg.class_names``);
    ``class_names``: the closed-set vocabulary (defaults to the model's, else ScanNet20).
    Thread-safe with a read-write discipline: a cache entry (:class:`_Prepared`) is built
    completely by one thread under ``_build_lock`` and then published by one assignment, so
    readers never lock. ``segment`` (heavy) waits for a running build; ``refer``,
    ``interactive`` and ``open_vocab`` (light) never do: during another thread's build they
    answer on the last finished entry, or say at once that the encoding is being built.
    """

    def __init__(
        self,
        model: Any,
        cfg: EngineConfig | None = None,
        class_names: list[str] | None = None,
        device: str = "cpu",
        notes: list[str] | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg or EngineConfig()
        self.device = device
        self.class_names = list(class_names or _model_class_names(model))
        self.notes = list(notes or [])  # e.g. "random weights" warnings, for logs and docs
        super().__init__()
        self.encode_count = 0  # how many times the backbone ran (tests check caching)

    def _build(self, snapshot: Any, version: int) -> _Prepared:
        """Superpoints, backbone, the prompt-free decoder pass, its semantic labels, the class basis
        (``open_vocab`` is then a matrix product) and the click KD-tree of one map version."""
        import torch
        from scipy.spatial import cKDTree

        from uniseg3d_model import postprocess
        from uniseg3d_model.structures import SceneSample
        from uniseg3d_model.superpoints import segment_points

        points = np.array(snapshot.points, dtype=np.float32)  # writable copies (snapshots are read-only)
        colors = np.array(snapshot.colors, dtype=np.float32)
        self._stage("superpoints")
        sp = np.asarray(segment_points(points, colors, **self.cfg.superpoint_kwargs), dtype=np.int64)
        scene = SceneSample(points=points, colors=colors, superpoints=sp, scene_id=f"map_v{version}")
        self._stage("backbone")
        with torch.inference_mode():
            encodings = self.model.encode([scene])
        self.encode_count += 1
        prep = _Prepared(version, scene, encodings, cKDTree(points.astype(np.float64)))
        self._stage("decoder")
        prep.base_out, _ = self._decode(prep)
        prep.semantic = np.asarray(postprocess.semantic(prep.base_out, prep.scene), dtype=np.int64)
        if hasattr(self.model, "classify"):
            with torch.inference_mode():
                self.model.classify(prep.encodings[0], prep.base_out, self.class_names)
        return prep

    def _decode(self, prep: _Prepared, unified: bool = True, **prompts: Any) -> Any:
        import torch

        scene = replace(prep.scene, **prompts) if prompts else prep.scene
        with torch.inference_mode():
            return self.model.decode(prep.encodings, [scene], unified=unified)[0], scene

    def _base(self, prep: _Prepared) -> Any:
        """The prompt-free decoder output of this map version (built with the entry)."""
        return prep.base_out

    def _vocab_instances(self, prep: _Prepared, names: tuple[str, ...], thr: float) -> Any:
        """Open-vocabulary instances of ``names`` on this map version: the cached final queries of
        the prompt-free pass re-scored by ``model.classify`` (no decoder pass), cached per vocabulary
        (the last ``VOCAB_CACHE`` ones). Models without ``classify`` decode with the vocabulary.
        ``thr``: the score threshold the caller applies; the official post-processing thresholds
        after its matrix NMS, so it drops those masks before expanding them to points (same answer,
        a fraction of the cost). The model's stuff classes are scored after ``names`` (class index
        >= len(names)); the caller drops their instances."""
        import torch

        from uniseg3d_model import postprocess

        pred = prep.vocab_preds.get((names, thr))
        if pred is not None:
            return pred
        scored = names + tuple(n for n in _stuff_names(self.model) if n not in names)
        if hasattr(self.model, "classify"):
            with torch.inference_mode():
                out = self.model.classify(prep.encodings[0], self._base(prep), scored)
            scene = prep.scene
        else:
            out, scene = self._decode(prep, vocabulary=list(scored))
        early = float(np.nextafter(thr, -np.inf)) if out.protocol == "official" and thr > 0 else None
        pred = postprocess.open_vocabulary(out, scene, score_threshold=early)
        _bounded_put(prep.vocab_preds, (names, thr), pred)
        return pred

    def _prompted(self, prep: _Prepared, **prompts: Any) -> Any:
        """Decoder output for click/text prompts. When the model isolates prompt queries from the
        unified ones (``cfg.isolate_prompts``), a prompt-only pass gives the same prompt outputs
        at a fraction of the cost; otherwise one joint pass."""
        isolated = bool(getattr(getattr(self.model, "cfg", None), "isolate_prompts", False))
        return self._decode(prep, unified=not isolated, **prompts)

    def _run(self, snapshot: Any, query: str, fn: Any, light: bool = False) -> QueryResult:
        """Prepare the entry and run ``fn(prep)``. Light queries never wait for another thread's
        build: they answer on the last finished entry (the message says which version), or at once
        that the encoding is being built when there is none yet."""
        t0 = time.perf_counter()
        reason = checks.map_problem(snapshot, self.cfg.min_points)
        if reason:
            return QueryResult.failure(reason, query)
        note = ""
        try:
            try:
                prep, cached = self._prepare(snapshot, wait=not light)
            except EncodingBusy as busy:
                if busy.prep is None:
                    return QueryResult.failure(busy.reason(), query)
                prep, cached = busy.prep, True
                note = f" (on map version {prep.version}; {busy.reason()})"
            result = fn(prep)
        except (RuntimeError, ValueError, IndexError) as exc:
            return QueryResult.failure(f"{query} inference failed: {type(exc).__name__}: {exc}", query)
        result.message += note
        result.query, result.cached = query, cached
        result.map_version = prep.version
        result.points, result.colors = prep.scene.points, prep.scene.colors
        result.latency_ms = 1e3 * (time.perf_counter() - t0)
        return result

    # ----------------------------------------------------------------- queries
    def segment(self, snapshot: Any, score_threshold: float = 0.0, progress: Any = None) -> QueryResult:
        """Panoptic run: instances (things, scored) + per-point semantic labels for the whole map.

        ``progress(stage, cached)`` is called before each of :data:`STAGES` (``cached``: the stage's
        output comes from the cache of this map version); it may raise :class:`Cancelled`, which
        propagates to the caller."""
        thr, err = checks.score_threshold(score_threshold, self.cfg.score_threshold)
        if err:
            return QueryResult.failure(err, "segment")

        def run(prep: _Prepared) -> QueryResult:
            from uniseg3d_model import postprocess

            out, scene = self._base(prep), prep.scene
            self._stage("postprocess")
            pan = postprocess.panoptic(out, scene, score_threshold=thr)
            pred, m = pan.instances, self.cfg.max_instances
            insts = instance_stats(
                scene.points,
                _np(pred.masks)[:m],
                _np(pred.classes)[:m],
                _np(pred.scores)[:m],
                list(pred.labels)[:m],
            )
            return QueryResult(
                True,
                f"{len(insts)} instances",
                insts,
                class_names=list(self.class_names),
                semantic=np.asarray(pan.semantic, dtype=np.int64),
            )

        self._local.progress = progress
        try:
            return self._run(snapshot, "segment", run)
        finally:
            self._local.progress = None

    def refer(self, snapshot: Any, text: str, top_k: int = 0) -> QueryResult:
        """Referring: the text's mask first, then up to ``top_k - 1`` instances ranked by overlap with it."""
        err = checks.text_problem(text, top_k)
        if err:
            return QueryResult.failure(err, "refer")
        k = top_k or self.cfg.top_k

        def run(prep: _Prepared) -> QueryResult:
            from uniseg3d_model import postprocess

            base = self._base(prep)
            out, scene = self._prompted(prep, texts=[text.strip()])
            semantic = prep.semantic
            masks, quality = postprocess.referring(out, scene)
            said = out.texts()  # score = mask quality x agreement of the sentence's class with the mask's
            agree = float(postprocess.class_agreement(said.class_logits[:1], masks[:1], semantic)[0])
            mask, score = _np(masks)[0].astype(bool), float(_np(quality)[0]) * agree
            cls = majority_class(semantic, mask)
            label = self.class_names[cls] if 0 <= cls < len(self.class_names) else text.strip()
            asked = int(postprocess.prompt_classes(said)[0])
            best = instance_stats(scene.points, mask[None], np.array([cls]), np.array([score]), [label])
            if k <= 1:
                cand = postprocess.InstancePrediction(
                    np.zeros((0, len(mask)), bool), np.zeros(0), np.zeros(0)
                )
            else:
                cand = postprocess.instances(
                    base, scene, score_threshold=0.0, top_k=self.cfg.max_instances, nms_iou=self.cfg.nms_iou
                )
            alt = rank_by_overlap(mask, _np(cand.masks), _np(cand.scores), k - 1)
            others = instance_stats(
                scene.points,
                _np(cand.masks)[alt[0]],
                _np(cand.classes)[alt[0]],
                alt[1],
                [list(cand.labels)[i] for i in alt[0]],
                first_id=1,
            )
            insts = [i for i in best + others if i.point_count > 0]
            msg = f"'{text.strip()}' -> {best[0].point_count} points, score {score:.3f}"
            if agree < 0.5 and asked != cls and 0 <= asked < len(self.class_names):
                msg += (f"; the sentence asks for a {self.class_names[asked]} but the mask lies mostly on "
                        f"{label} (class agreement {agree:.2f}): the map may not hold what it describes")
            return QueryResult(True, msg, insts, class_names=list(self.class_names), semantic=semantic)

        return self._run(snapshot, "refer", run, light=True)

    def open_vocab(self, snapshot: Any, class_names: list[str], score_threshold: float = 0.0) -> QueryResult:
        """Open vocabulary: instances classified among ``class_names`` (any strings)."""
        names = [str(c).strip() for c in (class_names or [])]
        thr, err = checks.score_threshold(score_threshold, self.cfg.score_threshold)
        err = checks.names_problem(names) or err
        if err:
            return QueryResult.failure(err, "open_vocab")

        def run(prep: _Prepared) -> QueryResult:
            key = (tuple(names), thr, self.cfg.max_instances)
            insts = prep.vocab_results.get(key)
            if insts is None:  # a repeated vocabulary reuses its instance list
                pred, scene = self._vocab_instances(prep, tuple(names), thr), prep.scene
                asked = _np(pred.classes) < len(names)  # a wall / floor region stays unasked
                keep = np.flatnonzero((_np(pred.scores) >= thr) & asked)[: self.cfg.max_instances]
                insts = instance_stats(
                    scene.points,
                    _np(pred.masks)[keep],
                    _np(pred.classes)[keep],
                    _np(pred.scores)[keep],
                    [list(pred.labels)[i] for i in keep],
                )
                _bounded_put(prep.vocab_results, key, insts)
            return QueryResult(
                True, f"{len(insts)} instances over {len(names)} classes", insts, class_names=names
            )

        return self._run(snapshot, "open_vocab", run, light=True)

    def interactive(self, snapshot: Any, clicks: Any, max_click_distance: float = 0.0) -> QueryResult:
        """Clicks (K, 3) in the fixed frame -> one instance per click (id = click index)."""
        pts = np.asarray(clicks, dtype=np.float64).reshape(-1, 3) if np.size(clicks) else np.zeros((0, 3))
        reason = checks.clicks_problem(pts, max_click_distance)
        reason = reason or checks.map_problem(snapshot, self.cfg.min_points)
        limit = max_click_distance or self.cfg.max_click_distance
        if reason:
            return QueryResult.failure(reason, "interactive")
        # distance check before any inference: a wrong click costs no model run
        from scipy.spatial import cKDTree

        # the entry this query will use: this version's, or the last one while another thread builds
        last, private = self._current(), getattr(self._local, "private", None) is not None
        busy = self._building is not None and not private
        usable = last is not None and (last.version == snapshot.version or busy)
        tree = last.tree if usable else cKDTree(np.asarray(snapshot.points, dtype=np.float64))
        dist, _ = tree.query(pts)
        far = np.flatnonzero(dist > limit)
        if len(far):
            i = int(far[0])
            return QueryResult.failure(
                f"clicks[{i}] {np.round(pts[i], 3).tolist()} is {dist[i]:.3f} m from the nearest map point "
                f"(max_click_distance {limit} m)",
                "interactive",
            )

        def run(prep: _Prepared) -> QueryResult:
            from uniseg3d_model import postprocess

            out, scene = self._prompted(prep, clicks=pts.astype(np.float32))
            masks = _np(postprocess.interactive(out, scene)).astype(bool)
            semantic = prep.semantic
            classes = np.array([majority_class(semantic, m) for m in masks], dtype=np.int64)
            labels = [self.class_names[c] if 0 <= c < len(self.class_names) else "object" for c in classes]
            insts = instance_stats(scene.points, masks, classes, np.ones(len(masks)), labels)
            return QueryResult(
                True,
                f"{len(insts)} clicks segmented",
                insts,
                class_names=list(self.class_names),
                semantic=semantic,
            )

        return self._run(snapshot, "interactive", run, light=True)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _stuff_names(model: Any) -> tuple[str, ...]:
    """The model's stuff classes (wall, floor): hidden competitors of every open vocabulary, so a
    wall or floor region is classified as what it is and dropped rather than given the closest
    requested thing name ("lamp" in a room without lamps returns nothing, not the floor)."""
    cfg = getattr(model, "cfg", None)
    return tuple(str(n) for n in getattr(cfg, "stuff_classes", ()) or ())


def _model_class_names(model: Any) -> list[str]:
    for owner in (model, getattr(model, "cfg", None)):
        names = getattr(owner, "class_names", None)
        if names:
            return list(names)
    from uniseg3d_model.data.labels import SCANNET20_CLASSES

    return list(SCANNET20_CLASSES)


def __getattr__(name: str) -> Any:
    """``load_engine`` and its helpers moved to :mod:`uniseg3d_ros.inference.loading`; the old
    import path keeps working."""
    if name in ("load_engine", "default_checkpoint", "RANDOM_MODEL"):
        from uniseg3d_ros.inference import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
