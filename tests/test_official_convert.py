"""Released UniSeg3D checkpoint -> ModelConfig.official(): every one of the 626 official tensors
lands exactly once (full-size names/shapes; small widths with values), the class embedding and
text weights files, the CLI and its one-line errors."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from tests.official_fixture import (
    cls_embedding,
    official_shapes,
    official_state_dict,
    openclip_text_state_dict,
    small_widths,
    write_cls_embedding,
    write_official_checkpoint,
)
from uniseg3d_model.checkpoint import load_checkpoint
from uniseg3d_model.clip_text import CLIPTextConfig, open_clip_package_dir
from uniseg3d_model.convert_official import main
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.official_state import convert_official_model
from uniseg3d_model.spconv_unet_weights import spconv_kernel_to_ours
from uniseg3d_model.structures import SceneSample

# small widths with every official name; our text_dim serves both the text MLP and the class head,
# so the CLIP joint width equals the prototype width (both 768 in the release)
W = small_widths(embed_dim=24)
VOCAB = None if open_clip_package_dir() is None else open_clip_package_dir() / "bpe_simple_vocab_16e6.txt.gz"


def text_config(w=W) -> CLIPTextConfig:
    return CLIPTextConfig(embed_dim=w.embed_dim, context_length=w.context_length, vocab_size=w.vocab_size,
                          width=w.text_width, heads=w.text_heads, layers=w.text_layers)


def model_config(w=W) -> ModelConfig:
    return ModelConfig.official(spconv={"in_channels": 6, "planes": tuple(w.planes)}, d_model=w.d_model,
                                num_heads=w.num_heads, ffn_dim=w.ffn_hidden)


def test_full_size_names_and_shapes_map_onto_official_config_exactly_once():
    """The released widths (626 tensors, 171M values) checked on meta tensors: nothing runs."""
    shapes = official_shapes()
    with torch.device("meta"):
        sd = {k: torch.empty(s, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
              for k, s in shapes.items()}
        emb = cls_embedding(0, 20, 4, 768)
        cfg, state, tower, report = convert_official_model(sd, emb, "convnext_large_d_320")
    assert len(shapes) == 626
    used = report.official_keys()
    assert sorted(used) == sorted(shapes) and len(used) == len(set(used))
    assert not report.unmapped and not report.random_init
    assert cfg == ModelConfig.official(class_prototypes=4)
    with torch.device("meta"):
        ours = UniSeg3D(cfg, type("Text", (), {"dim": 768, "name": "x"})()).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ours.items()}
    assert state["class_prototypes"].shape == (20, 4, 768)
    assert len(tower) == 197 and tower["token_embedding.weight"].shape == (49408, 768)


def _landing(report, official, state, tower):
    """Every mapped official tensor equals its destination (kernels in our layout)."""
    for ours, theirs in report.mapped.items():
        src = official[theirs]
        dst = tower[ours[len("text_tower."):]] if ours.startswith("text_tower.") else state[ours]
        if ours == "contrastive_logit_scale":
            assert torch.allclose(dst.exp(), src)
        elif ours.endswith(".kernel") and src.dim() == 5:
            assert torch.equal(dst, spconv_kernel_to_ours(src)), ours
        else:
            assert torch.equal(dst, src.to(dst.dtype)), ours


def test_small_widths_every_tensor_lands_once_with_its_value():
    official = official_state_dict(seed=2, widths=W)
    emb = cls_embedding(1, 20, 3, W.cls_dim)
    cfg, state, tower, report = convert_official_model(official, emb, text_config(), None, model_config())
    assert sorted(report.official_keys()) == sorted(official) and len(set(report.official_keys())) == 626
    assert not report.unmapped and not report.random_init
    _landing(report, official, state, tower)
    assert torch.equal(state["class_prototypes"], emb) and cfg.class_prototypes == 3
    assert state["decoder.head.iou_head.4.weight"].shape == (1, W.d_model)
    model = UniSeg3D(cfg, type("Text", (), {"dim": W.embed_dim, "name": "x"})())
    model.load_state_dict(state, strict=True)


def test_text_weights_supply_a_missing_tower_and_are_compared_with_a_present_one():
    official = official_state_dict(seed=3, widths=W)
    weights = openclip_text_state_dict(official, W)
    weights["visual.proj"] = torch.zeros(2)  # a full CLIP file also holds the image tower
    emb = cls_embedding(0, 20, 2, W.cls_dim)
    _, _, tower, report = convert_official_model(official, emb, text_config(), weights, model_config())
    assert report.notes and "equal the checkpoint's text tower" in " ".join(report.notes)
    weights["ln_final.bias"] = weights["ln_final.bias"] + 0.5
    _, _, _, report = convert_official_model(official, emb, text_config(), weights, model_config())
    assert "DIFFER" in " ".join(report.notes)
    without = {k: v for k, v in official.items() if not k.startswith("lang.text_encoder.")}
    _, _, tower2, report = convert_official_model(without, emb, text_config(), weights, model_config())
    assert all(report.from_files[f"text_tower.{k}"] == "--text-weights" for k in tower2)
    assert torch.equal(tower2["ln_final.bias"], weights["ln_final.bias"])
    with pytest.raises(ValueError, match="no text tower"):
        convert_official_model(without, emb, text_config(), None, model_config())


@pytest.mark.parametrize(("edit", "match"), [
    (lambda sd: sd.pop("decoder.cls_proj_sem.4.bias"), r"sem_class_proj\.4\.bias.*no source"),
    (lambda sd: sd.__setitem__("decoder.cls_proj.0.weight", torch.zeros(3, 3)), "cls_proj.0.weight"),
    (lambda sd: sd.__setitem__("unet.blocks.block0.conv_branch.2.weight", torch.zeros(2, 3, 3, 3, 2)),
     "unet.blocks.block0.conv_branch.2.weight"),
    (lambda sd: sd.__setitem__("lang.text_encoder.text_attn_mask", torch.zeros(12, 12)), "causal"),
    (lambda sd: sd.__setitem__("decoder.extra_head.weight", torch.zeros(2)), "extra_head"),
])
def test_checkpoint_that_does_not_fit_names_the_key(edit, match):
    official = official_state_dict(seed=0, widths=W)
    edit(official)
    with pytest.raises(ValueError, match=match):
        emb = cls_embedding(0, 20, 2, W.cls_dim)
        convert_official_model(official, emb, text_config(), None, model_config())


CLI_W = small_widths(embed_dim=24, vocab_size=49408, context_length=77)


def _files(tmp_path, w=CLI_W):
    official = official_state_dict(seed=5, widths=w)
    src = write_official_checkpoint(tmp_path / "model_best.pth", official)
    emb = write_cls_embedding(tmp_path / "scannet_cls_embedding.pth", cls_embedding(2, 20, 3, w.cls_dim))
    bin_path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(openclip_text_state_dict(official, w), bin_path)
    text_cfg = tmp_path / "tiny_clip.json"
    text_cfg.write_text(json.dumps({"embed_dim": w.embed_dim, "text_cfg": {
        "context_length": w.context_length, "vocab_size": w.vocab_size, "width": w.text_width,
        "heads": w.text_heads, "layers": w.text_layers}}))
    cfg = tmp_path / "official_small.json"
    cfg.write_text(json.dumps(model_config(w).to_dict()))
    return official, src, emb, bin_path, text_cfg, cfg


@pytest.mark.skipif(VOCAB is None or not VOCAB.is_file(), reason="CLIP BPE vocab ships with open-clip-torch")
def test_cli_converts_everything_and_the_checkpoint_runs_on_its_own(tmp_path):
    official, src, emb, bin_path, text_cfg, cfg = _files(tmp_path)
    out, report_path = tmp_path / "uniseg3d_official.pt", tmp_path / "r.json"
    assert main([str(src), "--cls-embedding", str(emb), "--text-weights", str(bin_path), str(out),
                 "--report", str(report_path), "--text-config", str(text_cfg),
                 "--model-config", str(cfg)]) == 0
    report = json.loads(report_path.read_text())
    assert report["unmapped"] == {} and report["random_init"] == []
    assert len(report["mapped"]) + len(report["checked"]) == 626
    model, meta = load_checkpoint(out)  # no text encoder given: the embedded tower is used
    assert model.cfg.postprocess == "official" and meta["text_encoder"] == "openclip:tiny_clip"
    ffn = model.state_dict()["decoder.layers.1.ffn.0.weight"]
    assert torch.equal(ffn, official["decoder.ffn_layers.1.net.0.weight"])
    g = np.random.default_rng(0)
    pts = (g.random((1500, 3)) * [1.0, 0.8, 0.5]).astype(np.float32)
    sp = (np.floor(pts / 0.1) @ [100, 10, 1]).astype(np.int64)
    sp = np.unique(sp, return_inverse=True)[1]
    colors = g.random((1500, 3)).astype(np.float32)
    scene = SceneSample(pts, colors, sp, clicks=pts[:2], texts=["the red chair"])
    with torch.no_grad():
        dec = model([scene])[0]
    assert dec.protocol == "official" and dec.texts().masks.shape == (1, int(sp.max()) + 1)
    raw = model.text_encoder.encode(["the red chair"], normalize=False)
    expected = model.query_builder.text_mlp(raw) + model.query_builder.type_embedding.weight[0]
    assert torch.allclose(model.text_queries(["the red chair"]), expected)


def test_cli_errors_name_the_argument_and_exit_2(tmp_path, capsys):
    _, src, emb, _, text_cfg, cfg = _files(tmp_path, W)
    out = str(tmp_path / "o.pt")
    cases = [
        ([str(src), out], "--cls-embedding"),
        ([str(src), out, "--cls-embedding", str(tmp_path / "nope.pth")], "nope.pth"),
        ([str(tmp_path / "missing.pth"), out, "--cls-embedding", str(emb)], "missing.pth"),
        ([str(src), out, "--cls-embedding", str(emb), "--text-weights", str(tmp_path / "x.bin")],
         "--text-weights"),
    ]
    bad = tmp_path / "bad_emb.pth"
    torch.save(torch.zeros(20, 768), bad)
    cases.append(([str(src), out, "--cls-embedding", str(bad)], "(K, P, D)"))
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--text-config", str(text_cfg), "--model-config", str(cfg)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


def test_report_dataclass_round_trips_as_json():
    official = official_state_dict(seed=1, widths=W)
    emb = cls_embedding(0, 20, 1, W.cls_dim)
    _, _, _, report = convert_official_model(official, emb, text_config(), None, model_config())
    data = json.loads(json.dumps(asdict(report)))
    key = "lang.text_encoder.text_attn_mask"
    assert data["checked"] == {key: report.checked[key]}
    assert any("4.6052" in v for v in data["constants"].values())
