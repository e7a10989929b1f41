"""The monitor's figures: NERO images of each check, rendered in a worker process and logged from the training
process at its next hook.

Rank 0 only. A check hands its results over (moved to the CPU: a few kB); the worker process draws them (matplotlib
never runs in the training process, so it never takes that process's GIL) and sends back RGB arrays, which
:meth:`FigureLog.poll` writes to TensorBoard / W&B at the step of the check they show. :meth:`FigureLog.drain`
waits for what is still rendering (at the end of the fit, on an exception, and before a guard raises), with a
timeout: a dead worker never hangs the fit.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

from eqmonitor.check import CheckResult
from eqmonitor.sinks import log_images

__all__ = ["FigureLog"]

log = logging.getLogger("eqmonitor")

OVERLAY = 6  # checks overlaid on the aggregate NERO plot


class FigureLog:
    """Figures of every ``every_n_checks``-th check of each symmetry (and of any check a guard acted on).

    Attributes:
        seconds: figure kind → render seconds of each figure, as measured in the worker.
        logged: ``(symmetry, global_step)`` of every check whose figures were logged.
    """

    def __init__(self, every_n_checks: int = 1, drain_timeout: float = 120.0) -> None:
        self.every_n_checks = every_n_checks
        self.drain_timeout = drain_timeout
        self.seconds: dict[str, list[float]] = {}
        self.logged: list[tuple[str, int]] = []
        self._overlay: dict[str, list[tuple[int, Any]]] = {}
        self._checks: dict[str, int] = {}
        self._worker: Any = None
        self._loggers: list = []

    def start(self) -> None:
        """Start the worker process (its imports take about a second; they overlap the first check's probes)."""
        from eqmonitor.plots.worker import FigureWorker

        if self._worker is None:
            self._worker = FigureWorker()
        self._worker.start()

    def submit(self, loggers: list, result: CheckResult, step: int, force: bool = False) -> bool:
        """Queue the figures of one check (without blocking on rendering); ``force`` ignores the cadence.
        Returns whether they were queued."""
        name = result.symmetry
        count = self._checks.get(name, 0)
        self._checks[name] = count + 1
        overlay = self._overlay.setdefault(name, [])
        overlay.append((step, result.orbit.cpu()))
        del overlay[:-OVERLAY]
        if not force and count % self.every_n_checks:
            return False
        from eqmonitor.plots.worker import FigureJob

        if self._worker is None:
            self.start()
        layers = result.layers
        if layers is not None:
            layers = dataclasses.replace(layers, cumulative=layers.cumulative.cpu(), isolated=layers.isolated.cpu())
        self._loggers = list(loggers)
        self._worker.submit(FigureJob(symmetry=name, step=step, overlay=list(overlay), layers=layers))
        return True

    def poll(self) -> None:
        """Log the figures that are ready (non-blocking)."""
        if self._worker is not None and self._worker.pending:
            self._log(self._worker.ready())

    def drain(self, timeout: Optional[float] = None) -> None:
        """Wait (at most ``timeout`` seconds) for every queued figure and log it."""
        if self._worker is not None:
            self._log(self._worker.drain(self.drain_timeout if timeout is None else timeout))

    def close(self) -> None:
        """Log every queued figure, then let the worker process go (it is reaped in the background: its exit is
        no part of the fit)."""
        self.drain()
        if self._worker is not None:
            self._worker.close(wait=False)
            self._worker = None

    def _log(self, rendered: list) -> None:
        for item in rendered:
            for kind, seconds in item.seconds.items():
                self.seconds.setdefault(kind, []).append(seconds)
            if item.error:
                log.warning("eqmonitor: the figures of %s at step %d failed: %s", item.symmetry, item.step, item.error)
            if item.images:
                log_images(self._loggers, item.images, item.step)
                self.logged.append((item.symmetry, item.step))
