"""Fixtures for the callback tests: a small digits fit on CPU with a real ``lightning.Trainer``."""

from __future__ import annotations

import lightning as L
import pytest

from eqmonitor.lightning_digits import DigitsClassifier, DigitsDataModule

C4_SPEC = {"name": "c4", "group": "c4", "input": "image", "output": "invariant"}


@pytest.fixture
def fit(tmp_path):
    """``fit(callbacks, **trainer_kwargs) -> (trainer, model, datamodule)``: 2 epochs of 4 steps on 256 digits."""

    def run(callbacks=(), model=None, datamodule=None, seed=0, ckpt_path=None, **kw):
        L.seed_everything(seed, verbose=False)
        model = model or DigitsClassifier(batch_norm=True, dropout=0.2)
        datamodule = datamodule or DigitsDataModule(batch_size=64, n_train=256)
        options = dict(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            inference_mode=False,
            deterministic=True,
            default_root_dir=str(tmp_path),
            limit_val_batches=2,
        )
        options.update(kw)
        trainer = L.Trainer(callbacks=list(callbacks), **options)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        return trainer, model, datamodule

    return run
