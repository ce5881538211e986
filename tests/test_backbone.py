"""MinkUNet backbone: output layout, invariances (point order, translation by the largest
stride, batching), training step, ME-compatible parameter layout and backend selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uniseg3d_model.backbone import BackboneConfig, MinkUNet, make_input
from uniseg3d_model.sparse import SparseTensor, batch_coords, voxelize
from uniseg3d_model.sparse.backend import get_backend, minkowski_available


def room_scene(seed: int, n: int = 6000, voxel: float = 0.05):
    """Voxelized floor + two walls + a box, with per-voxel colours: (M, 3) int32 coords, (M, 3)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.0, 2.0, (n, 2))
    h = rng.uniform(0.0, 1.2, n)
    part = rng.integers(0, 4, n)
    pts = np.where(
        (part == 0)[:, None],
        np.c_[u, np.zeros(n)],
        np.where(
            (part == 1)[:, None],
            np.c_[u[:, 0], np.zeros(n), h],
            np.where(
                (part == 2)[:, None], np.c_[np.zeros(n), u[:, 1], h], np.c_[0.8 + 0.3 * u / 2, 0.4 + 0 * h]
            ),
        ),
    )
    coords, _ = voxelize(pts, voxel)
    colors = torch.rand((coords.shape[0], 3), generator=torch.Generator().manual_seed(seed))
    return coords, colors


@pytest.fixture(scope="module")
def net() -> MinkUNet:
    torch.manual_seed(0)
    model = MinkUNet(BackboneConfig.small(backend="torch", in_channels=3))
    # non-trivial BN statistics so eval mode is not the identity
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def run(net: MinkUNet, coords: torch.Tensor, colors: torch.Tensor) -> SparseTensor:
    with torch.no_grad():
        return net(make_input(coords, colors))


def test_output_is_per_voxel_on_input_rows(net: MinkUNet) -> None:
    c, col = room_scene(0)
    coords = batch_coords([c])
    out = run(net, coords, col)
    assert out.feats.shape == (coords.shape[0], net.cfg.feature_dim) == (coords.shape[0], 32)
    assert torch.equal(out.coords, coords) and out.stride == 1
    assert torch.isfinite(out.feats).all() and out.feats.std() > 0


def test_output_invariant_to_point_order(net: MinkUNet) -> None:
    c, col = room_scene(1)
    coords = batch_coords([c])
    perm = torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(0))
    ref = run(net, coords, col).feats
    out = run(net, coords[perm], col[perm]).feats
    torch.testing.assert_close(out, ref[perm], atol=1e-5, rtol=1e-4)


def test_output_invariant_to_translation_by_largest_stride(net: MinkUNet) -> None:
    c, col = room_scene(2)
    ref = run(net, batch_coords([c]), col).feats
    shifted = run(net, batch_coords([c + torch.tensor([16 * 3, -16 * 5, 16], dtype=torch.int32)]), col).feats
    torch.testing.assert_close(shifted, ref, atol=1e-5, rtol=1e-4)
    # a shift that is not a multiple of 16 regroups the coarse voxels: the test can fail
    off = run(net, batch_coords([c + torch.tensor([1, 0, 0], dtype=torch.int32)]), col).feats
    assert not torch.allclose(off, ref, atol=1e-3)


def test_batched_scenes_do_not_interact(net: MinkUNet) -> None:
    (c0, col0), (c1, col1) = room_scene(3), room_scene(4)
    both = run(net, batch_coords([c0, c1]), torch.cat([col0, col1])).feats
    torch.testing.assert_close(
        both[: c0.shape[0]], run(net, batch_coords([c0]), col0).feats, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        both[c0.shape[0] :], run(net, batch_coords([c1]), col1).feats, atol=1e-5, rtol=1e-4
    )


