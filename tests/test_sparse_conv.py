"""Sparse convolution (pure-PyTorch backend) against dense torch convolutions on small random
occupied grids: values and gradients, submanifold / strided / transposed, plus voxelization,
hashing and pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tf

from uniseg3d_model.sparse import SparseTensor, batch_coords, pack_coords, unpack_keys, voxelize
from uniseg3d_model.sparse.functional import global_pool
from uniseg3d_model.sparse.kernel_map import kernel_offsets, submanifold_map
from uniseg3d_model.sparse.nn import SparseConv3d, SparseConvTranspose3d, SparsePool

G = 8  # dense grid edge (voxels)


def random_grid(seed: int, batch: int = 2, occupancy: float = 0.3, cin: int = 3, grid: int = G):
    """Unique random coords (N, 4) in [0, grid)^3 per batch, float64 feats, and the dense
    (B, C, X, Y, Z) tensor holding the same features."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand((batch, grid, grid, grid), generator=g) < occupancy
    coords = occ.nonzero().to(torch.int32)  # [b, x, y, z]
    perm = torch.randperm(coords.shape[0], generator=g)  # arbitrary row order
    coords = coords[perm]
    feats = torch.randn((coords.shape[0], cin), generator=g, dtype=torch.float64)
    return coords, feats


def to_dense(coords: torch.Tensor, feats: torch.Tensor, batch: int, grid: int, scale: int = 1):
    dense = feats.new_zeros((batch, feats.shape[1], grid, grid, grid))
    c = coords.long()
    dense[c[:, 0], :, c[:, 1] // scale, c[:, 2] // scale, c[:, 3] // scale] = feats
    return dense


def dense_weight(kernel: torch.Tensor, ks: int, transpose: bool = False) -> torch.Tensor:
    """ME layout (K, C_in, C_out), K in x-fastest order -> torch conv3d weight (C_out, C_in, x, y, z)
    (or conv_transpose3d weight (C_in, C_out, x, y, z))."""
    w = kernel.reshape(ks, ks, ks, kernel.shape[-2], kernel.shape[-1])  # (z, y, x, in, out)
    return w.permute(3, 4, 2, 1, 0) if transpose else w.permute(4, 3, 2, 1, 0)


def gather_dense(dense: torch.Tensor, coords: torch.Tensor, scale: int = 1) -> torch.Tensor:
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1] // scale, c[:, 2] // scale, c[:, 3] // scale]


@pytest.mark.parametrize(("ks", "dilation"), [(3, 1), (5, 1), (3, 2), (2, 1)])
def test_submanifold_conv_matches_dense_at_active_sites(ks: int, dilation: int) -> None:
    coords, feats = random_grid(seed=ks * 10 + dilation)
    conv = SparseConv3d(3, 4, kernel_size=ks, dilation=dilation, bias=True).double()
    x = SparseTensor(coords, feats.clone().requires_grad_(True))
    y = conv(x)
    assert torch.equal(y.coords, coords) and y.stride == 1

    dense_in = to_dense(coords, feats, 2, G).requires_grad_(True)
    w = dense_weight(conv.kernel, ks)
    if ks % 2:
        pad = dilation * (ks // 2)
        dense_out = tf.conv3d(dense_in, w, conv.bias.view(-1), padding=pad, dilation=dilation)
    else:  # ME even kernels reach offsets [0, K) : pad only on the high side
        dense_out = tf.conv3d(tf.pad(dense_in, (0, ks - 1) * 3), w, conv.bias.view(-1))
    expected = gather_dense(dense_out, coords)
    torch.testing.assert_close(y.feats, expected)

    upstream = torch.randn_like(expected)
    g_feats, g_kernel = torch.autograd.grad((y.feats * upstream).sum(), (x.feats, conv.kernel))
    d_in, d_kernel = torch.autograd.grad((expected * upstream).sum(), (dense_in, conv.kernel))
    torch.testing.assert_close(g_feats, gather_dense(d_in, coords))
    torch.testing.assert_close(g_kernel, d_kernel)


def test_submanifold_conv_at_tensor_stride_two_scales_offsets() -> None:
    coords, feats = random_grid(seed=7)
    conv = SparseConv3d(3, 2, kernel_size=3).double()
    fine = conv(SparseTensor(coords, feats))
    strided = coords.clone()
    strided[:, 1:] *= 2
    coarse = conv(SparseTensor(strided, feats, stride=2))
    torch.testing.assert_close(coarse.feats, fine.feats)


@pytest.mark.parametrize("ks", [2, 3])
def test_strided_conv_matches_dense(ks: int) -> None:
    coords, feats = random_grid(seed=20 + ks)
    conv = SparseConv3d(3, 5, kernel_size=ks, stride=2).double()
    x = SparseTensor(coords, feats.clone().requires_grad_(True))
    y = conv(x)
    assert y.stride == 2
    expected_coords = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2 * 2], 1).long(), dim=0).to(
        torch.int32
    )
    assert torch.equal(torch.unique(y.coords.long(), dim=0).int(), expected_coords)

    dense_in = to_dense(coords, feats, 2, G).requires_grad_(True)
    w = dense_weight(conv.kernel, ks)
    dense_out = tf.conv3d(dense_in, w, stride=2, padding=1 if ks == 3 else 0)
    expected = gather_dense(dense_out, y.coords, scale=2)
    torch.testing.assert_close(y.feats, expected)

    upstream = torch.randn_like(expected)
    g_feats, g_kernel = torch.autograd.grad((y.feats * upstream).sum(), (x.feats, conv.kernel))
    d_in, d_kernel = torch.autograd.grad((expected * upstream).sum(), (dense_in, conv.kernel))
    torch.testing.assert_close(g_feats, gather_dense(d_in, coords))
    torch.testing.assert_close(g_kernel, d_kernel)


