"""The layer-wise feature adapter of escnn modules: each escnn layer measured with the actions of its field types."""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor, nn

from eqmonitor.functional.layerwise import FeatureAdapter
from eqmonitor.integrations.escnn._common import _available, _escnn_nn, _is_escnn_module, _is_geometric_tensor
from eqmonitor.integrations.escnn.action import FieldTypeAction
from eqmonitor.integrations.escnn.model import EscnnTensorModel
from eqmonitor.symmetry import Symmetry

__all__ = ["feature_adapter_for_escnn"]

__doctest_requires__ = {("*",): ["escnn"]}

_ADAPTER_ACTIONS: dict[tuple, FieldTypeAction] = {}


def _cached_action(field_type: Any, mask: Optional[str]) -> FieldTypeAction:
    """One action per (field type, mask), so that ρ matrices are computed once across layers and calls."""
    if len(_ADAPTER_ACTIONS) > 256:
        _ADAPTER_ACTIONS.clear()
    key = (field_type, mask)
    if key not in _ADAPTER_ACTIONS:
        _ADAPTER_ACTIONS[key] = FieldTypeAction(field_type, mask=mask)
    return _ADAPTER_ACTIONS[key]


def _wrapper(field_type: Any) -> Callable[[Tensor], Any]:
    geometric_tensor = _escnn_nn().GeometricTensor
    return lambda t: geometric_tensor(t, field_type)


def _unwrap(value: Any) -> Any:
    return value.tensor if _is_geometric_tensor(value) else value


def feature_adapter_for_escnn(module: nn.Module, symmetry: Symmetry) -> Optional[FeatureAdapter]:
    """The layer-wise :class:`~eqmonitor.functional.layerwise.FeatureAdapter` of an escnn module, or ``None``.

    An escnn module with ``in_type`` / ``out_type`` on a 2-D gspace, not an :class:`EscnnTensorModel` nor a
    container of other escnn modules (``SequentialModule``: its layers are measured one by one), under a planar
    group whose testing elements its field types represent, gets ``FieldTypeAction(out_type)`` on its output,
    ``FieldTypeAction(in_type, mask=None)`` on its input, ``wrap = GeometricTensor(·, in_type)`` and
    ``unwrap = .tensor``. The input is never masked: under groups with off-grid rotations (C8, SO(2)) the disc mask
    would cut what the layer reads near the disc's edge, and a correct layer would fail even at the identity; the
    output is compared inside the disc, as everywhere else. Groups with translations (``Translation2d``) get
    ``None``: the default feature action scales shifts to each feature's resolution, and escnn's fibres do not
    change under translations.

    Example:
        >>> from escnn import gspaces, nn as enn
        >>> from eqmonitor.integrations.escnn import feature_adapter_for_escnn, symmetry_for_escnn
        >>> r2 = gspaces.rot2dOnR2(4)
        >>> relu = enn.ReLU(enn.FieldType(r2, [r2.regular_repr]))
        >>> feature_adapter_for_escnn(relu, symmetry_for_escnn(relu)).output_action
        FieldTypeAction(C4_on_R2[(None, 4)], size=4)
    """
    if not _available() or isinstance(module, EscnnTensorModel) or not _is_escnn_module(module):
        return None
    if any(_is_escnn_module(child) for child in module.children()):
        return None
    group = symmetry.group
    if group.space_dim != 2 or getattr(module.in_type.gspace, "dimensionality", None) != 2:
        return None
    try:
        tests = group.testing_elements()
        if bool((group.translation(tests) != 0).any()):
            return None
        in_action, out_action = _cached_action(module.in_type, None), _cached_action(module.out_type, "auto")
        in_action.matrices(group, tests)
        out_action.matrices(group, tests)
    except (ValueError, TypeError, NotImplementedError):  # elements the field types do not represent
        return None
    return FeatureAdapter(
        output_action=out_action, input_action=in_action, wrap=_wrapper(module.in_type), unwrap=_unwrap
    )
