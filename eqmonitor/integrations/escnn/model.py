"""An escnn module as a tensor model: eqmonitor feeds models plain tensors, escnn modules take ``GeometricTensor``."""

from __future__ import annotations

from typing import Any

from torch import nn

from eqmonitor.integrations.escnn._common import _escnn_nn, _is_field_type, _is_geometric_tensor

__all__ = ["EscnnTensorModel"]


class EscnnTensorModel(nn.Module):
    """An escnn module as a tensor model: ``[B, in_type.size, H, W] -> module(GeometricTensor(x, in_type)).tensor``.

    eqmonitor feeds models plain tensors; pass this wrapper to ``audit`` / ``orbit_errors`` / ``layer_errors`` /
    ``EquivarianceMonitor`` and the symmetry from :func:`symmetry_for_escnn` (of the wrapped module or of the
    wrapper). A ``GeometricTensor`` input is passed through as is; a non-``GeometricTensor`` output is returned as is.

    Args:
        module: an escnn ``EquivariantModule`` (or any module taking a ``GeometricTensor``).
        in_type: the input field type; default ``module.in_type``.

    Attributes:
        module: the wrapped module; ``in_type``, ``out_type``: its field types (``out_type`` may be ``None``).

    Raises:
        ModuleNotFoundError: escnn is not installed.
        ValueError: no ``in_type`` given and the module has none.
    """

    def __init__(self, module: nn.Module, in_type: Any = None) -> None:
        super().__init__()
        _escnn_nn()
        in_type = getattr(module, "in_type", None) if in_type is None else in_type
        if not _is_field_type(in_type):
            raise ValueError(
                f"Expected `module` to have an escnn `in_type` (or an `in_type` argument), but got {in_type!r} for "
                f"{type(module).__name__}."
            )
        self.module = module
        self.in_type = in_type
        self.out_type = getattr(module, "out_type", None)

    def forward(self, x: Any) -> Any:
        if not _is_geometric_tensor(x):
            x = _escnn_nn().GeometricTensor(x, self.in_type)
        out = self.module(x)
        return out.tensor if _is_geometric_tensor(out) else out
