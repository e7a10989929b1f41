"""Shared fixtures: the bundled digits data, reference models and symmetries."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import eqmonitor as eqm
from eqmonitor.demos import DigitsClassifier, DigitsDataModule, load_digits


@pytest.fixture(scope="session")
def digits():
    """The first 64 digits at 28×28 and their labels."""
    x, y = load_digits()
    return x[:64], y[:64]


@pytest.fixture(scope="session")
def trained_cnn():
    """A plain CNN fitted for one epoch on the digits (orientation-sensitive, as trained plain CNNs are)."""
    x, y = load_digits()
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = eqm.demos.SmallCNN()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    perm = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), 64):
        idx = perm[i : i + 64]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture
def c4_averaged():
    torch.manual_seed(0)
    return eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4)).eval()


@pytest.fixture
def rotation():
    return eqm.Symmetry.from_spec(name="rotation", group="so2", input="image", output="invariant")


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant")


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
