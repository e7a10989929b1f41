"""The detection example: boxes fit the generated squares and move with them under the training jitter, the config
parses, and through a real Trainer with the monitor at its defaults the model trained with 100% jitter ends more
translation-equivariant than the one trained on centred objects (NERO §3.1's finding)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import eqmonitor as eqm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/

detection = pytest.importorskip("detection")

SPEC = {
    "name": "translation", "group": "translation", "input": "image", "output": "boxes",
    "output_kwargs": {"image_size": [32, 32]},
}  # fmt: skip


def _pixel_boxes(images: torch.Tensor) -> torch.Tensor:
    """The box around each noise-free image's lit pixels, in the example's frame."""
    boxes = []
    for img in images[:, 0]:
        rows, cols = torch.nonzero(img > 0.5, as_tuple=True)
        boxes.append([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
    return torch.tensor(boxes)


def test_boxes_fit_the_squares_and_move_with_them_under_jitter():
    images, boxes = detection.make_detection_images(16, noise=0.0, seed=4)
    torch.testing.assert_close(_pixel_boxes(images), boxes)
    images, boxes = detection.make_detection_images(16, noise=0.0, centred=True, seed=4)  # as in training
    assert (((boxes[:, :2] + boxes[:, 2:]) / 2 - 15.5).abs() <= 0.5).all()
    model = detection.BoxRegressor(jitter=1.0)
    assert model.shift == detection.max_offset(32, 8) == 11
    torch.manual_seed(0)
    moved_images, moved_boxes = model.jittered(images, boxes)
    assert not torch.equal(moved_boxes, boxes)
    torch.testing.assert_close(_pixel_boxes(moved_images), moved_boxes)
    assert detection.BoxRegressor(jitter=0.0).jittered(images, boxes) == (images, boxes)
    with pytest.raises(ValueError, match="jitter"):
        detection.BoxRegressor(jitter=1.5)


def test_config_parses_into_the_monitor_and_the_model():
    cli = detection.main(["--config", str(CONFIGS / "detection.yaml"), "--model.jitter=1.0"], run=False)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, eqm.EquivarianceMonitor)]
    (sym,) = monitor.symmetries
    assert (sym.name, sym.group.space_dim, sym.kind) == ("translation", 2, "covariant")
    assert sym.output_action.image_size == (cli.datamodule.hparams.size,) * 2
    assert cli.model.hparams.jitter == 1.0 and cli.model.shift == 11


def test_full_jitter_ends_more_translation_equivariant_than_none(make_trainer):
    history = {}
    for jitter in (0.0, 1.0):
        L.seed_everything(0)
        monitor = eqm.EquivarianceMonitor(SPEC)
        trainer = make_trainer([monitor], max_epochs=3)
        trainer.fit(detection.BoxRegressor(jitter=jitter), datamodule=detection.DetectionDataModule(256, 32))
        history[jitter] = [e["metrics"]["error_mean"] for e in monitor.history["translation"]]
        assert len(history[jitter]) == 4 and trainer.callback_metrics["equivariance/translation/error_mean"] > 0
    assert history[0.0][0] == history[1.0][0]  # the same initial model
    assert history[1.0][-1] < 0.75 * history[0.0][-1]
    assert history[1.0][-1] < 0.75 * history[1.0][0]
