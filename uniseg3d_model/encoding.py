"""Containers passed between :class:`~uniseg3d_model.model.UniSeg3D`, the losses and
post-processing.

``SceneEncoding`` is what ``UniSeg3D.encode`` computes once per scene (backbone +
superpoint pooling) and callers cache; ``DecoderOutput`` is what one decoder pass over
that encoding returns. All masks are superpoint-level logits; post-processing maps them
back to points through ``superpoints``.

Query order inside a decoder pass (Q = Qu + K + T):
    [0, Qu)          unified queries (selected superpoints, then learnable queries)
    [Qu, Qu + K)     interactive queries, one per click, in ``scene.clicks`` order
    [Qu + K, Q)      referring queries, one per sentence, in ``scene.texts`` order
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch


@dataclass
class SceneEncoding:
    """Backbone output of one scene, reusable by any number of decoder passes.

    sp_features: (S, C) float superpoint features (mean of per-point backbone features)
    superpoints: (N,) int64 superpoint id of each point
    points:      (N, 3) float32 scene frame, metres (used to look up clicks)
    center:      (3,) float32 mean of ``points`` (origin of the click positional encoding)
    scene_id:    free-form identifier copied from the scene
    decoder_cache: filled by ``UniSeg3D.decode`` in inference (eval mode, no grad): the
                 decoder's per-scene projections, tagged with the weights they came from, so
                 later prompt queries on this scene skip them
    """

    sp_features: torch.Tensor
    superpoints: torch.Tensor
    points: torch.Tensor
    center: torch.Tensor
    scene_id: str = ""
    decoder_cache: Any = field(default=None, repr=False, compare=False)

    @property
    def num_superpoints(self) -> int:
        return int(self.sp_features.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.superpoints.shape[0])

    @property
    def device(self) -> torch.device:
        return self.sp_features.device

    def detach(self) -> SceneEncoding:
        """A copy cut from the autograd graph (what a cache should hold)."""
        return replace(self, sp_features=self.sp_features.detach(), decoder_cache=None)

    def to(self, device: torch.device | str) -> SceneEncoding:
        return replace(
            self,
            sp_features=self.sp_features.to(device),
            superpoints=self.superpoints.to(device),
            points=self.points.to(device),
            center=self.center.to(device),
            decoder_cache=None,
        )


@dataclass
class LayerPrediction:
    """Head outputs for every query of one scene after one decoder layer.

    masks:        (Q, S) mask logits over superpoints
    class_logits: (Q, V + 1) logits over the vocabulary, last column = "no object". With the
                  official heads (``ModelConfig.heads == "official"``) this is the INSTANCE head:
                  the stuff columns hold ``STUFF_LOGIT`` (softmax weight exactly 0), so
                  ``class_logits[:, thing_columns + [-1]]`` equals the official ``cls_preds``
    scores:       (Q,) mask-quality output. Our heads: a logit (sigmoid -> predicted IoU).
                  Official heads: the same tensor as ``iou`` (raw, no sigmoid)
    embeddings:   (Q, D) normalised query embeddings (for the vision-text contrastive loss)
    sem_logits:   (Q, V + 1) or None. Official heads only, final layer only: the separate
                  semantic head (``cls_proj_sem``), every class of the vocabulary + a
                  background column (always 0, the zero background prototype)
    iou:          (Q,) or None. Official heads only, every layer: the raw IoU head
                  (``pred_iou_proj`` on the normalised query, no sigmoid)
    queries:      (Q, d) the decoder queries these heads read, or None; kept so that
                  ``UniSeg3D.classify`` can re-run the heads for another vocabulary
    class_basis:  (Q, text_dim + 1) or None, filled by ``UniSeg3D.classify``: the class logits
                  against the identity basis of the text space (+ "no object")
    """

    masks: torch.Tensor
    class_logits: torch.Tensor
    scores: torch.Tensor
    embeddings: torch.Tensor
    sem_logits: torch.Tensor | None = None
    iou: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    class_basis: torch.Tensor | None = None

    def select(self, rows: slice | torch.Tensor) -> LayerPrediction:
        values = (getattr(self, f.name) for f in fields(self))
        return LayerPrediction(*(None if v is None else v[rows] for v in values))


@dataclass
class DecoderOutput:
    """One decoder pass over one scene.

    layers:            predictions after each stage; ``layers[0]`` comes from the initial
                       queries, ``layers[-1]`` is the final output, the rest are the
                       auxiliary outputs used for deep supervision
    num_unified:       Qu, number of unified (panoptic/semantic/instance) queries
    num_clicks:        K, number of interactive queries
    num_texts:         T, number of referring queries
    query_superpoints: (Qu,) int64 superpoint each unified query was selected from, -1 for
                       learnable queries
    vocabulary:        class names of the columns of ``class_logits`` (without "no object")
    superpoints:       (N,) int64 point -> superpoint map of the scene
    contrastive_scale: scalar tensor, exp of the learnable vision-text contrastive temperature
    protocol:          post-processing protocol of the model that produced it ("tuned" or
                       "official", ``ModelConfig.postprocess``); :mod:`uniseg3d_model.postprocess`
                       dispatches on it, so callers need not know which model they run
    """

    layers: list[LayerPrediction]
    num_unified: int
    num_clicks: int
    num_texts: int
    query_superpoints: torch.Tensor
    vocabulary: tuple[str, ...]
    superpoints: torch.Tensor
    contrastive_scale: torch.Tensor
    protocol: str = "tuned"

    @property
    def final(self) -> LayerPrediction:
        return self.layers[-1]

    @property
    def aux(self) -> list[LayerPrediction]:
        return self.layers[:-1]

    def unified(self, layer: int = -1) -> LayerPrediction:
        """Unified-query predictions of ``layer`` (default: final)."""
        return self.layers[layer].select(slice(0, self.num_unified))

    def clicks(self, layer: int = -1) -> LayerPrediction:
        """Interactive-query predictions, one row per click."""
        a = self.num_unified
        return self.layers[layer].select(slice(a, a + self.num_clicks))

    def texts(self, layer: int = -1) -> LayerPrediction:
        """Referring-query predictions, one row per sentence."""
        a = self.num_unified + self.num_clicks
        return self.layers[layer].select(slice(a, a + self.num_texts))

    @property
    def num_superpoints(self) -> int:
        return int(self.final.masks.shape[1])
