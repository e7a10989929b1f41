"""Benchmark: the accuracy of ``lie_derivative`` against an analytic ground truth, per model, generator and tangent.

Ground truth. Each sample is a smooth scene, a sum of Gaussian bumps ``S(p)`` that can be evaluated anywhere, and
the image at parameter ``t`` is rendered exactly on the pixel grid: ``x_t(p) = S(M_t⁻¹(p − t_t))`` (rotation by
``t`` radians, shift by ``t`` pixels, scaling by ``e^t``), masked like the symmetry's input action masks images. The
true Lie derivative of an invariant model is ``d/dt h(x_t)`` at ``t = 0`` by central differences in float64,
Richardson-checked: ``D(δ)`` and ``D(δ/2)``, extrapolated to ``(4 D(δ/2) − D(δ)) / 3``; the column ``rich`` is the
largest ``‖D(δ/2) − extrapolated‖ / ‖extrapolated‖`` over the samples (the ground truth's own error).

Scenes. ``centred``: bumps near the centre, so the images vanish at the border. ``frame``: bumps over the whole frame
and beyond it on a smooth background, so the images do not vanish at the border (the spectral tangent's
periodic-plus-smooth split is what keeps its border from ringing; the finite differences read zeros outside).

Columns, per tangent: ``ratio`` = mean relative Lie derivative ``‖L h‖/‖h‖`` over mean ground truth (1.00 is exact),
``err`` = largest per-sample ``‖L h − L_true‖ / ‖L_true‖`` (the vector error, stricter than the ratio).

Models: ``cnn`` (``SmallCNN``, flatten head), ``cnn-avg`` (``SmallCNN``, global average pool), and, if escnn is
installed, ``escnn-so2``: a nearly SO(2)-invariant steerable CNN built like escnn's SO(2) examples (``R2Conv`` →
``IIDBatchNorm2d`` → ``FourierELU`` blocks with band-limited regular fields, antialiased pooling, a 1×1 ``R2Conv`` to
invariant scalars, spatial mean, linear head). All float64, seed 0, eval mode.

Run: ``python benchmarks/bench_lie_accuracy.py`` (CPU; 7–17 minutes measured on two shared cores, ``--size 48 --n 3``
takes seconds; ``--json PATH`` also writes the rows).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Callable

import torch
from torch import Tensor, nn

import eqmonitor as eqm
from eqmonitor.functional import lie_derivative
from eqmonitor.functional.tangents import GENERATORS, TANGENTS

_F64 = torch.float64
OLD_DEFAULT = "central"


# ------------------------------------------------------------------------------------------------ scenes
def scenes(n: int, size: int, kind: str, seed: int = 0) -> list[dict]:
    """``n`` scenes: bump centres ``c [k, 2]`` (pixels about the image centre), widths ``s [k]``, amplitudes ``a [k]``
    and a smooth background ``(b0, bx, by)`` (zero for ``centred``)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        if kind == "centred":
            k, spread, background = 4, 0.15 * size, torch.zeros(3, dtype=_F64)
        elif kind == "frame":
            k, spread = 12, 0.7 * size
            background = torch.tensor([0.3, 0.4 / size, -0.3 / size], dtype=_F64)
        else:
            raise ValueError(kind)
        c = (torch.rand(k, 2, generator=g, dtype=_F64) * 2 - 1) * spread
        s = 4 + 2 * torch.rand(k, generator=g, dtype=_F64)
        a = 0.5 + torch.rand(k, generator=g, dtype=_F64)
        out.append({"c": c, "s": s, "a": a, "b": background})
    return out


def render(scene: dict, px: Tensor, py: Tensor) -> Tensor:
    """The scene at source coordinates ``(px, py)`` (``[H, W]`` each, pixels about the centre, ``y`` down rows)."""
    c, s, a, b = scene["c"], scene["s"], scene["a"], scene["b"]
    d2 = (px[None] - c[:, 0, None, None]) ** 2 + (py[None] - c[:, 1, None, None]) ** 2
    bumps = (a[:, None, None] * torch.exp(-d2 / (2 * s[:, None, None] ** 2))).sum(0)
    return bumps + b[0] + b[1] * px + b[2] * py


def source_coords(generator: str, t: float, size: int) -> tuple[Tensor, Tensor]:
    """``M_t⁻¹(p − t_t)`` for every pixel ``p``: where ``x_t(p)`` reads the scene."""
    r = torch.arange(size, dtype=_F64) - (size - 1) / 2
    py, px = torch.meshgrid(r, r, indexing="ij")
    if generator == "rotation":
        cos, sin = math.cos(t), math.sin(t)
        return cos * px + sin * py, -sin * px + cos * py
    if generator == "translation_x":
        return px - t, py
    if generator == "translation_y":
        return px, py - t
    return px * math.exp(-t), py * math.exp(-t)


def images(sc: list[dict], generator: str, t: float, size: int) -> Tensor:
    px, py = source_coords(generator, t, size)
    return torch.stack([render(s, px, py) for s in sc])[:, None]


