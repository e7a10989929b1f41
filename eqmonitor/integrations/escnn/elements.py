"""Which escnn group element acts like an eqmonitor element, and eqmonitor's group for an escnn gspace.

eqmonitor's plane is ``grid_sample``'s (``y`` down), escnn's has ``y`` up; the two frames differ by
``S = diag(1, -1)``, so an eqmonitor element with matrix ``M`` is the escnn element whose base-space matrix is
``S M S``. Elements are found by that matrix, so every gspace of the plane is handled alike.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from eqmonitor.groups import SO2, Cyclic, Dihedral, Flip, Group
from eqmonitor.integrations.escnn._common import _F64, _MATCH_TOL, _planar_gspace

__all__ = ["escnn_elements", "group_for_gspace"]

#: the examples need escnn (honoured by the project's conftest, as by pytest-doctestplus)
__doctest_requires__ = {("*",): ["escnn"]}

_FRAME = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=_F64)  # S: eqmonitor's y-down frame <-> escnn's y-up frame


def _finite_table(gspace: Any) -> list[tuple[Any, Tensor]]:
    """Every element of a finite fibre group with its base-space matrix ``[2, 2]`` (escnn's frame)."""
    return [(e, torch.as_tensor(gspace.basespace_action(e), dtype=_F64)) for e in gspace.fibergroup.elements]


_TABLES: dict[str, list] = {}


def escnn_elements(gspace: Any, group: Group, elements: Tensor) -> list:
    """The escnn group elements (of ``gspace.fibergroup``) that act like eqmonitor's ``elements [K, p]`` of ``group``.

    The element is found by its geometry: eqmonitor's matrix ``M = group.matrix(g)`` (``y`` down) is escnn's
    ``S M S`` with ``S = diag(1, -1)`` (``y`` up), matched against ``gspace.basespace_action`` (a look-up table for
    finite groups; the angle, and for O(2) the flip, for continuous ones). A translation part (``Translation2d``)
    is left to the spatial action: its fibre element is the identity.

    Raises:
        ValueError: an element is not in the gspace's group (e.g. ``Cyclic(8)`` elements on a ``rot2dOnR2(4)``
            field, a scaling), or ``group`` does not act on the plane.

    Example:
        >>> import torch
        >>> from escnn import gspaces
        >>> from eqmonitor.groups import Cyclic
        >>> from eqmonitor.integrations.escnn import escnn_elements
        >>> escnn_elements(gspaces.rot2dOnR2(4), Cyclic(4), torch.tensor([[1], [3]]))  # clockwise k is escnn's -k
        [3[2pi/4], 1[2pi/4]]
    """
    _planar_gspace(gspace, "gspace")
    if group.space_dim != 2:
        raise ValueError(f"Expected a group acting on the plane, but got {group!r}.")
    fibre = gspace.fibergroup
    mats = _FRAME @ group.matrix(elements).detach().to("cpu", _F64) @ _FRAME
    out = []
    for i, a in enumerate(mats):
        if fibre.continuous:
            e = _continuous_element(gspace, a)
        else:
            key = gspace.name
            if key not in _TABLES:
                _TABLES[key] = _finite_table(gspace)
            e = next((el for el, b in _TABLES[key] if float((a - b).abs().max()) < _MATCH_TOL), None)
        if e is None:
            raise ValueError(
                f"The element {group.describe(elements[i])} of {group!r} is not in the symmetry group {fibre} of the "
                f"escnn gspace {gspace.name!r}, so the field type has no representation of it. Probe with elements of "
                f"that group (see `group_for_gspace(gspace)`) or of one of its subgroups."
            )
        out.append(e)
    return out


def _continuous_element(gspace: Any, a: Tensor) -> Optional[Any]:
    """The SO(2) / O(2) element whose base-space matrix is ``a [2, 2]`` (escnn's frame), or ``None``."""
    fibre = gspace.fibergroup
    det = float(torch.linalg.det(a))
    candidates = []
    if gspace.flips_order == 0:
        if det > 0:
            candidates = [fibre.element(math.atan2(float(a[1, 0]), float(a[0, 0])) % (2 * math.pi), "radians")]
    else:
        if det > 0:
            candidates = [fibre.element((0, math.atan2(float(a[1, 0]), float(a[0, 0])) % (2 * math.pi)), "radians")]
        else:  # a = R(θ) F or F R(θ), F the flip of angle 0: try both and keep the one that matches
            f = torch.as_tensor(gspace.basespace_action(fibre.element((1, 0.0), "radians")), dtype=_F64)
            for r in (a @ f.T, f.T @ a):
                candidates.append(
                    fibre.element((1, math.atan2(float(r[1, 0]), float(r[0, 0])) % (2 * math.pi)), "radians")
                )
    for e in candidates:
        if float((torch.as_tensor(gspace.basespace_action(e), dtype=_F64) - a).abs().max()) < _MATCH_TOL:
            return e
    return None


def group_for_gspace(gspace: Any) -> Group:
    """eqmonitor's group for an escnn gspace of the plane: ``rot2dOnR2(N)`` → ``Cyclic(N)``, ``rot2dOnR2(-1)`` →
    ``SO2()``, ``flipRot2dOnR2(N)`` → ``Dihedral(N)``, ``flip2dOnR2()`` → ``Flip("horizontal")`` (``axis=0``:
    ``Flip("vertical")``).

    Raises:
        NotImplementedError: O(2) (``flipRot2dOnR2(-1)``; eqmonitor has no O(2) group: pass ``group=Dihedral(N)``
            or ``SO2()`` to test a subgroup), the trivial gspace, or a reflection axis that eqmonitor's mirror
            (``x -> -x``) and its rotations do not reach (e.g. ``flipRot2dOnR2(3, axis=0)``).
        ValueError: a gspace that is not 2-D.

    Example:
        >>> from escnn import gspaces
        >>> from eqmonitor.integrations.escnn import group_for_gspace
        >>> group_for_gspace(gspaces.rot2dOnR2(4)), group_for_gspace(gspaces.flipRot2dOnR2(4))
        (Cyclic(4), Dihedral(4))
    """
    _planar_gspace(gspace, "gspace")
    n, flips = gspace.rotations_order, gspace.flips_order
    if flips and n == -1:
        raise NotImplementedError(
            "eqmonitor has no O(2) group for a flipRot2dOnR2(-1) model; pass `group=Dihedral(N)` (exact for N = 4) or "
            "`group=SO2()` to `symmetry_for_escnn` to test a subgroup."
        )
    if n == -1:
        return SO2()
    if flips:
        candidates: list[Group] = [Flip("horizontal"), Flip("vertical")] if n == 1 else [Dihedral(n)]
    elif n > 1:
        return Cyclic(n)
    else:
        raise NotImplementedError(f"The gspace {gspace.name!r} has no symmetry to test (trivial group).")
    for g in candidates:
        try:
            escnn_elements(gspace, g, g.all_elements())
            return g
        except ValueError:
            continue
    raise NotImplementedError(
        f"The reflections of {gspace.name!r} are not eqmonitor's (mirror x -> -x and its rotations); build the gspace "
        "with `axis=np.pi / 2` (escnn's default)."
    )
