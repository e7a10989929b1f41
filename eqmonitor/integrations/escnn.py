"""escnn integration: field-type actions, symmetries and layer-wise adapters for escnn models on the plane.

An escnn feature is a :class:`~escnn.nn.GeometricTensor`: a tensor ``[B, C, H, W]`` and a *field type* (a gspace
plus a direct sum of representations, ``C = field_type.size``). An element ``g`` acts on it by moving the base space
and mixing the channels of every pixel with the fibre representation ``ρ(g)``:

.. math:: (g \\cdot f)(p) = ρ(g)\\, f(g^{-1} p)

:class:`FieldTypeAction` is that action for eqmonitor's planar groups: the spatial part is eqmonitor's
:class:`~eqmonitor.actions.ImageAction` (exact index maps for quarter turns and flips on square maps, bilinear
resampling otherwise), the fibre part is ``field_type.fiber_representation(e)`` from escnn, one ``[C, C]`` matrix per
element, cached.

**Conventions.** eqmonitor's plane is ``grid_sample``'s (``x`` right, ``y`` down, a positive angle turns clockwise
on screen: ``Cyclic(4)`` element ``k = 1`` is ``torch.rot90(x, -1, (-2, -1))``); escnn's is ``(x, y)`` with ``y`` up
(its element ``1`` of ``C4`` is ``torch.rot90(x, 1, (-2, -1))``). The two frames differ by ``S = diag(1, -1)``, so an
eqmonitor element with matrix ``M`` is the escnn element whose ``gspace.basespace_action`` is ``S M S``: rotation
``k`` of ``C_N`` is escnn's ``-k``, an angle ``θ`` is escnn's ``-θ``, the dihedral element ``(k, f) = r^k m^f`` is
escnn's ``(f, -k)`` (both mirrors are ``x -> -x`` for escnn's default axis ``π/2``). :func:`escnn_elements` finds
the element by this matrix, so every gspace of the plane is handled alike, and the tests prove it against
``GeometricTensor.transform`` element by element.

**Models.** eqmonitor feeds models plain tensors; :class:`EscnnTensorModel` wraps an escnn module so that it takes
``[B, C, H, W]`` (wrapped in a ``GeometricTensor`` of ``in_type``) and returns the output's ``.tensor``. Pass the
wrapper to ``eqmonitor.audit`` / ``orbit_errors`` / ``layer_errors`` / the monitor, with the symmetry from
:func:`symmetry_for_escnn`::

    model = EscnnTensorModel(net)
    report = eqm.audit(model, x, symmetry_for_escnn(net), layers=True)

escnn convolutions cache their expanded filter when ``.eval()`` is called and drop it in ``.train()``; eqmonitor's
probes switch the ``training`` flags without calling ``.eval()`` (so that the model is left untouched), which would
leave them with a missing filter (an ``AttributeError``) or, in a freshly built module, an all-zero placeholder
(silently wrong outputs). :class:`EscnnTensorModel` and :func:`symmetry_for_escnn` therefore add a forward pre-hook to
each escnn convolution of the model (once): when the flag says eval but the cache is missing or all zero, that call
uses a filter expanded from the current weights, and the cached buffers are put back after the call. Valid caches are
used as is; in train mode the hooks do nothing.

escnn 1.0.11 with scikit-learn >= 1.9 installed fails to build dihedral (``flipRot2dOnR2``) convolutions
(``TypeError: np.matrix is not supported``, escnn#112): escnn uses scikit-learn's ``randomized_svd`` when it can import
it. Before building such a model, set ``escnn.group._numerical.randomized_svd = None`` (escnn's exact SciPy path).

**Layer-wise tests.** Importing this module registers :func:`feature_adapter` with
:func:`~eqmonitor.functional.layerwise.register_feature_adapter` (once; nothing else to call): every escnn module
with ``in_type`` / ``out_type`` that is not a container of other escnn modules is measured with
``FieldTypeAction(out_type)`` on its output and ``FieldTypeAction(in_type)`` on its input, the input wrapped in a
``GeometricTensor`` and the output unwrapped.

Requires escnn: ``pip install eqmonitor[escnn]`` (its ``py3nj`` dependency builds with a Fortran compiler:
``apt-get install -y gfortran``). Importing this module does not import escnn; using it does.

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

import importlib.util
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from eqmonitor.actions.base import Action, Invariant
from eqmonitor.actions.image import ImageAction, ImagePlan
from eqmonitor.functional.layerwise import FeatureAdapter, register_feature_adapter
from eqmonitor.groups import SO2, Cyclic, Dihedral, Flip, Group
from eqmonitor.symmetry import Symmetry

__all__ = [
    "EscnnTensorModel",
    "FieldTypeAction",
    "escnn_elements",
    "feature_adapter",
    "group_for_gspace",
    "symmetry_for_escnn",
]

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


# ==================================================================================================== elements
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


# ==================================================================================================== the action
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


# ==================================================================================================== models
def _expands_filters(module: nn.Module) -> bool:
    """escnn convolutions: they expand a filter from their weights and cache it in eval mode."""
    return callable(getattr(module, "expand_parameters", None)) and hasattr(module, "basisexpansion")


def _swap(module: nn.Module, name: str, value: Any) -> Callable[[], None]:
    """Put ``value`` in place of the buffer / attribute ``name``; return a function that puts back the original."""
    if name in module.__dict__:
        old = module.__dict__[name]
        module.__dict__[name] = value
        return lambda: module.__dict__.__setitem__(name, old)
    had, old = name in module._buffers, module._buffers.get(name)
    module._buffers[name] = value

    def restore() -> None:
        if had:
            module._buffers[name] = old
        else:
            module._buffers.pop(name, None)

    return restore


class _EvalFilterGuard:
    """Forward pre-hook and hook of an escnn convolution (see the module notes): in eval mode with a missing or
    all-zero cached filter, the call uses a filter expanded from the current weights; the cache is put back after."""

    def __init__(self) -> None:
        self._saved: list = []

    @staticmethod
    def _needs_fresh(module: nn.Module) -> bool:
        if module.training:
            return False
        f = module._buffers.get("filter", module.__dict__.get("filter"))
        has_bias = "expanded_bias" in module._buffers or "expanded_bias" in module.__dict__
        return f is None or not has_bias or not bool(f.any())

    def pre(self, module: nn.Module, args: tuple) -> None:
        if not self._needs_fresh(module):
            self._saved.append(())
            return
        weight, bias = module.expand_parameters()
        self._saved.append((_swap(module, "filter", weight), _swap(module, "expanded_bias", bias)))

    def post(self, module: nn.Module, args: tuple, output: Any) -> None:
        for restore in reversed(self._saved.pop() if self._saved else ()):
            restore()


def _guard_eval_filters(module: nn.Module) -> None:
    for m in module.modules():
        if _expands_filters(m) and not any(
            isinstance(getattr(h, "__self__", None), _EvalFilterGuard) for h in m._forward_pre_hooks.values()
        ):
            guard = _EvalFilterGuard()
            m.register_forward_pre_hook(guard.pre)
            m.register_forward_hook(guard.post, always_call=True)


class EscnnTensorModel(nn.Module):
    """An escnn module as a tensor model: ``[B, in_type.size, H, W] -> module(GeometricTensor(x, in_type)).tensor``.

    eqmonitor feeds models plain tensors; pass this wrapper to ``audit`` / ``orbit_errors`` / ``layer_errors`` /
    ``EquivarianceMonitor`` and the symmetry from :func:`symmetry_for_escnn` (of the wrapped module or of the
    wrapper). A ``GeometricTensor`` input is passed through as is; a non-``GeometricTensor`` output is returned as is.
    Adds the eval-filter hooks to the module's escnn convolutions (see the module notes).

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
        _guard_eval_filters(module)

    def forward(self, x: Any) -> Any:
        if not _is_geometric_tensor(x):
            x = _escnn_nn().GeometricTensor(x, self.in_type)
        out = self.module(x)
        return out.tensor if _is_geometric_tensor(out) else out


