"""Gather-GEMM-scatter sparse convolution and feature-wise ops of the pure-PyTorch backend.

For each non-empty kernel offset ``k`` of a :class:`~.kernel_map.KernelMap`, the input rows of
that offset are gathered, multiplied by ``W[k]`` (``(C_in, C_out)``) and added into their output
rows with ``index_add_``. The loop runs over kernel offsets only (at most 27 for a 3^3 kernel);
everything inside is vectorized over points. A custom autograd function recomputes the gathered
rows in the backward pass instead of storing them, so training memory stays at one feature map
per layer.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from uniseg3d_model.sparse.kernel_map import KernelMap
from uniseg3d_model.sparse.tensor import SparseTensor

# Rows per gather-GEMM-scatter step on CPU. Reusing two small buffers keeps the gathered rows
# and the GEMM output in cache; with one fresh (N_k, C) tensor per offset the same work was
# 2-2.7x slower on 150k-voxel scenes (bench/bench_backbone.py machine, 1 thread).
CPU_CHUNK_ROWS = 4096


def _kernel_at(kernel: torch.Tensor, k: int) -> torch.Tensor:
    return kernel if kernel.ndim == 2 else kernel[k]


def _chunk_rows(t: torch.Tensor, kmap: KernelMap) -> int:
    longest = max((int(i.numel()) for _, i, _ in kmap.pairs if i is not None), default=1)
    return min(CPU_CHUNK_ROWS, longest) if t.device.type == "cpu" else max(longest, 1)


def gather_gemm_scatter(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """``feats (n_in, C_in)``, ``kernel (K, C_in, C_out)`` (or ``(C_in, C_out)`` when K == 1)
    -> ``(n_out, C_out)``; no autograd bookkeeping."""
    c_in, c_out = kernel.shape[-2], kernel.shape[-1]
    pairs = kmap.pairs
    ident = [p for p in pairs if p[1] is None]
    if ident:  # the identity offset writes every row: start from it instead of zeros
        out = torch.mm(feats, _kernel_at(kernel, ident[0][0]))
        pairs = [p for p in pairs if p[1] is not None]
    else:
        out = feats.new_zeros((kmap.n_out, c_out))
    if not pairs:
        return out
    chunk = _chunk_rows(feats, kmap)
    gathered = feats.new_empty((chunk, c_in))
    product = feats.new_empty((chunk, c_out))
    for k, in_rows, out_rows in pairs:
        w = _kernel_at(kernel, k)
        n = int(in_rows.numel())
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            g, y = gathered[:m], product[:m]
            torch.index_select(feats, 0, in_rows[s : s + m], out=g)
            torch.mm(g, w, out=y)
            out.index_add_(0, out_rows[s : s + m], y)
    return out


class _SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        ctx.save_for_backward(feats, kernel)
        ctx.kmap = kmap
        return gather_gemm_scatter(feats, kernel, kmap)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        feats, kernel = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.contiguous()
        need_feats, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_feats = torch.zeros_like(feats) if need_feats else None
        grad_kernel = torch.zeros_like(kernel) if need_kernel else None
        c_in, c_out = kernel.shape[-2], kernel.shape[-1]
        chunk = _chunk_rows(feats, kmap)
        g_buf = feats.new_empty((chunk, c_out))
        x_buf = feats.new_empty((chunk, c_in))
        t_buf = feats.new_empty((chunk, c_in))
        for k, in_rows, out_rows in kmap.pairs:
            w = _kernel_at(kernel, k)
            gk = None
            if grad_kernel is not None:
                gk = grad_kernel if grad_kernel.ndim == 2 else grad_kernel[k]
            if in_rows is None:  # identity offset
                if gk is not None:
                    gk.addmm_(feats.t(), grad_out)
                if grad_feats is not None:
                    grad_feats.addmm_(grad_out, w.t())
                continue
            n = int(in_rows.numel())
            for s in range(0, n, chunk):
                m = min(chunk, n - s)
                g = torch.index_select(grad_out, 0, out_rows[s : s + m], out=g_buf[:m])
                if gk is not None:
                    x = torch.index_select(feats, 0, in_rows[s : s + m], out=x_buf[:m])
                    gk.addmm_(x.t(), g)
                if grad_feats is not None:
                    grad_feats.index_add_(0, in_rows[s : s + m], torch.mm(g, w.t(), out=t_buf[:m]))
        return grad_feats, grad_kernel, None


def sparse_conv(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Differentiable gather-GEMM-scatter convolution (see :func:`gather_gemm_scatter`)."""
    if feats.shape[0] != kmap.n_in:
        raise ValueError(f"feats has {feats.shape[0]} rows but the kernel map expects {kmap.n_in}")
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        # mixed precision: run the whole conv in the autocast dtype, with autocast off inside so
        # the per-offset matmuls and the index_add_ accumulator agree on one dtype
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return sparse_conv(feats.to(dtype), kernel.to(dtype), kmap)
    if kernel.dtype != feats.dtype:
        raise ValueError(f"kernel dtype {kernel.dtype} does not match feats dtype {feats.dtype}")
    if torch.is_grad_enabled() and (feats.requires_grad or kernel.requires_grad):
        return _SparseConvFunction.apply(feats, kernel, kmap)
    return gather_gemm_scatter(feats, kernel, kmap)


