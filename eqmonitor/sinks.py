"""Sinks: fan a check's scalars, images and alerts out to every logger of a Lightning ``Trainer``.

Scalars go through ``logger.log_metrics`` of each logger in ``trainer.loggers`` (TensorBoard, W&B, CSV, MLflow, …) on
Lightning's step axis, and into ``trainer.callback_metrics`` so ``EarlyStopping``, ``ModelCheckpoint`` and
:class:`~eqmonitor.callbacks.EquivarianceGuard` can watch them. Images are PNG files already encoded by the figure
worker (:class:`~eqmonitor.plots.png.EncodedImage`), written as they are, or RGB ``uint8 [H, W, 3]`` arrays:
TensorBoard gets an image summary through the writer's event file (arrays: ``add_image(..., dataformats="HWC")``),
W&B gets ``wandb.Image`` of the PNG file (no re-encoding); loggers without images are skipped. Alerts go to
``wandb.alert``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from typing import Any, Iterable, Optional, Union

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


def _encoded(image: Any) -> bool:
    return isinstance(getattr(image, "png", None), bytes)


def _tensorboard_images(writer: Any, images: dict, step: int) -> None:
    """Pre-encoded images as TensorBoard image summaries, through the writer's event file (no decoding, no
    re-encoding); arrays through ``add_image``."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    # torch's SummaryWriter writes tensorboard's own protos; another writer (tensorboardX) gets decoded arrays
    native = type(writer).__module__.startswith("torch.utils.tensorboard") and hasattr(writer, "_get_file_writer")
    file_writer = writer._get_file_writer() if native else None
    for key, image in images.items():
        if _encoded(image) and not native:
            writer.add_image(key, np.asarray(image), global_step=step, dataformats="HWC")
        elif _encoded(image):
            proto = Summary.Image(height=image.height, width=image.width, colorspace=3, encoded_image_string=image.png)
            file_writer.add_summary(Summary(value=[Summary.Value(tag=key, image=proto)]), step)
        else:
            writer.add_image(key, image, global_step=step, dataformats="HWC")
    writer.flush()


_PNG_DIR: Optional[str] = None


def _png_file(key: str, step: int, png: bytes) -> str:
    """``png`` written to a file of this process's temporary folder (removed at exit), for ``wandb.Image(path)``."""
    global _PNG_DIR
    if _PNG_DIR is None or not os.path.isdir(_PNG_DIR):
        _PNG_DIR = tempfile.mkdtemp(prefix="eqmonitor-figures-")
        atexit.register(shutil.rmtree, _PNG_DIR, True)
    fd, path = tempfile.mkstemp(prefix=f"{key.replace('/', '_')}_{step}_", suffix=".png", dir=_PNG_DIR)
    with os.fdopen(fd, "wb") as fh:
        fh.write(png)
    return path


def _wandb_image(key: str, step: int, image: Any) -> Any:
    """``wandb.Image`` of a pre-encoded PNG (from its file: W&B keeps the bytes) or of an array."""
    import wandb

    if not _encoded(image):
        return wandb.Image(image)
    out = wandb.Image(_png_file(key, step, image.png))
    if hasattr(out, "_is_tmp"):  # ours to give away: W&B moves the file into the run (as for its own temporaries)
        out._is_tmp = True
    return out


def log_images(loggers: Iterable[Any], images: dict[str, Union[np.ndarray, Any]], step: int) -> None:
    """Write ``images`` (key → :class:`~eqmonitor.plots.png.EncodedImage` or RGB ``uint8 [H, W, 3]`` array) to the
    TensorBoard and W&B loggers among ``loggers``."""
    for logger in loggers:
        if _is_tensorboard(logger):
            _tensorboard_images(logger.experiment, images, step)
        elif _is_wandb(logger):
            payload = {key: _wandb_image(key, step, image) for key, image in images.items()}
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
