"""Checkpoint save/load: round trip, and clear errors for damaged files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.synthetic_room import make_room, text_encoder
from uniseg3d_model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from uniseg3d_model.model import ModelConfig, UniSeg3D
from uniseg3d_model.text_encoders import build_text_encoder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = UniSeg3D(dataclasses.replace(ModelConfig.small(), num_layers=2), text_encoder())
    # move BatchNorm running statistics away from their init so the round trip checks buffers too
    model.train()
    with torch.no_grad():
        model([make_room(seed=2, density=80.0)])
    model.eval()
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, {"step": 7})
    return model, path


def test_round_trip_reproduces_outputs_exactly(trained):
    model, path = trained
    loaded, meta = load_checkpoint(path)
    assert meta["extra"] == {"step": 7} and meta["text_encoder"] == model.text_encoder.name
    assert not loaded.training
    room = make_room(seed=0, density=80.0)
    with torch.no_grad():
        a, b = model([room])[0], loaded([room])[0]
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.masks, lb.masks)
        assert torch.equal(la.class_logits, lb.class_logits)
        assert torch.equal(la.scores, lb.scores)
    assert loaded.cfg == model.cfg


def test_checkpoint_holds_no_text_encoder_weights(trained):
    _, path = trained
    data = read_checkpoint(path)
    assert set(data) >= {
        "format_version",
        "model_config",
        "state_dict",
        "class_names",
        "text_encoder",
        "extra",
    }
    assert not any(k.startswith("text_encoder") for k in data["state_dict"])


def _rewrite(path, tmp_path, name, edit):
    data = torch.load(path, weights_only=True)
    edit(data)
    out = tmp_path / name
    torch.save(data, out)
    return out


def test_missing_top_level_key_is_named(trained, tmp_path):
    _, path = trained
    bad = _rewrite(path, tmp_path, "a.pt", lambda d: d.pop("model_config"))
    with pytest.raises(ValueError, match="model_config"):
        load_checkpoint(bad)


def test_wrong_format_version_is_rejected(trained, tmp_path):
    _, path = trained
    bad = _rewrite(path, tmp_path, "b.pt", lambda d: d.update(format_version=99))
    with pytest.raises(ValueError, match="format_version 99"):
        load_checkpoint(bad)


def test_missing_state_dict_entry_is_named(trained, tmp_path):
    _, path = trained
    bad = _rewrite(path, tmp_path, "c.pt", lambda d: d["state_dict"].pop("decoder.no_object.weight"))
    with pytest.raises(ValueError, match="decoder.no_object.weight"):
        load_checkpoint(bad)


def test_text_encoder_dimension_mismatch_is_rejected_naming_both_encoders(trained):
    _, path = trained
    trained_with = read_checkpoint(path)["text_encoder"]
    with pytest.raises(ValueError, match="text_dim") as err:
        load_checkpoint(path, text_encoder=build_text_encoder("hash:16"))
    assert "'hash:16' gives 16-d" in str(err.value)  # the encoder given, not the checkpoint's
    assert repr(trained_with) in str(err.value)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")
