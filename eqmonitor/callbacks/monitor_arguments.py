r"""
Monitor arguments
^^^^^^^^^^^^^^^^^

The checks of :class:`~eqmonitor.callbacks.EquivarianceMonitor`'s arguments, at construction: each bad value is an
:class:`~eqmonitor.callbacks.breach.EquivarianceConfigError` that says what to change.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from eqmonitor.callbacks.breach import EquivarianceConfigError
from eqmonitor.check import LOSSES
from eqmonitor.functional import REFERENCES
from eqmonitor.functional._chunking import check_chunking

__all__ = ["check_monitor_arguments"]


def check_monitor_arguments(
    every_n_epochs: Optional[int],
    every_n_train_steps: Optional[int],
    check_at_start: bool,
    counts: dict[str, int],
    drift_warmup: int,
    loss_fn: Any,
    max_batch: Any,
    chunking: str,
    tag: Optional[str],
    reference: str = "identity",
    symmetries: Sequence[Any] = (),
) -> None:
    """Raise for arguments that cannot work (``counts``: the arguments that must be positive, by name)."""
    if not every_n_epochs and not every_n_train_steps and not check_at_start:
        raise EquivarianceConfigError("Nothing would ever be checked: set `every_n_epochs` or `every_n_train_steps`.")
    for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise EquivarianceConfigError(f"`{name}` must be a non-negative int or None, got {value!r}.")
    bad = [name for name, value in counts.items() if value < 1]
    if bad:
        raise EquivarianceConfigError(f"{', '.join(f'`{n}`' for n in bad)} must be positive, got {counts}.")
    if drift_warmup < 0:
        raise EquivarianceConfigError(f"`drift_warmup` must be a non-negative number of epochs, got {drift_warmup!r}.")
    if isinstance(loss_fn, str) and loss_fn not in LOSSES:
        raise EquivarianceConfigError(
            f"Unknown `loss_fn` {loss_fn!r}; choose from {sorted(LOSSES)} or pass a callable."
        )
    if not (max_batch == "auto" or (isinstance(max_batch, int) and max_batch > 0)):
        raise EquivarianceConfigError(f"`max_batch` must be 'auto' or a positive int, got {max_batch!r}.")
    check_chunking(chunking)
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise TypeError(f"`tag` must be a non-empty string or None, got {tag!r}.")
    if not (isinstance(reference, str) and reference in REFERENCES):
        raise EquivarianceConfigError(
            f"`reference` must be one of {REFERENCES}, got {reference!r}: 'identity' (the default) measures each "
            "output against the model's own output at the identity, 'consensus' also against the orbit's consensus."
        )
    labelled = [s.name for s in symmetries if reference == "consensus" and s.needs_labels]
    if labelled:
        raise EquivarianceConfigError(
            f"`reference='consensus'` stands in for labels, but {', '.join(map(repr, labelled))} measure the "
            "`confidence` error, which needs them: give those symmetries an error such as 'kl', 'flip' or 'relative'."
        )
