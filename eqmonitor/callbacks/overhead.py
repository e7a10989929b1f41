r"""
Overhead budget
^^^^^^^^^^^^^^^

The share of fit wall time the monitor's hooks take on the training process, and the opt-in ``max_overhead``
budget that defers scheduled checks while over it (never by default: a scheduled check is the user's).
"""

from __future__ import annotations

import time
from typing import Optional

from lightning.pytorch import Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from eqmonitor.callbacks.breach import EquivarianceConfigError

__all__ = ["OverheadBudget"]


class OverheadBudget:
    """Hook seconds against fit wall time; with ``max_overhead`` set, the decision to run or defer a check."""

    def __init__(self, max_overhead: Optional[float] = None) -> None:
        if max_overhead is not None and not 0 < max_overhead <= 1:
            raise EquivarianceConfigError(f"`max_overhead` must be a fraction in (0, 1] or None, got {max_overhead!r}.")
        self.max_overhead = max_overhead
        self.spent = 0.0
        self.deferred = 0
        self.fit_started: Optional[float] = None

    def start_fit(self) -> float:
        self.fit_started = time.perf_counter()
        return self.fit_started

    def add(self, seconds: float) -> None:
        self.spent += seconds

    def share(self) -> float:
        """Hook seconds over fit wall seconds so far (0 before the fit starts)."""
        if self.fit_started is None:
            return 0.0
        return self.spent / max(time.perf_counter() - self.fit_started, 1e-9)

    def allows(self, trainer: Trainer, step: int) -> bool:
        """Whether the check scheduled at ``step`` runs: always without a budget; with one, rank 0 decides (every
        rank gets its answer) and the first deferral warns."""
        if self.max_overhead is None:
            return True
        run = self.share() <= self.max_overhead
        if trainer.world_size > 1:
            run = bool(trainer.strategy.broadcast(run, src=0))
        if run:
            return True
        self.deferred += 1
        if self.deferred == 1:
            rank_zero_warn(
                f"EquivarianceMonitor: deferring the check at step {step}: the monitor has taken "
                f"{100 * self.share():.1f}% of fit time, over `max_overhead={self.max_overhead:g}`. Deferred checks "
                "are counted in `monitor.deferred`; pass `max_overhead=None` (the default) to run every check."
            )
        return False
