"""e3nn integration: actions and symmetries from e3nn ``Irreps``, so e3nn models are measured like any other.

e3nn describes a feature tensor ``[B, ..., irreps.dim]`` by its irreps (``"2x0e + 1x1o + 1x2e"``): a rotation or
reflection ``R`` acts on it through the block-diagonal matrix ``D(R) = irreps.D_from_matrix(R)``. :class:`IrrepsAction`
is that action for eqmonitor's :class:`~eqmonitor.groups.SO3` and :class:`~eqmonitor.groups.O3` (parity included:
``D_from_matrix`` of a matrix with ``det = -1`` applies ``p^1`` to each irrep), and :func:`symmetry_from_irreps` /
:func:`symmetry_for_module` build the :class:`~eqmonitor.Symmetry` of an e3nn model from its irreps. With
``error="max_abs"`` (the default here) the errors are the ones ``e3nn.util.test.equivariance_error`` reports, element
by element.

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

The ``D`` matrices are computed in float64 whatever the default dtype: e3nn builds its Lie-algebra generators in the
*default* dtype, so ``D_from_matrix`` of a float64 matrix is only float32-accurate (≈1e-7) in a float32 process. Here
the generators are built in float64 (on the elements' device) and ``D`` follows e3nn's own formula,
``D^l(R) = p^k exp(α X_y) exp(β X_x) exp(γ X_y)`` with ``(α, β, γ) = o3.matrix_to_angles(det(R) R)``; it equals
``o3.Irreps(irreps).D_from_matrix(R)`` computed under ``torch.set_default_dtype(torch.float64)`` to ~1e-15. Like
e3nn's, it goes through Euler angles, which are ill-conditioned within ~1e-8 rad of ``β = 0`` or ``π``.

Layer-wise tests: importing this module registers :func:`feature_adapter` with
:func:`~eqmonitor.functional.layerwise.register_feature_adapter` (once; nothing else to call), so that
``layer_errors`` measures every module that declares ``irreps_out`` and ``irreps_in`` (or ``irreps_in1`` /
``irreps_in2``) with ``IrrepsAction(irreps_out)`` on its output and, for single-input modules,
``IrrepsAction(irreps_in)`` on its input, as one block (a ``Gate``'s inner modules are not measured apart). Plain
torch modules between them (an activation on irreps features) inherit the action of the layer that produced their
input.

Requires e3nn: ``pip install eqmonitor[e3nn]``. Importing this module does not import e3nn; using it does.

Example:
    >>> import torch
    >>> from e3nn import o3
    >>> from eqmonitor.functional import orbit_errors
    >>> from eqmonitor.integrations.e3nn import symmetry_for_module
    >>> model = o3.Linear("2x0e + 1x1o", "1x0e + 2x1o").double()
    >>> sym = symmetry_for_module(model, group="o3")
    >>> x = torch.randn(4, 5, dtype=torch.float64)
    >>> res = orbit_errors(model, x, sym, sym.group.sample(6, torch.Generator().manual_seed(0)))
    >>> res.errors.shape, bool(res.errors.max() < 1e-12)
    (torch.Size([4, 6]), True)
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from functools import lru_cache
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from eqmonitor.actions.base import Action, Invariant, Representation
from eqmonitor.actions.points import Points
from eqmonitor.functional.layerwise import FeatureAdapter, register_feature_adapter
from eqmonitor.groups import Group, group_from_spec
from eqmonitor.symmetry import Symmetry

__all__ = ["IrrepsAction", "feature_adapter", "symmetry_for_module", "symmetry_from_irreps"]

#: whether e3nn can be imported (checked without importing it)
_E3NN_AVAILABLE: bool = importlib.util.find_spec("e3nn") is not None

_F64 = torch.float64
_C128 = torch.complex128
_INSTALL_HINT = "The e3nn integration needs e3nn: `pip install eqmonitor[e3nn]` (or `pip install e3nn`)."

#: e3nn's name for raw 3D coordinates (transformed as ``x Rᵀ + t``)
CARTESIAN_POINTS = "cartesian_points"


def _o3() -> Any:
    """e3nn's ``o3`` module, imported on first use; a clear ``ModuleNotFoundError`` if e3nn is missing."""
    if not _E3NN_AVAILABLE:
        raise ModuleNotFoundError(_INSTALL_HINT, name="e3nn")
    try:
        from e3nn import o3
    except ImportError as err:  # installed but broken (e.g. built for another torch)
        raise ModuleNotFoundError(f"{_INSTALL_HINT} Importing it failed: {err}", name="e3nn") from err
    return o3


