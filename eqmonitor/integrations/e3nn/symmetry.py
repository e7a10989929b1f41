"""Symmetries of e3nn models, from their irreps or read from a module's ``irreps_in`` / ``irreps_out``."""

from __future__ import annotations

from typing import Any, Callable, Union

from torch import Tensor, nn

from eqmonitor.actions.base import Action, Invariant
from eqmonitor.actions.points import Points
from eqmonitor.groups import Group, group_from_spec
from eqmonitor.integrations.e3nn.action import IrrepsAction
from eqmonitor.symmetry import Symmetry

__all__ = ["CARTESIAN_POINTS", "symmetry_for_e3nn", "symmetry_from_irreps"]

__doctest_requires__ = {("*",): ["e3nn"]}

#: e3nn's name for raw 3D coordinates (transformed as ``x Rᵀ + t``)
CARTESIAN_POINTS = "cartesian_points"


def _resolve_group(group: Union[str, Group]) -> Group:
    g = group if isinstance(group, Group) else group_from_spec(group)
    if g.space_dim != 3:
        raise ValueError(
            f"Expected a group acting on 3D space ('so3', 'o3' or 'translation3d'), but got {group!r}; e3nn irreps "
            "are representations of O(3)."
        )
    return g


def _action_for(irreps: Any, role: str) -> Action:
    """The eqmonitor action for one e3nn irreps spec: irreps, ``"cartesian_points"`` or ``None``."""
    if irreps is None:
        return Invariant()
    if isinstance(irreps, str) and irreps == CARTESIAN_POINTS:
        return Points(translate=True)
    if isinstance(irreps, list):
        if len(irreps) != 1:
            raise NotImplementedError(
                f"`irreps_{role}` is a list of {len(irreps)} irreps ({irreps!r}): the model has several "
                f"{role}puts. eqmonitor probes models with one input and one output tensor; wrap it as a single-input, "
                "single-output function (e.g. concatenate the outputs) and describe that with `symmetry_from_irreps`."
            )
        return _action_for(irreps[0], role)
    action = IrrepsAction(irreps)
    return Invariant() if action.is_identity else action


def symmetry_from_irreps(
    irreps_in: Any,
    irreps_out: Any,
    group: Union[str, Group] = "so3",
    name: str = "e3nn",
    error: Union[str, Callable[..., Tensor]] = "max_abs",
) -> Symmetry:
    """The symmetry of a model ``[B, ..., irreps_in.dim] -> [B, ..., irreps_out.dim]`` between e3nn irreps.

    Args:
        irreps_in: irreps of the input's last dimension (``o3.Irreps``, a string or a list of ``(mul, (l, p))``);
            ``"cartesian_points"`` for raw coordinates ``[B, ..., 3]`` (:class:`~eqmonitor.actions.Points`), or
            ``None`` for an input that does not transform.
        irreps_out: irreps of the output's last dimension, with the same options. All-``0e`` irreps (and ``None``)
            give an invariant output.
        group: ``"so3"`` (rotations), ``"o3"`` (rotations and reflections, where parity counts), ``"translation3d"``,
            or a :class:`~eqmonitor.groups.Group` acting on 3D space.
        name: the symmetry's logging name.
        error: the distance; ``"max_abs"`` (default) is ``max |h(g·x) − g·h(x)|`` per sample, e3nn's measure.

    Returns:
        A :class:`~eqmonitor.Symmetry` whose ``input_action`` / ``output_action`` are :class:`IrrepsAction`
        (the same object when ``irreps_in == irreps_out``, so its kind is ``"equivariant"``).

    Raises:
        ModuleNotFoundError: e3nn is not installed.
        ValueError: invalid irreps or a group that does not act on 3D space.
        NotImplementedError: a list of several irreps (a model with several inputs or outputs).

    Example:
        >>> from eqmonitor.integrations.e3nn import symmetry_from_irreps
        >>> symmetry_from_irreps("1x1o", "1x1e", group="o3", name="pseudo")
        Symmetry(name='pseudo', group=O3(), input=IrrepsAction('1x1o'), output=IrrepsAction('1x1e'), error='max_abs')
    """
    g = _resolve_group(group)
    phi = _action_for(irreps_in, "in")
    phi_out = _action_for(irreps_out, "out")
    same_irreps = isinstance(phi, IrrepsAction) and isinstance(phi_out, IrrepsAction) and phi.irreps == phi_out.irreps
    if same_irreps or (isinstance(phi, Points) and isinstance(phi_out, Points)):
        phi_out = phi  # one object in and out: an "equivariant" symmetry
    return Symmetry(group=g, input_action=phi, output_action=phi_out, error=error, name=name)


def symmetry_for_e3nn(
    module: Union[nn.Module, Callable],
    group: Union[str, Group] = "so3",
    name: str = "e3nn",
    error: Union[str, Callable[..., Tensor]] = "max_abs",
) -> Symmetry:
    """The symmetry of an e3nn-style module, read from its ``irreps_in`` and ``irreps_out`` attributes.

    Works for single-input e3nn modules (``o3.Linear``, ``nn.Gate``, ``o3.Norm``, ``o3.SphericalHarmonics`` …) and
    any module or function carrying those two attributes.

    Args:
        module: the model; ``module.irreps_in`` and ``module.irreps_out`` describe its input's and output's last
            dimension (see :func:`symmetry_from_irreps` for the accepted values).
        group: ``"so3"``, ``"o3"``, ``"translation3d"`` or a Group acting on 3D space.
        name: the symmetry's logging name.
        error: the distance (default ``"max_abs"``, e3nn's measure).

    Returns:
        A :class:`~eqmonitor.Symmetry` for ``eqmonitor.functional.orbit_errors(module, x, symmetry, elements)``.

    Raises:
        NotImplementedError: the module takes several inputs (``irreps_in1`` / ``irreps_in2``, as e3nn's tensor
            products do, or a list of irreps), or returns several outputs.
        ValueError: the module has no ``irreps_in`` or ``irreps_out``.
        ModuleNotFoundError: e3nn is not installed.

    Example:
        >>> from e3nn import o3
        >>> from eqmonitor.integrations.e3nn import symmetry_for_e3nn
        >>> symmetry_for_e3nn(o3.Linear("1x0e + 1x1o", "1x1o"), group="o3")
        Symmetry(name='e3nn', group=O3(), input=IrrepsAction('1x0e+1x1o'), output=IrrepsAction('1x1o'), error='max_abs')
    """
    label = type(module).__name__
    several = [a for a in ("irreps_in1", "irreps_in2") if hasattr(module, a)]
    if several:
        raise NotImplementedError(
            f"{label} has several inputs ({', '.join(several)}); eqmonitor feeds a model one tensor. Wrap the module "
            "as a single-input function, e.g. a module with `forward(x) = tp(x, x)` (or `tp(x, fixed_y)`) and "
            "`irreps_in` / `irreps_out` attributes, or use `symmetry_from_irreps(irreps_in, irreps_out)`."
        )
    missing = [a for a in ("irreps_in", "irreps_out") if not hasattr(module, a)]
    if missing:
        raise ValueError(
            f"Cannot read the irreps of {label}: it has no {' or '.join(f'`{a}`' for a in missing)} attribute. "
            "Pass them explicitly with `symmetry_from_irreps(irreps_in, irreps_out, group=...)`."
        )
    return symmetry_from_irreps(module.irreps_in, module.irreps_out, group=group, name=name, error=error)