def relu(x: SparseTensor) -> SparseTensor:
    return x.replace_feats(torch.relu(x.feats))


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate features of tensors that share coordinates (same stride and cache)."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.cache is not first.cache or t.stride != first.stride or t.coords is not first.coords:
            if t.coords.shape != first.coords.shape or not torch.equal(t.coords, first.coords):
                raise ValueError("cat: sparse tensors must share coordinates (same stride, same rows)")
    return first.replace_feats(torch.cat([t.feats for t in tensors], dim=1))


def global_pool(x: SparseTensor, mode: str = "avg") -> torch.Tensor:
    """Per-batch pooling of all rows: ``(B, C)`` mean (``mode="avg"``) or max (``"max"``)."""
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    batch = x.coords[:, 0].to(torch.int64)
    b = x.batch_size
    c = x.feats.shape[1]
    index = batch.unsqueeze(1).expand(-1, c)
    if mode == "avg":
        out = x.feats.new_zeros((b, c)).scatter_add_(0, index, x.feats)
        counts = torch.bincount(batch, minlength=b).clamp(min=1).to(x.feats.dtype)
        return out / counts.unsqueeze(1)
    out = x.feats.new_full((b, c), float("-inf"))
    return out.scatter_reduce(0, index, x.feats, reduce="amax", include_self=True)


def pool(x: SparseTensor, kmap: KernelMap, out_stride: int, mode: str = "avg") -> SparseTensor:
    """Sparse pooling over a kernel map (e.g. kernel 2 stride 2): mean or max of the input rows
    that reach each output row."""
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    ident = torch.arange(kmap.n_in, device=x.device)
    in_rows = torch.cat([ident if i is None else i for _, i, _ in kmap.pairs])
    out_rows = torch.cat([ident if o is None else o for _, _, o in kmap.pairs])
    c = x.feats.shape[1]
    vals = x.feats.index_select(0, in_rows)
    index = out_rows.unsqueeze(1).expand(-1, c)
    if mode == "avg":
        out = x.feats.new_zeros((kmap.n_out, c)).scatter_add_(0, index, vals)
        counts = torch.bincount(out_rows, minlength=kmap.n_out).clamp(min=1).to(x.feats.dtype)
        out = out / counts.unsqueeze(1)
    else:
        out = x.feats.new_full((kmap.n_out, c), float("-inf"))
        out = out.scatter_reduce(0, index, vals, reduce="amax", include_self=True)
    return SparseTensor(x.cache.coords[out_stride], out, out_stride, x.cache)
