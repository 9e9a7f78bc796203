"""Would Winograd convolutions make FCN faster than ``compile_bf16``? Measured end to end, with the accuracy cost.

    PYTHONPATH=src python benchmarks/bench_winograd.py            # ~6 min on 2 cores

``compile_bf16`` already runs at about 95% of this CPU's measured bf16 convolution peak (``bench_speed.py``), so
only fewer multiplications can make it faster. Winograd F(2x2, 3x3) computes each 2x2 output tile of a 3x3
convolution with 16 instead of 36 multiplications: 62% of FCN-ResNet50's FLOPs are stride-1 3x3 convolutions
(the FCN head's 2048->512 alone is 26%). Dilated convolutions take the same transform with taps ``d`` apart.
This script swaps every stride-1 3x3 convolution of the golden-weight model (BN folded first) for a Winograd
one, compiles both in fp32 and under bf16 autocast, and reports latency (interleaved reps, each Winograd path
against the direct one of the same precision) and argmax agreement / mean |Δlogit| against fp32 eager on
the guard's photos (fcnseg/assets). Writes JSON.

fcnseg does not ship this path. On the 2-core AMD EPYC it was 1.01-1.11x the direct bf16 path over three runs
and 0.68x in fp32: the transforms move more memory than the saved multiplications gain at FCN's channel counts,
and the strided tile view stops inductor's freezing pass from compiling dynamic shapes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_speed import build_model
from torch import Tensor, nn

from fcnseg.optimize import accuracy_guard, fold_batchnorm, optimize, sample_photos

ROOT = Path(__file__).resolve().parents[1]
G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)


def _bt(d0: Tensor, d1: Tensor, d2: Tensor, d3: Tensor) -> tuple[Tensor, ...]:
    """B^T along one axis of a 4-tap tile."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def _at(m0: Tensor, m1: Tensor, m2: Tensor, m3: Tensor) -> tuple[Tensor, Tensor]:
    """A^T along one axis: 4 transformed taps -> 2 outputs."""
    return m0 + m1 + m2, m1 - m2 - m3


class WinogradConv2d(nn.Module):
    """A stride-1, ``padding == dilation`` 3x3 convolution computed as F(2x2, 3x3) Winograd on channels-last input.

    Output tiles are pairs of pixels ``d`` apart, so a dilated convolution is the same transform with taps ``d``
    apart; the tiles of one group of ``2d`` rows are ``d`` interleaved phases.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.groups == 1
        assert conv.padding == conv.dilation
        self.d = conv.dilation[0]
        u = torch.einsum("ax,oixy,by->abio", G, conv.weight.detach().double(), G)  # G g G^T per (out, in)
        self.register_buffer("u", u.reshape(16, conv.in_channels, conv.out_channels).to(conv.weight.dtype))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        d = self.d
        gh, gw = -(-h // (2 * d)), -(-w // (2 * d))
        pad = (0, 0, d, 2 * d * gw + d - w, d, 2 * d * gh + d - h)  # every tile's 4 taps inside, zeros outside
        xp = nn.functional.pad(x.permute(0, 2, 3, 1), pad)
        sn, sh, sw, sc = xp.stride()
        tiles = xp.as_strided((n, gh, d, gw, d, 4, 4, c), (sn, 2 * d * sh, sh, 2 * d * sw, sw, d * sh, d * sw, sc))
        v = torch.stack([b for r in _bt(*tiles.unbind(5)) for b in _bt(*r.unbind(5))]).reshape(16, -1, c)
        m = torch.bmm(v, self.u.to(v.dtype)).reshape(4, 4, n, gh, d, gw, d, -1)
        y = torch.stack([torch.stack(_at(*r.unbind(0))) for r in _at(*m.unbind(0))])  # (2, 2, n, gh, d, gw, d, o)
        y = y.permute(2, 3, 0, 4, 5, 1, 6, 7).reshape(n, 2 * d * gh, 2 * d * gw, -1)[:, :h, :w]
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.permute(0, 3, 1, 2)


def winograd_model(model: nn.Module) -> nn.Module:
    """A copy with BN folded and every stride-1 3x3 convolution replaced by :class:`WinogradConv2d`."""
    model = fold_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.stride == (1, 1):
                setattr(parent, name, WinogradConv2d(child))
    return model


def self_check() -> float:
    """Max |difference| from ``conv2d`` in float64 over dilations 1, 2, 4 and odd sizes: Winograd is exact math."""
    worst = 0.0
    for d in (1, 2, 4):
        for h, w in ((65, 65), (13, 20), (7, 9)):
            conv = nn.Conv2d(8, 5, 3, padding=d, dilation=d).double()
            x = torch.randn(2, 8, h, w, dtype=torch.float64)
            wino = WinogradConv2d(conv).double()
            worst = max(worst, float((wino(x) - conv(x)).abs().max()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=520)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "winograd.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.no_grad():
        exact = self_check()
    print(f"Winograd vs conv2d in float64: max |diff| {exact:.1e}")

    model = build_model("golden")
    wino = winograd_model(model)
    paths = {"none": optimize(model, "none")}
    for name in ("compile", "compile_bf16"):
        paths[name], paths[f"winograd_{name}"] = optimize(model, name), optimize(wino, name)
    s = args.size
    photos = [x[..., :s, :s] for x in sample_photos(s)]
    x = torch.randn(1, 3, s, s)
    times: dict[str, list[float]] = {n: [] for n in paths}
    result: dict = {"size": s, "self_check_max_abs_diff_fp64": exact, "paths": {}}
    for n, fn in paths.items():
        guard = accuracy_guard(fn, paths["none"], photos)  # also compiles, at the timed shape
        result["paths"][n] = {"agreement": guard.agreement, "mean_abs_dlogit": guard.mean_abs_diff}
    for _ in range(args.reps):
        for n, fn in paths.items():
            t = time.perf_counter()
            fn(x)
            times[n].append(time.perf_counter() - t)
    print(f"{'path':>22} {'median s':>9} {'x direct':>8} {'agreement':>9} {'mean|dlogit|':>12}")
    for n in paths:
        r = result["paths"][n]
        r.update(median_s=statistics.median(times[n]), times_s=times[n])
        r["x_direct"] = statistics.median(times[n.removeprefix("winograd_")]) / r["median_s"]  # same precision
        agree, dlogit = r["agreement"], r["mean_abs_dlogit"]
        print(f"{n:>22} {r['median_s']:>9.3f} {r['x_direct']:>8.2f} {agree:>9.2%} {dlogit:>12.2e}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
