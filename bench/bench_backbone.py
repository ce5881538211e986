"""Backbone benchmark: forward time and peak memory of MinkUNet (pure-PyTorch backend) for
synthetic 2 cm rooms of ~50k / 150k / 300k voxels, for the default (Res16UNet34C) and the small
configuration, next to spconv 2.x running the same U-Net topology and widths; a matched
single-layer comparison (3x3x3 submanifold conv, 32 -> 32 channels); and the official UniSeg3D
backbone (SPFormer's spconv U-Net, planes 32..160) three ways: our SpconvUNet on the pure-PyTorch
backend, on the spconv backend, and spconv's own network with the official module names, all with
the same (random) official weights, with the largest output difference to spconv's network.

Run: ``.venv/bin/python bench/bench_backbone.py [--threads N] [--device cuda] [--sections ...]``
(``--quick`` for a smoke run). All times are medians over ``--repeats`` runs (the first
included), in seconds; every run starts from a fresh sparse tensor, so kernel-map construction is
included (as for a new scan). Peak memory on CPU is the highest process RSS sampled every 2 ms
during one forward minus the RSS just before it; on CUDA the peak allocated GPU memory above the
allocation before it.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn

from uniseg3d_model.backbone import BackboneConfig, MinkUNet, make_input
from uniseg3d_model.sparse import SparseConv3d, SparseTensor, batch_coords, voxelize
from uniseg3d_model.spconv_unet import SpconvUNet, SpconvUNetConfig, official_spatial_bounds
from uniseg3d_model.spconv_unet_weights import official_backbone_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.official_spconv_unet

VOXEL = 0.02


def synthetic_room(target_voxels: int, seed: int = 0) -> np.ndarray:
    """Points (M, 3) metres on the surfaces of a room (floor, 4 walls, a few boxes) sized so that
    voxelizing at 2 cm gives roughly ``target_voxels`` voxels."""
    rng = np.random.default_rng(seed)
    height = 2.5
    # surface area ~ side^2 (floor) + 4 * side * height (walls) + boxes (~30% of the floor)
    a, b, c = 1.3, 4 * height, -target_voxels * VOXEL**2
    side = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
    n = int(target_voxels * 4)
    part = rng.integers(0, 6, n)
    u, v = rng.uniform(0, side, n), rng.uniform(0, height, n)
    pts = np.zeros((n, 3))
    pts[part == 0] = np.c_[u, rng.uniform(0, side, n), np.zeros(n)][part == 0]
    pts[part == 1] = np.c_[u, np.zeros(n), v][part == 1]
    pts[part == 2] = np.c_[u, np.full(n, side), v][part == 2]
    pts[part == 3] = np.c_[np.zeros(n), u, v][part == 3]
    pts[part == 4] = np.c_[np.full(n, side), u, v][part == 4]
    # boxes: tops of tables/cabinets at random heights
    centres = rng.uniform(0.1 * side, 0.9 * side, (12, 2))
    k = rng.integers(0, 12, n)
    box = centres[k] + rng.uniform(-0.25, 0.25, (n, 2)) * side / 8
    pts[part == 5] = np.c_[box, 0.4 + 0.1 * k][part == 5]
    return pts + rng.normal(0, 0.003, pts.shape)


def room_voxels(target_voxels: int) -> torch.Tensor:
    """(M, 3) int32 voxel coordinates of a synthetic room with M within a few % of the target
    (the room is rescaled once after a first voxelization)."""
    vc, _ = voxelize(synthetic_room(target_voxels), VOXEL)
    vc, _ = voxelize(synthetic_room(int(target_voxels**2 / vc.shape[0])), VOXEL)
    return vc


def _libc():
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed: big buffers go back to the OS on free
        return lib
    except (OSError, AttributeError):  # not glibc: RSS deltas are then only approximate
        return None


LIBC = _libc()


class PeakRSS:
    """Context manager sampling this process' RSS every 2 ms; ``.peak_mib`` above the start
    (freed heap is trimmed first so that the start is not inflated by earlier runs)."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        if LIBC is not None:
            LIBC.malloc_trim(0)
        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mib = (self._peak - self._base) / 2**20


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class PeakCUDA:
    """Peak allocated CUDA memory above the allocation at entry, ``.peak_mib``."""

    def __enter__(self) -> PeakCUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize()
        self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / 2**20


