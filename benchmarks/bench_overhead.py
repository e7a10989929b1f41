"""Benchmark: the EquivarianceMonitor's share of ``Trainer.fit`` wall time on the digits example (target ≤ 3%).

Fits :class:`~eqmonitor.lightning_digits.DigitsClassifier` on the 1,400 training digits for ``--epochs`` epochs,
alternately without and with ``EquivarianceMonitor`` at its defaults (C4 and SO(2) symmetries, 64 probe samples,
36 elements, every epoch, NERO plots and records on; TensorBoard logger in both runs), ``--repeats`` times each, and
prints the medians and two shares:

- *wall share*: ``(fit_with - fit_without) / fit_with``, what a user sees (noisy on a shared 2-core machine);
- *hook share*: time spent inside the monitor's hooks on the training thread / ``fit_with`` (the figures render on
  a worker thread; their CPU time competes with training on a small machine and shows in the wall share only).

The monitor's default ``max_overhead=0.03`` defers scheduled checks while it is over budget; ``--max-overhead 0``
measures the unbudgeted cost of checking every epoch. Run: ``python benchmarks/bench_overhead.py [--epochs 10]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Optional

import lightning as L
import torch

import eqmonitor as eqm
from eqmonitor.lightning_digits import DigitsClassifier, DigitsDataModule

SYMMETRIES = [
    {"name": "c4", "group": "c4", "input": "image", "output": "invariant"},
    {"name": "rotation", "group": "so2", "input": "image", "output": "invariant"},
]


def fit_once(epochs: int, monitor: bool, root: str, max_overhead: Optional[float] = 0.03) -> tuple[float, float, int]:
    """Seconds of ``fit``, seconds inside the monitor's training-thread hooks, checks run."""
    L.seed_everything(0, verbose=False)
    callbacks, spent = [], [0.0]
    mon = None
    if monitor:
        mon = eqm.EquivarianceMonitor(SYMMETRIES, max_overhead=max_overhead)
        for hook in ("on_fit_start", "on_train_start", "on_train_batch_end", "on_train_epoch_end", "on_fit_end"):
            original = getattr(mon, hook)

            def timed(*args, _original=original, **kw):
                t0 = time.perf_counter()
                try:
                    return _original(*args, **kw)
                finally:
                    spent[0] += time.perf_counter() - t0

            setattr(mon, hook, timed)
        callbacks.append(mon)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=L.pytorch.loggers.TensorBoardLogger(root, name="bench"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    t0 = time.perf_counter()
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule())
    wall = time.perf_counter() - t0
    checks = len(mon.history["c4"]) if mon else 0
    return wall, spent[0], checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-overhead", type=float, default=0.03, help="the monitor's budget; 0 means None")
    args = parser.parse_args()
    budget = args.max_overhead or None
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, epochs {args.epochs}, "
        f"repeats {args.repeats}, max_overhead {budget}"
    )
    without, with_, hooks = [], [], []
    with tempfile.TemporaryDirectory() as root:
        fit_once(1, True, root)  # warm-up: imports, allocator, the chunk-size tuner's first run
        for _ in range(args.repeats):
            without.append(fit_once(args.epochs, False, root)[0])
            wall, spent, checks = fit_once(args.epochs, True, root, budget)
            with_.append(wall)
            hooks.append(spent)
    a, b, h = statistics.median(without), statistics.median(with_), statistics.median(hooks)
    print(f"fit without monitor   {a:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in without)})")
    print(f"fit with monitor      {b:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in with_)}; {checks} checks each)")
    print(f"monitor hooks         {h:7.2f} s   on the training thread")
    wall_share, hook_share = (b - a) / b, h / b
    verdict = "PASS" if hook_share <= 0.03 else "MISS"
    print(f"wall share {wall_share:6.1%}   hook share {hook_share:6.1%}   (target <= 3%: {verdict})")


if __name__ == "__main__":
    main()
