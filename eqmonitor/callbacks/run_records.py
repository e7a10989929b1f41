"""The monitor's records: every check of this run appended to its own folder (rank 0), resumable.

A fresh run opens a folder of its own (see :mod:`~eqmonitor.callbacks.records_folder`) and refuses one that holds
another run's records. A run resumed from a checkpoint at step ``S`` continues its history: in the same folder the
checks the dead run wrote after ``S`` are cut; in a new folder (a new logger version, TensorBoard's default) the
checks up to ``S`` are carried over from the old one, so the new folder alone holds the complete history, each step
once.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional

from eqmonitor.check import CheckResult

__all__ = ["RunRecords", "record_of"]


def record_of(result: CheckResult, entry: dict, alerts: list, breaches: list) -> tuple[dict, dict]:
    """The JSON record and the arrays (``errors``, ``nonfinite``, ``elements``, ``exact``) of one check."""
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
    return record, {k: v.detach().cpu() for k, v in arrays.items()}


class RunRecords:
    """Rank 0's writer of one run's records.

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

    def append(self, result: CheckResult, entry: dict, alerts: list, breaches: list) -> None:
        record, arrays = record_of(result, entry, alerts, breaches)
        self._writer.append(record, arrays)

    @staticmethod
    def open(trainer: Any, enabled: bool, folder: Optional[str], **kw: Any) -> Optional["RunRecords"]:
        """The writer on rank 0 when records are on, else ``None``."""
        if not enabled or folder is None or not trainer.is_global_zero:
            return None
        return RunRecords(folder, **kw)
