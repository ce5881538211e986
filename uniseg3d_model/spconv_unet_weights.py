"""Official UniSeg3D backbone weights -> our :class:`~uniseg3d_model.spconv_unet.SpconvUNet`.

Official names (top-level modules of the released model; ``P`` = ``unet.`` then ``u.`` per level):

    input_conv.0.weight                                    -> input_conv.kernel
    P blocks.block{i}.conv_branch.{0,3}.<bn>               -> P' blocks.{i}.norm{1,2}.bn.<bn>
    P blocks.block{i}.conv_branch.{2,5}.weight             -> P' blocks.{i}.conv{1,2}.kernel
    P blocks.block{i}.i_branch.0.weight (1x1x1)            -> P' blocks.{i}.skip.kernel
    P conv.0.<bn>, P conv.2.weight (2x2x2 stride 2)        -> P' down_norm.bn.<bn>, P' down.kernel
    P deconv.0.<bn>, P deconv.2.weight (inverse 2x2x2)     -> P' up_norm.bn.<bn>, P' up.kernel
    P blocks_tail.block{i}.*                               -> P' tail.{i}.* (as blocks)
    output_layer.0.<bn>                                    -> output_norm.bn.<bn>

with ``<bn>`` = weight, bias, running_mean, running_var, num_batches_tracked and ``P'`` our
prefix (``unet.`` then ``inner.`` per level). The official ScanNet config has 274 such tensors.

Weight layouts (verified against spconv 2.3.8 and dense ``conv3d``, tests/test_spconv_unet.py):
spconv 2.3 stores every conv weight as ``(C_out, k_x, k_y, k_z, C_in)`` ("KRSC"), computing
``out[p] += W[:, i, j, k, :] @ in[p + (i, j, k) - pad]`` like a dense cross-correlation, and its
inverse conv uses the same ``W[:, i, j, k, :]`` for the pair its strided conv made at that
offset. Our kernels are ``(K**3, C_in, C_out)`` with offset index ``i + K * (j + K * k)``, so
3x3x3 and 2x2x2 weights are an axis permutation (no spatial flip). spconv runs a 1x1x1
submanifold conv as ``features @ weight.view(C_in, C_out)``: a raw reinterpretation of the
``(C_out, 1, 1, 1, C_in)`` storage, not a transpose, so our ``(C_in, C_out)`` kernel is
``weight.reshape(C_in, C_out)``.
"""

from __future__ import annotations

import torch

from uniseg3d_model.spconv_unet import SpconvUNetConfig

BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OFFICIAL_PREFIXES = ("input_conv.", "unet.", "output_layer.")


def _bn(official: str, ours: str, c: int) -> list[tuple[str, str, tuple[int, ...], str]]:
    shapes = {"num_batches_tracked": ()}
    return [(f"{official}.{f}", f"{ours}.bn.{f}", shapes.get(f, (c,)), "copy") for f in BN_FIELDS]


def _conv(official: str, ours: str, c_in: int, c_out: int, k: int) -> tuple[str, str, tuple[int, ...], str]:
    return (f"{official}.weight", f"{ours}.kernel", (c_out, k, k, k, c_in), f"k{k}")


def _block(official: str, ours: str, c_in: int, c: int) -> list[tuple[str, str, tuple[int, ...], str]]:
    rows = _bn(f"{official}.conv_branch.0", f"{ours}.norm1", c_in)
    rows.append(_conv(f"{official}.conv_branch.2", f"{ours}.conv1", c_in, c, 3))
    rows += _bn(f"{official}.conv_branch.3", f"{ours}.norm2", c)
    rows.append(_conv(f"{official}.conv_branch.5", f"{ours}.conv2", c, c, 3))
    if c_in != c:
        rows.append(_conv(f"{official}.i_branch.0", f"{ours}.skip", c_in, c, 1))
    return rows


