"""SpconvUNet (the official UniSeg3D backbone on our sparse layers) against spconv's own U-Net
with the official module names, the weight converter, and layer layouts against dense conv3d.

spconv 2.3.8's CPU SubMConv3d gives wrong rows, differently from run to run, when more than one
intra-op thread runs (see docs/backbone.md); with one thread it equals dense ``conv3d``
(``test_spconv_single_thread_subm_equals_dense_conv3d``). spconv references therefore run with
one thread here, and our layers are also checked layer by layer against dense ``conv3d``.
"""

from __future__ import annotations

import pytest
import torch

spconv = pytest.importorskip("spconv.pytorch")

from tests.official_spconv_unet import RefBackbone, random_features, random_scene, randomize  # noqa: E402
from uniseg3d_model.sparse import (  # noqa: E402
    CoordinateCache,
    SparseConv3d,
    SparseConvTranspose3d,
    SparseTensor,
    batch_coords,
)
from uniseg3d_model.spconv_unet import SpconvUNet, SpconvUNetConfig, official_spatial_bounds  # noqa: E402
from uniseg3d_model.spconv_unet_weights import (  # noqa: E402
    official_backbone_state_dict,
    spconv_kernel_to_ours,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> RefBackbone:
    return randomize(RefBackbone(), seed=3)


def _ours(reference: RefBackbone, **cfg_kw) -> SpconvUNet:
    cfg = SpconvUNetConfig(**cfg_kw)
    state, _ = official_backbone_state_dict(reference.state_dict(), cfg)
    net = SpconvUNet(cfg)
    net.load_state_dict(state, strict=True)
    return net.eval()


def _scenes(n_scenes: int, points: int = 2500, size_m: float = 1.5, seed: int = 0):
    coords = batch_coords([random_scene(points, size_m, seed=seed + s) for s in range(n_scenes)])
    return coords, random_features(coords.shape[0], seed=seed)


@torch.no_grad()
def test_matches_spconv_reference_on_a_batch(reference, one_thread) -> None:
    coords, feats = _scenes(3)
    bounds = official_spatial_bounds(coords, 128, per_scene=False)[0]
    expected = reference(coords, feats, bounds)
    out = _ours(reference, spatial_extent="batch")(SparseTensor(coords, feats))
    assert coords.shape[0] > 5000 and out.feats.shape == (coords.shape[0], 32)
    assert torch.equal(out.coords, coords)
    assert (out.feats - expected).abs().max() <= TOL


@torch.no_grad()
def test_odd_spatial_shape_drops_edge_voxels_like_spconv(reference, one_thread) -> None:
    coords, feats = _scenes(2, seed=5)
    bounds = official_spatial_bounds(coords, 1, per_scene=False)[0]
    assert any(int(b) % 2 == 1 for b in bounds)  # the case where spconv's stride-2 conv drops a slice
    expected = reference(coords, feats, bounds)
    same = _ours(reference, spatial_extent="batch", min_spatial_shape=1)(SparseTensor(coords, feats))
    unbounded = _ours(reference, spatial_extent="none")(SparseTensor(coords, feats))
    assert (same.feats - expected).abs().max() <= TOL
    assert (unbounded.feats - expected).abs().max() > 1e-2


@torch.no_grad()
def test_scene_extent_equals_official_for_one_scene(reference, one_thread) -> None:
    coords, feats = _scenes(1, seed=9)
    bounds = official_spatial_bounds(coords, 1, per_scene=False)[0]
    expected = reference(coords, feats, bounds)
    out = _ours(reference, spatial_extent="scene", min_spatial_shape=1)(SparseTensor(coords, feats))
    assert (out.feats - expected).abs().max() <= TOL


def _small_net() -> SpconvUNet:
    torch.manual_seed(0)
    return SpconvUNet(SpconvUNetConfig.small(min_spatial_shape=1)).eval()


@torch.no_grad()
def test_invariant_to_row_order() -> None:
    coords, feats = _scenes(2, points=1500, size_m=1.0, seed=11)
    net = _small_net()
    out = net(SparseTensor(coords, feats)).feats
    perm = torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(0))
    shuffled = net(SparseTensor(coords[perm], feats[perm]))
    assert torch.equal(shuffled.coords, coords[perm])
    assert (shuffled.feats - out[perm]).abs().max() <= 1e-5


@torch.no_grad()
def test_exact_under_batching_with_scene_extent() -> None:
    scenes = [random_scene(1200, 0.8 + 0.3 * s, seed=20 + s) for s in range(3)]
    feats = [random_features(c.shape[0], seed=s) for s, c in enumerate(scenes)]
    net = _small_net()
    batched = net(SparseTensor(batch_coords(scenes), torch.cat(feats))).feats
    alone = torch.cat([net(SparseTensor(batch_coords([c]), f)).feats for c, f in zip(scenes, feats)])
    assert (batched - alone).abs().max() <= 1e-5


