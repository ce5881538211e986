"""The official-checkpoint fixture: names, shapes and counts of the released state dict."""

from __future__ import annotations

import math

import pytest
import torch

from tests.official_fixture import (
    OfficialWidths,
    cls_embedding,
    count,
    official_shapes,
    official_state_dict,
    openclip_text_key_map,
    openclip_text_state_dict,
    write_cls_embedding,
)


def test_full_widths_reproduce_the_released_checkpoint_counts():
    c = count(official_shapes())
    assert c["total"] == (626, 170_993_048)
    assert round(c["total"][1] / 1e6, 1) == 171.0
    assert c["lang.text_encoder."][0] == 198 and c["unet."][0] == 268 and c["decoder."][0] == 142
    assert sum(n for g, (n, _) in c.items() if g != "total") == 626


def test_small_widths_keep_every_name_and_shrink_the_values():
    full, small = official_shapes(), official_shapes(OfficialWidths.small())
    assert list(full) == list(small)
    assert count(small)["total"][1] < 1_000_000
    assert all(len(full[k]) == len(small[k]) for k in full)


def test_layer_counts_change_the_name_set_as_documented():
    fewer = official_shapes(OfficialWidths(text_layers=2, decoder_layers=3))
    assert len(fewer) == 626 - 14 * 12 - 3 * 18


def test_random_state_dict_has_official_dtypes_and_positive_running_var():
    w = OfficialWidths.small()
    sd = official_state_dict(3, w)
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(official_shapes(w))
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            assert v.dtype == torch.int64 and v.dim() == 0
        else:
            assert v.dtype == torch.float32 and not v.isnan().any()
        if k.endswith("running_var"):
            assert (v > 0).all()
    mask = sd["lang.text_encoder.text_attn_mask"]
    assert torch.isinf(mask[0, 1]) and mask[1, 0] == 0 and mask[3, 3] == 0
    other = official_state_dict(4, w)
    assert not torch.equal(sd["decoder.cls_proj.0.weight"], other["decoder.cls_proj.0.weight"])


def test_spconv_modules_store_krsc_weights_and_bn_buffers_under_official_names():
    spconv = pytest.importorskip("spconv.pytorch")
    seq = spconv.SparseSequential(
        torch.nn.BatchNorm1d(8, eps=1e-4), torch.nn.ReLU(),
        spconv.SubMConv3d(8, 16, kernel_size=3, padding=1, bias=False, indice_key="s"),
        spconv.SparseConv3d(16, 24, kernel_size=2, stride=2, bias=False, indice_key="d"),
        spconv.SparseInverseConv3d(24, 16, kernel_size=2, bias=False, indice_key="d"))
    got = {k: tuple(v.shape) for k, v in seq.state_dict().items()}
    assert got == {"0.weight": (8,), "0.bias": (8,), "0.running_mean": (8,), "0.running_var": (8,),
                   "0.num_batches_tracked": (), "2.weight": (16, 3, 3, 3, 8),
                   "3.weight": (24, 2, 2, 2, 16), "4.weight": (16, 2, 2, 2, 24)}
    shapes = official_shapes()
    assert shapes["unet.conv.2.weight"] == (64, 2, 2, 2, 32)
    assert shapes["unet.deconv.2.weight"] == (32, 2, 2, 2, 64)
    assert shapes["unet.u.blocks_tail.block0.i_branch.0.weight"] == (64, 1, 1, 1, 128)


def test_torch_modules_name_their_tensors_as_the_fixture_says():
    """MultiheadAttention / LayerNorm / Sequential naming as used by the official decoder."""
    d = 16
    mha = torch.nn.MultiheadAttention(d, 4, batch_first=True)
    assert {k: tuple(v.shape) for k, v in mha.state_dict().items()} == {
        k.removeprefix("decoder.cross_attn_layers.0.attn."): s
        for k, s in official_shapes(OfficialWidths(d_model=d)).items()
        if k.startswith("decoder.cross_attn_layers.0.attn.")}


def test_cls_embedding_file_round_trips_as_one_kpd_tensor(tmp_path):
    emb = cls_embedding(seed=1, prototypes=4, dim=24)
    path = write_cls_embedding(tmp_path / "scannet_cls_embedding.pth", emb)
    loaded = torch.load(path)
    assert isinstance(loaded, torch.Tensor) and loaded.shape == (20, 4, 24)
    assert torch.allclose(loaded.norm(dim=-1), torch.ones(20, 4))
    with pytest.raises(ValueError, match="K, P, D"):
        write_cls_embedding(tmp_path / "bad.pth", emb[0])


def test_openclip_text_keys_cover_the_text_tower_except_the_mask():
    w = OfficialWidths.small()
    keys = openclip_text_key_map(w)
    tower = [k for k in official_shapes(w) if k.startswith("lang.text_encoder.")]
    assert sorted(keys.values()) == sorted(k for k in tower if not k.endswith("text_attn_mask"))
    assert keys["positional_embedding"] == "lang.text_encoder.text_pe"
    assert keys["transformer.resblocks.15.mlp.c_proj.bias"].endswith("resblocks.15.mlp.c_proj.bias")
    sd = official_state_dict(0, w)
    clip = openclip_text_state_dict(sd, w)
    assert torch.equal(clip["text_projection"], sd["lang.text_encoder.text_proj"])
    assert math.prod(clip["token_embedding.weight"].shape) == w.vocab_size * w.text_width
