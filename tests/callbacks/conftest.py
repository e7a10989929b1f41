"""Fixtures shared by the callback tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B offline, silent, with every folder it writes under ``tmp_path``; returns the loggers' ``save_dir``."""
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        path = tmp_path / var.lower()
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off"),
                       ("WANDB_DISABLE_GIT", "true")):  # fmt: skip
        monkeypatch.setenv(var, value)
    return tmp_path / "wandb_dir"
