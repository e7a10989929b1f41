"""The monitor's records: every check of this run appended to its own folder (rank 0), resumable.

A fresh run opens a folder of its own (see :mod:`~eqmonitor.callbacks.records_folder`) and refuses one that holds
another run's records. A run resumed from a checkpoint at step ``S`` continues its history: in the same folder the
checks the dead run wrote after ``S`` are cut; in a new folder (a new logger version, TensorBoard's default) the
checks up to ``S`` are carried over from the old one, so the new folder alone holds the complete history, each step
once.
"""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import torch
from torch import Tensor

from eqmonitor.check import CheckResult

__all__ = ["MAX_PROB_VALUES", "RunRecords", "bounded_probs", "record_of"]

#: class probabilities kept per check (float16): past it, each pair keeps only its most probable classes
MAX_PROB_VALUES = 1_000_000


def bounded_probs(probs: Tensor, budget: int = MAX_PROB_VALUES) -> dict[str, Tensor]:
    """``probs [N, K, C]`` as float16, or, when ``N·K·C > budget``, the ``k = budget // (N·K)`` most probable
    classes of each pair (``probs [N, K, k]`` and their ``probs_classes [N, K, k]``), so a check stays bounded."""
    n, k, c = probs.shape
    keep = max(1, budget // max(1, n * k))
    if keep >= c:
        return {"probs": probs.half()}
    values, classes = probs.nan_to_num(-1.0).topk(keep, dim=-1)
    values = values.masked_fill(values < 0, float("nan"))
    return {"probs": values.half(), "probs_classes": classes.to(torch.int32)}


def record_of(result: CheckResult, entry: dict, alerts: list, breaches: list) -> tuple[dict, dict]:
    """The JSON record and the arrays of one check: ``errors``, ``nonfinite``, ``elements``, ``exact`` and, for class
    scores, ``flips``, ``top1`` and (when kept) ``probs``; with labels ``confidence`` and ``confidence_ref``; with
    ``reference="consensus"`` ``consensus_errors`` (and ``"reference": "consensus"`` in the record, whose
    ``metrics`` hold the ``consensus_*`` scalars)."""
    record = {
        "symmetry": result.symmetry,
        **entry,
        "alerts": [a.to_dict() for a in alerts],
        "breaches": breaches,
    }
    if result.layers is not None:
        record["layers"] = dict(result.layer_values)
        record["first_failing_layer"] = result.layers.first_failing
    if result.gradients is not None:
        ns = f"equivariance/{result.symmetry}"
        record["gradients"] = {f"{ns}/{k}": v for k, v in result.gradient_values.items()}
    orbit = result.orbit
    arrays = {"errors": orbit.errors, "nonfinite": orbit.nonfinite, "elements": orbit.elements, "exact": orbit.exact}
    small = {"flips": orbit.flips, "confidence": orbit.confidence, "confidence_ref": orbit.confidence_ref}
    arrays.update({k: v.float() for k, v in small.items() if v is not None})
    if orbit.top1 is not None:
        arrays["top1"] = orbit.top1.to(torch.int32)
    if orbit.probs is not None:
        arrays.update(bounded_probs(orbit.probs))
    if result.consensus is not None:  # reference="consensus": the errors against the consensus, [N, K]
        record["reference"] = "consensus"
        arrays["consensus_errors"] = result.consensus.errors
    return record, {k: v.detach().cpu() for k, v in arrays.items()}


def _gathered(t: Optional[Tensor], gather: Any) -> Optional[Tensor]:
    return None if t is None else gather(t).flatten(0, 1)


def symmetry_spec(sym: Any) -> dict:
    """What the records say of a symmetry: its group (by spec name, to rebuild it), actions and error."""
    return {
        "group": sym.group.name,
        "group_repr": repr(sym.group),
        "input": repr(sym.input_action),
        "output": repr(sym.output_action),
        "error": sym.error_name,
    }


class RunRecords:
    """Rank 0's writer of one run's records.

    A check's record is built on the caller (its tensors moved to the CPU), then written and ``fsync``'d on one
    background thread, in order, so the disk never stalls training (compression and ``fsync`` release the GIL).
    :meth:`flush` waits for every write and raises the first one that failed; the monitor flushes before every
    checkpoint is saved (a checkpoint never names a check whose record is not on disk), before a guard raises, and
    at the end of the fit.

    Args:
        folder: this run's records folder.
        run_id: the run's identity (kept in the checkpoint, so a resumed run is the same run).
        restored_step: the checkpoint's last checked step when resuming, else ``None``.
        restored_folder: the folder the checkpointed run wrote to, when resuming.
    """

    def __init__(
        self, folder: str, run_id: str, restored_step: Optional[int] = None, restored_folder: Optional[str] = None
    ) -> None:
        from eqmonitor.records import RecordWriter, carry_over

        self.folder = folder
        resume = restored_step is not None
        if resume and restored_folder and os.path.abspath(restored_folder) != os.path.abspath(folder):
            if os.path.isdir(restored_folder):
                carry_over(restored_folder, folder, restored_step, run_id)
            else:
                warnings.warn(
                    f"eqmonitor: the resumed run's records folder {restored_folder!r} is gone; the new folder "
                    f"{folder!r} holds the checks from step {restored_step} on only.",
                    stacklevel=2,
                )
        self._writer = RecordWriter(folder, run_id=run_id, resume=resume)
        if resume:
            self._writer.truncate_after(restored_step)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: list[Future] = []

    def append(self, result: CheckResult, entry: dict, alerts: list, breaches: list) -> None:
        """Queue one check's record (written in the background; a failed earlier write is raised here)."""
        self._raise_failed(wait=False)
        record, arrays = record_of(result, entry, alerts, breaches)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eqmonitor-records")
        self._pending.append(self._pool.submit(self._writer.append, record, arrays))

    def flush(self) -> None:
        """Wait until every queued record is on disk; raise the first write that failed."""
        self._raise_failed(wait=True)

    def close(self, quiet: bool = False) -> None:
        """:meth:`flush`, then stop the background thread (a later :meth:`append` starts a new one); ``quiet``
        logs a failed write instead of raising it."""
        try:
            self.flush()
        except RuntimeError as err:
            if not quiet:
                raise
            logging.getLogger("eqmonitor").error("%s", err)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _raise_failed(self, wait: bool) -> None:
        done = [f for f in self._pending if wait or f.done()]
        self._pending = [f for f in self._pending if f not in done]
        errors = [f.exception() for f in done]  # waits for each, in order
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise RuntimeError(f"eqmonitor: writing a check's record to {self.folder} failed: {first}") from first

    def __getstate__(self) -> dict:  # a thread pool does not pickle; a copy starts its own
        self.flush()
        return {**self.__dict__, "_pool": None, "_pending": []}

    def write_run(self, meta: dict) -> None:
        """Write the run's probe set, elements and metadata (:func:`eqmonitor.records_meta.write_meta`)."""
        from eqmonitor.records_meta import write_meta

        write_meta(self.folder, **meta)

    @staticmethod
    def run_meta(trainer: Any, pl_module: Any, probe: Any, symmetries: list, elements: dict, **kw: Any) -> dict:
        """The arguments of :meth:`write_run`: the whole probe (gathered over ranks: every rank must call this),
        the elements, each symmetry's spec, the model class, ``hparams`` and the global seed, plus ``kw``."""
        gather = (lambda t: t.unsqueeze(0)) if trainer.world_size <= 1 else trainer.strategy.all_gather
        model = type(pl_module)
        seed = os.environ.get("PL_GLOBAL_SEED")
        hparams = getattr(pl_module, "hparams", None)
        return {
            "x": _gathered(probe.x, gather),
            "labels": _gathered(probe.labels, gather),
            "indices": probe.indices if trainer.world_size <= 1 else None,
            "elements": elements,
            "symmetries": {s.name: {**symmetry_spec(s), "n_elements": len(elements[s.name])} for s in symmetries},
            "model_class": f"{model.__module__}.{model.__qualname__}",
            "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
            "hparams": dict(hparams) if hparams is not None else {},
            **kw,
        }

    @staticmethod
    def start(
        trainer: Any,
        pl_module: Any,
        probe: Any,
        symmetries: list,
        elements: dict,
        folder: Optional[str],
        run_id: str,
        restored: dict,
        **meta: Any,
    ) -> Optional["RunRecords"]:
        """Open the run's writer (rank 0) and write its probe set and metadata; ``folder=None``: records off.

        Every rank must call it: the probe is gathered across ranks. ``restored`` is what the monitor's
        ``load_state_dict`` kept (``last_step``, ``records_dir``) when resuming, else empty."""
        if folder is None:
            return None
        info = RunRecords.run_meta(trainer, pl_module, probe, symmetries, elements, **meta)
        if not trainer.is_global_zero:
            return None
        writer = RunRecords(folder, run_id, restored.get("last_step"), restored.get("records_dir"))
        writer.write_run(info)
        return writer