def test_transposed_conv_matches_dense_on_encoder_coordinates() -> None:
    coords, feats = random_grid(seed=3, cin=4)
    x = SparseTensor(coords, feats)
    down = SparseConv3d(4, 3, kernel_size=2, stride=2).double()
    coarse = down(x)
    coarse = coarse.replace_feats(coarse.feats.detach().clone().requires_grad_(True))
    up = SparseConvTranspose3d(3, 2, kernel_size=2, stride=2).double()
    y = up(coarse)
    assert y.stride == 1 and torch.equal(y.coords, coords)

    dense_c = to_dense(coarse.coords, coarse.feats.detach(), 2, G // 2, scale=2).requires_grad_(True)
    dense_out = tf.conv_transpose3d(dense_c, dense_weight(up.kernel, 2, transpose=True), stride=2)
    expected = gather_dense(dense_out, coords)
    torch.testing.assert_close(y.feats, expected)

    upstream = torch.randn_like(expected)
    g_feats, g_kernel = torch.autograd.grad((y.feats * upstream).sum(), (coarse.feats, up.kernel))
    d_in, d_kernel = torch.autograd.grad((expected * upstream).sum(), (dense_c, up.kernel))
    torch.testing.assert_close(g_feats, gather_dense(d_in, coarse.coords, scale=2))
    torch.testing.assert_close(g_kernel, d_kernel)


def test_gradcheck_through_gather_gemm_scatter() -> None:
    coords, feats = random_grid(seed=5, batch=1, grid=4, occupancy=0.5, cin=2)
    conv = SparseConv3d(2, 2, kernel_size=3).double()
    kmap = submanifold_map(SparseTensor(coords, feats).cache, 1, 3)

    from uniseg3d_model.sparse.functional import sparse_conv

    f = feats.clone().requires_grad_(True)
    k = conv.kernel.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sparse_conv(a, b, kmap), (f, k))


def test_kernel_maps_are_cached_and_shared_between_layers() -> None:
    coords, feats = random_grid(seed=9)
    x = SparseTensor(coords, feats.float())
    a, b = SparseConv3d(3, 3), SparseConv3d(3, 3)
    y = a(x)
    n_maps = len(x.cache.maps)
    b(y)
    assert len(x.cache.maps) == n_maps == 1
    assert y.cache is x.cache


def test_kernel_offsets_follow_minkowski_order() -> None:
    off = kernel_offsets(3)
    assert off.shape == (27, 3)
    assert off[0].tolist() == [-1, -1, -1] and off[1].tolist() == [0, -1, -1]  # x fastest
    assert off[3].tolist() == [-1, 0, -1] and off[9].tolist() == [-1, -1, 0]
    assert off[13].tolist() == [0, 0, 0]
    assert kernel_offsets(2, tensor_stride=4)[7].tolist() == [4, 4, 4]


def test_pack_unpack_roundtrip_and_order() -> None:
    c = torch.tensor(
        [[0, -5, 3, 9], [1, -32768, 0, 32767], [0, -5, 3, 10], [0, -6, 100, 0]], dtype=torch.int32
    )
    keys = pack_coords(c)
    assert torch.equal(unpack_keys(keys), c)
    assert torch.argsort(keys).tolist() == [3, 0, 2, 1]  # lexicographic (batch, x, y, z)
    with pytest.raises(ValueError, match="coordinates must lie"):
        pack_coords(torch.tensor([[0, 40000, 0, 0]]))


def test_voxelize_floors_and_inverts() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1.0, 1.0, (2000, 3)).astype(np.float32)
    vc, p2v = voxelize(pts, 0.1)
    assert vc.dtype == torch.int32 and p2v.dtype == torch.int64
    np.testing.assert_array_equal(vc[p2v].numpy(), np.floor(pts.astype(np.float64) / 0.1))
    assert torch.unique(vc, dim=0).shape[0] == vc.shape[0]
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(pts, 0.0)
    with pytest.raises(ValueError, match="points must be"):
        voxelize(pts[:, :2], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.full((3, 3), np.nan), 0.1)


