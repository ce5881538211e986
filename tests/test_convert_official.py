"""Official UniSeg3D checkpoint -> our model: names, shapes, constants, decoder equivalence, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from uniseg3d_model.checkpoint import load_checkpoint
from uniseg3d_model.convert_official import convert_state_dict, main, text_tower_state_dict
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.text_encoders import build_text_encoder

C, D, HIDDEN, LAYERS, TEXT_DIM = 32, 96, 192, 3, 48  # ModelConfig.small() widths, hash:48 text


def official_like_state_dict(layers: int = LAYERS, d: int = D, iou_layers: int = 3, seed: int = 0,
                             hidden: int = HIDDEN, text_dim: int = TEXT_DIM):
    """Random tensors under the official UniSeg3D module names (uniseg3d.py, query_decoder.py,
    lang_module.py, openclip_backbone.py, spconv_unet.py) with their shapes."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {
        "input_conv.0.weight": (C, 3, 3, 3, 6),
        "unet.blocks.block0.conv_branch.0.weight": (C,),
        "unet.blocks.block0.conv_branch.2.weight": (C, 3, 3, 3, C),
        "unet.u.blocks.block0.conv_branch.2.weight": (2 * C, 3, 3, 3, 2 * C),
        "output_layer.0.weight": (C,),
        "output_layer.0.running_mean": (C,),
        "type_embedding.weight": (3, C),
        "decoder.input_proj.0.weight": (d, C), "decoder.input_proj.0.bias": (d,),
        "decoder.input_proj.1.weight": (d,), "decoder.input_proj.1.bias": (d,),
        "decoder.query_proj.0.weight": (d, C), "decoder.query_proj.0.bias": (d,),
        "decoder.query_proj.2.weight": (d, d), "decoder.query_proj.2.bias": (d,),
        "decoder.x_mask.0.weight": (d, C), "decoder.x_mask.0.bias": (d,),
        "decoder.x_mask.2.weight": (d, d), "decoder.x_mask.2.bias": (d,),
        "decoder.out_norm.weight": (d,), "decoder.out_norm.bias": (d,),
        "decoder.mask_pooling_proj.0.weight": (d,), "decoder.mask_pooling_proj.0.bias": (d,),
        "decoder.mask_pooling_proj.1.weight": (d, d), "decoder.mask_pooling_proj.1.bias": (d,),
        "decoder.mask_pooling_proj_sem.1.weight": (d, d),
        "decoder.cls_proj_sem.4.weight": (text_dim, d),
        "lang.Mlp.fc1.weight": (16, 16), "lang.Mlp.fc2.weight": (C, 16),
        "criterion.contrastive_criterion.logit_scale": (),
    }
    for i, (out_dim, in_dim) in enumerate([(d, d), (d, d), (text_dim, d)]):
        p = f"decoder.cls_proj.{2 * i}."
        shapes |= {p + "weight": (out_dim, in_dim), p + "bias": (out_dim,)}
    for i in range(iou_layers):
        out_dim = 1 if i == iou_layers - 1 else d
        shapes |= {f"pred_iou_proj.{2 * i}.weight": (out_dim, d), f"pred_iou_proj.{2 * i}.bias": (out_dim,)}
    for i in range(layers):
        for kind in ("cross_attn", "self_attn"):
            p = f"decoder.{kind}_layers.{i}."
            shapes |= {p + "attn.in_proj_weight": (3 * d, d), p + "attn.in_proj_bias": (3 * d,),
                       p + "attn.out_proj.weight": (d, d), p + "attn.out_proj.bias": (d,),
                       p + "norm.weight": (d,), p + "norm.bias": (d,)}
        p = f"decoder.ffn_layers.{i}."
        shapes |= {p + "net.0.weight": (hidden, d), p + "net.0.bias": (hidden,),
                   p + "net.3.weight": (d, hidden), p + "net.3.bias": (d,),
                   p + "norm.weight": (d,), p + "norm.bias": (d,)}
    sd = {k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}
    sd["criterion.contrastive_criterion.logit_scale"] = torch.tensor(2.0)
    return sd


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return UniSeg3D(ModelConfig.small(), build_text_encoder(f"hash:{TEXT_DIM}"))


def test_converted_state_dict_loads_strict_and_carries_official_tensors(model):
    official = official_like_state_dict()
    state, report = convert_state_dict(official, model.state_dict())
    model.load_state_dict(state, strict=True)
    sd = model.state_dict()
    pairs = {
        "decoder.layers.2.cross_attn.in_proj_weight": "decoder.cross_attn_layers.2.attn.in_proj_weight",
        "decoder.layers.0.self_norm.bias": "decoder.self_attn_layers.0.norm.bias",
        "decoder.layers.1.ffn.3.weight": "decoder.ffn_layers.1.net.3.weight",
        "decoder.mask_proj.2.weight": "decoder.x_mask.2.weight",
        "decoder.class_proj.4.weight": "decoder.cls_proj.4.weight",
        "decoder.pool_proj.0.weight": "decoder.mask_pooling_proj.0.weight",
        "query_builder.type_embedding.weight": "type_embedding.weight",
    }
    for ours, theirs in pairs.items():
        assert report.mapped[ours] == theirs and torch.equal(sd[ours], official[theirs])
    assert torch.allclose(sd["decoder.logit_scale"], torch.tensor(math.log(100.0)))
    assert not sd["decoder.no_object.weight"].any() and not sd["query_builder.click_pe.linear.weight"].any()
    assert torch.allclose(sd["contrastive_logit_scale"], torch.tensor(math.log(2.0)))


