"""UniSeg3D: one model for panoptic, semantic, instance, interactive, referring and
open-vocabulary 3D segmentation.

    points, colors --voxelize(2 cm)--> backbone --> per-point features
        --superpoints.pool--> superpoint features            (encode: once per scene)
    unified + click + text queries --UnifiedDecoder--> masks / classes / scores
                                                          (decode: once per query set)

Two architectures share this code: ours (``ModelConfig.small()``/``paper()``: MinkUNet,
cosine class head against class-name embeddings, tuned post-processing) and the released
UniSeg3D (``ModelConfig.official()``: SPFormer's spconv U-Net, grid anchored at the scene
minimum, prototype class heads + semantic head + raw IoU head, ``lang.Mlp`` text queries on raw
CLIP features, the official post-processing). docs/model.md lists the differences.

``forward(scenes) == decode(encode(scenes), scenes)``; a caller that answers many prompts
on one scene (the ROS node) keeps the :class:`SceneEncoding` and calls :meth:`decode`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uniseg3d_model import superpoints as sp_ops
from uniseg3d_model.backbone import BackboneConfig, MinkUNet
from uniseg3d_model.data.labels import SCANNET20_CLASSES, STUFF_CLASSES
from uniseg3d_model.decoder import SourceCache, UnifiedDecoder
from uniseg3d_model.encoding import DecoderOutput, SceneEncoding
from uniseg3d_model.queries import QueryBuilder, click_superpoints, interaction_mask, select_superpoints
from uniseg3d_model.sparse import SparseTensor
from uniseg3d_model.structures import SceneSample
from uniseg3d_model.voxel_input import ORIGINS, voxel_input

#: input features per voxel: RGB mapped to [-1, 1], then (``use_xyz``) xyz relative to the
#: scene mean in metres, as UniSeg3D/OneFormer3D feed their U-Net
IN_CHANNELS = 6
#: vocabularies whose class-name embeddings the model keeps
CLASS_CACHE_SIZE = 32
#: choices of the string-valued architecture fields of ModelConfig
CHOICES = {
    "backbone_type": ("minkunet", "spconv_unet"),
    "voxel_origin": ORIGINS,
    "heads": ("ours", "official"),
    "text_query": ("unit_proj", "raw_mlp"),
    "postprocess": ("tuned", "official"),
}


@dataclass
class ModelConfig:
    """Architecture of :class:`UniSeg3D`. ``ModelConfig.official()`` is the released UniSeg3D
    (the network ``convert_official`` fills from ``model_best_2.pth``); ``ModelConfig.paper()``
    is our architecture at the published decoder sizes with a MinkUNet backbone;
    ``ModelConfig.small()`` is a CPU-sized variant of ours (tests, shipped default).

    Architecture switches (all default to ours):
      backbone_type   "minkunet" (``backbone``) | "spconv_unet" (``spconv``, SPFormer U-Net)
      voxel_origin    "world" (floor(p / v)) | "scene_min" (floor((p - min) / v), official)
      heads           "ours" | "official" (prototype instance + semantic heads, raw IoU head)
      text_query      "unit_proj" (unit text embedding) | "raw_mlp" (official lang.Mlp on the
                      raw CLIP feature)
      class_prototypes  P > 0: the model holds (len(class_names), P, text_dim) class
                      prototypes (``scannet_cls_embedding.pth``) as the buffer
                      ``class_prototypes``; 0: class names go through the text encoder
      postprocess     "tuned" | "official": the protocol :mod:`postprocess` applies to this
                      model's outputs (carried by every DecoderOutput)
    """

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(in_channels=IN_CHANNELS))
    voxel_size: float = 0.02
    use_xyz: bool = True  # backbone input = rgb (+ centred xyz); backbone.in_channels must be 3 (6)
    class_names: tuple[str, ...] = SCANNET20_CLASSES
    stuff_classes: tuple[str, ...] = STUFF_CLASSES
    class_template: str = "{}"  # text fed to the text encoder for a class name
    d_model: int = 256
    num_heads: int = 8
    num_layers: int = 6
    ffn_dim: int = 1024
    dropout: float = 0.0
    num_learned_queries: int = 0
    query_ratio: float = 0.5  # training keeps U(query_ratio, 1) of the superpoints as queries
    max_train_queries: int = 3500
    max_eval_queries: int = 4000
    click_pe_bands: int = 8
    isolate_prompts: bool = True  # prompt queries attend only to themselves in self-attention
    mask_attention: bool = True
    backbone_type: str = "minkunet"
    spconv: dict[str, Any] = field(default_factory=dict)  # SpconvUNetConfig fields
    voxel_origin: str = "world"
    heads: str = "ours"
    text_query: str = "unit_proj"
    class_prototypes: int = 0
    postprocess: str = "tuned"

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = BackboneConfig(**self.backbone)
        self.class_names = tuple(self.class_names)
        self.stuff_classes = tuple(self.stuff_classes)
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 < self.query_ratio <= 1.0:
            raise ValueError(f"query_ratio must be in (0, 1], got {self.query_ratio}")
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.class_prototypes < 0:
            raise ValueError(f"class_prototypes must be >= 0, got {self.class_prototypes}")
        self.spconv = dict(self.spconv)
        expected = IN_CHANNELS if self.use_xyz else 3
        if self.backbone_type == "spconv_unet":
            in_ch = int(self.spconv.get("in_channels", IN_CHANNELS))
            if in_ch != expected:
                raise ValueError(
                    f"spconv.in_channels must be {expected} (use_xyz={self.use_xyz}), got {in_ch}"
                )
        elif self.backbone.in_channels != expected:
            raise ValueError(
                f"backbone.in_channels must be {expected} (use_xyz={self.use_xyz}), "
                f"got {self.backbone.in_channels}"
            )

    @classmethod
    def paper(cls) -> ModelConfig:
        """UniSeg3D on ScanNet: Res16UNet34C-family backbone, 6 decoder layers, d_model 256,
        8 heads, FFN 1024, superpoint queries only (no learnable queries)."""
        return cls(backbone=BackboneConfig.res16unet34c(in_channels=IN_CHANNELS))

    @classmethod
    def official(cls, **overrides: Any) -> ModelConfig:
        """The released UniSeg3D (config ``uniseg3d_1xb4_scannet_scanrefer_scannet200_unified``):
        spconv U-Net (planes 32..160) on a 2 cm grid anchored at the scene minimum, 6 decoder
        layers, d_model 256, 8 heads, FFN 1024, no learnable queries, clicks without positional
        encoding, every superpoint a query in evaluation, prototype class heads (D = 768),
        lang.Mlp text queries, the official post-processing. ``class_prototypes`` (P) is set by
        the converter from ``scannet_cls_embedding.pth``."""
        kw: dict[str, Any] = dict(
            backbone_type="spconv_unet",
            spconv={"in_channels": IN_CHANNELS, "planes": (32, 64, 96, 128, 160)},
            voxel_origin="scene_min",
            num_learned_queries=0,
            click_pe_bands=0,
            max_eval_queries=1 << 30,
            heads="official",
            text_query="raw_mlp",
            class_prototypes=1,
            postprocess="official",
        )
        kw.update(overrides)
        return cls(**kw)

    @property
    def feature_dim(self) -> int:
        """Channels of the backbone output = superpoint features = raw queries (C)."""
        if self.backbone_type == "spconv_unet":
            return int(tuple(self.spconv.get("planes", (32,)))[0])
        return self.backbone.feature_dim

    @classmethod
    def small(cls) -> ModelConfig:
        """CPU-sized: small backbone, 3 layers, d_model 96."""
        return cls(
            backbone=BackboneConfig.small(in_channels=IN_CHANNELS),
            d_model=96,
            num_heads=4,
            num_layers=3,
            ffn_dim=192,
            num_learned_queries=8,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model_config: unknown keys {unknown}")
        return cls(**data)


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The backbone ``cfg`` names: ``MinkUNet(cfg.backbone)`` or the spconv U-Net
    (:mod:`uniseg3d_model.spconv_unet`, ``cfg.spconv`` holds its config fields). Both map a
    stride-1 ``SparseTensor`` to ``cfg.feature_dim`` features per voxel, in input row order."""
    if cfg.backbone_type == "spconv_unet":
        from uniseg3d_model.spconv_unet import SpconvUNet, SpconvUNetConfig

        return SpconvUNet(SpconvUNetConfig(**cfg.spconv))
    return MinkUNet(cfg.backbone)


