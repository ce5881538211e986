"""The spconv backend of the sparse library: same parameters and results as the pure-PyTorch
backend, layer by layer and for whole networks (forward and gradients)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("spconv.pytorch")

from tests.official_spconv_unet import random_features, random_scene  # noqa: E402
from uniseg3d_model.backbone import BackboneConfig, MinkUNet  # noqa: E402
from uniseg3d_model.sparse import SparseTensor, batch_coords, get_backend  # noqa: E402
from uniseg3d_model.sparse import backend as backend_module  # noqa: E402
from uniseg3d_model.sparse.spconv_backend import spconv_supports  # noqa: E402
from uniseg3d_model.sparse.tensor import CoordinateCache  # noqa: E402
from uniseg3d_model.spconv_unet import SpconvUNet, SpconvUNetConfig  # noqa: E402

TOL = 1e-4
TORCH, SPCONV = get_backend("torch"), get_backend("spconv")
SPCONV_CUDA = torch.cuda.is_available() and spconv_supports("cuda")
NO_SPCONV_CUDA = "no CUDA device, or the installed spconv is a CPU-only build (needs spconv-cuXXX)"


def _input(seed: int = 0, channels: int = 8, shift: int = -37) -> SparseTensor:
    """Two scenes with negative coordinates (the backend shifts them for spconv)."""
    scenes = [random_scene(1500, 1.0, seed=seed + s) + shift for s in range(2)]
    coords = batch_coords(scenes)
    g = torch.Generator().manual_seed(seed)
    return SparseTensor(coords, torch.randn(coords.shape[0], channels, generator=g))


def _pair(factory, *args, **kw):
    a = getattr(TORCH, factory)(*args, **kw)
    b = getattr(SPCONV, factory)(*args, **kw)
    b.load_state_dict(a.state_dict(), strict=True)
    return a, b


def _run(backend, layers, x: SparseTensor) -> SparseTensor:
    h = backend.to_native(x)
    for layer in layers:
        h = layer(h)
    return h


@torch.no_grad()
@pytest.mark.parametrize(
    "kernel_size,bias",
    [(3, False), (1, True), (5, False)],
)
def test_submanifold_conv_matches_torch(kernel_size: int, bias: bool) -> None:
    a, b = _pair("Conv3d", 8, 12, kernel_size=kernel_size, bias=bias)
    x = _input()
    ya = TORCH.from_native(_run(TORCH, [a], x), x)
    yb = SPCONV.from_native(_run(SPCONV, [b], x), x)
    assert torch.equal(yb.coords, x.coords)
    assert (ya.feats - yb.feats).abs().max() <= TOL


@torch.no_grad()
def test_down_up_and_batch_norm_match_torch() -> None:
    down_a, down_b = _pair("Conv3d", 8, 16, kernel_size=2, stride=2)
    bn_a, bn_b = _pair("BatchNorm", 16, eps=1e-4)
    bn_a.bn.running_mean.uniform_(-1, 1)
    bn_b.load_state_dict(bn_a.state_dict())
    up_a, up_b = _pair("ConvTranspose3d", 16, 8, kernel_size=2, stride=2)
    x = _input(seed=4)
    for bn in (bn_a, bn_b):
        bn.eval()
    mid_a = _run(TORCH, [down_a, bn_a], x)
    mid_b = _run(SPCONV, [down_b, bn_b], x)
    coarse_b = mid_b.sp.indices.to(torch.int64)
    coarse_b = torch.cat([coarse_b[:, :1], coarse_b[:, 1:] * 2 + mid_b.origin], 1)
    keys_a = {tuple(r): i for i, r in enumerate(mid_a.coords.tolist())}
    rows = torch.tensor([keys_a[tuple(r)] for r in coarse_b.tolist()])
    assert len(keys_a) == coarse_b.shape[0]
    assert (mid_a.feats[rows] - mid_b.feats).abs().max() <= TOL
    ya = TORCH.from_native(up_a(mid_a), x)
    yb = SPCONV.from_native(up_b(mid_b), x)
    assert (ya.feats - yb.feats).abs().max() <= TOL


def test_state_dicts_have_identical_names_and_shapes() -> None:
    for make in (
        lambda b: SpconvUNet(SpconvUNetConfig.small(backend=b)),
        lambda b: MinkUNet(BackboneConfig.small(backend=b)),
    ):
        a, b = make("torch").state_dict(), make("spconv").state_dict()
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def _twin_unets(extent: str, device: str = "cpu") -> tuple[SpconvUNet, SpconvUNet]:
    torch.manual_seed(0)
    cfg = dict(planes=(8, 16, 24), spatial_extent=extent, min_spatial_shape=1)
    net_a = SpconvUNet(SpconvUNetConfig(**cfg, backend="torch"))
    net_b = SpconvUNet(SpconvUNetConfig(**cfg, backend="spconv"))
    net_b.load_state_dict(net_a.state_dict(), strict=True)
    return net_a.to(device), net_b.to(device)


def _scene_batch(device: str = "cpu") -> SparseTensor:
    coords = batch_coords([random_scene(1500, 1.0, seed=s) for s in range(2)])
    return SparseTensor(coords.to(device), random_features(coords.shape[0]).to(device))


@torch.no_grad()
@pytest.mark.parametrize("extent", ["batch", "none"])
@pytest.mark.parametrize("train", [False, True])
def test_spconv_unet_matches_torch_backend(extent: str, train: bool) -> None:
    net_a, net_b = _twin_unets(extent)
    net_a.train(train)
    net_b.train(train)  # training mode: batch statistics in every BN
    x = _scene_batch()
    assert (net_a(x).feats - net_b(x).feats).abs().max() <= TOL


def test_cpu_autograd_is_refused_with_a_clear_error() -> None:
    _, net_b = _twin_unets("none")
    with pytest.raises(ValueError, match="no backward pass"):
        net_b(_scene_batch())


@pytest.mark.cuda
@pytest.mark.skipif(not SPCONV_CUDA, reason=NO_SPCONV_CUDA)
def test_cuda_spconv_gradients_match_torch_backend() -> None:
    net_a, net_b = _twin_unets("batch", "cuda")
    x = _scene_batch("cuda")
    target = torch.randn(x.feats.shape[0], 8, generator=torch.Generator().manual_seed(1)).cuda()
    outs = []
    for net in (net_a, net_b):
        out = net(x).feats
        (out * target).sum().backward()
        outs.append(out.detach())
    assert (outs[0] - outs[1]).abs().max() <= 2e-2
    grads_a = {k: p.grad for k, p in net_a.named_parameters()}
    for k, p in net_b.named_parameters():
        scale = grads_a[k].abs().max().clamp(min=1.0)
        assert (p.grad - grads_a[k]).abs().max() <= 2e-2 * scale, k


@torch.no_grad()
def test_minkunet_runs_on_spconv_like_torch() -> None:
    torch.manual_seed(0)
    net_a = MinkUNet(BackboneConfig.small(backend="torch")).eval()
    net_b = MinkUNet(BackboneConfig.small(backend="spconv")).eval()
    net_b.load_state_dict(net_a.state_dict(), strict=True)
    x = _input(seed=7, channels=6)
    assert (net_a(x).feats - net_b(x).feats).abs().max() <= TOL


def test_per_scene_bounds_that_differ_are_rejected() -> None:
    x = _input(shift=0)
    y = SparseTensor(x.coords, x.feats, 1, CoordinateCache(torch.tensor([[60, 60, 60], [64, 60, 60]])))
    with pytest.raises(ValueError, match="one spatial_shape per batch"):
        SPCONV.to_native(y)


def test_unsupported_layers_are_rejected() -> None:
    with pytest.raises(ValueError, match="kernel_size == stride"):
        SPCONV.Conv3d(4, 4, kernel_size=3, stride=2)
    with pytest.raises(ValueError, match="odd kernel_size"):
        SPCONV.Conv3d(4, 4, kernel_size=2, stride=1)


def test_selecting_spconv_without_it_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "spconv_available", lambda: False)
    with pytest.raises(ValueError, match="backend='spconv' requested but spconv.pytorch does not import"):
        backend_module.get_backend("spconv")


def test_auto_never_selects_spconv() -> None:
    assert get_backend("auto").name in ("torch", "minkowski")


@pytest.mark.cuda
@pytest.mark.skipif(not SPCONV_CUDA, reason=NO_SPCONV_CUDA)
@torch.no_grad()
def test_cuda_spconv_backend_matches_torch_cpu() -> None:
    torch.manual_seed(0)
    net_a = SpconvUNet(SpconvUNetConfig(backend="torch")).eval()
    net_b = SpconvUNet(SpconvUNetConfig(backend="spconv")).eval()
    net_b.load_state_dict(net_a.state_dict())
    coords = batch_coords([random_scene(20000, 3.0, seed=0)])
    feats = random_features(coords.shape[0])
    cpu = net_a(SparseTensor(coords, feats)).feats
    gpu = net_b.cuda()(SparseTensor(coords.cuda(), feats.cuda())).feats
    assert gpu.device.type == "cuda"
    # spconv may run fp32 GEMMs in TF32 on Ampere+ GPUs: a looser bound than on CPU
    assert (gpu.cpu() - cpu).abs().max() <= 2e-2
