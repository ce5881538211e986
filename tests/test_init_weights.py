"""Initial weights of the official recipe: SSTNet's ScanNet U-Net into our official backbone
(``train.init_backbone``, the official ``load_from``), class prototypes from
``scannet_cls_embedding.pth`` or the text encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_train_official import TINY_MODEL
from training.config import config_from_dict
from training.init_weights import init_class_prototypes, load_sstnet_backbone
from training.train import build_model, main
from uniseg3d_model.checkpoint import read_checkpoint
from uniseg3d_model.spconv_unet_weights import official_backbone_keys

TINY_OFFICIAL = TINY_MODEL  # the tiny official architecture of the official-recipe tests


def _model() -> torch.nn.Module:
    cfg = config_from_dict({"model": TINY_OFFICIAL, "text_encoder": {"name": "hash:32"}})
    return build_model(cfg, torch.device("cpu"))


def _sstnet_checkpoint(
    model: torch.nn.Module, path: Path, drop: str | None = None
) -> dict[str, torch.Tensor]:
    """An SSTNet-style file: {"model": {"module." + name: tensor}} with the U-Net under the official
    names and shapes, plus SSTNet's own heads (ignored by the load)."""
    g = torch.Generator().manual_seed(0)
    official = {
        key: torch.randn(shape, generator=g) if shape else torch.tensor(7)
        for key, _, shape, _ in official_backbone_keys(model.backbone.cfg)
        if key != drop
    }
    extra = {
        "score_unet.blocks.block0.conv_branch.2.weight": torch.randn(8, 3, 3, 3, 8),
        "linear.weight": torch.randn(20, 8),
        "offset_linear.0.weight": torch.randn(8, 8),
    }
    torch.save({"model": {f"module.{k}": v for k, v in {**official, **extra}.items()}, "epoch": 512}, path)
    return official


def test_sstnet_unet_tensors_land_in_our_backbone_in_our_layouts(tmp_path: Path) -> None:
    model = _model()
    official = _sstnet_checkpoint(model, tmp_path / "sstnet_scannet.pth")
    used = load_sstnet_backbone(model, tmp_path / "sstnet_scannet.pth")
    assert sorted(used) == sorted(official)
    ours = model.backbone.state_dict()
    bn = "output_layer.0.running_var"
    assert torch.equal(ours["output_norm.bn.running_var"], official[bn])
    w = official["input_conv.0.weight"]  # spconv (C_out, kx, ky, kz, C_in) -> ours (offset, C_in, C_out)
    kernel = ours["input_conv.kernel"]
    for i, j, k in ((0, 0, 0), (2, 1, 0), (1, 2, 2)):
        assert torch.equal(kernel[i + 3 * (j + 3 * k)], w[:, i, j, k, :].t())


def test_a_missing_backbone_tensor_is_named(tmp_path: Path) -> None:
    model = _model()
    _sstnet_checkpoint(model, tmp_path / "bad.pth", drop="unet.blocks.block0.conv_branch.2.weight")
    with pytest.raises(ValueError, match=r"bad.pth.*unet.blocks.block0.conv_branch.2.weight"):
        load_sstnet_backbone(model, tmp_path / "bad.pth")


