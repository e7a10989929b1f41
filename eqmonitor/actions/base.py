"""Actions: how a group element acts on a tensor, batched with one element per row.

An action ``φ`` takes a group, elements ``[B, p]`` and a tensor ``x [B, ...]`` and returns ``φ(g_b, x_b)`` for every
row ``b``: one batched tensor operation, never a Python loop over rows. An action must satisfy the group laws:
``φ(e, x) = x`` and ``φ(g, φ(h, x)) = φ(gh, x)`` (exactly for index maps, up to its noise floor for interpolation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from eqmonitor.groups import Group

__all__ = ["Action", "Custom", "Invariant", "Representation"]


class Action(ABC):
    """Base class of actions ``φ(g, x)``.

    Subclasses implement :meth:`__call__` and, where the action cannot act on every tensor, :meth:`check`.
    """

    @abstractmethod
    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        """Apply ``elements [B, p]`` to ``x [B, ...]`` row by row; returns a tensor shaped like ``x``."""

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        """Raise a clear error if this action cannot act on ``x`` for ``group`` (``role``: "input" or "output")."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self!r} acts on tensors, but the {role} is a {type(x).__name__}.")

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        """Put ``x`` in the form the action works on (e.g. mask an image to the inscribed disc); identity here."""
        return x

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        """``bool [K]``: elements this action applies without interpolation on tensors of ``shape``."""
        return torch.ones(elements.shape[0], dtype=torch.bool, device=elements.device)

    def plan(self, group: Group, elements: Tensor, shape: torch.Size, dtype: torch.dtype) -> Any:
        """Precompute, once for ``elements [K, p]``, what acting on tensors of ``shape`` needs but the values do not
        (sampling grids, gather indices). The default plan is the elements themselves."""
        return elements

    def apply(self, group: Group, plan: Any, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        """Act on prepared ``x [B, ...]`` with the planned elements ``rows [B]`` (indices into the plan's ``K``).

        ``all_exact`` is a hint from a caller that knows whether every row's element is exact."""
        return self(group, plan.index_select(0, rows), x)

    @property
    def is_identity(self) -> bool:
        """Whether the action leaves every tensor unchanged (an invariant output)."""
        return False

    def invariant_on(self, shape: tuple[int, ...]) -> bool:
        """Whether the action leaves features of per-sample ``shape`` unchanged (e.g. an image action on a
        globally pooled ``[C, 1, 1]`` map): a reshape of such features is invariant."""
        return self.is_identity

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Invariant(Action):
    """The trivial action ``φ(g, x) = x``: an *invariant* output is compared with itself."""

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        return x

    @property
    def is_identity(self) -> bool:
        return True


class Representation(Action):
    """A linear action on one dimension: ``x -> ρ(g) x`` along ``dim`` (default the last).

    Args:
        rho: maps elements ``[B, p]`` to matrices ``[B, d, d]`` (float64 is fine; the result is cast to ``x``'s dtype).
        dim: the dimension of size ``d`` that ``ρ(g)`` mixes; every other dimension is a batch of copies.
        name: how the action prints in reports.
    """

    def __init__(self, rho: Callable[[Tensor], Tensor], dim: int = -1, name: str = "Representation") -> None:
        if not callable(rho):
            raise TypeError(f"Expected `rho` to be callable, but got {type(rho).__name__}.")
        self.rho, self.dim, self.name = rho, dim, name

    def __repr__(self) -> str:
        return f"{self.name}(dim={self.dim})"

    def matrices(self, group: Group, elements: Tensor) -> Tensor:
        return self.rho(elements)

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        d = self.matrices(group, elements).to(dtype=x.dtype, device=x.device)
        xm = x.movedim(self.dim, -1)
        shape = xm.shape
        out = torch.einsum("bij,bnj->bni", d, xm.reshape(shape[0], -1, shape[-1]))
        return out.reshape(shape).movedim(-1, self.dim)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        d = self.matrices(group, group.identity(x.device))
        if x.ndim < 2 or d.shape[-1] != x.shape[self.dim]:
            raise RuntimeError(
                f"{self!r} has matrices of size {d.shape[-1]}, but the {role} has shape {tuple(x.shape)} "
                f"(size {x.shape[self.dim] if x.ndim >= 2 else '?'} along dim {self.dim}). "
                "Set `dim` to the dimension the representation acts on, or fix the representation."
            )


class Custom(Action):
    """A user action ``fn(elements [B, p], x [B, ...]) -> [B, ...]``, batched over rows.

    Args:
        fn: the action; it must be batched (one element per row of ``x``).
        exact: whether it applies every element without interpolation (reports it as exact).
        name: how the action prints in reports.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], exact: bool = True, name: Optional[str] = None) -> None:
        if not callable(fn):
            raise TypeError(f"Expected `fn` to be callable, but got {type(fn).__name__}.")
        self.fn, self.exact = fn, exact
        self.name = name or getattr(fn, "__name__", "custom")

    def __repr__(self) -> str:
        return f"Custom({self.name})"

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        return self.fn(elements, x)

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        return torch.full((elements.shape[0],), self.exact, dtype=torch.bool, device=elements.device)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        out = self.fn(group.identity(x.device).expand(x.shape[0], -1), x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise RuntimeError(
                f"{self!r} must return a tensor shaped like its {role} {tuple(x.shape)}, but returned {got}."
            )
