"""The OpenCLIP text tower without OpenCLIP: CLIP BPE tokenizer and text transformer.

UniSeg3D encodes referring sentences and class names with the frozen text tower of OpenCLIP
ConvNeXt-L d320. Importing ``open_clip`` requires a working torchvision, which CPU-only
installs may lack, so this module re-creates just the text side:

* :class:`CLIPTokenizer`: byte-level BPE over ``bpe_simple_vocab_16e6.txt.gz`` (the file
  open_clip ships; found in the installed ``open_clip`` package directory *without*
  importing it), 77-token context, start/end ids 49406/49407, zero padding, lower-casing.
  ``ftfy.fix_text`` is applied when ftfy is importable (as open_clip does), skipped otherwise.
* :class:`CLIPTextTower`: the text transformer with open_clip's parameter names
  (``token_embedding``, ``positional_embedding``, ``transformer.resblocks.{i}.{ln_1, attn,
  ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final``, ``text_projection``) and a causal mask, so a
  full open_clip checkpoint's text keys load with ``strict=True``.
* :func:`load_text_config` reads an open_clip model config JSON (e.g.
  ``model_configs/convnext_large_d_320.json``: width 768, 12 heads, 16 layers, embed 768).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex
import torch
from torch import nn

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
_NUM_MERGES = 49152 - 256 - 2


def open_clip_package_dir() -> Path | None:
    """Directory of the installed ``open_clip`` package, located without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_bpe_path() -> Path:
    """Path of the CLIP BPE vocabulary, from the installed open_clip package."""
    package = open_clip_package_dir()
    path = None if package is None else package / "bpe_simple_vocab_16e6.txt.gz"
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "CLIP BPE vocabulary bpe_simple_vocab_16e6.txt.gz not found: install open-clip-torch "
            "(`pip install --no-deps open-clip-torch` is enough) or pass bpe_path=..."
        )
    return path


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Reversible byte -> printable unicode character table used by CLIP's BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    # Printable bytes map to themselves; the n-th other byte maps to chr(256 + n).
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _clean(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class CLIPTokenizer:
    """CLIP byte-level BPE tokenizer (the one open_clip uses for its CLIP text towers)."""

    def __init__(self, bpe_path: str | Path | None = None, context_length: int = 77) -> None:
        path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
        lines = gzip.open(path).read().decode("utf-8").split("\n")[1 : _NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = _bytes_to_unicode()
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        self.context_length = context_length
        self.pattern = regex.compile(
            r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self._word_cache: dict[str, list[int]] = {}

    def _bpe(self, word: str) -> list[int]:
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            unknown = len(self.bpe_ranks)
            pairs = zip(parts[:-1], parts[1:])
            best_rank, best = min((self.bpe_ranks.get(pair, unknown), i) for i, pair in enumerate(pairs))
            if best_rank == unknown:
                break
            first, second = parts[best], parts[best + 1]
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.encoder[p] for p in parts]
        self._word_cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids: list[int] = []
        for word in self.pattern.findall(_clean(text)):
            ids += self._bpe("".join(self.byte_encoder[b] for b in word.encode("utf-8")))
        return ids

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(T, context_length) int64 ids: start, tokens, end, zero padding; overlong texts are
        truncated and end with the end token (as open_clip does)."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@dataclass
class CLIPTextConfig:
    """open_clip ``text_cfg`` fields the plain CLIP text tower uses (+ ``embed_dim``)."""

    embed_dim: int = 768
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 768
    heads: int = 12
    layers: int = 16
    mlp_ratio: float = 4.0
    quick_gelu: bool = False


def load_text_config(config: str | Path | dict | CLIPTextConfig) -> CLIPTextConfig:
    """Text config from a CLIPTextConfig, an open_clip config dict, a JSON path, or an open_clip
    model name (looked up in the installed package's ``model_configs/<name>.json``)."""
    if isinstance(config, CLIPTextConfig):
        return config
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            package = open_clip_package_dir()
            candidate = None if package is None else package / "model_configs" / f"{config}.json"
            if candidate is None or not candidate.is_file():
                raise ValueError(f"text config {config!r} is neither a JSON file nor an open_clip model name")
            path = candidate
        config = json.loads(path.read_text())
    text_cfg = dict(config.get("text_cfg", config))
    unsupported = {k for k in ("hf_model_name", "ls_init_value", "embed_cls", "proj_bias") if text_cfg.get(k)}
    unsupported |= {k for k in ("pool_type",) if text_cfg.get(k, "argmax") != "argmax"}
    unsupported |= {k for k in ("no_causal_mask",) if text_cfg.get(k)}
    if unsupported:
        raise ValueError(f"open_clip text_cfg options not supported by CLIPTextTower: {sorted(unsupported)}")
    return CLIPTextConfig(
        embed_dim=int(config.get("embed_dim", text_cfg.get("embed_dim", 768))),
        context_length=int(text_cfg.get("context_length", 77)),
        vocab_size=int(text_cfg.get("vocab_size", 49408)),
        width=int(text_cfg.get("width", 512)),
        heads=int(text_cfg.get("heads", 8)),
        layers=int(text_cfg.get("layers", 12)),
        mlp_ratio=float(text_cfg.get("mlp_ratio", 4.0)),
        quick_gelu=bool(config.get("quick_gelu", False)),
    )


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        act = _QuickGELU() if quick_gelu else nn.GELU()
        layers = [("c_fc", nn.Linear(width, hidden)), ("gelu", act), ("c_proj", nn.Linear(hidden, width))]
        self.mlp = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            _ResidualBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.quick_gelu) for _ in range(cfg.layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class CLIPTextTower(nn.Module):
    """open_clip's CLIP text transformer: (T, L) token ids -> (T, embed_dim) unnormalised features
    taken at the end token (the largest id in each row)."""

    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = _Transformer(cfg)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.attn_mask))
        x = x[torch.arange(len(tokens), device=tokens.device), tokens.argmax(dim=-1)]
        return x @ self.text_projection


def text_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The text-tower entries of an open_clip checkpoint (full CLIP or CustomTextCLIP layout,
    optionally wrapped in ``state_dict`` and/or prefixed by DDP's ``module.``)."""
    state = checkpoint.get("state_dict", checkpoint)
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith("text.") for k in state):  # CustomTextCLIP keeps the tower under `text.`
        state = {k[5:]: v for k, v in state.items() if k.startswith("text.")}
    prefixes = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def load_weights_file(path: str | Path) -> dict:
    """Read a state dict from ``.safetensors`` or a torch pickle (``.bin``/``.pt``/``.pth``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OpenCLIP weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


__all__ = [
    "CLIPTextConfig",
    "CLIPTextTower",
    "CLIPTokenizer",
    "default_bpe_path",
    "load_text_config",
    "load_weights_file",
    "open_clip_package_dir",
    "text_state_dict",
]