def test_class_prototypes_from_the_official_file_or_the_text_encoder(tmp_path: Path) -> None:
    model = _model()
    shape = tuple(model.class_prototypes.shape)
    assert init_class_prototypes(model, tmp_path) == "text encoder"
    names = list(model.cfg.class_names)
    emb = torch.nn.functional.normalize(torch.as_tensor(model.text_encoder.encode(names)).float(), dim=-1)
    assert torch.allclose(model.class_prototypes[:, 0], emb)
    torch.save(torch.randn(shape), tmp_path / "scannet_cls_embedding.pth")
    assert init_class_prototypes(model, tmp_path).endswith("scannet_cls_embedding.pth")
    assert torch.equal(model.class_prototypes, torch.load(tmp_path / "scannet_cls_embedding.pth"))
    torch.save(torch.randn(3, 1, 5), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        init_class_prototypes(model, None, tmp_path / "other.pth")


def test_train_starts_from_the_sstnet_backbone(tmp_path: Path) -> None:
    from tests.scannet_scenes import write_processed

    data = write_processed(tmp_path / "data", n_train=1, n_val=0)
    model = _model()
    official = _sstnet_checkpoint(model, tmp_path / "sstnet_scannet.pth")
    cfg = tmp_path / "cfg.yaml"
    import yaml

    cfg.write_text(
        yaml.safe_dump(
            {
                "model": TINY_OFFICIAL,
                "text_encoder": {"name": "hash:32"},
                "loss": {"recipe": "official"},
                "optim": {"lr": 0.0},
                "data": {"augment": False},  # lr 0: the step leaves the weights as loaded
                "train": {
                    "epochs": 1,
                    "batch_size": 1,
                    "amp": "none",
                    "eval_every": 0,
                    "init_backbone": str(tmp_path / "sstnet_scannet.pth"),
                },
            }
        )
    )
    main(
        [
            "--config",
            str(cfg),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    ckpt = tmp_path / "run/checkpoints" / (tmp_path / "run/checkpoints/latest").read_text().strip()
    state = read_checkpoint(ckpt / "model.pt")["state_dict"]
    assert torch.equal(
        state["backbone.unet.blocks.0.conv1.kernel"].reshape(-1)[:5],
        official["unet.blocks.block0.conv_branch.2.weight"].permute(3, 2, 1, 4, 0).reshape(-1)[:5],
    )


def _run(tmp_path: Path, data: Path, name: str, train: dict,
         recipe: str = "official") -> dict[str, torch.Tensor]:
    import yaml

    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": TINY_OFFICIAL, "text_encoder": {"name": "hash:32"}, "loss": {"recipe": recipe},
        "optim": {"lr": 0.0 if train else 1e-3},
        "data": {"augment": False},
        "train": {"epochs": 1, "batch_size": 1, "amp": "none", "eval_every": 0, **train},
    }))
    main(["--config", str(cfg), "--data", str(data), "--out", str(tmp_path / name), "--device", "cpu",
          "--no-progress"])
    ckpt = tmp_path / name / "checkpoints" / (tmp_path / name / "checkpoints/latest").read_text().strip()
    return read_checkpoint(ckpt / "model.pt")["state_dict"]


def test_train_init_from_starts_from_a_saved_model(tmp_path: Path) -> None:
    """``train.init_from``: a fine-tuning run starts from every parameter of a saved model (lr 0
    keeps them), and a checkpoint of another architecture is refused with the differing key."""
    from tests.scannet_scenes import write_processed

    data = write_processed(tmp_path / "data", n_train=1, n_val=0)
    first = _run(tmp_path, data, "first", {})
    ckpt = tmp_path / "first/checkpoints" / (tmp_path / "first/checkpoints/latest").read_text().strip()
    second = _run(tmp_path, data, "second", {"init_from": str(ckpt / "model.pt")})
    fresh = _model().state_dict()
    moved = [k for k in first if k in fresh and fresh[k].is_floating_point()
             and not torch.equal(first[k], fresh[k])]
    assert moved, "the first run changed no weight"
    params = {name for name, _ in _model().named_parameters()}  # BN running stats move in any train step
    differ = [k for k in params if not torch.equal(first[k], second[k])]
    assert len(params) > 20 and differ == [], differ[:5]

    from training.init_weights import load_model_weights

    other = config_from_dict({"model": {**TINY_OFFICIAL, "d_model": 48}, "text_encoder": {"name": "hash:32"}})
    with pytest.raises(ValueError, match="d_model"):
        load_model_weights(build_model(other, torch.device("cpu")), ckpt / "model.pt")


def test_the_official_heads_refuse_our_criterion(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Our criterion asks the instance head for wall / floor, which the official heads never score
    (their logit -1e4: a loss in the thousands that cannot train): one line, exit 2, before any step."""
    from tests.scannet_scenes import write_processed

    data = write_processed(tmp_path / "data", n_train=1, n_val=0)
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, data, "ours", {}, recipe="ours")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss.recipe 'ours'" in err[0] and "recipe: official" in err[0]
    assert not (tmp_path / "ours").exists()