def timed_runs(fn: Callable[[], object], args: argparse.Namespace) -> tuple[float, int, float]:
    """``(median seconds, runs, peak MiB)``: up to ``args.repeats`` runs, the first (which also
    warms up) watched for peak memory; no more repeats once they would exceed ``args.budget_s``."""
    _sync()
    t0 = time.perf_counter()
    with PeakCUDA() if args.device == "cuda" else PeakRSS() as mem:
        fn()
    times = [time.perf_counter() - t0]
    while len(times) < args.repeats and sum(times) + times[0] <= args.budget_s:
        times.append(median_time(fn, 1))
    return statistics.median(times), len(times), mem.peak_mib


def spconv_unet(cfg: BackboneConfig) -> nn.Module:
    """The same U-Net (stem, 4 strided k2 downsamplings with BasicBlocks, 4 inverse convs with
    skip concatenation, 1x1 head) written with spconv layers, for timing only."""
    import spconv.pytorch as sp

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, key: str) -> None:
            super().__init__()
            self.conv1 = sp.SubMConv3d(cin, cout, 3, bias=False, indice_key=key)
            self.bn1 = nn.BatchNorm1d(cout)
            self.conv2 = sp.SubMConv3d(cout, cout, 3, bias=False, indice_key=key)
            self.bn2 = nn.BatchNorm1d(cout)
            self.proj = nn.Linear(cin, cout, bias=False) if cin != cout else None

        def forward(self, x):
            out = self.conv1(x)
            out = out.replace_feature(torch.relu(self.bn1(out.features)))
            out = self.conv2(out)
            res = x.features if self.proj is None else self.proj(x.features)
            return out.replace_feature(torch.relu(self.bn2(out.features) + res))

    def stage(cin: int, cout: int, n: int, key: str) -> nn.Sequential:
        return nn.Sequential(*[Block(cin if i == 0 else cout, cout, key) for i in range(n)])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            p, n, d0 = cfg.planes, cfg.layers, cfg.init_dim
            self.stem = sp.SubMConv3d(
                cfg.in_channels, d0, cfg.conv1_kernel_size, bias=False, indice_key="stem"
            )
            ins = [d0, p[0], p[1], p[2]]
            self.down = nn.ModuleList(
                [
                    sp.SparseConv3d(ins[i], ins[i], 2, stride=2, bias=False, indice_key=f"d{i}")
                    for i in range(4)
                ]
            )
            self.enc = nn.ModuleList([stage(ins[i], p[i], n[i], f"s{2 ** (i + 1)}") for i in range(4)])
            outs, skips, prev = p[4:], [p[2], p[1], p[0], d0], p[3]
            self.up, self.dec = nn.ModuleList(), nn.ModuleList()
            for j in range(4):
                self.up.append(sp.SparseInverseConv3d(prev, outs[j], 2, bias=False, indice_key=f"d{3 - j}"))
                self.dec.append(stage(outs[j] + skips[j], outs[j], n[4 + j], f"s{2 ** (3 - j)}"))
                prev = outs[j]
            self.final = nn.Linear(p[7], cfg.feature_dim)

        def forward(self, x):
            x = self.stem(x)
            x = x.replace_feature(torch.relu(x.features))
            skips = [x]
            for i in range(4):
                x = self.enc[i](self.down[i](x))
                skips.append(x)
            skips.pop()
            for j in range(4):
                x = self.up[j](x)
                x = x.replace_feature(torch.cat([torch.relu(x.features), skips.pop().features], 1))
                x = self.dec[j](x)
            return self.final(x.features)

    return Net()