def _level(
    official: str, ours: str, planes: tuple[int, ...], reps: int
) -> list[tuple[str, str, tuple[int, ...], str]]:
    p0 = planes[0]
    rows = []
    for i in range(reps):
        rows += _block(f"{official}blocks.block{i}", f"{ours}blocks.{i}", p0, p0)
    if len(planes) > 1:
        p1 = planes[1]
        rows += _bn(f"{official}conv.0", f"{ours}down_norm", p0)
        rows.append(_conv(f"{official}conv.2", f"{ours}down", p0, p1, 2))
        rows += _level(f"{official}u.", f"{ours}inner.", planes[1:], reps)
        rows += _bn(f"{official}deconv.0", f"{ours}up_norm", p1)
        rows.append(_conv(f"{official}deconv.2", f"{ours}up", p1, p0, 2))
        for i in range(reps):
            rows += _block(f"{official}blocks_tail.block{i}", f"{ours}tail.{i}", p0 * (2 - i), p0)
    return rows


def official_backbone_keys(cfg: SpconvUNetConfig) -> list[tuple[str, str, tuple[int, ...], str]]:
    """``(official key, our key, official shape, kind)`` for every backbone tensor of ``cfg``;
    kind is ``copy`` (BN), ``k3`` / ``k2`` (permute) or ``k1`` (spconv's 1x1 view)."""
    p = cfg.planes
    rows = [_conv("input_conv.0", "input_conv", cfg.in_channels, p[0], 3)]
    rows += _level("unet.", "unet.", p, cfg.block_reps)
    rows += _bn("output_layer.0", "output_norm", p[0])
    return rows


def spconv_kernel_to_ours(weight: torch.Tensor) -> torch.Tensor:
    """spconv ``(C_out, K, K, K, C_in)`` -> our ``(K**3, C_in, C_out)`` (K > 1) or, for K == 1,
    our ``(C_in, C_out)`` = spconv's ``weight.view(C_in, C_out)``."""
    c_out, k, _, _, c_in = weight.shape
    if k == 1:
        return weight.reshape(c_in, c_out).clone()
    return weight.permute(3, 2, 1, 4, 0).reshape(k**3, c_in, c_out).contiguous()


def official_backbone_state_dict(
    official: dict[str, torch.Tensor], cfg: SpconvUNetConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert the official backbone tensors to a :class:`SpconvUNet` state dict.

    official: the released model's state dict (or any dict holding at least its
    ``input_conv.*``, ``unet.*`` and ``output_layer.*`` tensors, names as in the official model);
    other keys are ignored. cfg: the :class:`SpconvUNetConfig` the result is for.
    Returns ``(state_dict, consumed)``: our tensors (float conv kernels in our layout, BN tensors
    copied), and the official keys used, each once, in the same order (the i-th key of
    ``state_dict`` came from ``consumed[i]``). Meta tensors work (a names-and-shapes check).
    Raises ``ValueError`` naming the key on a missing key, a wrong shape, or a backbone-prefixed
    key this config has no place for.
    """
    rows = official_backbone_keys(cfg)
    expected = {r[0] for r in rows}
    extra = sorted(k for k in official if k.startswith(OFFICIAL_PREFIXES) and k not in expected)
    if extra:
        raise ValueError(
            f"official backbone key {extra[0]!r} (shape {tuple(official[extra[0]].shape)}) has no place in "
            f"SpconvUNet(planes={cfg.planes}, block_reps={cfg.block_reps}); {len(extra)} such key(s)"
        )
    ours: dict[str, torch.Tensor] = {}
    consumed: list[str] = []
    for key, our_key, shape, kind in rows:
        if key not in official:
            raise ValueError(f"official backbone key {key!r} missing (expected shape {shape})")
        t = official[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"official backbone key {key!r}: shape {tuple(t.shape)}, expected {shape}")
        ours[our_key] = t.clone() if kind == "copy" else spconv_kernel_to_ours(t)
        consumed.append(key)
    return ours, consumed
