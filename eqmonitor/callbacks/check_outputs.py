"""What one check leaves behind on rank 0: its records, then its figures."""

from __future__ import annotations

from typing import Any, Optional

from eqmonitor.callbacks.figure_log import FigureLog
from eqmonitor.callbacks.run_records import RunRecords

__all__ = ["write_check"]


def write_check(
    trainer: Any,
    done: list,
    guards: list,
    step: int,
    records: Optional[RunRecords],
    figures: Optional[FigureLog],
    wait: bool = False,
) -> None:
    """Rank 0: each symmetry's ``(result, entry, alerts)`` in ``done`` to the records, then its figures (forced when
    a guard acted at ``step``); ``wait``: until both are written (before a guard raises)."""
    if not trainer.is_global_zero:
        return
    breaches = [g.last_breach for g in guards if g.last_breach and g.last_breach["global_step"] == step]
    for result, entry, alerts in done:
        if records is not None:
            records.append(result, entry, alerts, breaches)
        if figures is not None:
            figures.submit(trainer.loggers, result, step, force=bool(breaches))
    if wait and records is not None:
        records.flush()
    if wait and figures is not None:
        figures.drain()