def spconv_input(coords: torch.Tensor, feats: torch.Tensor):
    import spconv.pytorch as sp

    c = coords.clone()
    # shift by a multiple of the largest stride (16): spconv then groups voxels into exactly the
    # same coarse cells as ours (shifting by the minimum would change the grid phase and with it
    # the number of coarse voxels, which is not a like-for-like comparison)
    c[:, 1:] -= torch.div(c[:, 1:].min(0).values, 16, rounding_mode="floor") * 16
    # spatial shape rounded up to a multiple of 16: spconv's strided convs drop border voxels of
    # a grid whose size is not divisible by the stride (a wall on the last row would vanish)
    shape = ((c[:, 1:].max(0).values // 16 + 1) * 16).tolist()
    return sp.SparseConvTensor(feats, c.contiguous(), shape, int(c[:, 0].max()) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 150_000, 300_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["small", "default"], choices=["small", "default"])
    parser.add_argument("--no-spconv", action="store_true")
    parser.add_argument(
        "--spconv-max-voxels",
        type=int,
        default=160_000,
        help="skip the spconv full-network run above this many voxels (half that for the default config)",
    )
    parser.add_argument(
        "--budget-s", type=float, default=20.0, help="stop repeating a measurement once it would exceed this"
    )
    parser.add_argument("--quick", action="store_true", help="one small size, one repeat")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: stable figures on a shared machine)",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda (CUDA: GPU timings and GPU peak memory)")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["minkunet", "layer", "official"],
        choices=["minkunet", "layer", "official"],
        help="which tables to print",
    )
    args = parser.parse_args()
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    if args.quick:
        args.sizes, args.repeats = [20_000], 1
    try:
        import spconv  # noqa: F401

        have_spconv = not args.no_spconv
    except ImportError:
        have_spconv = False
    if have_spconv:
        from uniseg3d_model.sparse.spconv_backend import spconv_supports

        if not spconv_supports(args.device):
            print(f"spconv is a CPU-only build: no spconv rows on {args.device} (pip install spconv-cuXXX)")
            have_spconv = False
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sp_state = "yes" if have_spconv else "no"
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, spconv {sp_state}, device {name}")
    scenes = {}
    for target in args.sizes:
        vc = room_voxels(target)
        coords = batch_coords([vc - vc.min(0).values])  # anchored at 0 like the official collate
        scenes[target] = (coords.to(dev), torch.rand(coords.shape[0], 6, device=dev))
    if "minkunet" in args.sections:
        minkunet_rows(args, scenes, have_spconv)
    if "layer" in args.sections:
        layer_rows(args, scenes, have_spconv)
    if "official" in args.sections:
        official_rows(args, scenes, have_spconv)


