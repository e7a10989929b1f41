"""Sinks: fan a check's scalars, images and alerts out to every logger of a Lightning ``Trainer``.

Scalars go through ``logger.log_metrics`` of each logger in ``trainer.loggers`` (TensorBoard, W&B, CSV, MLflow, …) on
Lightning's step axis, and into ``trainer.callback_metrics`` so ``EarlyStopping``, ``ModelCheckpoint`` and
:class:`~eqmonitor.callbacks.EquivarianceGuard` can watch them. Images are RGB ``uint8 [H, W, 3]`` arrays rendered
once (``wandb.Image`` of a matplotlib figure needs pyplot): TensorBoard gets ``add_image(...,
dataformats="HWC")``, W&B gets ``wandb.Image``; loggers without images are skipped. Alerts go to ``wandb.alert``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import torch

__all__ = ["log_images", "log_scalars", "send_alert"]

log = logging.getLogger("eqmonitor")


def _is_tensorboard(logger: Any) -> bool:
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


def _is_wandb(logger: Any) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def log_scalars(trainer: Any, metrics: dict[str, float], step: int) -> None:
    """Send ``metrics`` to every logger (rank 0 only, as Lightning's loggers are) and to ``callback_metrics``."""
    if not metrics:
        return
    trainer.callback_metrics.update({k: torch.tensor(v, dtype=torch.float32) for k, v in metrics.items()})
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(dict(metrics), step=step)


def log_images(loggers: Iterable[Any], images: dict[str, np.ndarray], step: int) -> None:
    """Write ``images`` (key → RGB ``uint8 [H, W, 3]``) to the TensorBoard and W&B loggers among ``loggers``."""
    for logger in loggers:
        if _is_tensorboard(logger):
            for key, image in images.items():
                logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
            logger.experiment.flush()
        elif _is_wandb(logger):
            import wandb

            payload = {key: wandb.Image(image) for key, image in images.items()}
            payload["trainer/global_step"] = step
            logger.experiment.log(payload)


def send_alert(
    loggers: Iterable[Any], title: str, text: str, level: str = "WARN", wait_duration: float = 300.0
) -> None:
    """``wandb.alert`` through every W&B logger (call on rank 0). The caller mirrors it as a warning and a log line."""
    for logger in loggers:
        if _is_wandb(logger):
            import wandb

            level_enum = getattr(wandb.AlertLevel, level.upper(), wandb.AlertLevel.WARN)
            try:
                # W&B reads a zero wait as "use the default minute" (`wait_duration or timedelta(minutes=1)`)
                wait = max(float(wait_duration), 1e-3)
                logger.experiment.alert(title=title, text=text, level=level_enum, wait_duration=wait)
            except Exception as err:  # an alert must never kill the run it reports on
                log.warning("eqmonitor: could not send the W&B alert %r: %s", title, err)