def test_duplicate_coordinates_are_rejected() -> None:
    c = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.int32)
    with pytest.raises(ValueError, match="duplicate"):
        SparseConv3d(1, 1)(SparseTensor(c, torch.ones(2, 1)))


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="coords must be"):
        SparseTensor(torch.zeros(3, 3, dtype=torch.int32), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="feats must be"):
        SparseTensor(torch.zeros(3, 4, dtype=torch.int32), torch.zeros(2, 1))
    x = SparseTensor(torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="channels"):
        SparseConv3d(3, 1)(x)
    with pytest.raises(ValueError, match="no coordinates at stride"):
        SparseConvTranspose3d(2, 1)(SparseTensor(torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 2), 2))


def test_pooling_matches_dense_pooling() -> None:
    coords, feats = random_grid(seed=11, cin=2)
    x = SparseTensor(coords, feats)
    for mode in ("avg", "max"):
        y = SparsePool(2, 2, mode)(x)
        dense = to_dense(coords, feats, 2, G)
        occ = to_dense(coords, torch.ones_like(feats[:, :1]), 2, G)
        if mode == "avg":
            expected = tf.avg_pool3d(dense, 2) / tf.avg_pool3d(occ, 2)
        else:
            masked = torch.where(occ.bool().expand_as(dense), dense, torch.full_like(dense, -1e9))
            expected = tf.max_pool3d(masked, 2)
        torch.testing.assert_close(y.feats, gather_dense(expected, y.coords, scale=2))
    g = global_pool(x, "avg")
    for b in range(2):
        torch.testing.assert_close(g[b], feats[coords[:, 0] == b].mean(0))


def test_batch_coords_prepends_batch_index() -> None:
    c = batch_coords([torch.zeros(2, 3, dtype=torch.int32), torch.ones(3, 3, dtype=torch.int32)])
    assert c.shape == (5, 4) and c[:, 0].tolist() == [0, 0, 1, 1, 1]


def test_chunked_gather_gemm_scatter_matches_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offsets with more pairs than a chunk are processed in several steps: same values and
    gradients as one step."""
    from uniseg3d_model.sparse import functional

    coords, feats = random_grid(seed=13, occupancy=0.6)
    conv = SparseConv3d(3, 4, kernel_size=3).double()
    x = feats.clone().requires_grad_(True)
    y = conv(SparseTensor(coords, x)).feats
    ref = torch.autograd.grad(y.square().sum(), (x, conv.kernel))
    monkeypatch.setattr(functional, "CPU_CHUNK_ROWS", 7)
    x2 = feats.clone().requires_grad_(True)
    y2 = conv(SparseTensor(coords, x2)).feats
    got = torch.autograd.grad(y2.square().sum(), (x2, conv.kernel))
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


def test_batch_norm_train_mode_normalizes_and_survives_single_row() -> None:
    from uniseg3d_model.sparse import SparseBatchNorm

    bn = SparseBatchNorm(3).double().train()
    coords, feats = random_grid(seed=17)
    y = bn(SparseTensor(coords, feats * 3 + 1)).feats
    torch.testing.assert_close(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    one = bn(SparseTensor(coords[:1], feats[:1])).feats  # running statistics, no error
    assert one.shape == (1, 3) and torch.isfinite(one).all()
    bn.eval()
    expected = (feats[:1] - bn.bn.running_mean) / torch.sqrt(bn.bn.running_var + bn.bn.eps)
    torch.testing.assert_close(bn(SparseTensor(coords[:1], feats[:1])).feats, expected)


def test_strided_map_search_path_equals_direct_path() -> None:
    """k2/s2 maps are computed directly from coordinates; when the coarse coordinates were
    registered by another route (stride 1 -> 4 first), the searched map must give the same result."""
    coords, feats = random_grid(seed=19, cin=2)
    to2 = SparseConv3d(2, 2, kernel_size=2, stride=2).double()
    down = SparseConv3d(2, 3, kernel_size=2, stride=2).double()
    direct = down(to2(SparseTensor(coords, feats)))
    x = SparseTensor(coords, feats)
    SparseConv3d(2, 2, kernel_size=4, stride=4).double()(x)  # registers stride-4 coordinates first
    searched = down(to2(x))
    assert ("inverse", 2, 4) not in x.cache.maps
    order_a = torch.argsort(pack_coords(direct.coords))
    order_b = torch.argsort(pack_coords(searched.coords))
    assert torch.equal(direct.coords[order_a], searched.coords[order_b])
    torch.testing.assert_close(direct.feats[order_a], searched.feats[order_b])


def test_conv_runs_under_bf16_autocast_with_gradients():
    """Mixed precision (the trainer's CUDA default, bf16) must not mix dtypes inside the conv."""
    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 8, (200, 3)), dim=0).int()
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
    feats = torch.randn(len(coords), 4, requires_grad=True)
    conv = SparseConv3d(4, 6, kernel_size=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(SparseTensor(coords, feats))
    assert out.feats.dtype == torch.bfloat16
    out.feats.float().sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert conv.kernel.grad is not None and conv.kernel.grad.dtype == torch.float32
    reference = conv(SparseTensor(coords, feats.detach())).feats
    torch.testing.assert_close(out.feats.float(), reference, atol=0.1, rtol=0.05)
