"""Sinks: fan a check's scalars, images and alerts out to every logger of a Lightning ``Trainer``.

Scalars go through ``logger.log_metrics`` of each logger in ``trainer.loggers`` (TensorBoard, W&B, CSV, MLflow, …) on
Lightning's step axis, and into ``trainer.callback_metrics`` so ``EarlyStopping``, ``ModelCheckpoint`` and
:class:`~eqmonitor.callbacks.EquivarianceGuard` can watch them. Images are PNG files already encoded by the figure
worker (:class:`~eqmonitor.plots.png.EncodedImage`), written as they are, or RGB ``uint8 [H, W, 3]`` arrays:
TensorBoard gets an image summary through the writer's event file (arrays: ``add_image(..., dataformats="HWC")``),
W&B gets ``wandb.Image`` of the PNG file (no re-encoding); loggers without images are skipped. Alerts go to
``wandb.alert``.

W&B also gets each check's aggregate NERO curve as data (:func:`log_check`), so that its own UI overlays runs: a
``wandb.Table`` ``equivariance/<name>/nero_aggregate_table`` (one row per element: ``element``, ``x``,
``error_mean``, ``error_max``, ``error_std``, ``exact``, and ``consensus_error_mean`` with
``reference="consensus"``) and a ``wandb.plot.line_series`` chart ``equivariance/<name>/nero_aggregate_curve`` of
the same curves over ``x``. TensorBoard compares runs by their folders: put them side by side in one logdir with
names that say the strategy, ``TensorBoardLogger(root, name="study", version=tag)``.
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

__all__ = ["aggregate_table", "log_check", "log_images", "log_scalars", "send_alert"]

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


def aggregate_table(result: Any) -> tuple[list[str], list[list], str]:
    """``(columns, rows, x label)`` of a check's aggregate NERO curve, one row per element (see the module
    docstring): ``x`` is the angle in degrees for rotation groups, the parameter of other one-parameter groups,
    else the element's index."""
    orbit = result.orbit
    group, elements = orbit.group, orbit.elements.detach().cpu()
    summary = result.summary
    columns = ["element", "x", "error_mean", "error_max", "error_std", "exact"]
    values = [summary.per_element_mean, summary.per_element_max, summary.per_element_std]
    if result.consensus is not None:
        from eqmonitor.summary import summarize

        columns.append("consensus_error_mean")
        values.append(summarize(result.consensus).per_element_mean)
    angle = getattr(group, "angle", None)
    if group.layout == "circle" and group.param_dim == 1:
        x, xlabel = torch.rad2deg(angle(elements) if callable(angle) else elements[:, 0].double()), "angle (degrees)"
    elif group.param_dim == 1:
        x, xlabel = elements[:, 0].double(), group.param_names[0]
    else:
        x, xlabel = torch.arange(len(elements), dtype=torch.float64), "element index"
    curves = torch.stack([v.detach().to("cpu", torch.float64) for v in values], 1).tolist()
    exact = orbit.exact.detach().cpu().tolist()
    rows = [[group.describe(e), float(xk), *curve[:3], bool(ex), *curve[3:]]
            for e, xk, curve, ex in zip(elements, x.tolist(), curves, exact)]  # fmt: skip
    return columns, rows, xlabel


def log_check(trainer: Any, result: Any, step: int) -> None:
    """One check's scalars to every logger (:func:`log_scalars`) and, on rank 0, its aggregate NERO curve to every
    W&B logger as a ``wandb.Table`` and a ``wandb.plot.line_series`` chart (see the module docstring)."""
    log_scalars(trainer, result.logged(), step)
    loggers = [lg for lg in trainer.loggers if _is_wandb(lg)] if trainer.is_global_zero else []
    if not loggers:
        return
    import wandb

    columns, rows, xlabel = aggregate_table(result)
    order = sorted(range(len(rows)), key=lambda i: rows[i][1])
    curves = [c for c in columns if c.endswith("error_mean")]
    ys = [[rows[i][columns.index(c)] for i in order] for c in curves]
    ns = f"equivariance/{result.symmetry}"
    for logger in loggers:
        chart = wandb.plot.line_series([rows[i][1] for i in order], ys, keys=curves, xname=xlabel,
                                       title=f"{result.symmetry}: aggregate NERO curve at step {step}")  # fmt: skip
        table = wandb.Table(columns=columns, data=rows)
        logger.experiment.log({f"{ns}/nero_aggregate_table": table, f"{ns}/nero_aggregate_curve": chart,
                               "trainer/global_step": step})  # fmt: skip
