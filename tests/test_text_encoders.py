"""Text encoders: MiniLM (offline default), the OpenCLIP text tower without open_clip, test-only hash."""

from __future__ import annotations

import gzip
import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from uniseg3d_model.clip_text import CLIPTokenizer, open_clip_package_dir
from uniseg3d_model.text_encoders import build_text_encoder

VOCAB = None if open_clip_package_dir() is None else open_clip_package_dir() / "bpe_simple_vocab_16e6.txt.gz"
needs_vocab = pytest.mark.skipif(
    VOCAB is None or not VOCAB.is_file(), reason="CLIP BPE vocab ships with open-clip-torch (pip --no-deps)"
)


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm")


def test_minilm_embeddings_are_384d_normalised_and_semantic(minilm):
    emb = minilm.encode(["a red chair", "chair", "bathtub", "the table next to the window"])
    assert emb.shape == (4, 384) and emb.dtype == torch.float32 and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_minilm_cache_hit_returns_same_embedding_without_encoding(minilm):
    first = minilm.encode(["a wooden door", "sofa"])
    misses = minilm.cache_misses
    again = minilm.encode(["sofa", "a wooden door", "sofa"])
    assert minilm.cache_misses == misses
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    assert torch.equal(again[2], first[1])
    assert minilm.cached("sofa") is not None and torch.equal(minilm.cached("sofa"), first[1])


def test_hash_encoder_is_deterministic_normalised_and_lru_bounded():
    enc = build_text_encoder("hash:32", cache_size=2)
    other = build_text_encoder("hash", dim=32)
    emb = enc.encode(["chair", "table", "chair"])
    assert emb.shape == (3, 32) and torch.equal(emb[0], emb[2])
    assert torch.equal(emb, other.encode(["chair", "table", "chair"]))
    assert torch.allclose(emb.norm(dim=1), torch.ones(3))
    assert enc.cache_misses == 2 and enc.cache_hits == 1
    enc.encode(["chair"])  # refresh "chair" so "table" is the least recently used
    enc.encode(["bed"])
    assert enc.cached("table") is None and enc.cached("chair") is not None
    assert enc.encode([]).shape == (0, 32)


@pytest.mark.parametrize(
    ("name", "kw", "error", "match"),
    [
        ("clip", {}, ValueError, "unknown text encoder"),
        ("openclip:convnext_large_d_320", {}, ValueError, "laion/CLIP-convnext_large_d_320"),
        ("openclip:convnext_large_d_320", {"weights": ""}, ValueError, "open_clip_pytorch_model.bin"),
        ("openclip:convnext_large_d_320", {"weights": "/nonexistent/x.bin"}, FileNotFoundError,
         "'/nonexistent/x.bin' does not exist: download it from"),
        ("hash:1", {}, ValueError, "dim"),
    ],
)
def test_build_text_encoder_rejects_bad_requests(name, kw, error, match):
    with pytest.raises(error, match=match):
        build_text_encoder(name, **kw)


def test_encode_rejects_non_string_input():
    enc = build_text_encoder("hash")
    with pytest.raises(ValueError, match="list of strings"):
        enc.encode("chair")
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        enc.encode(["chair", 3])


# --- CLIP tokenizer ----------------------------------------------------------------------


@needs_vocab
def test_clip_tokenizer_known_ids_and_padding():
    tok = CLIPTokenizer()
    ids = tok(["a photo of a cat", "A  Photo of a CAT"])
    expected = [49406, 320, 1125, 539, 320, 2368, 49407]  # the canonical CLIP example
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :7].tolist() == expected and ids[1, :7].tolist() == expected
    assert (ids[:, 7:] == 0).all()
    long_ids = tok(["chair " * 100])[0]
    assert long_ids[0] == 49406 and long_ids[-1] == 49407 and (long_ids[1:-1] != 0).all()


@needs_vocab
def test_clip_tokenizer_whole_words_map_to_their_merge_rank():
    merges = gzip.open(VOCAB).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    rank = {"".join(line.split()): i for i, line in enumerate(merges)}
    tok = CLIPTokenizer()
    for word in ("chair", "table", "refrigerator", "bathtub"):
        if word + "</w>" in rank:  # a whole-word token: id = 512 byte tokens + its merge rank
            assert tok.encode(word) == [512 + rank[word + "</w>"]]
    assert tok.encode("chair") == [512 + rank["chair</w>"]]


@needs_vocab
def test_clip_tokenizer_matches_open_clip_reference(monkeypatch):
    """open_clip's tokenizer module runs standalone (its package __init__ needs torchvision);
    ftfy.fix_text is replaced by identity in both, since ftfy is not a dependency here."""
    monkeypatch.setitem(sys.modules, "ftfy", types.SimpleNamespace(fix_text=lambda s: s))
    spec = importlib.util.spec_from_file_location("_oc_tokenizer", open_clip_package_dir() / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts = [
        "There is a brown wooden chair next to the refrigerator, it's near 3 windows!",
        "Ünïcode  café &amp; naïve   spacing",
        "the nightstand's lamp (left) -- 2nd shelf",
        "",
        "word " * 90,
    ]
    assert torch.equal(CLIPTokenizer()(texts), module.SimpleTokenizer()(texts))


# --- OpenCLIP text tower without open_clip -----------------------------------------------

TINY = {"embed_dim": 16, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4,
                                       "layers": 2}}


