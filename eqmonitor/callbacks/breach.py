r"""
Breaches
^^^^^^^^

What :class:`~eqmonitor.callbacks.EquivarianceGuard` raises, warns and records, and why it acted: the exceptions, the
warning class, the :class:`BreachReason` enum (as Lightning's ``EarlyStoppingReason``), the configuration error, and
the two pieces of text the guard builds (a missing key's message, and why Lightning defers a stop).
"""

from __future__ import annotations

import difflib
import re
from enum import Enum
from typing import Callable, Optional

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer

__all__ = [
    "BreachReason",
    "EquivarianceBreachError",
    "EquivarianceBreachWarning",
    "EquivarianceConfigError",
    "UnloggedKeyError",
    "lightning_defers_stop",
    "missing_keys_message",
    "symmetry_of",
]

PREFIX = "equivariance/"


class BreachReason(Enum):
    """Why the guard last acted (:attr:`EquivarianceGuard.breach_reason`)."""

    NOT_BREACHED = 0
    THRESHOLD = 1  # a watched value above its threshold
    NON_FINITE = 2  # a watched value, or the probe's model outputs, NaN/Inf (``check_finite``)


class EquivarianceBreachError(RuntimeError):
    """Raised on every rank by :class:`EquivarianceGuard` with ``on_breach="raise"``; the message holds the report."""


class EquivarianceBreachWarning(UserWarning):
    """Issued (on rank 0) by :class:`EquivarianceGuard` with ``on_breach="warn"``: filter it like any warning."""


class EquivarianceConfigError(MisconfigurationException, ValueError):
    """A callback argument that cannot work, raised at construction. Also a ``ValueError``, which the callbacks
    raised for this before."""


class UnloggedKeyError(EquivarianceConfigError):
    """A watched key that nothing logged where it should have been (a typo guards nothing)."""


def symmetry_of(key: str) -> Optional[str]:
    """``"c4"`` for ``"equivariance/c4/error_mean"``; ``None`` for keys outside the monitor's namespace."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] + "/" == PREFIX else None


_MONITOR_FIELD = re.compile(r"(error_\w+|exact_error|interp_error|flip_rate|nonfinite|layer/.+|grad_.+|consensus_.+)")


def misspelt_monitor_key(key: str, monitored: set[str]) -> bool:
    """Whether ``key`` is a monitor's field (``equivariance/<symmetry>/error_mean``, ...) under a near miss of a
    monitored symmetry (``C4`` for ``c4``, ``rotaton`` for ``rotation``): a typo that can be named at the first
    check. Keys under other names may be the user's own ``self.log`` and wait for validation."""
    sym = symmetry_of(key)
    if sym is None or sym in monitored or not _MONITOR_FIELD.fullmatch(key.split("/", 2)[2]):
        return False
    lowered = {m.lower() for m in monitored}
    return sym.lower() in lowered or bool(difflib.get_close_matches(sym, list(monitored), n=1, cutoff=0.8))


def missing_keys_message(
    logged: list[str], missing: list[str], when: str, monitored: list[str], is_monitor_key: Callable[[str], bool]
) -> str:
    """The :class:`UnloggedKeyError` text: each missing key with its closest logged match, and the logged keys."""
    lines = []
    for key in missing:
        match = difflib.get_close_matches(key, logged, n=1)
        line = f"  {key!r}" + (f": did you mean {match[0]!r}?" if match else "")
        if symmetry_of(key) is not None and not is_monitor_key(key):
            line += f" (no EquivarianceMonitor measures {symmetry_of(key)!r}; " + (
                f"the attached one measures {monitored})" if monitored else "none is attached to this guard)"
            )
        lines.append(line)
    shown = logged[:40] + ([f"... and {len(logged) - 40} more"] if len(logged) > 40 else [])
    return (
        f"EquivarianceGuard watches keys that nothing logged {when}:\n" + "\n".join(lines) + f"\nLogged keys: "
        f"{shown}. Fix the key (keys match exactly), or pass `strict=False` to allow keys that appear later."
    )


def lightning_defers_stop(trainer: Trainer) -> Optional[str]:
    """Why Lightning will not honour ``should_stop`` at its next chance, else ``None``. Lightning 2.6 stops when
    ``should_stop`` and ``fit_loop._can_stop_early`` (epochs processed ≥ ``min_epochs``, step ≥ ``min_steps``),
    checked after each batch and each epoch (an epoch whose last batch ran counts); else it logs "Trainer was
    signaled to stop but ..." and goes on, ``should_stop`` staying set, so the fit stops once both are met."""
    loop, epochs = trainer.fit_loop, trainer.fit_loop.epoch_progress.current
    processed = epochs.processed + int(trainer.is_last_batch and epochs.processed == epochs.completed)
    min_epochs, min_steps = loop.min_epochs or 0, loop.min_steps or 0
    if processed >= min_epochs and trainer.global_step >= min_steps:
        return None
    return (
        f"Trainer(min_epochs={min_epochs}, min_steps={min_steps}) not met yet ({processed} epoch(s), step "
        f"{trainer.global_step}); the fit stops once they are"
    )
