"""The action of a planar group on escnn features of one field type: ``(g · f)(p) = ρ(g) f(g⁻¹ p)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from eqmonitor.actions.base import Action
from eqmonitor.actions.image import ImageAction, ImagePlan
from eqmonitor.groups import Group
from eqmonitor.integrations.escnn._common import (
    _CACHE_MAX,
    _F64,
    _SNAP_TOL,
    _escnn_nn,
    _is_field_type,
    _planar_gspace,
)
from eqmonitor.integrations.escnn.elements import escnn_elements

__all__ = ["FieldPlan", "FieldTypeAction"]

__doctest_requires__ = {("*",): ["escnn"]}


@dataclass
class FieldPlan:
    """A :class:`FieldTypeAction` planned for ``K`` elements: the image plan and ``rho [K, C, C]`` in the plan's
    dtype."""

    image: ImagePlan
    rho: Tensor


class FieldTypeAction(Action):
    """The action of a planar group on escnn features ``[B, C, H, W]`` of one field type: ``ρ(g) f(g⁻¹ p)``.

    The spatial part is :class:`~eqmonitor.actions.ImageAction` (``mask``: ``"auto"`` masks to the inscribed disc
    for groups with rotations off the pixel grid, like SO(2)); the fibre part multiplies every pixel's channels by
    ``ρ(g) = field_type.fiber_representation(e)`` of the escnn element ``e`` that acts like ``g``
    (:func:`escnn_elements`). ``ρ`` is computed once per element and cached (float64, CPU).

    Args:
        field_type: an escnn ``FieldType`` on a 2-D gspace.
        mask, interpolation: as for :class:`~eqmonitor.actions.ImageAction`.

    Raises:
        ModuleNotFoundError: escnn is not installed.
        TypeError: ``field_type`` is not an escnn field type.

    Example:
        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> from eqmonitor.groups import Cyclic
        >>> from eqmonitor.integrations.escnn import FieldTypeAction
        >>> r2 = gspaces.rot2dOnR2(4)
        >>> act = FieldTypeAction(enn.FieldType(r2, [r2.regular_repr]))
        >>> x = torch.zeros(1, 4, 1, 1); x[0, 0] = 1.0
        >>> act(Cyclic(4), torch.tensor([[1]]), x).flatten()  # a regular field: ρ permutes the channels
        tensor([0., 0., 0., 1.])
    """

    def __init__(self, field_type: Any, mask: Optional[str] = "auto", interpolation: str = "bilinear") -> None:
        _escnn_nn()
        if not _is_field_type(field_type):
            raise TypeError(f"Expected `field_type` to be an escnn FieldType, but got {type(field_type).__name__}.")
        self.field_type = field_type
        self.gspace = _planar_gspace(field_type.gspace)
        self.image = ImageAction(mask=mask, interpolation=interpolation)
        self._rho: dict[tuple, Tensor] = {}

    def __repr__(self) -> str:
        return f"FieldTypeAction({self.gspace.name}, size={self.field_type.size})"

    # ------------------------------------------------------------------------------------------------- matrices
    def escnn_elements(self, group: Group, elements: Tensor) -> list:
        """The escnn elements acting like ``elements [K, p]`` (see :func:`escnn_elements`)."""
        return escnn_elements(self.gspace, group, elements)

    def matrices(self, group: Group, elements: Tensor) -> Tensor:
        """``ρ(g)`` of each element, ``[K, C, C]`` float64 on the elements' device."""
        keys = [(repr(group), tuple(row)) for row in elements.detach().cpu().tolist()]
        missing = [i for i, key in enumerate(keys) if key not in self._rho]
        if missing:
            if len(self._rho) + len(missing) > _CACHE_MAX:
                self._rho.clear()
            found = self.escnn_elements(group, elements[missing])
            for i, e in zip(missing, found):
                self._rho[keys[i]] = self._fibre_matrix(e)
        return torch.stack([self._rho[key] for key in keys]).to(elements.device)

    def _fibre_matrix(self, e: Any) -> Tensor:
        ft = self.field_type
        if hasattr(ft, "fiber_representation"):
            m = ft.fiber_representation(e)
        else:  # older escnn: the direct sum of the field type's representations
            m = ft.representation(e)
        m = torch.as_tensor(m, dtype=_F64).reshape(ft.size, ft.size).clone()
        snapped = m.round()  # escnn builds ρ through changes of basis (±1e-16): keep permutations exact
        return torch.where((m - snapped).abs() < _SNAP_TOL, snapped, m)

    # ------------------------------------------------------------------------------------------------- action
    def invariant_on(self, shape: tuple[int, ...]) -> bool:
        """Trivial fields on a ``1 × 1`` map (e.g. after ``GroupPooling`` and global pooling) are invariant."""
        trivial = all(rep.is_trivial() for rep in self.field_type.representations)
        return trivial and self.image.invariant_on(shape)

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        return self.image.prepare(group, x)

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        return self.image.exact_elements(group, elements, shape)

    def plan(self, group: Group, elements: Tensor, shape: torch.Size, dtype: torch.dtype) -> FieldPlan:
        return FieldPlan(self.image.plan(group, elements, shape, dtype), self.matrices(group, elements).to(dtype))

    def apply(self, group: Group, plan: FieldPlan, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        moved = self.image.apply(group, plan.image, rows, x, all_exact)
        rho = plan.rho.index_select(0, rows).to(dtype=x.dtype, device=x.device)
        return torch.einsum("bij,bj...->bi...", rho, moved)

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        plan = self.plan(group, elements, x.shape, x.dtype)
        return self.apply(group, plan, torch.arange(x.shape[0], device=x.device), self.prepare(group, x))

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        """Raise a clear error if ``x`` is not ``[B, field_type.size, H, W]`` floating point or ``group`` has
        elements the field type cannot represent.

        Raises:
            TypeError: ``x`` is not a tensor.
            RuntimeError: ``x`` has the wrong shape or dtype.
            ValueError: ``group`` does not act on the plane, or its testing elements are not in the gspace's group.
        """
        Action.check(self, group, x, role)
        if x.ndim != 4 or x.shape[1] != self.field_type.size or not x.is_floating_point():
            raise RuntimeError(
                f"{self!r} acts on floating-point escnn features [B, {self.field_type.size}, H, W] (the field type's "
                f"size), but the {role} has shape {tuple(x.shape)} and dtype {x.dtype}. Check the field type against "
                f"the model's `{'in' if role == 'input' else 'out'}_type`."
            )
        self.image.check(group, x, role)
        self.matrices(group, group.testing_elements(x.device))