def _as_irreps(irreps: Any) -> Any:
    """``o3.Irreps(irreps)`` with a message that names the bad value."""
    o3 = _o3()
    try:
        return o3.Irreps(irreps)
    except (ValueError, TypeError, AssertionError) as err:
        raise ValueError(
            f"Expected e3nn irreps (an `o3.Irreps`, a string such as '2x0e + 1x1o', or a list of (mul, (l, p))), but "
            f"got {irreps!r}: {err}"
        ) from err


# ======================================================================================== Wigner D in float64
def _su2_generators_f64(j: int) -> Tensor:
    """e3nn's ``o3.su2_generators(j)``, built in complex128 instead of the default dtype, ``[3, 2j+1, 2j+1]``."""
    m = torch.arange(-j, j, dtype=_F64)
    raising = torch.diag(-torch.sqrt(j * (j + 1) - m * (m + 1)), diagonal=-1).to(_C128)
    m = torch.arange(-j + 1, j + 1, dtype=_F64)
    lowering = torch.diag(torch.sqrt(j * (j + 1) - m * (m - 1)), diagonal=1).to(_C128)
    m = torch.arange(-j, j + 1, dtype=_F64)
    return torch.stack([0.5 * (raising + lowering), torch.diag(1j * m), -0.5j * (raising - lowering)], dim=0)


@lru_cache(maxsize=None)
def _so3_generators_f64(l: int, device: str) -> Tensor:  # noqa: E741 (l is the degree, as in e3nn)
    """e3nn's real ``o3.so3_generators(l)`` in float64 on ``device``, ``[3, 2l+1, 2l+1]`` (cached: they are fixed)."""
    x = _su2_generators_f64(l)
    q = _o3().change_basis_real_to_complex(l, dtype=_F64, device="cpu")
    x = torch.conj(q.T) @ x @ q
    return torch.real(x).contiguous().to(device)


def _wigner_blocks(ls_parities: list[tuple[int, int]], matrix: Tensor) -> dict[tuple[int, int], Tensor]:
    """``{(l, p): D [B, 2l+1, 2l+1]}`` float64 for rotation/reflection matrices ``matrix [B, 3, 3]``.

    Follows ``o3.Irrep.D_from_matrix``: ``k = (1 - det R) / 2``, ``(α, β, γ) = matrix_to_angles(det(R) R)``,
    ``D = p^k exp(α X_y) exp(β X_x) exp(γ X_y)``, with float64 generators.
    """
    o3 = _o3()
    r = matrix.to(_F64)
    d = torch.det(r).sign()
    alpha, beta, gamma = o3.matrix_to_angles(d[:, None, None] * r)
    k = (1 - d) / 2
    # as in o3.wigner_D: angles taken modulo 2π
    alpha, beta, gamma = (t[:, None, None] % (2 * math.pi) for t in (alpha, beta, gamma))
    cache: dict[int, Tensor] = {}
    out = {}
    for l, p in ls_parities:  # noqa: E741
        if l not in cache:
            x = _so3_generators_f64(l, str(r.device))
            cache[l] = torch.matrix_exp(alpha * x[1]) @ torch.matrix_exp(beta * x[0]) @ torch.matrix_exp(gamma * x[1])
        out[(l, p)] = cache[l] * (float(p) ** k)[:, None, None]
    return out


