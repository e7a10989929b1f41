"""Audit two small digit classifiers for rotation symmetry: a plain CNN and a C4 group-averaged CNN.

Both are fitted briefly on scikit-learn's bundled handwritten digits (no download), then audited under the exact
quarter turns (C4) and under continuous rotations (SO(2), a 10° grid), and their reports are printed.

Run with ``make demo`` (or ``python examples/audit_digits.py --epochs 2``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import eqmonitor as eqm
from eqmonitor.demos import load_digits


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> float:
    """Plain Adam fit; returns the training accuracy."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--markdown", action="store_true", help="print Markdown instead of text")
    args = parser.parse_args()

    x, y = load_digits()
    train, probe = slice(0, 1500), slice(1500, 1500 + args.n_samples)  # probe on held-out digits
    torch.manual_seed(0)
    models = {
        "plain CNN": eqm.demos.SmallCNN(),
        "C4 group-averaged CNN": eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4)),
    }
    symmetries = [
        eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant"),
        eqm.Symmetry.from_spec(name="rotation", group="so2", input="image", output="invariant"),
    ]
    for name, model in models.items():
        start = time.perf_counter()
        acc = fit(model, x[train], y[train], args.epochs)
        seconds = time.perf_counter() - start
        print(f"\n=== {name}: fitted {args.epochs} epoch(s), train accuracy {acc:.1%} ({seconds:.1f} s)")
        for sym in symmetries:
            report = eqm.audit(model, x[probe], sym, labels=y[probe], n_elements=36)
            print()
            print(report.to_markdown(max_rows=8) if args.markdown else report.to_text(max_rows=8))


if __name__ == "__main__":
    main()