# ------------------------------------------------------------------------------------------------ ground truth
def ground_truth(
    model: Callable, sc: list[dict], symmetry: eqm.Symmetry, generator: str, size: int, step: float
) -> tuple[Tensor, float]:
    """``(d/dt h(x_t) at 0  [N, ...], Richardson error estimate)`` by central differences of rendered images."""
    group, phi = symmetry.group, symmetry.input_action

    def h(t: float) -> Tensor:
        with torch.no_grad():
            return model(phi.prepare(group, images(sc, generator, t, size))).to(_F64)

    def d(delta: float) -> Tensor:
        return (h(delta) - h(-delta)) / (2 * delta)

    coarse, fine = d(step), d(step / 2)
    extrapolated = (4 * fine - coarse) / 3
    rich = float(((fine - extrapolated).flatten(1).norm(dim=1) / extrapolated.flatten(1).norm(dim=1)).max())
    return extrapolated, rich


# ------------------------------------------------------------------------------------------------ models
def seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return factory().double().eval()


class EscnnSO2(nn.Module):
    """A nearly SO(2)-invariant steerable CNN, as escnn's SO(2) examples build one: ``[B, 1, H, W] -> [B, classes]``."""

    def __init__(self, channels: int = 6, frequency: int = 3, classes: int = 4) -> None:
        super().__init__()
        from escnn import gspaces
        from escnn import nn as enn

        from eqmonitor.integrations.escnn import EscnnTensorModel

        gs = gspaces.rot2dOnR2(N=-1)
        irreps = gs.fibergroup.bl_irreps(frequency)
        in_type = enn.FieldType(gs, [gs.trivial_repr])
        act1 = enn.FourierELU(gs, channels, irreps=irreps, N=16, inplace=True)
        act2 = enn.FourierELU(gs, channels, irreps=irreps, N=16, inplace=True)
        invariant = enn.FieldType(gs, 8 * [gs.trivial_repr])
        body = enn.SequentialModule(
            enn.R2Conv(in_type, act1.in_type, kernel_size=7, padding=3),
            enn.IIDBatchNorm2d(act1.in_type),
            act1,
            enn.PointwiseAvgPoolAntialiased(act1.out_type, sigma=0.66, stride=2),
            enn.R2Conv(act1.out_type, act2.in_type, kernel_size=5, padding=2),
            enn.IIDBatchNorm2d(act2.in_type),
            act2,
            enn.R2Conv(act2.out_type, invariant, kernel_size=1, bias=False),
        )
        self.body = EscnnTensorModel(body)
        self.head = nn.Linear(invariant.size, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(-2, -1)))


def models(size: int) -> dict[str, nn.Module]:
    out = {
        "cnn": seeded(lambda: eqm.demos.SmallCNN(size=size)),
        "cnn-avg": seeded(lambda: eqm.demos.SmallCNN(size=size, pool="avg")),
    }
    try:
        import escnn  # noqa: F401
    except ImportError:
        return out
    out["escnn-so2"] = seeded(EscnnSO2)
    return out


def symmetries() -> dict[str, eqm.Symmetry]:
    """The symmetry each generator is measured under: SO(2) (disc mask), translations and scalings (no mask)."""
    return {
        "rotation": eqm.Symmetry.from_spec(name="rotation", group="so2"),
        "translation_x": eqm.Symmetry.from_spec(name="shift", group="translation"),
        "translation_y": eqm.Symmetry.from_spec(name="shift", group="translation"),
        "scale": eqm.Symmetry.from_spec(name="scale", group="scale"),
    }


# ------------------------------------------------------------------------------------------------ table
def measure(size: int, n: int, kinds: list[str]) -> list[dict]:
    rows = []
    syms = symmetries()
    for kind in kinds:
        sc = scenes(n, size, kind)
        for name, model in models(size).items():
            for generator in GENERATORS:
                sym = syms[generator]
                step = 1e-4
                truth, rich = ground_truth(model, sc, sym, generator, size, step)
                x0 = images(sc, generator, 0.0, size)
                with torch.no_grad():
                    out_norm = model(sym.input_action.prepare(sym.group, x0)).to(_F64).flatten(1).norm(dim=1)
                truth_rel = truth.flatten(1).norm(dim=1) / out_norm
                row = {"scene": kind, "model": name, "generator": generator, "truth": float(truth_rel.mean()),
                       "rich": rich}  # fmt: skip
                for tangent in TANGENTS:
                    res = lie_derivative(model, x0, sym, generator=generator, tangent=tangent)
                    err = (res.derivative - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)
                    row[tangent] = {"ratio": float(res.total.mean() / truth_rel.mean()), "err": float(err.max())}
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cols = [OLD_DEFAULT] + [t for t in TANGENTS if t != OLD_DEFAULT]
    head = f"{'scene':8} {'model':10} {'generator':14} {'truth':>9} {'rich':>8}"
    for t in cols:
        label = t + (" (new default)" if t == TANGENTS[0] else " (old default)" if t == OLD_DEFAULT else "")
        head += f" | {label:>22}"
    sub = " " * 52 + "".join(f" | {'ratio':>10} {'err':>11}" for _ in cols)
    lines = [head, sub, "-" * len(head)]
    for r in rows:
        line = f"{r['scene']:8} {r['model']:10} {r['generator']:14} {r['truth']:9.2e} {r['rich']:8.1e}"
        for t in cols:
            line += f" | {r[t]['ratio']:9.3f}x {100 * r[t]['err']:10.1f}%"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--scenes", default="centred,frame")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = measure(args.size, args.n, args.scenes.split(","))
    print(f"Lie-derivative accuracy, {args.size}x{args.size}, {args.n} scenes each, float64 "
          f"({time.perf_counter() - start:.0f} s)\n")  # fmt: skip
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
