"""escnn integration: field-type actions, symmetries and layer-wise adapters for escnn models on the plane.

An escnn feature is a :class:`~escnn.nn.GeometricTensor`: a tensor ``[B, C, H, W]`` and a *field type* (a gspace
plus a direct sum of representations, ``C = field_type.size``). An element ``g`` acts on it by moving the base space
and mixing the channels of every pixel with the fibre representation ``ρ(g)``:

.. math:: (g \\cdot f)(p) = ρ(g)\\, f(g^{-1} p)

One concept a module:

- :mod:`~eqmonitor.integrations.escnn.elements`: :func:`escnn_elements` (the escnn element that acts like an
  eqmonitor element) and :func:`group_for_gspace`;
- :mod:`~eqmonitor.integrations.escnn.action`: :class:`FieldTypeAction`, the action above (the spatial part is
  eqmonitor's :class:`~eqmonitor.actions.ImageAction`: exact index maps for quarter turns and flips on square maps,
  bilinear resampling otherwise; the fibre part is ``field_type.fiber_representation(e)``, one ``[C, C]`` matrix
  per element, cached);
- :mod:`~eqmonitor.integrations.escnn.symmetry`: :func:`symmetry_for_escnn`, read from a model's field types;
- :mod:`~eqmonitor.integrations.escnn.model`: :class:`EscnnTensorModel`, an escnn module as a tensor model;
- :mod:`~eqmonitor.integrations.escnn.layers`: :func:`feature_adapter_for_escnn`, the layer-wise adapter.

**Conventions.** eqmonitor's plane is ``grid_sample``'s (``x`` right, ``y`` down, a positive angle turns clockwise
on screen: ``Cyclic(4)`` element ``k = 1`` is ``torch.rot90(x, -1, (-2, -1))``); escnn's is ``(x, y)`` with ``y`` up
(its element ``1`` of ``C4`` is ``torch.rot90(x, 1, (-2, -1))``). The two frames differ by ``S = diag(1, -1)``, so an
eqmonitor element with matrix ``M`` is the escnn element whose ``gspace.basespace_action`` is ``S M S``: rotation
``k`` of ``C_N`` is escnn's ``-k``, an angle ``θ`` is escnn's ``-θ``, the dihedral element ``(k, f) = r^k m^f`` is
escnn's ``(f, -k)`` (both mirrors are ``x -> -x`` for escnn's default axis ``π/2``).

**Models.** eqmonitor feeds models plain tensors; :class:`EscnnTensorModel` wraps an escnn module so that it takes
``[B, C, H, W]`` (wrapped in a ``GeometricTensor`` of ``in_type``) and returns the output's ``.tensor``. Pass the
wrapper to ``eqmonitor.audit`` / ``orbit_errors`` / ``layer_errors`` / the monitor, with the symmetry from
:func:`symmetry_for_escnn`::

    model = EscnnTensorModel(net)
    report = eqm.audit(model, x, symmetry_for_escnn(net), layers=True)

escnn convolutions cache their expanded filter in ``.train(False)`` and drop it in ``.train(True)``. eqmonitor's
probes call the ``train`` of every module that overrides it (then put its buffers back), so a model in train mode
is probed with its current weights and left exactly as found; nothing is hooked into the model.

escnn 1.0.11 with scikit-learn >= 1.9 installed fails to build dihedral (``flipRot2dOnR2``) convolutions
(``TypeError: np.matrix is not supported``, escnn#112): escnn uses scikit-learn's ``randomized_svd`` when it can import
it. Before building such a model, set ``escnn.group._numerical.randomized_svd = None`` (escnn's exact SciPy path).

**Layer-wise tests.** Importing this package registers :func:`feature_adapter_for_escnn` with
:func:`~eqmonitor.functional.layerwise.register_feature_adapter` (once; nothing else to call): every escnn module
with ``in_type`` / ``out_type`` that is not a container of other escnn modules is measured with
``FieldTypeAction(out_type)`` on its output and ``FieldTypeAction(in_type, mask=None)`` on its input, the input
wrapped in a ``GeometricTensor`` and the output unwrapped.

Requires escnn: ``pip install eqmonitor[escnn]`` (its ``py3nj`` dependency builds with a Fortran compiler:
``apt-get install -y gfortran``). Importing this package does not import escnn; using it does.

Example:
    >>> import torch
    >>> from escnn import gspaces, nn as enn
    >>> from eqmonitor.functional import orbit_errors
    >>> from eqmonitor.integrations.escnn import EscnnTensorModel, symmetry_for_escnn
    >>> r2 = gspaces.rot2dOnR2(4)
    >>> net = enn.R2Conv(enn.FieldType(r2, [r2.trivial_repr]), enn.FieldType(r2, 2 * [r2.regular_repr]), 3, padding=1)
    >>> sym = symmetry_for_escnn(net)
    >>> sym.group
    Cyclic(4)
    >>> res = orbit_errors(EscnnTensorModel(net), torch.randn(2, 1, 9, 9), sym, sym.group.all_elements())
    >>> bool(res.rel_errors.max() < 1e-5)
    True
"""

from __future__ import annotations

import warnings
from typing import Optional

from torch import nn

from eqmonitor.functional.layerwise import FeatureAdapter, register_feature_adapter
from eqmonitor.integrations.escnn.action import FieldPlan, FieldTypeAction
from eqmonitor.integrations.escnn.elements import escnn_elements, group_for_gspace
from eqmonitor.integrations.escnn.layers import feature_adapter_for_escnn
from eqmonitor.integrations.escnn.model import EscnnTensorModel
from eqmonitor.integrations.escnn.symmetry import symmetry_for_escnn
from eqmonitor.symmetry import Symmetry

__all__ = [
    "EscnnTensorModel",
    "FieldPlan",
    "FieldTypeAction",
    "escnn_elements",
    "feature_adapter_for_escnn",
    "group_for_gspace",
    "symmetry_for_escnn",
]

__doctest_requires__ = {("*",): ["escnn"]}


def feature_adapter(module: nn.Module, symmetry: Symmetry) -> Optional[FeatureAdapter]:
    """Deprecated name of :func:`feature_adapter_for_escnn` (kept for one release)."""
    warnings.warn(
        "`eqmonitor.integrations.escnn.feature_adapter` is deprecated; use `feature_adapter_for_escnn` (the e3nn "
        "integration's is `feature_adapter_for_e3nn`).",
        DeprecationWarning,
        stacklevel=2,
    )
    return feature_adapter_for_escnn(module, symmetry)


register_feature_adapter(feature_adapter_for_escnn)