def test_training_step_reaches_every_parameter() -> None:
    torch.manual_seed(1)
    model = MinkUNet(BackboneConfig.small(backend="torch", in_channels=6)).train()
    c, col = room_scene(5, n=3000)
    x = make_input(batch_coords([c]), col, c.float() * 0.05)
    out = model(x)
    loss = out.feats.pow(2).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def expected_me_shapes(cfg: BackboneConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes MinkowskiEngine's Res16UNet would create for ``cfg``, written out
    independently from the ME rules: kernels (K, in, out), 1x1 stride-1 kernels (in, out),
    bias (1, out), BN under ``.bn``."""
    p, n, d0 = cfg.planes, cfg.layers, cfg.init_dim
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.kernel"] = (cin, cout) if k == 1 else (k**3, cin, cout)

    def bn(name, c):
        shapes[f"{name}.bn.weight"] = (c,)
        shapes[f"{name}.bn.bias"] = (c,)

    def stage(name, cin, cout, blocks):
        for i in range(blocks):
            conv(f"{name}.{i}.conv1", cin, cout, 3)
            bn(f"{name}.{i}.norm1", cout)
            conv(f"{name}.{i}.conv2", cout, cout, 3)
            bn(f"{name}.{i}.norm2", cout)
            if cin != cout:
                conv(f"{name}.{i}.downsample.0", cin, cout, 1)
                bn(f"{name}.{i}.downsample.1", cout)
            cin = cout

    conv("conv0p1s1", cfg.in_channels, d0, cfg.conv1_kernel_size)
    bn("bn0", d0)
    ins = [d0, p[0], p[1], p[2]]
    names = ["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"]
    for i in range(4):
        conv(names[i], ins[i], ins[i], 2)
        bn(f"bn{i + 1}", ins[i])
        stage(f"block{i + 1}", ins[i], p[i], n[i])
    skips = [p[2], p[1], p[0], d0]
    prev = p[3]
    for j, tr in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
        conv(tr, prev, p[4 + j], 2)
        bn(f"bntr{4 + j}", p[4 + j])
        stage(f"block{5 + j}", p[4 + j] + skips[j], p[4 + j], n[4 + j])
        prev = p[4 + j]
    conv("final", p[7], cfg.out_channels, 1)
    shapes["final.bias"] = (1, cfg.out_channels)
    return shapes


@pytest.mark.parametrize("cfg", [BackboneConfig(backend="torch"), BackboneConfig.small(backend="torch")])
def test_parameter_layout_matches_minkowski_engine(cfg: BackboneConfig) -> None:
    model = MinkUNet(cfg)
    got = {k: tuple(v.shape) for k, v in model.named_parameters()}
    assert got == expected_me_shapes(cfg)
    assert "bn0.bn.running_mean" in model.state_dict()


def test_default_config_is_res16unet34c() -> None:
    cfg = BackboneConfig()
    assert cfg.planes == (32, 64, 128, 256, 256, 128, 96, 96)
    assert cfg.layers == (2, 3, 4, 6, 2, 2, 2, 2)
    assert (cfg.in_channels, cfg.out_channels, cfg.conv1_kernel_size) == (6, 32, 5)
    assert BackboneConfig(out_channels=None).feature_dim == 96


def test_backend_selection_falls_back_to_torch_without_minkowski() -> None:
    assert get_backend("torch").name == "torch"
    if minkowski_available():
        assert get_backend("auto").name == "minkowski"
    else:
        assert get_backend("auto").name == "torch"
        assert MinkUNet(BackboneConfig.small(backend="auto")).backend.name == "torch"
        with pytest.raises(ValueError, match="MinkowskiEngine"):
            get_backend("minkowski")
    with pytest.raises(ValueError, match="backend"):
        BackboneConfig(backend="sparse")


def test_invalid_config_and_input_raise() -> None:
    with pytest.raises(ValueError, match="planes"):
        BackboneConfig(planes=(32, 64))
    with pytest.raises(ValueError, match="layers"):
        BackboneConfig(layers=(0,) * 8)
    model = MinkUNet(BackboneConfig.small(backend="torch", in_channels=3))
    c, col = room_scene(6, n=500)
    with pytest.raises(ValueError, match="channels"):
        model(SparseTensor(batch_coords([c]), torch.zeros(c.shape[0], 6)))
    with pytest.raises(ValueError, match="colors"):
        make_input(batch_coords([c]), torch.zeros(3, 3))


@pytest.mark.skipif(not minkowski_available(), reason="MinkowskiEngine is not importable")
def test_minkowski_and_torch_backends_agree_on_shared_weights() -> None:
    torch.manual_seed(2)
    ref = MinkUNet(BackboneConfig.small(backend="torch", in_channels=3)).eval()
    me = MinkUNet(BackboneConfig.small(backend="minkowski", in_channels=3)).eval()
    me.load_state_dict(ref.state_dict())
    c, col = room_scene(7)
    coords = batch_coords([c])
    perm = torch.randperm(coords.shape[0])
    a = run(ref, coords[perm], col[perm]).feats
    b = run(me, coords[perm], col[perm]).feats
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_forward_matches_cpu(net: MinkUNet) -> None:
    c, col = room_scene(8)
    coords = batch_coords([c])
    ref = run(net, coords, col).feats
    gpu = MinkUNet(net.cfg).eval()
    gpu.load_state_dict(net.state_dict())
    gpu = gpu.cuda()
    out = run(gpu, coords.cuda(), col.cuda())
    assert out.feats.device.type == "cuda" and torch.equal(out.coords.cpu(), coords)
    torch.testing.assert_close(out.feats.cpu(), ref, atol=1e-4, rtol=1e-3)