def _tensor(value: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)


class UniSeg3D(nn.Module):
    """The network. ``text_encoder`` (frozen, not part of the state dict) must offer ``.dim``
    and ``.encode(list[str], normalize=True) -> (T, dim)``; ``backbone`` defaults to
    :func:`build_backbone` of ``cfg`` (MinkUNet or the spconv U-Net)."""

    def __init__(self, cfg: ModelConfig, text_encoder: Any, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.__dict__["text_encoder"] = text_encoder  # frozen helper, kept out of state_dict
        channels = cfg.feature_dim
        text_dim = int(text_encoder.dim)
        self.backbone = backbone if backbone is not None else build_backbone(cfg)
        self.query_builder = QueryBuilder(
            channels, text_dim, cfg.d_model, cfg.num_learned_queries, cfg.click_pe_bands, cfg.text_query
        )
        self.decoder = UnifiedDecoder(
            channels,
            text_dim,
            cfg.d_model,
            cfg.num_heads,
            cfg.num_layers,
            cfg.ffn_dim,
            cfg.dropout,
            cfg.mask_attention,
            cfg.heads,
        )
        self.contrastive_logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / 0.07))))
        if cfg.class_prototypes:
            shape = (len(cfg.class_names), cfg.class_prototypes, text_dim)
            self.register_buffer("class_prototypes", torch.zeros(shape))
        else:
            self.class_prototypes = None
        self._class_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ text
    def _encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """(T, text_dim) text embeddings on the model's device: unit rows, or (``normalize=False``,
        what the official text MLP takes) the encoder's raw output."""
        with torch.no_grad():
            if normalize:
                emb = self.text_encoder.encode(list(texts))
            else:
                emb = self.text_encoder.encode(list(texts), normalize=False)
            emb = torch.as_tensor(emb, dtype=torch.float32)
        if emb.shape != (len(texts), self.text_encoder.dim):
            raise ValueError(f"text encoder returned shape {tuple(emb.shape)} for {len(texts)} texts")
        emb = emb.to(self.device)
        return F.normalize(emb, dim=-1) if normalize else emb

    def text_queries(self, texts: list[str]) -> torch.Tensor:
        """(T, C) referring queries (text projection + type embedding) of ``texts``."""
        raw = self.cfg.text_query == "raw_mlp"
        return self.query_builder.texts(self._encode_text(texts, normalize=not raw))

    def class_embeddings(self, names: tuple[str, ...]) -> torch.Tensor:
        """(V, text_dim) unit text embeddings of class names, cached per name tuple; with
        ``cfg.class_prototypes`` and ``names == cfg.class_names``: the (V, P, text_dim) stored
        prototypes."""
        names = tuple(names)
        if not names:
            raise ValueError("vocabulary must contain at least one class name")
        if self.class_prototypes is not None and names == self.cfg.class_names:
            return self.class_prototypes
        cached = self._class_cache.get(names)
        if cached is None:
            cached = self._encode_text([self.cfg.class_template.format(n) for n in names]).cpu()
            if len(self._class_cache) >= CLASS_CACHE_SIZE:
                self._class_cache.pop(next(iter(self._class_cache)))  # oldest vocabulary first
            self._class_cache[names] = cached
        return cached.to(self.device)

    # ------------------------------------------------------------------ encode
    def encode(self, scenes: list[SceneSample]) -> list[SceneEncoding]:
        """Backbone + superpoint pooling for each scene (one batched sparse U-Net pass)."""
        if not scenes:
            raise ValueError("scenes must not be empty")
        dev = self.device
        coords, feats, p2v, prepared = [], [], [], []
        offset = 0
        for b, scene in enumerate(scenes):
            pts = _tensor(scene.points, torch.float32, dev)
            col = _tensor(scene.colors, torch.float32, dev)
            sp = _tensor(scene.superpoints, torch.long, dev)
            if pts.shape[0] == 0:
                raise ValueError(f"scene {scene.scene_id!r}: no points")
            if int(sp.min()) < 0:
                raise ValueError(f"scene {scene.scene_id!r}: superpoints must be >= 0, got {int(sp.min())}")
            grid = None if scene.voxel_points is None else _tensor(scene.voxel_points, torch.float32, dev)
            vin = voxel_input(pts, col, self.cfg.voxel_size, self.cfg.use_xyz, self.cfg.voxel_origin, grid)
            n_vox = vin.coords.shape[0]
            batch = torch.full((n_vox, 1), b, dtype=torch.int32, device=dev)
            coords.append(torch.cat([batch, vin.coords.to(torch.int32)], dim=1))
            feats.append(vin.feats)
            p2v.append(vin.point_to_voxel + offset)
            offset += n_vox
            prepared.append((pts, sp, vin.center, scene.scene_id))
        out = self.backbone(SparseTensor(torch.cat(coords), torch.cat(feats)))
        encodings = []
        for (pts, sp, center, scene_id), inv in zip(prepared, p2v):
            point_features = out.feats[inv]
            sp_features = sp_ops.pool(point_features, sp, int(sp.max()) + 1)
            encodings.append(SceneEncoding(sp_features, sp, pts, center, scene_id))
        return encodings

    # ------------------------------------------------------------------ decode
    def decode(
        self, encodings: list[SceneEncoding], scenes: list[SceneSample], unified: bool = True
    ) -> list[DecoderOutput]:
        """One decoder pass per scene over the cached encodings.

        Prompts come from ``scene.clicks`` (K, 3), ``scene.texts`` (T sentences) and
        ``scene.vocabulary`` (class names; None = ``cfg.class_names``). ``unified=False``
        skips the unified queries (prompt-only answers, e.g. one language query), which with
        ``cfg.isolate_prompts`` leaves the prompt outputs unchanged.
        """
        if len(encodings) != len(scenes):
            raise ValueError(f"got {len(encodings)} encodings for {len(scenes)} scenes")
        return [self._decode_one(enc, scene, unified) for enc, scene in zip(encodings, scenes)]

    def classify(
        self, encoding: SceneEncoding, output: DecoderOutput, vocabulary: tuple[str, ...] | list[str]
    ) -> DecoderOutput:
        """Re-score a finished decoder pass against another vocabulary without re-decoding.

        The decoder's queries never read the class embeddings (they only enter the heads), so
        the heads run on ``output``'s final queries with ``vocabulary``'s embeddings give exactly
        the final layer of ``decode`` with ``scene.vocabulary = vocabulary``.
        encoding: the :class:`SceneEncoding` ``output`` was decoded from; output: a
        :meth:`decode` result (its final layer carries ``queries``). Returns a DecoderOutput
        whose ``layers`` is ``[final]`` (no auxiliary layers), ``class_logits`` (Q, V + 1).

        Cost: our cosine class head is linear in the class embeddings (only the query side is
        normalised), so the first call runs the heads once against the identity basis of the
        text space and keeps that (Q, text_dim + 1) "class basis" on ``output.final``; every
        vocabulary after that is one (Q, text_dim) x (text_dim, V) product. Other heads
        (``cfg.heads != "ours"``) re-run the heads per call.
        """
        vocab = tuple(str(v) for v in vocabulary)
        final = output.final
        if final.queries is None:
            raise ValueError("output carries no final queries: decode it with this model first")
        class_emb = self.class_embeddings(vocab)
        if getattr(self.cfg, "heads", "ours") == "ours":
            if final.class_basis is None:
                basis = torch.eye(int(self.text_encoder.dim), device=self.device)
                final.class_basis = self._final_heads(encoding, final.queries, basis).class_logits
            logits = torch.cat([final.class_basis[:, :-1] @ class_emb.t(), final.class_basis[:, -1:]], 1)
            pred = dataclasses.replace(final, class_logits=logits)
        else:
            pred = self._final_heads(encoding, final.queries, class_emb, self._thing_mask(vocab))
            pred.queries = final.queries
        return dataclasses.replace(output, layers=[pred], vocabulary=vocab)

    def _thing_mask(self, vocab: tuple[str, ...] | list[str]) -> torch.Tensor:
        """(V,) bool: the classes of ``vocab`` the official instance head scores (not stuff)."""
        return torch.tensor([name not in self.cfg.stuff_classes for name in vocab], device=self.device)

    def _final_heads(
        self,
        encoding: SceneEncoding,
        queries: torch.Tensor,
        class_emb: torch.Tensor,
        thing: torch.Tensor | None = None,
    ):
        """The decoder heads of the final stage on ``queries`` (Q, d) over ``encoding``'s mask
        features; ``thing`` as :meth:`UnifiedDecoder.heads`."""
        if encoding.device != self.device:
            encoding = encoding.to(self.device)
        cache = self._source_cache(encoding)
        if cache is None:  # training / grad mode: no cached projections
            cache = self.decoder.prepare(encoding.sp_features)
        return self.decoder.heads(queries, cache.mask_feats, class_emb, thing, final=True)

    def _decode_one(self, enc: SceneEncoding, scene: SceneSample, unified: bool) -> DecoderOutput:
        dev = self.device
        if enc.num_points != scene.num_points:
            raise ValueError(
                f"scene {scene.scene_id!r} has {scene.num_points} points but its encoding "
                f"{enc.scene_id!r} has {enc.num_points}"
            )
        if enc.device != dev:
            enc = enc.to(dev)
        vocab = tuple(scene.vocabulary) if scene.vocabulary is not None else self.cfg.class_names
        class_emb = self.class_embeddings(vocab)
        feats = enc.sp_features
        parts = []
        if unified:
            selected = select_superpoints(
                enc.num_superpoints,
                self.training,
                self.cfg.query_ratio,
                self.cfg.max_train_queries,
                self.cfg.max_eval_queries,
                dev,
            )
            parts.append(self.query_builder.unified(feats, selected))
            learned = torch.full((self.cfg.num_learned_queries,), -1, dtype=torch.long, device=dev)
            query_sp = torch.cat([selected, learned])
        else:
            query_sp = torch.zeros(0, dtype=torch.long, device=dev)
        num_unified = len(query_sp)
        num_clicks = 0
        if scene.clicks is not None and len(scene.clicks):
            clicks = _tensor(scene.clicks, torch.float32, dev).reshape(-1, 3)
            csp = click_superpoints(clicks, enc.points, enc.superpoints)
            parts.append(self.query_builder.clicks(feats, csp, clicks, enc.center))
            num_clicks = len(clicks)
        texts = list(scene.texts or [])
        if texts:
            parts.append(self.text_queries(texts))
        if not parts:
            raise ValueError(f"scene {scene.scene_id!r}: nothing to decode (unified=False and no prompts)")
        queries = torch.cat(parts)
        self_mask = interaction_mask(num_unified, num_clicks + len(texts), self.cfg.isolate_prompts, dev)
        thing = self._thing_mask(vocab)
        layers = self.decoder(feats, queries, class_emb, self_mask, self._source_cache(enc), thing)
        return DecoderOutput(
            layers=layers,
            num_unified=num_unified,
            num_clicks=num_clicks,
            num_texts=len(texts),
            query_superpoints=query_sp,
            vocabulary=vocab,
            superpoints=enc.superpoints,
            contrastive_scale=self.contrastive_logit_scale.clamp(max=float(np.log(100.0))).exp(),
            protocol=self.cfg.postprocess,
        )

    def _source_cache(self, enc: SceneEncoding) -> SourceCache | None:
        """The decoder's per-scene projections of ``enc``, reused across decode calls in
        inference (eval mode, grad disabled) while the decoder weights stay unchanged."""
        if self.training or torch.is_grad_enabled():
            return None
        key = (id(self.decoder), tuple(p._version for p in self.decoder.parameters()))
        if enc.decoder_cache is None or enc.decoder_cache[0] != key:
            enc.decoder_cache = (key, self.decoder.prepare(enc.sp_features))
        return enc.decoder_cache[1]

    def forward(self, scenes: list[SceneSample]) -> list[DecoderOutput]:
        return self.decode(self.encode(scenes), scenes)
