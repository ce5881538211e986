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