def test_paper_config_takes_the_published_checkpoint_shapes():
    """Published config: 32 backbone channels, d_model 256, 6 layers, FFN 1024, CLIP 768-d."""
    official = official_like_state_dict(layers=6, d=256, hidden=1024, text_dim=768)
    paper = UniSeg3D(ModelConfig.paper(), build_text_encoder("hash:768"))
    state, report = convert_state_dict(official, paper.state_dict())
    paper.load_state_dict(state, strict=True)
    assert report.mapped["decoder.layers.5.ffn.0.weight"] == "decoder.ffn_layers.5.net.0.weight"
    decoder_keys = [k for k in state if k.startswith("decoder.") and "score_head" not in k]
    assert all(k in report.mapped or k in report.synthesized for k in decoder_keys)


def test_unrepresentable_official_parts_are_reported_with_reasons(model):
    state, report = convert_state_dict(official_like_state_dict(), model.state_dict())
    for key in ("input_conv.0.weight", "unet.u.blocks.block0.conv_branch.2.weight", "output_layer.0.weight"):
        assert "MinkUNet" in report.unmapped[key]
    assert "semantic" in report.unmapped["decoder.cls_proj_sem.4.weight"]
    assert "text_proj" in report.unmapped["lang.Mlp.fc1.weight"]
    # our score head is a 2-layer MLP, the official IoU head has 3 layers: the group stays unmapped
    assert "score_head" in report.unmapped["pred_iou_proj.4.weight"]
    assert all(k.startswith("backbone.") or k.startswith(("query_builder.", "decoder.score_head."))
               for k in report.kept)
    assert any(k.startswith("backbone.") for k in report.kept)
    assert torch.equal(state["backbone.conv0p1s1.kernel"], model.state_dict()["backbone.conv0p1s1.kernel"])


def test_optional_iou_head_maps_when_its_structure_matches(model):
    state, report = convert_state_dict(official_like_state_dict(iou_layers=2), model.state_dict())
    assert report.mapped["decoder.score_head.2.weight"] == "pred_iou_proj.2.weight"
    assert "pred_iou_proj.0.weight" not in report.unmapped


@pytest.mark.parametrize(("kwargs", "match"), [({"layers": 2}, "no official source"),
                                                ({"layers": 4}, "no such tensor"),
                                                ({"d": 64}, "shape")])
