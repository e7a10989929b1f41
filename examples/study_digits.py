"""The augmentation study (``make demo``): a digits classifier trained with no augmentation, quarter-turn (C4)
augmentation, continuous-rotation augmentation, and as a C4-equivariant network, watched by EquivarianceMonitor,
then compared (tables, figures) and explored (the NERO page).

python examples/study_digits.py                      # a few minutes on 2 CPU cores; writes ./study
python examples/study_digits.py --epochs 2 --out /tmp/study
tensorboard --logdir study/runs                      # the four runs side by side
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import lightning  # noqa: F401  (imported first: it sets its loggers' levels on import, quieted below)

from eqmonitor.demos.study import STRATEGIES, run_study, summary_lines


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=Path, default=Path("study"), help="output folder (default: ./study)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run (default: 8)")
    parser.add_argument("--n-train", type=int, default=1400, help="training digits (default: 1400 of 1797)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default: 0)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all four)")
    parser.add_argument("--n-samples", type=int, default=None, help="probe samples (default: the monitor's, 64)")
    args = parser.parse_args(argv)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banners per run
    for noise in ("does not have many workers", "smaller than the logging interval", "LeafSpec"):
        warnings.filterwarnings("ignore", message=f".*{noise}.*")
    options = {} if args.n_samples is None else {"n_samples": args.n_samples}
    start = time.perf_counter()
    result = run_study(
        args.out,
        epochs=args.epochs,
        n_train=args.n_train,
        seed=args.seed,
        strategies=[s.strip() for s in args.strategies.split(",")],
        monitor_options=options,
        say=print,
    )
    lines = summary_lines(result)
    text = "\n".join(lines)
    (result.out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(f"\n{text}\n(study: {time.perf_counter() - start:.0f} s; this summary: {result.out / 'summary.txt'})")
    return lines


if __name__ == "__main__":
    import torch

    # leave one core to the monitor's figure process: on 2 cores, two busy torch threads beside it run ~3x slower
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
    main()