def tiny_open_clip_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under open_clip's CLIP key names and shapes, plus vision-side keys."""
    g = torch.Generator().manual_seed(seed)
    cfg = TINY["text_cfg"]
    w, length, vocab, embed = cfg["width"], cfg["context_length"], cfg["vocab_size"], TINY["embed_dim"]
    shapes = {"token_embedding.weight": (vocab, w), "positional_embedding": (length, w),
              "ln_final.weight": (w,), "ln_final.bias": (w,), "text_projection": (w, embed),
              "logit_scale": (), "visual.trunk.stem.0.weight": (8, 3, 4, 4)}
    for i in range(cfg["layers"]):
        p = f"transformer.resblocks.{i}."
        shapes |= {p + "ln_1.weight": (w,), p + "ln_1.bias": (w,), p + "attn.in_proj_weight": (3 * w, w),
                   p + "attn.in_proj_bias": (3 * w,), p + "attn.out_proj.weight": (w, w),
                   p + "attn.out_proj.bias": (w,), p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
                   p + "mlp.c_fc.weight": (4 * w, w), p + "mlp.c_fc.bias": (4 * w,),
                   p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,)}
    return {k: torch.randn(s, generator=g) * (0.2 if len(s) > 1 else 0.1) + (1.0 if "ln" in k and
            k.endswith("weight") else 0.0) for k, s in shapes.items()}


def reference_text_forward(sd: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """CLIP text encoding written out with plain tensor ops (causal attention, GELU MLP)."""
    heads, w = TINY["text_cfg"]["heads"], TINY["text_cfg"]["width"]
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    n = x.shape[1]
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    for i in range(TINY["text_cfg"]["layers"]):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).split(w, dim=-1)
        q, k, v = (t.reshape(t.shape[0], n, heads, w // heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) / math.sqrt(w // heads)).masked_fill(causal, float("-inf"))
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
        x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = F.gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (w,), sd["ln_final.weight"], sd["ln_final.bias"])
    return F.normalize(x[torch.arange(len(tokens)), tokens.argmax(-1)] @ sd["text_projection"], dim=1)


@needs_vocab
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_openclip_text_tower_loads_open_clip_keys_and_matches_reference(tmp_path, fmt):
    sd = tiny_open_clip_state_dict()
    path = tmp_path / f"open_clip_model.{fmt}"
    if fmt == "pt":
        torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    enc = build_text_encoder("openclip:tiny", weights=path, config=TINY)
    texts = ["a red chair", "the lamp on the desk next to the bed", "chair"]
    emb = enc.encode(texts)
    assert enc.backend == "builtin" and enc.dim == 16 and emb.shape == (3, 16) and not emb.requires_grad
    expected = reference_text_forward(sd, CLIPTokenizer()(texts))
    assert torch.allclose(emb, expected, atol=1e-5)
    misses = enc.cache_misses
    assert torch.equal(enc.encode(["chair"])[0], emb[2]) and enc.cache_misses == misses
    fresh = build_text_encoder("openclip:tiny", weights=path, config=TINY)
    assert torch.equal(fresh.encode(texts), emb)  # deterministic across instances


@needs_vocab
def test_openclip_text_tower_rejects_mismatched_checkpoint(tmp_path):
    sd = tiny_open_clip_state_dict()
    del sd["ln_final.bias"]
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="ln_final.bias"):
        build_text_encoder("openclip:tiny", weights=path, config=TINY)


def test_openclip_text_config_for_paper_model_has_paper_dimensions():
    if open_clip_package_dir() is None:
        pytest.skip("open-clip-torch not installed (its model_configs give the architecture)")
    from uniseg3d_model.clip_text import load_text_config

    cfg = load_text_config("convnext_large_d_320")
    assert (cfg.embed_dim, cfg.width, cfg.heads, cfg.layers, cfg.context_length) == (768, 768, 12, 16, 77)


def test_encode_returns_raw_features_on_request_and_unit_rows_by_default():
    enc = build_text_encoder("hash:16")
    texts = ["a chair", "the lamp"]
    unit, raw = enc.encode(texts), enc.encode(texts, normalize=False)
    assert torch.allclose(raw.norm(dim=1), enc._encode_batch(texts).norm(dim=1))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    assert torch.allclose(unit, torch.nn.functional.normalize(raw, dim=1))
    assert torch.equal(enc.cached("a chair"), unit[0]) and enc.cache_hits == 2