def minkunet_rows(args: argparse.Namespace, scenes: dict, have_spconv: bool) -> None:

    print(
        "\n| config | voxels | ours fwd s (runs) | ours peak MiB | spconv fwd s (runs) | spconv peak MiB ",
        end="",
    )
    print("| spconv/ours |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs:
        cfg = BackboneConfig.small(backend="torch") if name == "small" else BackboneConfig(backend="torch")
        net = MinkUNet(cfg).eval().to(args.device)
        ref = spconv_unet(cfg).eval().to(args.device) if have_spconv else None
        for coords, feats in scenes.values():
            with torch.no_grad():
                t_ours, n_ours, mem = timed_runs(
                    lambda c=coords, f=feats, m=net: m(make_input(c, f[:, :3], f[:, 3:])), args
                )
                row = f"| {name} | {coords.shape[0]} | {t_ours:.2f} ({n_ours}) | {mem:.0f} |"
                sp_limit = args.spconv_max_voxels if name == "small" else args.spconv_max_voxels // 2
                if ref is not None and coords.shape[0] <= sp_limit:
                    t_sp, n_sp, mem_sp = timed_runs(
                        lambda c=coords, f=feats, m=ref: m(spconv_input(c, f)), args
                    )
                    row += f" {t_sp:.2f} ({n_sp}) | {mem_sp:.0f} | {t_sp / t_ours:.2f} |"
                else:
                    row += " - | - | - |"
            print(row, flush=True)


def layer_rows(args: argparse.Namespace, scenes: dict, have_spconv: bool) -> None:
    print("\nSingle layer: 3x3x3 submanifold conv 32->32 on the full-resolution voxels (incl. kernel map);")
    print("same weights in both; 'rows off' = output rows where spconv differs from ours by > 1e-3")
    print("(ours equals dense torch conv3d, see tests/test_sparse_conv.py)")
    print(
        "| voxels | ours s | ours, cached map s | spconv s | spconv/ours | spconv rows off | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    conv = SparseConv3d(32, 32, 3).eval().to(args.device)
    for coords, _ in scenes.values():
        f32 = torch.randn(coords.shape[0], 32, device=args.device)
        with torch.no_grad():
            t_ours = median_time(lambda c=coords, f=f32: conv(SparseTensor(c, f)), args.repeats + 2)
            x = SparseTensor(coords, f32)
            ours = conv(x).feats
            t_cached = median_time(lambda x=x: conv(x), args.repeats + 2)
            row = f"| {coords.shape[0]} | {t_ours:.3f} | {t_cached:.3f} |"
            if have_spconv:
                sconv = spconv_layer_like(conv).to(args.device)
                t_sp = median_time(lambda c=coords, f=f32, m=sconv: m(spconv_input(c, f)), args.repeats + 2)
                diff = (sconv(spconv_input(coords, f32)).features - ours).abs()
                off = int((diff.max(1).values > 1e-3).sum())
                row += f" {t_sp:.3f} | {t_sp / t_ours:.2f} | {off} | {float(diff.max()):.2g} |"
            else:
                row += " - | - | - | - |"
        print(row, flush=True)


def timed_output(
    fn: Callable[[], torch.Tensor], args: argparse.Namespace
) -> tuple[float, int, float, torch.Tensor]:
    """:func:`timed_runs` that also returns the last output."""
    box: dict[str, torch.Tensor] = {}

    def call() -> None:
        box["y"] = fn()

    t, n, mem = timed_runs(call, args)
    return t, n, mem, box["y"]


def official_rows(args: argparse.Namespace, scenes: dict, have_spconv: bool) -> None:
    """Official backbone: SpconvUNet on the torch and spconv backends and spconv's own network,
    one set of random official weights, official spatial shape (clip(max + 1, 128))."""
    print("\nOfficial UniSeg3D backbone (SPFormer spconv U-Net, planes 32..160, 6 input channels), same")
    print("random official weights in all three; max |diff| = largest output difference to spconv's own net")
    print("| voxels | ours torch s (runs) | ours torch peak MiB | ours spconv-backend s (runs) ", end="")
    print(
        "| spconv net s (runs) | spconv net/ours torch | max abs diff torch | max abs diff spconv-backend |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cfg = SpconvUNetConfig(spatial_extent="batch")
    ref = ours_sp = None
    state = SpconvUNet(cfg).state_dict()
    if have_spconv:
        from tests.official_spconv_unet import RefBackbone, randomize

        ref = randomize(RefBackbone(), seed=0).to(args.device)
        state, _ = official_backbone_state_dict({k: v.cpu() for k, v in ref.state_dict().items()}, cfg)
        ours_sp = SpconvUNet(dataclasses.replace(cfg, backend="spconv")).eval()
        ours_sp.load_state_dict(state)
        ours_sp.to(args.device)
    ours = SpconvUNet(cfg).eval()
    ours.load_state_dict(state)
    ours.to(args.device)
    for coords, feats in scenes.values():
        f = feats * 2 - 1
        with torch.no_grad():
            t, n, mem, y = timed_output(lambda c=coords, f=f: ours(SparseTensor(c, f)).feats, args)
            row = f"| {coords.shape[0]} | {t:.2f} ({n}) | {mem:.0f} |"
            if ref is None:
                print(row + " - | - | - | - | - |", flush=True)
                continue
            t_b, n_b, _, y_b = timed_output(lambda c=coords, f=f: ours_sp(SparseTensor(c, f)).feats, args)
            b = official_spatial_bounds(coords, cfg.min_spatial_shape, per_scene=False)[0]
            t_r, n_r, _, y_r = timed_output(lambda c=coords, f=f, b=b: ref(c, f, b), args)
            d_t, d_s = float((y - y_r).abs().max()), float((y_b - y_r).abs().max())
            row += f" {t_b:.2f} ({n_b}) | {t_r:.2f} ({n_r}) | {t_r / t:.2f} | {d_t:.2g} | {d_s:.2g} |"
        print(row, flush=True)


def spconv_layer_like(conv: SparseConv3d) -> nn.Module:
    """spconv SubMConv3d with the weights of our 3x3x3 ``conv`` (spconv 2 layout (out, kx, ky, kz, in)
    for our [b, x, y, z] coordinate columns)."""
    import spconv.pytorch as sp

    k, cin, cout = conv.kernel.shape
    s = round(k ** (1 / 3))
    layer = sp.SubMConv3d(cin, cout, s, bias=False).eval()
    with torch.no_grad():
        layer.weight.copy_(conv.kernel.reshape(s, s, s, cin, cout).permute(4, 2, 1, 0, 3))
    return layer


if __name__ == "__main__":
    main()