@torch.no_grad()
def test_negative_coordinates_need_extent_none() -> None:
    coords, feats = _scenes(1, points=1000, size_m=0.8)
    coords[:, 1] -= 10
    net = _small_net()
    with pytest.raises(ValueError, match="coordinates >= 0"):
        net(SparseTensor(coords, feats))
    net.cfg.spatial_extent = "none"
    assert net(SparseTensor(coords, feats)).feats.shape == (coords.shape[0], 16)


def test_converter_consumes_every_official_key_once(reference) -> None:
    official = reference.state_dict()
    official["decoder.some.weight"] = torch.zeros(3)  # non-backbone keys are left alone
    state, consumed = official_backbone_state_dict(official, SpconvUNetConfig())
    assert len(consumed) == len(set(consumed)) == 274
    assert set(consumed) == set(reference.state_dict())
    assert set(state) == set(SpconvUNet(SpconvUNetConfig()).state_dict())


def test_converter_small_config_matches_its_reference() -> None:
    ref = randomize(RefBackbone(in_channels=3, planes=(8, 16, 24), block_reps=1), seed=1)
    cfg = SpconvUNetConfig(in_channels=3, planes=(8, 16, 24), block_reps=1)
    state, consumed = official_backbone_state_dict(ref.state_dict(), cfg)
    assert set(consumed) == set(ref.state_dict())
    SpconvUNet(cfg).load_state_dict(state, strict=True)


def test_converter_names_a_missing_key(reference) -> None:
    official = dict(reference.state_dict())
    del official["unet.u.conv.2.weight"]
    with pytest.raises(ValueError, match=r"'unet\.u\.conv\.2\.weight' missing"):
        official_backbone_state_dict(official, SpconvUNetConfig())


def test_converter_names_a_wrong_shape(reference) -> None:
    official = dict(reference.state_dict())
    official["unet.blocks.block1.conv_branch.2.weight"] = torch.zeros(32, 3, 3, 3, 16)
    with pytest.raises(
        ValueError, match=r"conv_branch\.2\.weight'.*\(32, 3, 3, 3, 16\).*\(32, 3, 3, 3, 32\)"
    ):
        official_backbone_state_dict(official, SpconvUNetConfig())


def test_converter_rejects_keys_of_another_config(reference) -> None:
    with pytest.raises(ValueError, match="has no place"):
        official_backbone_state_dict(reference.state_dict(), SpconvUNetConfig(planes=(32, 64, 96, 128)))


def _random_grid(shape, n, seed, channels):
    g = torch.Generator().manual_seed(seed)
    lin = torch.randperm(shape[0] * shape[1] * shape[2], generator=g)[:n]
    x, y, z = lin // (shape[1] * shape[2]), (lin // shape[2]) % shape[1], lin % shape[2]
    coords = torch.stack([torch.zeros_like(x), x, y, z], 1).to(torch.int32)
    feats = torch.randn(n, channels, generator=g)
    dense = torch.zeros(1, channels, *shape)
    dense[0, :, x, y, z] = feats.T
    return coords, feats, dense


@torch.no_grad()
def test_converted_layers_equal_dense_conv3d() -> None:
    """Layer by layer against dense conv3d: spconv's KRSC weight permuted into our 3x3x3
    submanifold conv, 2x2x2 strided conv and its transpose (no flip)."""
    shape = (14, 12, 10)
    coords, feats, dense = _random_grid(shape, 700, 0, 4)
    g = torch.Generator().manual_seed(1)
    w3 = torch.randn(5, 3, 3, 3, 4, generator=g)  # spconv (C_out, kx, ky, kz, C_in)
    sub = SparseConv3d(4, 5, kernel_size=3)
    sub.kernel.copy_(spconv_kernel_to_ours(w3))
    x = SparseTensor(coords, feats)
    ref = torch.nn.functional.conv3d(dense, w3.permute(0, 4, 1, 2, 3), padding=1)[0]
    c = coords.long()
    assert (sub(x).feats - ref[:, c[:, 1], c[:, 2], c[:, 3]].T).abs().max() <= TOL

    w2 = torch.randn(6, 2, 2, 2, 4, generator=g)
    down = SparseConv3d(4, 6, kernel_size=2, stride=2)
    down.kernel.copy_(spconv_kernel_to_ours(w2))
    y = down(x)
    ref = torch.nn.functional.conv3d(dense, w2.permute(0, 4, 1, 2, 3), stride=2)[0]
    cy = y.coords.long() // 2
    assert (y.feats - ref[:, cy[:, 1], cy[:, 2], cy[:, 3]].T).abs().max() <= TOL

    wt = torch.randn(3, 2, 2, 2, 6, generator=g)  # inverse conv 6 -> 3
    up = SparseConvTranspose3d(6, 3, kernel_size=2, stride=2)
    up.kernel.copy_(spconv_kernel_to_ours(wt))
    coarse = torch.zeros(1, 6, *ref.shape[1:])
    coarse[0, :, cy[:, 1], cy[:, 2], cy[:, 3]] = y.feats.T
    ref = torch.nn.functional.conv_transpose3d(coarse, wt.permute(4, 0, 1, 2, 3), stride=2)[0]
    assert (up(y).feats - ref[:, c[:, 1], c[:, 2], c[:, 3]].T).abs().max() <= TOL


