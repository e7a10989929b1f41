"""Where a run's records live: a folder of its own per run, resolved once on rank 0 and broadcast to every rank.

- ``records_dir`` given: that folder (a fresh run refuses one that holds another run's records).
- TensorBoard or CSV logger: ``<logger.log_dir>/eqmonitor_records`` (the logger's version folder, new per run).
- W&B logger: ``<save_dir>/eqmonitor_records/<run id>``.
- another logger: ``<logger.log_dir>/eqmonitor_records`` if it has one, else
  ``<save_dir or default_root_dir>/eqmonitor_records/<name>-<version>``.
- no logger: ``<default_root_dir>/eqmonitor_records/version_<n>``, the next free ``n``.

The folder is never named ``eqmonitor``: next to a user's script (the default root is the working directory) such a
folder would shadow the installed package.

Under DDP, ``trainer.log_dir`` is a collective (a broadcast): called on one rank only it deadlocks. So this module
never calls it: rank 0 reads its own loggers, and the path reaches the other ranks through one
``strategy.broadcast`` that every rank makes.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

__all__ = ["RECORDS_FOLDER", "records_folder"]

RECORDS_FOLDER = "eqmonitor_records"
_VERSION = re.compile(r"^version_(\d+)$")


def _next_version(base: str) -> str:
    """``<base>/version_<n>`` with ``n`` one above the highest existing (0 for a new base)."""
    taken = [int(m.group(1)) for m in map(_VERSION.match, os.listdir(base) if os.path.isdir(base) else []) if m]
    return os.path.join(base, f"version_{max(taken) + 1 if taken else 0}")


def _rank_zero_folder(trainer: Any) -> str:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    root = trainer.default_root_dir
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        return _next_version(os.path.join(root, RECORDS_FOLDER))
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return os.path.join(logger.log_dir, RECORDS_FOLDER)
    if isinstance(logger, WandbLogger):
        return os.path.join(logger.save_dir or root, RECORDS_FOLDER, str(logger.experiment.id))
    log_dir = getattr(logger, "log_dir", None)
    if isinstance(log_dir, str):
        return os.path.join(log_dir, RECORDS_FOLDER)
    tag = f"{logger.name}-{logger.version}".replace(os.sep, "_")
    return os.path.join(logger.save_dir or root, RECORDS_FOLDER, tag)


def records_folder(trainer: Any, records_dir: Optional[str] = None) -> str:
    """This run's records folder (absolute). Every rank must call it at the same point (it broadcasts)."""
    path: Optional[str] = None
    if trainer.is_global_zero:
        path = os.path.abspath(records_dir if records_dir is not None else _rank_zero_folder(trainer))
    if trainer.world_size > 1:
        path = trainer.strategy.broadcast(path, src=0)
    assert path is not None
    return path
