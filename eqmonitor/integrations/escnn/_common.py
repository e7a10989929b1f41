"""Shared helpers of the escnn integration: whether escnn is installed, importing it on first use, duck-typed checks."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

#: whether escnn can be imported (checked without importing it)
_ESCNN_AVAILABLE: bool = importlib.util.find_spec("escnn") is not None

_F64 = torch.float64
_INSTALL_HINT = (
    "The escnn integration needs escnn: `pip install eqmonitor[escnn]` (or `pip install escnn`; its py3nj "
    "dependency needs a Fortran compiler: `apt-get install -y gfortran`)."
)
_MATCH_TOL = 1e-6  # how close two 2x2 base-space matrices must be to be the same element
_SNAP_TOL = 1e-12  # ρ entries this close to an integer are that integer (0, ±1 of permutations and quarter turns)
_CACHE_MAX = 4096  # ρ matrices kept per action (finite groups need |G|; continuous probes reuse a fixed set)


def _available() -> bool:
    """Whether escnn can be imported (read at call time, so that tests can switch it off)."""
    return _ESCNN_AVAILABLE


def _escnn_nn() -> Any:
    """``escnn.nn``, imported on first use; a clear ``ModuleNotFoundError`` if escnn is missing."""
    if not _ESCNN_AVAILABLE:
        raise ModuleNotFoundError(_INSTALL_HINT, name="escnn")
    try:
        from escnn import nn as enn
    except ImportError as err:  # installed but broken (e.g. py3nj built for another numpy)
        raise ModuleNotFoundError(f"{_INSTALL_HINT} Importing it failed: {err}", name="escnn") from err
    return enn


def _is_geometric_tensor(value: Any) -> bool:
    return _ESCNN_AVAILABLE and isinstance(value, _escnn_nn().GeometricTensor)


def _is_field_type(value: Any) -> bool:
    return hasattr(value, "gspace") and hasattr(value, "representations") and hasattr(value, "size")


def _is_escnn_module(module: Any) -> bool:
    """Duck typing: an escnn ``EquivariantModule`` declares ``in_type`` and ``out_type`` field types."""
    return _is_field_type(getattr(module, "in_type", None)) and _is_field_type(getattr(module, "out_type", None))


def _planar_gspace(gspace: Any, role: str = "field type") -> Any:
    if getattr(gspace, "dimensionality", None) != 2 or not hasattr(gspace, "basespace_action"):
        raise ValueError(
            f"Expected the {role} to live on a 2-D gspace (rot2dOnR2, flipRot2dOnR2, flip2dOnR2), but got "
            f"{getattr(gspace, 'name', gspace)!r}; eqmonitor's escnn integration covers images [B, C, H, W]."
        )
    return gspace
