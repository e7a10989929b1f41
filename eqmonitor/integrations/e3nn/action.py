"""The action of rotations and reflections on e3nn features ``[B, ..., irreps.dim]``: ``x -> D(R) x``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from eqmonitor.actions.base import Action, Representation
from eqmonitor.groups import Group
from eqmonitor.integrations.e3nn._common import _F64, _as_irreps
from eqmonitor.integrations.e3nn.wigner import _wigner_blocks

__all__ = ["IrrepsAction"]

#: the examples need e3nn (honoured by the project's conftest, as by pytest-doctestplus)
__doctest_requires__ = {("*",): ["e3nn"]}


class IrrepsAction(Representation):
    """The action of rotations and reflections on e3nn features ``[B, ..., irreps.dim]``: ``x -> D(R) x``.

    ``R`` is the element's 3x3 matrix (``group.matrix(elements)``) and ``D(R) = o3.Irreps(irreps).D_from_matrix(R)``
    (in float64, see :mod:`~eqmonitor.integrations.e3nn.wigner`), one element per row. It works for
    :class:`~eqmonitor.groups.SO3` and :class:`~eqmonitor.groups.O3` (a matrix with ``det = -1`` multiplies each
    irrep by its parity ``p``), and for any
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
