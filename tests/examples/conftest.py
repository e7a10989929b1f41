"""The examples are scripts in ``examples/``, not a package: their tests import them from there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIGS = EXAMPLES.parent / "configs"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture
def make_trainer(tmp_path):
    """``make_trainer(callbacks, **kwargs)``: a small CPU ``lightning.Trainer`` with a CSV logger of its own under
    ``tmp_path`` (each run its own version, so each its own records folder), no checkpoints, bars or summary."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    def make(callbacks, **kwargs) -> L.Trainer:
        args = dict(
            accelerator="cpu",
            devices=1,
            logger=CSVLogger(str(tmp_path), name="run"),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            inference_mode=False,
            log_every_n_steps=1,
            default_root_dir=str(tmp_path),
        )
        return L.Trainer(callbacks=callbacks, **{**args, **kwargs})

    return make


@pytest.fixture(autouse=True)
def _example_argv(monkeypatch):
    """The examples' ``main(args)`` parse ``args`` as their command line; pytest's own arguments are not theirs."""
    monkeypatch.setattr(sys, "argv", ["example"])