@torch.no_grad()
def test_bounded_strided_conv_equals_dense_conv3d_on_an_odd_grid() -> None:
    """Cache bounds = spconv's spatial_shape: on an odd grid a dense stride-2 conv3d has
    floor(S / 2) outputs per axis, and our bounded strided conv keeps exactly those cells."""
    shape = (13, 11, 9)
    coords, feats, dense = _random_grid(shape, 600, 3, 4)
    w2 = torch.randn(6, 2, 2, 2, 4, generator=torch.Generator().manual_seed(2))
    down = SparseConv3d(4, 6, kernel_size=2, stride=2)
    down.kernel.copy_(spconv_kernel_to_ours(w2))
    x = SparseTensor(coords, feats, 1, CoordinateCache(torch.tensor([shape])))
    y = down(x)
    ref = torch.nn.functional.conv3d(dense, w2.permute(0, 4, 1, 2, 3), stride=2)[0]
    occupied = torch.nn.functional.max_pool3d((dense.abs().sum(1) > 0).float(), 2)[0].nonzero()
    cy = y.coords.long()[:, 1:] // 2
    assert torch.equal(cy[torch.argsort(cy[:, 0] * 10_000 + cy[:, 1] * 100 + cy[:, 2])], occupied)
    assert (y.feats - ref[:, cy[:, 0], cy[:, 1], cy[:, 2]].T).abs().max() <= TOL
    up = SparseConvTranspose3d(6, 4, kernel_size=2, stride=2)
    back = up(y)  # the dropped last slices get nothing back
    edge = (coords[:, 1] == 12) | (coords[:, 2] == 10) | (coords[:, 3] == 8)
    assert edge.any() and bool((back.feats[edge] == 0).all()) and bool((back.feats[~edge] != 0).any())


@torch.no_grad()
def test_spconv_1x1_conv_is_a_raw_view_not_a_transpose(one_thread) -> None:
    coords, feats, _ = _random_grid((8, 8, 8), 100, 2, 3)
    conv = spconv.SubMConv3d(3, 5, kernel_size=1, bias=False)
    conv.weight.normal_(generator=torch.Generator().manual_seed(0))
    expected = conv(spconv.SparseConvTensor(feats, coords, [8, 8, 8], 1)).features
    assert (feats @ spconv_kernel_to_ours(conv.weight) - expected).abs().max() <= TOL
    transposed = conv.weight.reshape(5, 3).T
    assert (feats @ transposed - expected).abs().max() > 0.1


@torch.no_grad()
def test_spconv_single_thread_subm_equals_dense_conv3d(one_thread) -> None:
    """The workaround this file relies on: one thread, spconv's SubMConv3d equals dense conv3d
    (with 2 threads the same grids gave wrong rows in most runs)."""
    shape = (64, 64, 32)
    coords, feats, dense = _random_grid(shape, 30000, 0, 4)
    conv = spconv.SubMConv3d(4, 4, kernel_size=3, padding=1, bias=False)
    conv.weight.normal_(generator=torch.Generator().manual_seed(0))
    out = conv(spconv.SparseConvTensor(feats, coords, list(shape), 1)).features
    ref = torch.nn.functional.conv3d(dense, conv.weight.permute(0, 4, 1, 2, 3), padding=1)[0]
    c = coords.long()
    assert (out - ref[:, c[:, 1], c[:, 2], c[:, 3]].T).abs().max() <= 1e-3


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="block_reps"):
        SpconvUNetConfig(block_reps=3)
    with pytest.raises(ValueError, match="spatial_extent"):
        SpconvUNetConfig(spatial_extent="room")
    with pytest.raises(ValueError, match="planes"):
        SpconvUNetConfig(planes=())
    assert SpconvUNetConfig.small().feature_dim == 16 and SpconvUNet(SpconvUNetConfig()).feature_dim == 32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@torch.no_grad()
def test_cuda_forward_matches_cpu(reference) -> None:
    coords, feats = _scenes(2, points=20000, size_m=3.0)
    net = _ours(reference)
    cpu = net(SparseTensor(coords, feats)).feats
    gpu = net.cuda()(SparseTensor(coords.cuda(), feats.cuda()))
    assert gpu.feats.device.type == "cuda"
    assert torch.equal(gpu.coords.cpu(), coords)
    assert (gpu.feats.cpu() - cpu).abs().max() <= 1e-3
