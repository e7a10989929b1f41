"""The symmetry of an escnn model on the plane, read from its ``in_type`` / ``out_type``."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from torch import Tensor

from eqmonitor.actions.base import Action, Invariant
from eqmonitor.groups import Group
from eqmonitor.integrations.escnn._common import _escnn_nn, _is_field_type, _planar_gspace
from eqmonitor.integrations.escnn.action import FieldTypeAction
from eqmonitor.integrations.escnn.elements import group_for_gspace
from eqmonitor.symmetry import Symmetry

__all__ = ["symmetry_for_escnn"]

__doctest_requires__ = {("*",): ["escnn"]}


def symmetry_for_escnn(
    module: Any,
    name: Optional[str] = None,
    error: Union[str, Callable[..., Tensor]] = "relative",
    *,
    group: Optional[Group] = None,
    output: Union[str, Action, None] = None,
    mask: Optional[str] = "auto",
) -> Symmetry:
    """The symmetry of an escnn model on the plane, read from its ``in_type`` / ``out_type``.

    The group comes from the input's gspace (:func:`group_for_gspace`); the input action is
    ``FieldTypeAction(in_type)``; the output action ``FieldTypeAction(out_type)`` (the same object when the types
    are equal, so the kind is ``"equivariant"``). It also covers invariant models: after ``GroupPooling`` and a
    spatial pooling to ``[B, C, 1, 1]`` the output's fields are trivial and the action leaves it unchanged. Measure
    :class:`EscnnTensorModel` ``(module)`` (eqmonitor feeds the model plain tensors), or a model of your own whose
    ``forward`` wraps the tensor itself. The model is left as it is: probes put escnn's convolutions in eval mode
    through their own ``train(False)`` (which expands their filters) and restore their buffers afterwards.

    Args:
        module: an escnn ``EquivariantModule``, an :class:`EscnnTensorModel`, or anything with ``in_type`` (and
            ``out_type`` unless ``output`` is given).
        name: the symmetry's logging name; default ``"escnn"``.
        error: the distance (default ``"relative"``).
        group: test this eqmonitor group instead (a subgroup: ``Cyclic(4)`` on an SO(2) model is exact).
        output: ``"invariant"`` (an output that does not transform, e.g. class scores after a torch head), an
            :class:`~eqmonitor.actions.Action`, or ``None`` for ``FieldTypeAction(out_type)``.
        mask: the spatial actions' disc mask (see :class:`~eqmonitor.actions.ImageAction`).

    Returns:
        A :class:`~eqmonitor.Symmetry`.

    Raises:
        ModuleNotFoundError: escnn is not installed.
        ValueError: the module has no field types, or they are not on a 2-D gspace.
        NotImplementedError: a gspace without an eqmonitor group (O(2), trivial): pass ``group``.

    Example:
        >>> from escnn import gspaces, nn as enn
        >>> from eqmonitor.integrations.escnn import symmetry_for_escnn
        >>> r2 = gspaces.flipRot2dOnR2(4)
        >>> symmetry_for_escnn(enn.GroupPooling(enn.FieldType(r2, [r2.regular_repr])), name="d4")
        Symmetry(name='d4', group=Dihedral(4), input=FieldTypeAction(D4_on_R2[(3.141592653589793, 4)], size=8), \
output=FieldTypeAction(D4_on_R2[(3.141592653589793, 4)], size=1), error='relative')
    """
    _escnn_nn()
    in_type, out_type = getattr(module, "in_type", None), getattr(module, "out_type", None)
    label = type(module).__name__
    if not _is_field_type(in_type):
        raise ValueError(
            f"Cannot read the field types of {label}: it has no escnn `in_type`. Pass an escnn EquivariantModule "
            "(or an EscnnTensorModel of one)."
        )
    g = group if group is not None else group_for_gspace(_planar_gspace(in_type.gspace, "input field type"))
    phi = FieldTypeAction(in_type, mask=mask)
    if output == "invariant":
        phi_out: Action = Invariant()
    elif isinstance(output, Action):
        phi_out = output
    elif output is not None:
        raise ValueError(f"Expected `output` to be None, 'invariant' or an Action, but got {output!r}.")
    elif not _is_field_type(out_type):
        raise ValueError(f"{label} has no escnn `out_type`; pass `output='invariant'` or an Action for its output.")
    else:
        phi_out = phi if out_type == in_type else FieldTypeAction(out_type, mask=mask)
    return Symmetry(group=g, input_action=phi, output_action=phi_out, error=error, name=name or "escnn")