# ==================================================================================================== the action
class IrrepsAction(Representation):
    """The action of rotations and reflections on e3nn features ``[B, ..., irreps.dim]``: ``x -> D(R) x``.

    ``R`` is the element's 3x3 matrix (``group.matrix(elements)``) and ``D(R) = o3.Irreps(irreps).D_from_matrix(R)``
    (in float64, see the module notes), one element per row. It works for :class:`~eqmonitor.groups.SO3` and
    :class:`~eqmonitor.groups.O3` (a matrix with ``det = -1`` multiplies each irrep by its parity ``p``), and for any
    group acting on space whose matrices are orthogonal (under ``Translation(3)`` it is the identity).

    It is applied block by block (one small ``D^l`` per distinct irrep, shared by its copies), never building the full
    ``[B, dim, dim]`` matrix; :meth:`matrices` still gives it.

    Args:
        irreps: the irreps of the last dimension: an ``o3.Irreps``, a string (``"2x0e + 1x1o + 1x2e"``) or a list of
            ``(mul, (l, p))``.

    Raises:
        ModuleNotFoundError: e3nn is not installed (``pip install eqmonitor[e3nn]``).
        ValueError: ``irreps`` is not valid e3nn irreps.

    Example:
        >>> import torch
        >>> from eqmonitor.groups import O3
        >>> from eqmonitor.integrations.e3nn import IrrepsAction
        >>> act = IrrepsAction("1x0e + 1x1o")
        >>> x = torch.tensor([[2.0, 1.0, 2.0, 3.0]], dtype=torch.float64)  # a scalar, then a vector
        >>> act(O3(), -torch.eye(3, dtype=torch.float64).reshape(1, 9), x)  # inversion: the vector flips
        tensor([[ 2., -1., -2., -3.]], dtype=torch.float64)
    """

    def __init__(self, irreps: Any) -> None:
        self.irreps = _as_irreps(irreps)
        self._blocks = [(mul, ir.l, ir.p) for mul, ir in self.irreps]
        self._slices = list(self.irreps.slices())
        super().__init__(self._rho_from_flat, dim=-1, name="IrrepsAction")

    def __repr__(self) -> str:
        return f"IrrepsAction({str(self.irreps)!r})"

    @property
    def is_identity(self) -> bool:
        """Whether every irrep is ``0e`` (invariant scalars): then the action changes nothing under any element."""
        return all(deg == 0 and p == 1 for _, deg, p in self._blocks)

    # ------------------------------------------------------------------------------------------------- matrices
    def _rho_from_flat(self, elements: Tensor) -> Tensor:
        """``[B, 9]`` flattened 3x3 matrices (SO3 / O3 elements) ``-> [B, dim, dim]``."""
        return self.matrices_from(elements.to(_F64).reshape(-1, 3, 3))

    def matrices_from(self, matrix: Tensor) -> Tensor:
        """Full block-diagonal ``D(R)`` for ``matrix [B, 3, 3]``: ``[B, dim, dim]`` float64 (``D_from_matrix``)."""
        b, dim = matrix.shape[0], self.irreps.dim
        out = torch.zeros(b, dim, dim, dtype=_F64, device=matrix.device)
        blocks = _wigner_blocks([(deg, p) for _, deg, p in self._blocks], matrix)
        for (mul, deg, p), sl in zip(self._blocks, self._slices):
            n = 2 * deg + 1
            for i in range(mul):
                s = sl.start + i * n
                out[:, s : s + n, s : s + n] = blocks[(deg, p)]
        return out

    def matrices(self, group: Group, elements: Tensor) -> Tensor:
        """``D(R)`` of each element, ``[B, dim, dim]`` float64, with ``R = group.matrix(elements)``."""
        return self.matrices_from(group.matrix(elements))

    # ------------------------------------------------------------------------------------------------- action
    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        """Apply ``elements [B, p]`` to ``x [B, ..., dim]`` row by row; returns a tensor shaped like ``x``.

        ``D`` is computed in float64 and cast to ``x``'s dtype and device.
        """
        shape, dim = x.shape, self.irreps.dim
        if dim == 0 or x.numel() == 0:
            return x.clone()
        matrix = group.matrix(elements).to(device=x.device)
        blocks = _wigner_blocks([(deg, p) for mul, deg, p in self._blocks if mul > 0], matrix)
        flat = x.reshape(shape[0], -1, dim)
        parts = []
        for (mul, deg, p), sl in zip(self._blocks, self._slices):
            if mul == 0:
                continue
            n = 2 * deg + 1
            d = blocks[(deg, p)].to(dtype=x.dtype)
            chunk = flat[..., sl].reshape(shape[0], flat.shape[1], mul, n)
            parts.append(torch.einsum("bij,bkmj->bkmi", d, chunk).reshape(shape[0], flat.shape[1], mul * n))
        return torch.cat(parts, dim=-1).reshape(shape)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        """Raise a clear error if ``x`` is not ``[B, ..., irreps.dim]`` floating point, or ``group`` is not spatial.

        Raises:
            TypeError: ``x`` is not a tensor.
            ValueError: ``group`` does not act on 3D space.
            RuntimeError: ``x`` has no batch dimension, its last dimension is not ``irreps.dim``, or it is not
                floating point.
        """
        Action.check(self, group, x, role)
        if group.space_dim != 3:
            raise ValueError(f"{self!r} needs a group acting on 3D space (SO3, O3, Translation(3)), but got {group!r}.")
        if x.ndim < 2 or x.shape[-1] != self.irreps.dim:
            raise RuntimeError(
                f"{self!r} acts on the last dimension of [B, ..., {self.irreps.dim}] tensors (irreps.dim = "
                f"{self.irreps.dim}), but the {role} has shape {tuple(x.shape)}"
                + (f" (last dimension {x.shape[-1]})" if x.ndim >= 1 else "")
                + ". Check the irreps against the model's "
                + ("`irreps_in`" if role == "input" else "`irreps_out`")
                + ", and keep a batch dimension first."
            )
        if not x.is_floating_point():
            raise RuntimeError(f"{self!r} acts on floating-point features, but the {role} has dtype {x.dtype}.")


