"""Shared helpers of the comparison tests (a module of its own: importing `conftest` clashes with --doctest-modules)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

OLD_RECORDS = Path(__file__).parent / "data" / "records_0_1"  # written by eqmonitor 0.1.0 (before run metadata)
SYMMETRIES = [{"name": "c4", "group": "c4"}, {"name": "rotation", "group": "so2"}]


def fit_run(folder: Path, augment: str, seed: int = 0, probe_seed: int = 0, **monitor_kw):
    """Three epochs on 512 digits, the monitor at its defaults but for the probe size, the records in ``folder``."""
    from eqmonitor.callbacks import EquivarianceMonitor
    from eqmonitor.demos.lightning_digits import DigitsClassifier, DigitsDataModule

    L.seed_everything(seed, verbose=False)
    options = dict(n_samples=32, n_elements=12, plots=False, seed=probe_seed, records_dir=str(folder), tag=augment)
    options.update(monitor_kw)
    monitor = EquivarianceMonitor(SYMMETRIES, **options)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(folder.parent), limit_val_batches=2, callbacks=[monitor],
    )  # fmt: skip
    trainer.fit(DigitsClassifier(augment=augment), datamodule=DigitsDataModule(batch_size=64, n_train=512))
    return monitor
