"""Shared helpers of the e3nn integration: whether e3nn is installed, importing it on first use, reading irreps."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

#: whether e3nn can be imported (checked without importing it)
_E3NN_AVAILABLE: bool = importlib.util.find_spec("e3nn") is not None

_F64 = torch.float64
_C128 = torch.complex128
_INSTALL_HINT = "The e3nn integration needs e3nn: `pip install eqmonitor[e3nn]` (or `pip install e3nn`)."


def _o3() -> Any:
    """e3nn's ``o3`` module, imported on first use; a clear ``ModuleNotFoundError`` if e3nn is missing."""
    if not _E3NN_AVAILABLE:
        raise ModuleNotFoundError(_INSTALL_HINT, name="e3nn")
    try:
        from e3nn import o3
    except ImportError as err:  # installed but broken (e.g. built for another torch)
        raise ModuleNotFoundError(f"{_INSTALL_HINT} Importing it failed: {err}", name="e3nn") from err
    return o3


def _as_irreps(irreps: Any) -> Any:
    """``o3.Irreps(irreps)`` with a message that names the bad value."""
    o3 = _o3()
    try:
        return o3.Irreps(irreps)
    except (ValueError, TypeError, AssertionError) as err:
        raise ValueError(
            f"Expected e3nn irreps (an `o3.Irreps`, a string such as '2x0e + 1x1o', or a list of (mul, (l, p))), but "
            f"got {irreps!r}: {err}"
        ) from err
