"""The base of every group: :class:`Group`, elements as rows of a tensor ``[K, p]``, with the helpers all groups
share (devices, dtypes, which matrices are index maps of a pixel grid, user input as elements)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["Group", "is_signed_permutation"]

F64 = torch.float64  #: dtype of continuous parameters
I64 = torch.int64  #: dtype of discrete parameters
EXACT_TOL = 1e-9  #: how close to an integer a matrix entry or a shift must be to count as exact on a grid


def resolve_device(device: Optional[torch.device | str], generator: Optional[torch.Generator] = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def is_signed_permutation(matrix: Tensor) -> Tensor:
    """``[K, d, d] -> bool [K]``: whether each matrix permutes axes and flips signs (an index map on a grid)."""
    r = torch.round(matrix)
    integral = ((matrix - r).abs() < EXACT_TOL).flatten(1).all(1)
    unit = (r.abs().sum(-1) == 1).all(-1) & (r.abs().sum(-2) == 1).all(-1)
    return integral & unit


class Group(ABC):
    """A group whose elements are rows of a tensor ``[K, p]``.

    Attributes:
        name: short spec name (``"so2"``, ``"c4"``) used in keys and reports.
        param_dim: ``p``, the number of parameters per element.
        param_names: what each parameter means, for reports (``("angle",)``).
        continuous: whether the group is a continuous (Lie) group.
        abelian: whether elements commute.
        layout: plot layout hint: ``"circle"``, ``"line"``, ``"plane"``, ``"finite"`` or ``"so3_planes"``.
        space_dim: dimension of the space it acts on (2 for the plane, 3 for space), ``None`` if it does not.
    """

    name: str = "group"
    param_dim: int = 1
    param_names: tuple[str, ...] = ("g",)
    continuous: bool = True
    abelian: bool = True
    layout: str = "line"
    space_dim: Optional[int] = 2
    dtype: torch.dtype = F64

    # ----------------------------------------------------------------------------------------------- laws
    @abstractmethod
    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """``a · b`` row by row: acting with the result is acting with ``b`` first, then ``a``."""

    @abstractmethod
    def inverse(self, a: Tensor) -> Tensor:
        """``a⁻¹`` row by row."""

    @abstractmethod
    def identity(self, device: Optional[torch.device | str] = None) -> Tensor:
        """The identity element, ``[1, p]``."""

    def equal(self, a: Tensor, b: Tensor, atol: float = 1e-9) -> Tensor:
        """``bool [K]``: whether two batches of elements are the same elements (angles compared on the circle)."""
        if not a.dtype.is_floating_point:
            return (a == b).all(-1)
        return ((a - b).abs() <= atol).all(-1)

    # ----------------------------------------------------------------------------------------------- drawing
    @abstractmethod
    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """``n`` elements drawn from the Haar (uniform) measure, ``[n, p]``, from ``generator`` if given."""

    def order(self) -> Optional[int]:
        """Number of elements, ``None`` for an infinite group."""
        return None

    def all_elements(self, device=None) -> Tensor:
        """Every element of a finite group, ``[order, p]``."""
        raise ValueError(f"{self!r} is infinite; use `sample` or `grid` instead of `all_elements`.")

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """A fixed, evenly spread set of elements for plots (``n`` of them where that applies), ``[K, p]``."""
        return self.all_elements(device)

    def testing_elements(self, device=None) -> Tensor:
        """A small fixed set to test on: every element of a finite group, the grid-exact ones of a continuous one."""
        return self.all_elements(device)

    def elements(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """``n`` elements to probe with: all of a finite group if it has at most ``n``, else Haar samples."""
        order = self.order()
        if order is not None and order <= n:
            return self.all_elements(device)
        return self.sample(n, generator=generator, device=device)

    def default_elements(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """The elements an audit, the Metric and the monitor probe with by default (on the CPU): every element of a
        finite group of order ≤ ``n``; else the plot grid of ``n`` elements for a one-parameter group (it includes the
        exact ones); else ``n`` Haar samples from ``generator``.

        Example:
            >>> from eqmonitor.groups import SO2, Cyclic
            >>> Cyclic(4).default_elements(8).flatten().tolist(), SO2().default_elements(4).shape
            ([0, 1, 2, 3], torch.Size([4, 1]))
        """
        order = self.order()
        if order is not None:
            return self.all_elements() if order <= n else self.sample(n, generator=generator)
        if self.param_dim == 1:
            return self.grid(n)
        return self.sample(n, generator=generator)

    # ----------------------------------------------------------------------------------------------- geometry
    def matrix(self, elements: Tensor) -> Tensor:
        """Linear part of the action on space, ``[K, d, d]`` float64."""
        raise TypeError(f"{self!r} does not act on space; it has no `matrix`.")

    def translation(self, elements: Tensor) -> Tensor:
        """Translation part of the action on space, ``[K, d]`` float64 (pixels for images)."""
        return torch.zeros(elements.shape[0], self.space_dim or 0, dtype=F64, device=elements.device)

    def exact_on_grid(self, elements: Tensor) -> Tensor:
        """``bool [K]``: elements that map a pixel grid onto itself (signed permutations and integer shifts)."""
        if self.space_dim is None:
            return torch.ones(elements.shape[0], dtype=torch.bool, device=elements.device)
        t = self.translation(elements)
        return is_signed_permutation(self.matrix(elements)) & ((t - t.round()).abs() < EXACT_TOL).all(-1)

    # ----------------------------------------------------------------------------------------------- reports
    def describe(self, element: Tensor) -> str:
        """One element as ``name=value`` pairs, e.g. ``angle=0.785``."""
        values = element.reshape(-1).tolist()
        return ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(self.param_names, values)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _check_elements(self, elements: Tensor) -> None:
        if elements.ndim != 2 or elements.shape[1] != self.param_dim:
            raise ValueError(
                f"Expected elements of {self!r} to have shape [K, {self.param_dim}], but got {tuple(elements.shape)}."
            )


def as_elements(elements: Tensor | Sequence, group: Group, device=None) -> Tensor:
    """User input as ``group``'s elements: a tensor ``[K, p]`` (or ``[K]`` when ``p = 1``, or ``[K, 3, 3]`` matrices
    for a group with 9 parameters, or Python numbers) checked and returned on ``device`` with the group's dtype.

    Raises:
        ValueError: the shape does not fit the group, or an integer group got non-integer values.
    """
    if not isinstance(elements, Tensor):  # Python numbers: keep float64 precision (pi/2 must stay a quarter turn)
        elements = torch.as_tensor(elements, dtype=group.dtype if group.dtype.is_floating_point else None)
    if elements.ndim == 1 and group.param_dim == 1:
        elements = elements[:, None]
    if group.param_dim == 9 and elements.ndim == 3 and elements.shape[1:] == (3, 3):
        elements = elements.reshape(-1, 9)
    group._check_elements(elements)
    if group.dtype.is_floating_point:
        elements = elements.to(dtype=F64)
    elif elements.dtype.is_floating_point:
        if (elements != elements.round()).any():
            raise ValueError(f"Expected integer elements for {group!r}, but got non-integer values.")
        elements = elements.to(I64)
    return elements.to(device) if device is not None else elements
