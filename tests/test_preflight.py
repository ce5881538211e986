"""Model loading fails in one line naming the parameter (uniseg3d_ros.inference.preflight, no ROS)."""

from __future__ import annotations

import pytest

from uniseg3d_ros.inference.preflight import (
    ModelLoadError,
    check_device,
    check_text_encoder,
    load_engine_checked,
)


def test_cuda_without_cuda_names_the_device_parameter():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match="parameter 'device' is 'cuda:0' but CUDA is not available"):
        check_device("cuda:0")
    with pytest.raises(ModelLoadError, match="parameter 'device': 'gpu' is not a torch device"):
        check_device("gpu")
    check_device("cpu")


def test_text_encoder_checks_name_the_parameter(tmp_path):
    with pytest.raises(ModelLoadError, match="text_encoder_weights"):
        check_text_encoder("openclip:ViT-B-32")
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_text_encoder("openclip:ViT-B-32", str(tmp_path / "none.bin"))
    with pytest.raises(ModelLoadError, match="unknown encoder 'bert'"):
        check_text_encoder("bert")
    check_text_encoder("hash")
    check_text_encoder("minilm")  # installed here


def test_missing_checkpoint_and_loader_errors_are_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="parameter 'checkpoint': file .*missing.pt' does not exist"):
        load_engine_checked(str(tmp_path / "missing.pt"), text_encoder="hash")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint\nsecond line")
    with pytest.raises(ModelLoadError) as info:
        load_engine_checked(str(bad), text_encoder="hash")
    assert "\n" not in str(info.value) and str(info.value).startswith("cannot load the model (")


def test_a_loadable_model_passes():
    engine = load_engine_checked("random", text_encoder="hash")
    assert engine.model is not None and any("NO CHECKPOINT" in n for n in engine.notes)


def test_default_text_encoder_is_the_checkpoints_own(tmp_path):
    """``text_encoder:=''`` (the default) keeps the encoder the checkpoint was trained with, so a
    checkpoint with another text width (e.g. the converted official model, 768-d) loads as is."""
    import torch

    from uniseg3d_model.checkpoint import save_checkpoint
    from uniseg3d_model.model import ModelConfig, UniSeg3D
    from uniseg3d_model.text_encoders import build_text_encoder

    torch.manual_seed(0)
    model = UniSeg3D(ModelConfig.small(), build_text_encoder("hash:24"))
    path = save_checkpoint(tmp_path / "hash24.pt", model)
    engine = load_engine_checked(str(path))
    assert engine.model.text_encoder.name == "hash:24"
    with pytest.raises(ModelLoadError, match="'hash:16' gives 16-d"):  # an explicit other one replaces it
        load_engine_checked(str(path), text_encoder="hash:16")