def test_mismatched_model_config_is_a_clear_error(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        convert_state_dict(official_like_state_dict(**kwargs), model.state_dict())


def official_decoder_reference(sd, x, queries, class_emb):
    """The official UnifiedQueryDecoder (sphere_cls, iter_pred, attn_mask, fix_attention) for one
    scene, written with plain tensor ops from the official tensors."""

    def lin(name, v):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    def ln(name, v):
        return F.layer_norm(v, (v.shape[-1],), sd[name + ".weight"], sd[name + ".bias"])

    def attn(prefix, q, kv, blocked):
        w, b = sd[prefix + ".in_proj_weight"], sd[prefix + ".in_proj_bias"]
        h = 4  # ModelConfig.small() heads
        qq, kk, vv = q @ w[:D].T + b[:D], kv @ w[D:2 * D].T + b[D:2 * D], kv @ w[2 * D:].T + b[2 * D:]
        qq, kk, vv = (t.reshape(len(t), h, D // h).transpose(0, 1) for t in (qq, kk, vv))
        logits = qq @ kk.transpose(1, 2) / math.sqrt(D // h)
        if blocked is not None:
            logits = logits.masked_fill(blocked, float("-inf"))
        o = (logits.softmax(-1) @ vv).transpose(0, 1).reshape(len(q), D)
        return o @ sd[prefix + ".out_proj.weight"].T + sd[prefix + ".out_proj.bias"]

    def head(q, mask_feats):
        nq = ln("decoder.out_norm", q)
        masks = nq @ mask_feats.T
        m = (masks > 0).float()
        pooled = (m / (m.sum(-1, keepdim=True) + 1e-8)) @ mask_feats
        pooled = lin("decoder.mask_pooling_proj.1", ln("decoder.mask_pooling_proj.0", pooled))
        e = pooled + nq
        e = lin("decoder.cls_proj.4", F.relu(lin("decoder.cls_proj.2", F.relu(lin("decoder.cls_proj.0", e)))))
        cls = 100.0 * F.normalize(e, dim=-1) @ class_emb.T
        cls = torch.cat([cls, torch.zeros(len(q), 1)], dim=1)  # zero background prototype
        blocked = masks.sigmoid() < 0.5
        blocked[blocked.all(-1)] = False
        return masks, cls, blocked

    src = F.relu(ln("decoder.input_proj.1", lin("decoder.input_proj.0", x)))
    mask_feats = lin("decoder.x_mask.2", F.relu(lin("decoder.x_mask.0", x)))
    q = lin("decoder.query_proj.2", F.relu(lin("decoder.query_proj.0", queries)))
    masks, cls, blocked = head(q, mask_feats)
    for i in range(LAYERS):
        cross, self_ = f"decoder.cross_attn_layers.{i}", f"decoder.self_attn_layers.{i}"
        q = ln(cross + ".norm", q + attn(cross + ".attn", q, src, blocked))
        q = ln(self_ + ".norm", q + attn(self_ + ".attn", q, q, None))
        p = f"decoder.ffn_layers.{i}"
        q = ln(p + ".norm", q + lin(p + ".net.3", F.gelu(lin(p + ".net.0", q))))
        masks, cls, blocked = head(q, mask_feats)
    return masks, cls


def test_converted_decoder_reproduces_the_official_decoder_math(model):
    official = official_like_state_dict(seed=3)
    gains = ("decoder.input_proj.1.weight", "decoder.mask_pooling_proj.0.weight")
    for k in list(official):
        if k.endswith("norm.weight") or k in gains:
            official[k] = 1.0 + 0.1 * official[k]  # layer-norm gains near 1, as trained ones are
    state, _ = convert_state_dict(official, model.state_dict())
    model.load_state_dict(state, strict=True)
    model.eval()
    g = torch.Generator().manual_seed(1)
    x, queries = torch.randn(40, C, generator=g), torch.randn(12, C, generator=g)
    class_emb = F.normalize(torch.randn(5, TEXT_DIM, generator=g), dim=1)
    with torch.no_grad():
        ours = model.decoder(x, queries, class_emb)[-1]
        masks, cls = official_decoder_reference(official, x, queries, class_emb)
    assert torch.allclose(ours.masks, masks, atol=1e-4)
    assert torch.allclose(ours.class_logits, cls, atol=1e-3)


def test_cli_writes_a_loadable_checkpoint_report_and_text_tower(tmp_path, model):
    from tests.test_text_encoders import TINY, VOCAB, tiny_open_clip_state_dict

    official = official_like_state_dict()
    tower = tiny_open_clip_state_dict()
    renames = {"token_embedding.": "text_token_embedding.", "positional_embedding": "text_pe",
               "transformer.": "text_transformer.", "ln_final.": "text_ln_final.",
               "text_projection": "text_proj"}
    for key, value in tower.items():
        for ours, theirs in renames.items():
            if key.startswith(ours):
                official["lang.text_encoder." + theirs + key[len(ours):]] = value
    official["lang.text_encoder.text_attn_mask"] = torch.zeros(77, 77)
    src = tmp_path / "uniseg3d_official.pth"
    torch.save({"meta": {"epoch": 512}, "state_dict": official}, src)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(ModelConfig.small().to_dict()))
    out, report_path, text_path = tmp_path / "converted.pt", tmp_path / "report.json", tmp_path / "text.pt"
    assert main([str(src), str(out), "--model-config", str(cfg_path), "--text-encoder", f"hash:{TEXT_DIM}",
                 "--report", str(report_path), "--text-tower-out", str(text_path)]) == 0
    loaded, meta = load_checkpoint(out)
    assert torch.equal(loaded.state_dict()["decoder.layers.0.cross_attn.in_proj_weight"],
                       official["decoder.cross_attn_layers.0.attn.in_proj_weight"])
    report = json.loads(report_path.read_text())
    assert "unet.blocks.block0.conv_branch.0.weight" in report["unmapped"]
    assert meta["extra"]["conversion"]["mapped"] == report["mapped"]
    exported = torch.load(text_path, weights_only=True)
    assert set(exported) == {k for k in tower if not k.startswith(("visual.", "logit_scale"))}
    assert text_tower_state_dict(official).keys() == exported.keys()
    if VOCAB is not None and VOCAB.is_file():  # the exported tower runs as our OpenCLIP encoder
        direct = tmp_path / "direct.pt"
        torch.save(tower, direct)
        texts = ["the chair by the window", "a bed"]
        via_official = build_text_encoder("openclip:tiny", weights=text_path, config=TINY).encode(texts)
        via_open_clip = build_text_encoder("openclip:tiny", weights=direct, config=TINY).encode(texts)
        assert torch.equal(via_official, via_open_clip)


def test_cli_rejects_non_uniseg3d_checkpoint_with_one_line_and_exit_2(tmp_path, capsys):
    src = tmp_path / "other.pth"
    torch.save({"state_dict": {"backbone.weight": torch.zeros(2)}}, src)
    with pytest.raises(SystemExit) as exc:
        main([str(src), str(tmp_path / "out.pt")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "cls_proj" in err and str(src) in err
    assert len(err.strip().splitlines()) == 1