# ==================================================================================================== symmetries
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
    ``forward`` wraps the tensor itself. Like the wrapper, this adds the eval-filter hooks to ``module``'s escnn
    convolutions (see the module notes), so that probes of a model in train mode use its current weights.

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
    if isinstance(module, nn.Module):
        _guard_eval_filters(module)
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


# ==================================================================================================== layer-wise
_ADAPTER_ACTIONS: dict[Any, FieldTypeAction] = {}


def _cached_action(field_type: Any) -> FieldTypeAction:
    """One action per field type, so that ρ matrices are computed once across layers and calls."""
    if len(_ADAPTER_ACTIONS) > 256:
        _ADAPTER_ACTIONS.clear()
    if field_type not in _ADAPTER_ACTIONS:
        _ADAPTER_ACTIONS[field_type] = FieldTypeAction(field_type)
    return _ADAPTER_ACTIONS[field_type]


def _wrapper(field_type: Any) -> Callable[[Tensor], Any]:
    geometric_tensor = _escnn_nn().GeometricTensor
    return lambda t: geometric_tensor(t, field_type)


def _unwrap(value: Any) -> Any:
    return value.tensor if _is_geometric_tensor(value) else value


def feature_adapter(module: nn.Module, symmetry: Symmetry) -> Optional[FeatureAdapter]:
    """The layer-wise :class:`~eqmonitor.functional.layerwise.FeatureAdapter` of an escnn module, or ``None``.

    An escnn module with ``in_type`` / ``out_type`` on a 2-D gspace, not an :class:`EscnnTensorModel` nor a
    container of other escnn modules (``SequentialModule``: its layers are measured one by one), under a planar
    group whose testing elements its field types represent, gets ``FieldTypeAction(out_type)`` on its output,
    ``FieldTypeAction(in_type)`` on its input, ``wrap = GeometricTensor(·, in_type)`` and ``unwrap = .tensor``.
    Groups with translations (``Translation2d``) get ``None``: the default feature action scales shifts to each
    feature's resolution, and escnn's fibres do not change under translations.

    Example:
        >>> from escnn import gspaces, nn as enn
        >>> from eqmonitor.integrations.escnn import feature_adapter, symmetry_for_escnn
        >>> r2 = gspaces.rot2dOnR2(4)
        >>> relu = enn.ReLU(enn.FieldType(r2, [r2.regular_repr]))
        >>> feature_adapter(relu, symmetry_for_escnn(relu)).output_action
        FieldTypeAction(C4_on_R2[(None, 4)], size=4)
    """
    if not _ESCNN_AVAILABLE or isinstance(module, EscnnTensorModel) or not _is_escnn_module(module):
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
        in_action, out_action = _cached_action(module.in_type), _cached_action(module.out_type)
        in_action.matrices(group, tests)
        out_action.matrices(group, tests)
    except (ValueError, TypeError, NotImplementedError):  # elements the field types do not represent
        return None
    return FeatureAdapter(
        output_action=out_action, input_action=in_action, wrap=_wrapper(module.in_type), unwrap=_unwrap
    )


register_feature_adapter(feature_adapter)


# ==================================================================================================== doctests
def _skip_examples_without_escnn() -> None:
    """Without escnn, mark this module's examples ``+SKIP`` so that ``pytest --doctest-modules`` passes."""
    mark = re.compile(r"^(\s*>>> .*)$", re.MULTILINE)
    module = sys.modules[__name__]
    for obj in [module, FieldTypeAction, escnn_elements, group_for_gspace, symmetry_for_escnn, feature_adapter]:
        if obj.__doc__:
            obj.__doc__ = mark.sub(r"\1  # doctest: +SKIP", obj.__doc__)


if not _ESCNN_AVAILABLE:
    _skip_examples_without_escnn()