# ==================================================================================================== symmetries
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


def symmetry_for_module(
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
        >>> from eqmonitor.integrations.e3nn import symmetry_for_module
        >>> symmetry_for_module(o3.Linear("1x0e + 1x1o", "1x1o"), group="o3")
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


# ==================================================================================================== layer-wise
def feature_adapter(module: nn.Module, symmetry: Symmetry) -> Optional[FeatureAdapter]:
    """The layer-wise :class:`~eqmonitor.functional.layerwise.FeatureAdapter` of an e3nn-style module, or ``None``.

    A module with ``irreps_out`` and ``irreps_in`` (``o3.Linear``, ``nn.Gate``, ``o3.Norm`` …) or ``irreps_in1`` /
    ``irreps_in2`` (tensor products, measured on their output only) under a group acting on 3D space gets
    ``IrrepsAction(irreps_out)`` on its output and, with one input, ``IrrepsAction(irreps_in)`` on it (all-``0e``
    irreps and ``None``: invariant; ``"cartesian_points"``: :class:`~eqmonitor.actions.Points`). Other modules, and
    irreps that are not one valid spec (several outputs), get ``None``.

    Example:
        >>> from e3nn import o3
        >>> from eqmonitor.integrations.e3nn import feature_adapter, symmetry_from_irreps
        >>> adapter = feature_adapter(o3.Linear("1x1o", "2x0e"), symmetry_from_irreps("1x1o", "2x0e"))
        >>> adapter.input_action, adapter.output_action
        (IrrepsAction('1x1o'), Invariant())
    """
    if symmetry.group.space_dim != 3 or not hasattr(module, "irreps_out"):
        return None
    several = hasattr(module, "irreps_in1") or hasattr(module, "irreps_in2")
    if not several and not hasattr(module, "irreps_in"):
        return None
    try:
        output_action = _action_for(module.irreps_out, "out")
    except (NotImplementedError, ValueError):  # several outputs, or not irreps: not an e3nn module we can measure
        return None
    try:
        input_action = None if several else _action_for(module.irreps_in, "in")
    except (NotImplementedError, ValueError):  # several inputs: the output is still measured
        input_action = None
    return FeatureAdapter(output_action=output_action, input_action=input_action)


register_feature_adapter(feature_adapter)


# ==================================================================================================== doctests
def _skip_examples_without_e3nn() -> None:
    """Without e3nn, mark this module's examples ``+SKIP`` so that ``pytest --doctest-modules`` passes."""
    mark = re.compile(r"^(\s*>>> .*)$", re.MULTILINE)
    module = sys.modules[__name__]
    for obj in [module, IrrepsAction, symmetry_from_irreps, symmetry_for_module, feature_adapter]:
        if obj.__doc__:
            obj.__doc__ = mark.sub(r"\1  # doctest: +SKIP", obj.__doc__)


if not _E3NN_AVAILABLE:
    _skip_examples_without_e3nn()
