"""Real records from real ``Trainer.fit`` runs, shared by the comparison, command-line and explorer tests."""

from __future__ import annotations

import pytest
from compare_specs import fit_run


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory):
    """``(root, {"none": monitor, "c4": monitor})``: a plain and a C4-augmented run, same seed and probe."""
    root = tmp_path_factory.mktemp("runs")
    return root, {aug: fit_run(root / aug, aug) for aug in ("none", "c4")}


@pytest.fixture(scope="session")
def other_probe_run(tmp_path_factory):
    """A plain run that probed other samples (another probe seed)."""
    root = tmp_path_factory.mktemp("other")
    fit_run(root / "none-probe1", "none", probe_seed=1)
    return root / "none-probe1"
