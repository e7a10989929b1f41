r"""
Equivariance Monitor
^^^^^^^^^^^^^^^^^^^^

Measure a model's symmetry on a fixed probe set while it trains, and log it everywhere.

The callback is a schedule and its state. One check is :func:`eqmonitor.check.run_check`; what a check leaves
behind goes to :mod:`eqmonitor.sinks` (scalars, alerts), :mod:`~eqmonitor.callbacks.run_records` (the run's records)
and :mod:`~eqmonitor.callbacks.figure_log` (NERO figures, rendered in a worker process).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from eqmonitor.callbacks.breach import EquivarianceBreachError
from eqmonitor.callbacks.check_outputs import write_check
from eqmonitor.callbacks.drift_alerts import EquivarianceDriftWarning, drift_tracker, emit_drift_alerts
from eqmonitor.callbacks.figure_log import FigureLog
from eqmonitor.callbacks.guard import EquivarianceGuard
from eqmonitor.callbacks.monitor_arguments import check_monitor_arguments
from eqmonitor.callbacks.overhead import OverheadBudget
from eqmonitor.callbacks.probe_set import ProbeSet, probe_for_fit
from eqmonitor.callbacks.records_folder import records_folder
from eqmonitor.callbacks.run_records import RunRecords
from eqmonitor.check import LOSSES, CheckOptions, CheckResult, dry_run, run_check, single_process
from eqmonitor.sinks import log_check
from eqmonitor.symmetry import Symmetry, resolve_symmetries

__all__ = ["EquivarianceDriftWarning", "EquivarianceMonitor", "LOSSES", "resolve_symmetries"]  # re-exported

log = logging.getLogger("eqmonitor")


class EquivarianceMonitor(Callback):
    r"""Measure equivariance on a fixed probe set every ``every_n_epochs`` epochs (or ``every_n_train_steps`` steps).

    Each check measures every symmetry on the same probe inputs and group elements (drawn once from the *validation*
    data with ``torch.Generator(seed)``, never from the train loader, with every global random stream left as it
    was), on the model's device, batched, in eval mode, in the precision the trainer trains in, and with the model,
    optimizer, RNG streams and autocast/TF32 flags left exactly as they were. Every check that you schedule runs.
    It logs, through every logger and into ``trainer.callback_metrics``::

        equivariance/<name>/error_mean | error_max | error_p95 | nonfinite | exact_error | interp_error | flip_rate
        equivariance/<name>/layer/<layer>            (layerwise=True: isolated error of each layer)
        equivariance/<name>/grad_input, grad_param/<param>   (gradients=True)
        equivariance/<name>/consensus_error_mean | consensus_error_max | ...   (reference="consensus": the same
                                                     fields, against the consensus)

    (the first line holds the fields of :func:`eqmonitor.summary.summarize`, which :func:`~eqmonitor.check.run_check`
    calls once per check; W&B also gets the aggregate curve as a table, :func:`eqmonitor.sinks.log_check`)
    and images ``equivariance/<name>/nero_aggregate | nero_individual | nero_dr | layers`` (rendered in a worker
    process on rank 0, logged at the step of their check), appends a record of each check to this run's own records
    folder (``<log_dir>/eqmonitor_records`` with TensorBoard/CSV, ``<save_dir>/eqmonitor_records/<run id>`` with W&B,
    ``<default_root_dir>/eqmonitor_records/version_<n>`` without a logger), raises drift alerts, and hands each
    check to every :class:`EquivarianceGuard`.

    Args:
        symmetries: a :class:`Symmetry`, a dict of :meth:`Symmetry.from_spec` arguments, or a list of them.
        every_n_epochs: check at the end of every n-th training epoch (``None``/0: never at epoch ends).
        every_n_train_steps: check every n optimizer steps (``None``/0: never); de-duplicated under accumulation.
        check_at_start: measure once before training.
        n_samples: probe samples, shared out across ranks (every rank probes an equal share, the smallest rank's if
            their validation sets differ, and runs the same number of forwards).
        n_elements: group elements per check (finite groups of that order or less: all of them).
        seed: seed of the probe draw and of sampled elements.
        probe_data: inputs to probe instead of the validation data: a tensor, ``(x, y)``, a Dataset or a DataLoader.
        input_key, label_key: how to find inputs/labels in a batch (index or dict key) when the guess fails.
        output_key: how to find the output to check in what the model returns (a key, an index or a callable),
            for models that return tuples, dicts or ``ModelOutput`` objects.
        layerwise: also run the layer-wise test (on ``layer_samples`` samples).
        gradients: also run the gradient test (needs labels for ``"cross_entropy"``).
        loss_fn: ``"cross_entropy"``, ``"mse"`` or ``fn(output, target)`` for the gradient test.
        layer_samples: samples used by the layer-wise and gradient tests (they are costlier than the orbit probe).
        plots: log NERO images.
        plots_every_n_checks: draw the figures of every n-th check only (a check a guard acts on always gets them).
        max_batch: ``"auto"`` or the largest (sample × element) batch per forward.
        chunking: which pairs may share a forward (see :func:`~eqmonitor.functional.orbit_errors`):
            ``"per_sample"`` or ``"per_element"`` for a model whose output for one sample depends on its batch.
        drift_factor, drift_patience, drift_min, alert_wait: regression alerts (``factor``, ``patience``,
            ``min_value``, ``wait_duration`` of :class:`~eqmonitor.alerts.DriftTracker`).
        drift_warmup: training epochs before drift references are taken (at initialisation a network's error says
            nothing about its trained symmetry).
        alert_keys: scalars that raise drift alerts (names without the namespace, e.g. ``"error_mean"``); ``[]``
            turns drift alerts off.
        records: write this run's records (``records.jsonl`` and the orbit matrices).
        records_dir: the records folder instead of the default above.
        max_overhead: opt-in budget, ``None`` by default: the largest share of fit wall time the monitor's hooks may
            take; while over it, scheduled checks are deferred to the next due one, with a warning the first time.
        tag: a name for this run's strategy (``"plain"``, ``"c4-augmented"``), kept in its records: what
            ``eqmonitor compare`` calls the run.
        reference: ``"identity"`` (default): each output ``h(g·x)`` against ``g·h(x)``, the equivariance error.
            ``"consensus"``: also against ``g·c(x)``, the consensus moved forward (NERO's stand-in for unknown labels;
            :func:`~eqmonitor.functional.orbit_errors_with_consensus`, from the same forwards), logged and recorded
            under ``consensus_<name>`` beside the unchanged default keys, so the two never share a curve.

    Attributes:
        history: per symmetry, the list of checks (``global_step``, ``epoch`` as Lightning counts it from 0,
            ``epochs_done``: completed training epochs, 0 before training, what ``eqmonitor compare`` plots, scalars).
        probe: this rank's :class:`~eqmonitor.callbacks.probe_set.ProbeSet` once drawn.
        latest: per symmetry, the latest :class:`~eqmonitor.check.CheckResult`.
        check_seconds: training-process seconds of each check (all symmetries, records and figure hand-over).
        figure_seconds: figure kind → render seconds of each figure (measured in the worker process).
        deferred: scheduled checks deferred by ``max_overhead``.

    Raises:
        EquivarianceConfigError: at construction for bad arguments (a ``MisconfigurationException`` and a
            ``ValueError``).
        ValueError, TypeError: at ``on_fit_start`` (one dry-run probe) for a
            symmetry that does not fit the model or batches the monitor cannot read.
    """

    def __init__(
        self,
        symmetries: Union[Symmetry, dict, list],
        every_n_epochs: Optional[int] = 1,
        every_n_train_steps: Optional[int] = None,
        check_at_start: bool = True,
        n_samples: int = 64,
        n_elements: int = 36,
        seed: int = 0,
        probe_data: Any = None,
        input_key: Union[None, int, str] = None,
        label_key: Union[None, int, str] = None,
        output_key: Union[None, int, str, Callable[[Any], Tensor]] = None,
        layerwise: bool = False,
        gradients: bool = False,
        loss_fn: Union[str, Callable[[Tensor, Tensor], Tensor]] = "cross_entropy",
        layer_samples: int = 16,
        plots: bool = True,
        plots_every_n_checks: int = 1,
        max_batch: Union[int, str] = "auto",
        drift_factor: float = 2.0,
        drift_patience: int = 1,
        drift_min: float = 1e-4,
        drift_warmup: int = 1,
        alert_wait: float = 300.0,
        alert_keys: Optional[list[str]] = None,
        records: bool = True,
        records_dir: Optional[str] = None,
        max_overhead: Optional[float] = None,
        tag: Optional[str] = None,
        chunking: str = "mixed",
        reference: str = "identity",
    ) -> None:
        super().__init__()
        self.symmetries = resolve_symmetries(symmetries, output_key)
        counts = {"n_samples": n_samples, "n_elements": n_elements, "layer_samples": layer_samples}
        counts["plots_every_n_checks"] = plots_every_n_checks
        check_monitor_arguments(
            every_n_epochs, every_n_train_steps, check_at_start, counts, drift_warmup, loss_fn, max_batch, chunking,
            tag, reference=reference, symmetries=self.symmetries,
        )  # fmt: skip
        self.every_n_epochs = every_n_epochs or 0
        self.every_n_train_steps = every_n_train_steps or 0
        self.check_at_start = check_at_start
        self.n_samples, self.n_elements, self.seed = n_samples, n_elements, seed
        self.probe_data, self.input_key, self.label_key = probe_data, input_key, label_key
        self.loss_fn = LOSSES[loss_fn] if isinstance(loss_fn, str) else loss_fn
        self.options = CheckOptions(layerwise, gradients, self.loss_fn, layer_samples, max_batch, keep_probs=records,
                                    chunking=chunking, reference=reference)  # fmt: skip
        self.tag = tag
        self.plots = plots
        self.drift_warmup = drift_warmup
        self.drift = drift_tracker(alert_keys, drift_factor, drift_patience, drift_min, alert_wait)
        self.records, self.records_dir = records, records_dir
        self.budget = OverheadBudget(max_overhead)
        self.history: dict[str, list[dict]] = {s.name: [] for s in self.symmetries}
        self.latest: dict[str, CheckResult] = {}
        self.probe: Optional[ProbeSet] = None
        self.check_seconds: list[float] = []
        self.run_id = uuid.uuid4().hex
        self._figures = FigureLog(plots_every_n_checks)
        self._elements: dict[str, Tensor] = {}
        self._folder: Optional[str] = None
        self._writer: Optional[RunRecords] = None
        self._last_step: Optional[int] = None
        self._considered_step: Optional[int] = None
        self._restored: dict[str, Any] = {}
        self._warned_inference = False

    @property
    def layerwise(self) -> bool:
        return self.options.layerwise

    @property
    def gradients(self) -> bool:
        return self.options.gradients

    @property
    def max_overhead(self) -> Optional[float]:
        return self.budget.max_overhead

    @property
    def deferred(self) -> int:
        return self.budget.deferred

    @property
    def figure_seconds(self) -> dict[str, list[float]]:
        return self._figures.seconds

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            symmetries=[s.name for s in self.symmetries],
            every_n_epochs=self.every_n_epochs,
            every_n_train_steps=self.every_n_train_steps,
            seed=self.seed,
        )

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _should_skip_check(trainer: Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Resolve this run's records folder on every rank (a collective under DDP) and attach the guards."""
        if stage != "fit" or trainer.fast_dev_run:
            return
        if self.records:
            self._folder = records_folder(trainer, self.records_dir)
        for cb in trainer.callbacks:
            if isinstance(cb, EquivarianceGuard):
                cb.attach_monitor([s.name for s in self.symmetries])

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_skip_check(trainer):
            return
        started = self.budget.start_fit()
        try:
            self.probe = probe_for_fit(
                trainer, pl_module, self.n_samples, self.seed, self.probe_data, self.input_key, self.label_key
            )
            for sym in self.symmetries:
                gen = torch.Generator().manual_seed(self.seed)
                self._elements[sym.name] = sym.group.default_elements(self.n_elements, gen).to(pl_module.device)
                dry_run(pl_module, self.probe.x, self.probe.labels, sym, self._elements[sym.name], self.options)
            if self.plots and trainer.is_global_zero:
                self._figures.start()
            self._writer = RunRecords.start(
                trainer, pl_module, self.probe, self.symmetries, self._elements, self._folder if self.records else None,
                run_id=self.run_id, restored=self._restored, tag=self.tag, probe_seed=self.seed,
            )  # fmt: skip
        finally:
            self.budget.add(time.perf_counter() - started)

    # ------------------------------------------------------------------ schedule
    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            self.check_at_start
            and not self._should_skip_check(trainer)
            and self._last_step is None
            and trainer.global_step == 0
        ):
            self._check(trainer, pl_module, at_start=True)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._figures.poll()
        n = self.every_n_train_steps
        step = trainer.global_step
        if n and not self._should_skip_check(trainer) and step > 0 and step % n == 0 and step != self._last_step:
            self._scheduled_check(trainer, pl_module)

    def _epoch_due(self, trainer: Trainer) -> bool:
        n = self.every_n_epochs
        return bool(n) and not self._should_skip_check(trainer) and (trainer.current_epoch + 1) % n == 0

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The epoch's check runs after its last validation, before ``ModelCheckpoint`` (always ordered last) saves,
        so a checkpoint holds the check of its own step and a resumed run neither repeats nor loses one."""
        if trainer.is_last_batch and self._epoch_due(trainer) and trainer.global_step != self._last_step:
            self._scheduled_check(trainer, pl_module, epoch_end=True)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epoch_due(trainer) and trainer.global_step != self._last_step:  # epochs without validation
            self._scheduled_check(trainer, pl_module, epoch_end=True)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        try:
            self._figures.close()
        finally:
            if self._writer is not None:
                self._writer.close()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._figures.close()
        if self._writer is not None:
            self._writer.close(quiet=True)  # a failed write is logged: it never hides the fit's own exception

    def overhead(self) -> float:
        """The share of fit wall time so far spent in the monitor's hooks on the training process."""
        return self.budget.share()

    def _scheduled_check(self, trainer: Trainer, pl_module: LightningModule, epoch_end: bool = False) -> None:
        """Run a scheduled check, unless the opt-in ``max_overhead`` budget defers it."""
        step = trainer.global_step
        if step != self._considered_step:
            self._considered_step = step
            if self.budget.allows(trainer, step):
                self._check(trainer, pl_module, epoch_end=epoch_end)

    # ------------------------------------------------------------------ one check
    def _check(self, trainer: Trainer, pl_module: LightningModule, at_start: bool = False, epoch_end: bool = False):
        started = time.perf_counter()
        try:
            self._check_now(trainer, pl_module, at_start, epoch_end)
        finally:
            seconds = time.perf_counter() - started
            self.budget.add(seconds)
            self.check_seconds.append(seconds)

    def _check_now(self, trainer: Trainer, pl_module: LightningModule, at_start: bool, epoch_end: bool) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        self._last_step = step
        options = self.options.in_grad_mode(warn=not self._warned_inference)
        self._warned_inference |= options is not self.options
        gather = single_process if trainer.world_size <= 1 else trainer.strategy.all_gather
        epochs_done = epoch + int(epoch_end)  # completed training epochs (0 at the check before training)
        warm = epochs_done >= self.drift_warmup
        done = []
        for sym in self.symmetries:
            x, labels = self.probe.x, self.probe.labels
            # the logged numbers: result.summary, computed by eqmonitor.summary.summarize inside run_check
            result = run_check(pl_module, x, labels, sym, self._elements[sym.name], options, gather)
            self.latest[sym.name] = result
            entry = {"global_step": step, "epoch": epoch, "epochs_done": epochs_done, "time": time.time(),
                     "metrics": result.scalars}  # fmt: skip
            self.history[sym.name].append(entry)
            log_check(trainer, result, step)  # scalars; W&B also gets the aggregate curve as a table
            alerts = self.drift.update(sym.name, result.scalars, step, epoch, warm=warm)
            emit_drift_alerts(trainer, alerts)
            done.append((result, entry, alerts))
        guards = [cb for cb in trainer.callbacks if isinstance(cb, EquivarianceGuard)]
        report = "\n".join(r.report_line() for r, _, _ in done)
        try:
            for guard in guards:  # may raise EquivarianceBreachError: records and figures are written first
                guard.evaluate(trainer, report=report, checked=[s.name for s in self.symmetries], at_start=at_start)
        except BaseException as err:
            write_check(trainer, done, guards, step, self._writer, self._figures if self.plots else None, True)
            if isinstance(err, EquivarianceBreachError) and trainer.world_size > 1:
                # every rank raises at this check (the decision is reduced): the others wait while rank 0 writes,
                # or Lightning's launcher would kill rank 0 as soon as another rank's process exits
                trainer.strategy.barrier("eqmonitor-breach")
            raise
        write_check(trainer, done, guards, step, self._writer, self._figures if self.plots else None)

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        if self._writer is not None:  # a checkpoint never names a check whose record is not on disk yet
            self._writer.flush()
        return {
            "seed": self.seed,
            "n_samples": self.n_samples,
            "history": {k: list(v) for k, v in self.history.items()},
            "drift": self.drift.state_dict(),
            "last_step": self._last_step,
            "run_id": self.run_id,
            "records_dir": self._folder,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("seed", self.seed) != self.seed:
            rank_zero_warn(
                f"EquivarianceMonitor: the checkpoint's probe seed {state_dict['seed']} differs from this monitor's "
                f"{self.seed}; the resumed curves use a different probe set."
            )
        for name, entries in state_dict.get("history", {}).items():
            self.history[name] = list(entries)
        self.drift.load_state_dict(state_dict.get("drift", {}))
        self._last_step = state_dict.get("last_step")
        self.run_id = state_dict.get("run_id") or self.run_id
        self._restored = {"last_step": self._last_step, "records_dir": state_dict.get("records_dir")}
