r"""
Equivariance Monitor
^^^^^^^^^^^^^^^^^^^^

Measure a model's symmetry on a fixed probe set while it trains, and log it everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from eqmonitor.alerts import Alert, DriftTracker
from eqmonitor.audit import default_elements
from eqmonitor.callbacks.probe_set import ProbeSet, probe_from_data, probe_from_loader
from eqmonitor.functional import gradient_errors, layer_errors, orbit_errors
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors
from eqmonitor.sinks import log_images, log_scalars, send_alert
from eqmonitor.symmetry import Symmetry

__all__ = ["EquivarianceMonitor", "LOSSES", "resolve_symmetries"]

log = logging.getLogger("eqmonitor")

LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cross_entropy": lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="sum"),
    "mse": lambda out, y: torch.nn.functional.mse_loss(out, y, reduction="sum"),
}
INFERENCE_SKIP = "Gradient tests skipped under inference mode: use `Trainer(inference_mode=False)`."
_SUMMARY_FIELDS = ("errors", "abs_errors", "rel_errors", "nonfinite", "flips", "confidence", "confidence_ref")


def resolve_symmetries(symmetries: Union[Symmetry, dict, list]) -> list[Symmetry]:
    """A list of named :class:`Symmetry` from a Symmetry, a ``from_spec`` dict (YAML), or a list of them."""
    items = symmetries if isinstance(symmetries, (list, tuple)) else [symmetries]
    out = []
    for item in items:
        if isinstance(item, Symmetry):
            out.append(item)
        elif isinstance(item, dict):
            out.append(Symmetry.from_spec(**item))
        else:
            raise TypeError(
                f"Expected a Symmetry or a dict of `Symmetry.from_spec` arguments, got {type(item).__name__}."
            )
    if not out:
        raise ValueError("`symmetries` is empty: give at least one symmetry to monitor.")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Symmetry names are logging namespaces and must be unique, got {names}.")
    return out


def summarize(result: OrbitErrors) -> dict[str, float]:
    """The scalars logged per check, from a (gathered) :class:`OrbitErrors`: one host transfer for all of them."""
    finite = ~result.nonfinite
    err = result.errors.double()
    vals = err[finite]
    exact = result.exact.to(err.device)
    stats = {
        "error_mean": vals.mean() if vals.numel() else err.new_tensor(math.nan),
        "error_max": vals.max() if vals.numel() else err.new_tensor(math.nan),
        "error_p95": torch.quantile(vals, 0.95) if vals.numel() else err.new_tensor(math.nan),
        "nonfinite": result.nonfinite.double().mean(),
    }
    for name, mask in (("exact_error", exact), ("interp_error", ~exact)):
        sel = finite & mask.unsqueeze(0)
        if mask.any():
            stats[name] = err[sel].mean() if sel.any() else err.new_tensor(math.nan)
    if result.flips is not None:
        stats["flip_rate"] = result.flips.double().mean()
    keys = list(stats)
    values = torch.stack([stats[k].double().reshape(()) for k in keys]).cpu().tolist()
    return dict(zip(keys, values))


class EquivarianceMonitor(Callback):
    r"""Measure equivariance on a fixed probe set every ``every_n_epochs`` epochs (or ``every_n_train_steps`` steps).

    Each check measures every symmetry on the same probe inputs and group elements (drawn once from the *validation*
    data with ``torch.Generator(seed)``, never from the train loader), on the model's device, batched, in eval mode
    and with the model, optimizer, RNG streams and autocast/TF32 flags left exactly as they were (DESIGN §5.1). It
    logs, through every logger and into ``trainer.callback_metrics``::

        equivariance/<name>/error_mean | error_max | error_p95 | nonfinite | exact_error | interp_error | flip_rate
        equivariance/<name>/layer/<layer>            (layerwise=True: isolated error of each layer)
        equivariance/<name>/grad_input, grad_param/<param>   (gradients=True)

    and images ``equivariance/<name>/nero_aggregate | nero_individual | nero_dr | layers`` (rendered off the
    training thread; rank 0 only), appends a record to ``<log_dir>/eqmonitor/records.jsonl`` (+ the orbit matrices
    in ``.npz``), raises drift alerts, and hands the fresh values to any :class:`EquivarianceGuard`.

    Args:
        symmetries: a :class:`Symmetry`, a dict of :meth:`Symmetry.from_spec` arguments, or a list of them.
        every_n_epochs: check at the end of every n-th training epoch (``None``/0: never at epoch ends).
        every_n_train_steps: check every n optimizer steps (``None``/0: never); de-duplicated under accumulation.
        check_at_start: measure once before training (the "at initialisation" baseline of the drift alerts).
        n_samples: probe samples (shared out across ranks; every rank runs the same number of forwards).
        n_elements: group elements per check (finite groups of that order or less: all of them).
        seed: seed of the probe draw and of sampled elements.
        probe_data: inputs to probe instead of the validation data: a tensor, ``(x, y)``, a Dataset or a DataLoader.
        input_key, label_key: how to find inputs/labels in a batch (index or dict key) when the guess fails.
        layerwise: also run the layer-wise test (on ``layer_samples`` samples).
        gradients: also run the gradient test (needs labels for ``"cross_entropy"``).
        loss_fn: ``"cross_entropy"``, ``"mse"`` or ``fn(output, target)`` for the gradient test.
        layer_samples: samples used by the layer-wise and gradient tests (they are costlier than the orbit probe).
        plots: log NERO images.
        max_batch: ``"auto"`` or the largest (sample × element) batch per forward.
        drift_factor, drift_patience, drift_min, alert_wait: regression alerts (``factor``, ``patience``,
            ``min_value``, ``wait_duration`` of :class:`~eqmonitor.alerts.DriftTracker`).
        alert_keys: scalars whose drift alerts (names without the namespace, e.g. ``"error_mean"``).
        records: write ``records.jsonl`` and the orbit matrices.
        records_dir: where (default ``<trainer.log_dir or default_root_dir>/eqmonitor``).
        max_overhead: the largest share of fit wall time the monitor may take (its hooks plus figure rendering): a
            scheduled check is deferred to the next due one while the monitor is over budget (logged once; the
            decision is rank 0's, broadcast, so ranks never diverge), and a check's figures (~0.2 s each on a CPU,
            and rendering holds the GIL) are skipped while over budget. The check at start always runs. ``None``:
            run every scheduled check. With epochs of seconds, not minutes, the budget thins the checks out.

    Attributes:
        history: per symmetry, the list of checks (``global_step``, ``epoch``, scalars).
        probe: this rank's :class:`~eqmonitor.callbacks.probe_set.ProbeSet` once drawn.
        latest: per symmetry, the latest check's (gathered) results.

    Raises:
        ValueError, TypeError: at construction for bad arguments, at ``on_fit_start`` (one dry-run probe) for a
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
        layerwise: bool = False,
        gradients: bool = False,
        loss_fn: Union[str, Callable[[Tensor, Tensor], Tensor]] = "cross_entropy",
        layer_samples: int = 16,
        plots: bool = True,
        max_batch: Union[int, str] = "auto",
        drift_factor: float = 2.0,
        drift_patience: int = 1,
        drift_min: float = 1e-4,
        alert_wait: float = 300.0,
        alert_keys: Optional[list[str]] = None,
        records: bool = True,
        records_dir: Optional[str] = None,
        max_overhead: Optional[float] = 0.03,
    ) -> None:
        super().__init__()
        self.symmetries = resolve_symmetries(symmetries)
        if not every_n_epochs and not every_n_train_steps and not check_at_start:
            raise ValueError("Nothing would ever be checked: set `every_n_epochs` or `every_n_train_steps`.")
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"`{name}` must be a non-negative int or None, got {value!r}.")
        if n_samples < 1 or n_elements < 1 or layer_samples < 1:
            raise ValueError("`n_samples`, `n_elements` and `layer_samples` must be positive.")
        if isinstance(loss_fn, str) and loss_fn not in LOSSES:
            raise ValueError(f"Unknown `loss_fn` {loss_fn!r}; choose from {sorted(LOSSES)} or pass a callable.")
        if max_overhead is not None and not 0 < max_overhead <= 1:
            raise ValueError(f"`max_overhead` must be a fraction in (0, 1] or None, got {max_overhead!r}.")
        if not (max_batch == "auto" or (isinstance(max_batch, int) and max_batch > 0)):
            raise ValueError(f"`max_batch` must be 'auto' or a positive int, got {max_batch!r}.")
        self.every_n_epochs = every_n_epochs or 0
        self.every_n_train_steps = every_n_train_steps or 0
        self.check_at_start = check_at_start
        self.n_samples, self.n_elements, self.seed = n_samples, n_elements, seed
        self.probe_data, self.input_key, self.label_key = probe_data, input_key, label_key
        self.layerwise, self.gradients, self.layer_samples = layerwise, gradients, layer_samples
        self.loss_fn = LOSSES[loss_fn] if isinstance(loss_fn, str) else loss_fn
        self.plots, self.max_batch = plots, max_batch
        self.drift = DriftTracker(
            keys=list(alert_keys or ["error_mean"]),
            factor=drift_factor,
            patience=drift_patience,
            min_value=drift_min,
            wait_duration=alert_wait,
        )
        self.records, self.records_dir = records, records_dir
        self.max_overhead = max_overhead
        self.deferred = 0  # scheduled checks deferred by the overhead budget
        self.figures_skipped = 0  # checks whose figures were skipped because the previous ones were still rendering
        self._spent = 0.0  # seconds of monitor work: training-thread hooks and the figure worker
        self._fit_t0: Optional[float] = None
        self._considered_step: Optional[int] = None
        self._render_seconds = 1.0  # one symmetry's figures (measured after each render; ~0.2 s per figure on a CPU)
        self.history: dict[str, list[dict]] = {s.name: [] for s in self.symmetries}
        self.latest: dict[str, dict[str, Any]] = {}
        self.probe: Optional[ProbeSet] = None
        self._elements: dict[str, Tensor] = {}
        self._last_step: Optional[int] = None
        self._restored_step: Optional[int] = None
        self._writer: Any = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._pending: list[Future] = []
        self._warned_inference = False
        self._overlay: dict[str, list[tuple[int, OrbitErrors]]] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            symmetries=[s.name for s in self.symmetries],
            every_n_epochs=self.every_n_epochs,
            every_n_train_steps=self.every_n_train_steps,
            seed=self.seed,
        )

    # ------------------------------------------------------------------ set-up
    def _skip(self, trainer: Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._skip(trainer):
            return
        self._fit_t0 = time.perf_counter()
        try:
            self._set_up(trainer, pl_module)
        finally:
            self._spent += time.perf_counter() - self._fit_t0

    def _set_up(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.probe = self._draw_probe(trainer).to(pl_module.device)
        for sym in self.symmetries:
            gen = torch.Generator().manual_seed(self.seed)
            self._elements[sym.name] = default_elements(sym.group, self.n_elements, gen).to(pl_module.device)
            self._dry_run(pl_module, sym)
        if self.records and trainer.is_global_zero:
            from eqmonitor.records import RecordWriter

            self._writer = RecordWriter(self._records_dir(trainer))
            if self._restored_step is not None:
                self._writer.truncate_after(self._restored_step)
        if trainer.is_global_zero and self.plots:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eqmonitor-plots")

    def _records_dir(self, trainer: Trainer) -> str:
        if self.records_dir is not None:
            return self.records_dir
        base = trainer.log_dir or trainer.default_root_dir
        return os.path.join(base, "eqmonitor")

    def _draw_probe(self, trainer: Trainer) -> ProbeSet:
        rank, world = trainer.global_rank, trainer.world_size
        args = (self.n_samples, self.seed, rank, world, self.input_key, self.label_key)
        if self.probe_data is not None:
            return probe_from_data(self.probe_data, *args)
        source = trainer.fit_loop.epoch_loop.val_loop._data_source
        if not source.is_defined():
            raise ValueError(
                "EquivarianceMonitor draws its probe set from the validation data, and this fit has none: pass "
                "`val_dataloaders` / define `val_dataloader()`, or give the monitor `probe_data=`."
            )
        loaders = source.dataloader()
        if isinstance(loaders, dict):
            loaders = next(iter(loaders.values()))
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0]
        return probe_from_loader(loaders, *args)

    def _dry_run(self, model: LightningModule, sym: Symmetry) -> None:
        """One tiny probe, so a symmetry that does not fit fails here, with what to change, not mid-training."""
        probe, elements = self.probe, self._elements[sym.name][:2]
        try:
            orbit_errors(model, probe.x[:2], sym, elements, max_batch=4)
            if self.gradients:
                if probe.labels is None and self.loss_fn is LOSSES["cross_entropy"]:
                    raise ValueError(
                        "gradient tests with the cross-entropy loss need class labels in the probe batches; pass "
                        "`label_key=`, or `loss_fn=` that takes `(output, None)`."
                    )
                if torch.is_inference_mode_enabled():
                    raise RuntimeError("gradient tests cannot run under inference mode.")
        except (ValueError, TypeError, RuntimeError) as err:
            raise type(err)(f"EquivarianceMonitor: the symmetry {sym.name!r} does not fit this model: {err}") from err

    # ------------------------------------------------------------------ schedule
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.check_at_start and not self._skip(trainer) and self._last_step is None and trainer.global_step == 0:
            self._check(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        n = self.every_n_train_steps
        step = trainer.global_step
        if n and not self._skip(trainer) and step > 0 and step % n == 0 and step != self._last_step:
            self._scheduled_check(trainer, pl_module)

    def _epoch_due(self, trainer: Trainer) -> bool:
        n = self.every_n_epochs
        return bool(n) and not self._skip(trainer) and (trainer.current_epoch + 1) % n == 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The epoch's check runs after its last validation, before ``ModelCheckpoint`` (always ordered last) saves,
        so a checkpoint holds the check of its own step and a resumed run neither repeats nor loses one."""
        if trainer.is_last_batch and self._epoch_due(trainer) and trainer.global_step != self._last_step:
            self._scheduled_check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epoch_due(trainer) and trainer.global_step != self._last_step:  # epochs without validation
            self._scheduled_check(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._drain()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._drain()

    def _drain(self) -> None:
        """Wait for figures still being rendered/written, then stop the worker."""
        for fut in self._pending:
            err = fut.exception()
            if err is not None:
                log.warning("eqmonitor: a NERO figure failed to render or write: %s", err)
        self._pending = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def overhead(self) -> float:
        """The monitor's share of fit wall time so far (hooks on the training thread plus figure rendering)."""
        if self._fit_t0 is None:
            return 0.0
        return self._spent / max(time.perf_counter() - self._fit_t0, 1e-9)

    def _projected_overhead(self, n_symmetries: int) -> float:
        """The overhead share if this check's figures were rendered now (their cost: the last measured one)."""
        elapsed = max(time.perf_counter() - (self._fit_t0 or time.perf_counter()), 1e-9)
        return (self._spent + n_symmetries * self._render_seconds) / elapsed

    def _scheduled_check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run a scheduled check unless the overhead budget says to defer it (one decision per step, rank 0's)."""
        step = trainer.global_step
        if step == self._considered_step:
            return
        self._considered_step = step
        run = self.max_overhead is None or self.overhead() <= self.max_overhead
        if trainer.world_size > 1:
            run = bool(trainer.strategy.broadcast(run, src=0))
        if run:
            self._check(trainer, pl_module)
            return
        self.deferred += 1
        if self.deferred == 1:
            log.info(
                "eqmonitor: deferring a check at step %d: the monitor has taken %.1f%% of fit time, over "
                "`max_overhead=%g` (training steps are short next to a check); pass `max_overhead=None` to check "
                "on every schedule.",
                step,
                100 * self.overhead(),
                self.max_overhead,
            )

    # ------------------------------------------------------------------ one check
    def _check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        started = time.perf_counter()
        try:
            self._check_now(trainer, pl_module)
        finally:
            self._spent += time.perf_counter() - started

    def _check_now(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        self._last_step = step
        reports, figures = [], []
        for sym in self.symmetries:
            scalars, parts = self._measure(trainer, pl_module, sym)
            alerts = self.drift.update(sym.name, scalars, step, epoch)
            entry = {"global_step": step, "epoch": epoch, "time": time.time(), "metrics": scalars}
            self.history[sym.name].append(entry)
            keyed = {f"equivariance/{sym.name}/{k}": v for k, v in scalars.items()}
            keyed.update(parts["extra_scalars"])
            log_scalars(trainer, keyed, step)
            if trainer.is_global_zero:
                self._emit_alerts(trainer, alerts)
                figures.append((sym, entry, parts, alerts))
            reports.append(self._report_line(sym, scalars, parts))
        try:
            self._notify_guards(trainer, reports)  # may raise EquivarianceBreachError: the records are written first
        finally:
            breaches = self._breaches(trainer, step)
            for sym, entry, parts, alerts in figures:
                self._write_record(sym, entry, parts, alerts, breaches)
        if figures and self.max_overhead is not None and self._projected_overhead(len(figures)) > self.max_overhead:
            self.figures_skipped += 1  # over budget (e.g. the check at start): figures cost ~0.2 s each on a CPU
            return
        for sym, _, parts, _ in figures:  # after every probe of the check: rendering must not compete with probing
            self._submit_images(trainer, sym, parts, step)

    def _notify_guards(self, trainer: Trainer, reports: list[str]) -> None:
        from eqmonitor.callbacks.guard import EquivarianceGuard

        for cb in trainer.callbacks:
            if isinstance(cb, EquivarianceGuard):
                cb.evaluate(trainer, report="\n".join(reports), checked=[s.name for s in self.symmetries])

    @staticmethod
    def _breaches(trainer: Trainer, step: int) -> list[dict]:
        """What the guards did at ``step`` (warn, stop or raise, and why), for the records."""
        from eqmonitor.callbacks.guard import EquivarianceGuard

        guards = [cb for cb in trainer.callbacks if isinstance(cb, EquivarianceGuard)]
        return [g.last_breach for g in guards if g.last_breach and g.last_breach["global_step"] == step]

    def _measure(self, trainer: Trainer, model: LightningModule, sym: Symmetry) -> tuple[dict, dict]:
        probe, elements = self.probe, self._elements[sym.name]
        result = orbit_errors(model, probe.x, sym, elements, labels=probe.labels, max_batch=self.max_batch)
        result = _gather_result(trainer, result)
        scalars = summarize(result)
        parts: dict[str, Any] = {"orbit": result, "layers": None, "gradients": None, "extra_scalars": {}}
        ns = f"equivariance/{sym.name}"
        sub_x = probe.x[: self.layer_samples]
        sub_y = None if probe.labels is None else probe.labels[: self.layer_samples]
        sub_el = _layer_elements(sym, result, elements)
        if self.layerwise:
            layers = layer_errors(model, sub_x, sym, sub_el, max_batch=256)
            per_layer = _gather_mean(trainer, _nanmean_rows(layers.isolated))
            parts["layers"] = layers
            parts["layer_values"] = dict(zip(layers.names, per_layer))
            parts["extra_scalars"].update({f"{ns}/layer/{n}": v for n, v in parts["layer_values"].items()})
        if self.gradients:
            if torch.is_inference_mode_enabled():
                if not self._warned_inference:
                    self._warned_inference = True
                    warnings.warn(INFERENCE_SKIP, stacklevel=2)
            else:
                grads = gradient_errors(model, sub_x, sym, sub_el, self.loss_fn, sub_y)
                names = sorted(grads.params)
                stacked = torch.stack(
                    [grads.input.double().nanmean()] + [grads.params[n].double().nanmean() for n in names]
                )
                values = _gather_mean(trainer, stacked)
                parts["gradients"] = grads
                parts["extra_scalars"][f"{ns}/grad_input"] = values[0]
                parts["extra_scalars"].update({f"{ns}/grad_param/{n}": v for n, v in zip(names, values[1:])})
        self.latest[sym.name] = parts
        return scalars, parts

    def _report_line(self, sym: Symmetry, scalars: dict, parts: dict) -> str:
        text = f"{sym.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        layers: Optional[LayerErrors] = parts.get("layers")
        if layers is not None and layers.first_failing:
            text += f"; first failing layer: {layers.first_failing}"
        grads: Optional[GradientErrors] = parts.get("gradients")
        if grads is not None:
            broken = grads.broken_params()
            if broken:
                text += f"; parameters with asymmetric gradients: {', '.join(broken[:5])}"
        return text

    # ------------------------------------------------------------------ outputs (rank 0)
    def _emit_alerts(self, trainer: Trainer, alerts: list[Alert]) -> None:
        for alert in alerts:
            log.warning("%s: %s", alert.title, alert.text)
            warnings.warn(f"{alert.title}: {alert.text}", stacklevel=2)
            send_alert(trainer.loggers, alert.title, alert.text, alert.level, alert.wait_duration)

    def _write_record(self, sym: Symmetry, entry: dict, parts: dict, alerts: list[Alert], breaches: list) -> None:
        if self._writer is None:
            return
        record = {"symmetry": sym.name, **entry, "alerts": [a.to_dict() for a in alerts], "breaches": breaches}
        if parts.get("layer_values") is not None:
            record["layers"] = parts["layer_values"]
            record["first_failing_layer"] = parts["layers"].first_failing
        if parts.get("gradients") is not None:
            record["gradients"] = {k: v for k, v in parts["extra_scalars"].items() if "/grad_" in k}
        orbit: OrbitErrors = parts["orbit"]
        arrays = {
            "errors": orbit.errors,
            "nonfinite": orbit.nonfinite,
            "elements": orbit.elements,
            "exact": orbit.exact,
        }
        self._writer.append(record, {k: v.detach().cpu() for k, v in arrays.items()})

    def _submit_images(self, trainer: Trainer, sym: Symmetry, parts: dict, step: int) -> None:
        if self._executor is None:
            return
        orbit = parts["orbit"].cpu()
        overlay = self._overlay.setdefault(sym.name, [])
        overlay.append((step, orbit))
        del overlay[:-6]
        layers = parts.get("layers")
        layers = (
            None
            if layers is None
            else dataclasses.replace(layers, cumulative=layers.cumulative.cpu(), isolated=layers.isolated.cpu())
        )
        loggers = list(trainer.loggers)
        self._pending = [f for f in self._pending if not f.done()]
        busy = len(self._pending) >= len(self.symmetries)  # the previous check's figures are still rendering
        if busy and self.max_overhead is not None:  # under a budget, don't queue work behind work
            self.figures_skipped += 1
            return
        self._pending.append(self._executor.submit(self._timed_render, loggers, sym.name, list(overlay), layers, step))

    def _timed_render(self, *args: Any) -> None:
        started = time.perf_counter()
        try:
            _render_and_log(*args)
        finally:
            seconds = time.perf_counter() - started
            self._spent += seconds
            self._render_seconds = seconds

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n_samples": self.n_samples,
            "history": {k: list(v) for k, v in self.history.items()},
            "drift": self.drift.state_dict(),
            "last_step": self._last_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("seed", self.seed) != self.seed:
            warnings.warn(
                f"EquivarianceMonitor: the checkpoint's probe seed {state_dict['seed']} differs from this monitor's "
                f"{self.seed}; the resumed curves use a different probe set.",
                stacklevel=2,
            )
        for name, entries in state_dict.get("history", {}).items():
            self.history[name] = list(entries)
        self.drift.load_state_dict(state_dict.get("drift", {}))
        self._last_step = state_dict.get("last_step")
        self._restored_step = self._last_step


def _render_and_log(loggers: list, name: str, overlay: list, layers: Optional[LayerErrors], step: int) -> None:
    """Worker-thread job: draw the NERO figures, render each once to RGB, write to TensorBoard/W&B."""
    from eqmonitor.plots import nero
    from eqmonitor.plots.render import figure_to_array

    ns = f"equivariance/{name}"
    latest = overlay[-1][1]
    figures = {
        f"{ns}/nero_aggregate": nero.aggregate([r for _, r in overlay], labels=[f"step {s}" for s, _ in overlay]),
        f"{ns}/nero_individual": nero.individual(latest, sample=latest.worst()[0]),
    }
    if int((~latest.nonfinite).all(1).sum()) >= 3:  # PCA needs 3 samples with finite orbits
        figures[f"{ns}/nero_dr"] = nero.dimension_reduction(latest)
    if layers is not None:
        figures[f"{ns}/layers"] = nero.layer_table(layers)
    log_images(loggers, {k: figure_to_array(f) for k, f in figures.items()}, step)


def _gather_result(trainer: Trainer, result: OrbitErrors) -> OrbitErrors:
    """Every rank's ``[n, K]`` tables concatenated (same order on every rank); unchanged on one process."""
    if trainer.world_size <= 1:
        return result
    changes = {}
    for name in _SUMMARY_FIELDS:
        value = getattr(result, name)
        if value is None:
            continue
        gathered = trainer.strategy.all_gather(value)
        changes[name] = gathered.reshape(-1, *value.shape[1:])
    return dataclasses.replace(result, **changes)


def _gather_mean(trainer: Trainer, values: Tensor) -> list[float]:
    """Mean over ranks (equal shares) of a 1-D tensor of per-rank means; one host transfer."""
    values = values.double()
    if trainer.world_size > 1:
        values = trainer.strategy.all_gather(values).reshape(trainer.world_size, -1).nanmean(0)
    return values.cpu().tolist()


def _nanmean_rows(table: Tensor) -> Tensor:
    """``[L, N, K]`` → ``[L]`` mean over samples and elements, ignoring NaN (skipped pairs)."""
    return table.double().flatten(1).nanmean(1)


def _layer_elements(sym: Symmetry, result: OrbitErrors, elements: Tensor) -> Tensor:
    """Elements for the costlier layer-wise and gradient tests: the exact ones (at most 8) if any, else 8 spread."""
    exact = result.exact.to(elements.device)
    chosen = elements[exact] if exact.any() else elements
    if chosen.shape[0] > 8:
        chosen = chosen[torch.linspace(0, chosen.shape[0] - 1, 8).round().long().to(chosen.device)]
    return chosen
