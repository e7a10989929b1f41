"""Shared fixtures: the bundled digits data, reference models and symmetries."""

from __future__ import annotations

import pytest
import torch

import eqmonitor as eqm
from eqmonitor.data import load_digits


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
        model = eqm.models.SmallCNN()
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
    return eqm.models.GroupAveraged(eqm.models.SmallCNN(), eqm.groups.Cyclic(4)).eval()


@pytest.fixture
def rotation():
    return eqm.Symmetry.from_spec(name="rotation", group="so2", input="image", output="invariant")


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant")
