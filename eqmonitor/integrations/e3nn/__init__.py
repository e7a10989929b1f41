"""e3nn integration: actions and symmetries from e3nn ``Irreps``, so e3nn models are measured like any other.

e3nn describes a feature tensor ``[B, ..., irreps.dim]`` by its irreps (``"2x0e + 1x1o + 1x2e"``): a rotation or
reflection ``R`` acts on it through the block-diagonal matrix ``D(R) = irreps.D_from_matrix(R)``. With
``error="max_abs"`` (the default here) the errors are the ones ``e3nn.util.test.equivariance_error`` reports, element
by element. One concept a module, named like the escnn integration's:

- :mod:`~eqmonitor.integrations.e3nn.action`: :class:`IrrepsAction`, that action for eqmonitor's
  :class:`~eqmonitor.groups.SO3` and :class:`~eqmonitor.groups.O3` (parity included: ``D_from_matrix`` of a matrix
  with ``det = -1`` applies ``p^1`` to each irrep), with ``D`` in float64 (:mod:`~eqmonitor.integrations.e3nn.wigner`);
- :mod:`~eqmonitor.integrations.e3nn.symmetry`: :func:`symmetry_from_irreps` and :func:`symmetry_for_e3nn` (read
  from a module's irreps, as :func:`~eqmonitor.integrations.escnn.symmetry_for_escnn` reads field types);
- :mod:`~eqmonitor.integrations.e3nn.layers`: :func:`feature_adapter_for_e3nn`, the layer-wise adapter, and
  :func:`node_features` for graph and point networks.

Conventions, as in e3nn:

- ``l = 1`` irreps are in the installed e3nn's component order (since e3nn 0.2.2, whose Euler angles are
  YXY: ``(x, y, z)``, so ``D^{1o}(R) = R``; before, ``(y, z, x)``), whereas ``"cartesian_points"`` are always raw
  ``(x, y, z)`` coordinates.
- ``"cartesian_points"`` (e3nn's name for raw ``[B, ..., 3]`` coordinates, ``x -> x Rᵀ + t``) maps to
  :class:`~eqmonitor.actions.Points`. eqmonitor's ``SO3``/``O3`` have no translation part, so under them points
  only rotate; e3nn's ``do_translation`` check is a separate symmetry under ``Translation(3)`` (``"translation3d"``),
  under which irreps features are left unchanged (``D(I) = I``) and points shift.
- ``None`` (an argument e3nn leaves untransformed) maps to :class:`~eqmonitor.actions.Invariant`.

Models with several inputs (``irreps_in1`` / ``irreps_in2``, as tensor products have) or several outputs are not
probed directly: eqmonitor feeds one tensor to the model, so wrap them as a single-input function first.

Layer-wise tests: importing this package registers :func:`feature_adapter_for_e3nn` with
:func:`~eqmonitor.functional.layerwise.register_feature_adapter` (once; nothing else to call), so that
``layer_errors`` measures every module that declares ``irreps_out`` and ``irreps_in`` (or ``irreps_in1`` /
``irreps_in2``) with ``IrrepsAction(irreps_out)`` on its output and, for single-input modules,
``IrrepsAction(irreps_in)`` on its input, as one block (a ``Gate``'s inner modules are not measured apart). Plain
torch modules between them (an activation on irreps features) inherit the action of the layer that produced their
input. Graph networks run on node features ``[num_nodes, dim]``: declare their nodes per sample with
:func:`node_features` (see :mod:`~eqmonitor.integrations.e3nn.layers`).

Requires e3nn: ``pip install eqmonitor[e3nn]``. Importing this package does not import e3nn; using it does.

Example:
    >>> import torch
    >>> from e3nn import o3
    >>> from eqmonitor.functional import orbit_errors
    >>> from eqmonitor.integrations.e3nn import symmetry_for_e3nn
    >>> model = o3.Linear("2x0e + 1x1o", "1x0e + 2x1o").double()
    >>> sym = symmetry_for_e3nn(model, group="o3")
    >>> x = torch.randn(4, 5, dtype=torch.float64)
    >>> res = orbit_errors(model, x, sym, sym.group.sample(6, torch.Generator().manual_seed(0)))
    >>> res.errors.shape, bool(res.errors.max() < 1e-12)
    (torch.Size([4, 6]), True)
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Union

from torch import Tensor, nn

from eqmonitor.functional.layerwise import FeatureAdapter, register_feature_adapter
from eqmonitor.groups import Group
from eqmonitor.integrations.e3nn._common import _E3NN_AVAILABLE  # noqa: F401 (whether e3nn can be imported)
from eqmonitor.integrations.e3nn.action import IrrepsAction
from eqmonitor.integrations.e3nn.layers import feature_adapter_for_e3nn, node_features
from eqmonitor.integrations.e3nn.symmetry import CARTESIAN_POINTS, symmetry_for_e3nn, symmetry_from_irreps
from eqmonitor.symmetry import Symmetry

__all__ = [
    "CARTESIAN_POINTS",
    "IrrepsAction",
    "feature_adapter_for_e3nn",
    "node_features",
    "symmetry_for_e3nn",
    "symmetry_from_irreps",
]

__doctest_requires__ = {("*",): ["e3nn"]}


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"`eqmonitor.integrations.e3nn.{old}` is deprecated; use `{new}` (named like the escnn integration's).",
        DeprecationWarning,
        stacklevel=3,
    )


def symmetry_for_module(
    module: Union[nn.Module, Callable],
    group: Union[str, Group] = "so3",
    name: str = "e3nn",
    error: Union[str, Callable[..., Tensor]] = "max_abs",
) -> Symmetry:
    """Deprecated name of :func:`symmetry_for_e3nn` (kept for one release)."""
    _deprecated("symmetry_for_module", "symmetry_for_e3nn")
    return symmetry_for_e3nn(module, group=group, name=name, error=error)


def feature_adapter(module: nn.Module, symmetry: Symmetry) -> Optional[FeatureAdapter]:
    """Deprecated name of :func:`feature_adapter_for_e3nn` (kept for one release)."""
    _deprecated("feature_adapter", "feature_adapter_for_e3nn")
    return feature_adapter_for_e3nn(module, symmetry)


register_feature_adapter(feature_adapter_for_e3nn)
