"""Translations of R^d (image shifts in pixels)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups.base import F64, Group, resolve_device

__all__ = ["Translation", "Translation2d"]


class Translation(Group):
    """Translations of ``R^d`` by shifts (pixels for images), ``[K, d]`` float64.

    Translations are not compact, so ``sample`` draws uniformly from the box ``[-max_shift, max_shift]^d`` (integers
    only if ``integer=True``, which keeps image shifts exact) and ``grid`` spans the same box.

    Args:
        dim: dimension ``d`` of the space.
        max_shift: half-width of the sampling box.
        integer: draw integer shifts only.
    """

    layout = "plane"

    def __init__(self, dim: int = 2, max_shift: float = 4.0, integer: bool = True) -> None:
        if dim < 1:
            raise ValueError(f"Expected `dim` to be positive, but got {dim!r}.")
        if not max_shift > 0:
            raise ValueError(f"Expected `max_shift` to be positive, but got {max_shift!r}.")
        self.space_dim = self.param_dim = dim
        self.max_shift, self.integer = float(max_shift), integer
        self.param_names = ("dx", "dy", "dz")[:dim] if dim <= 3 else tuple(f"d{i}" for i in range(dim))
        self.name = "translation" if dim == 2 else f"translation{dim}d"
        self.layout = "plane" if dim == 2 else "line"

    def __repr__(self) -> str:
        return f"Translation(dim={self.space_dim}, max_shift={self.max_shift:g}, integer={self.integer})"

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, self.param_dim, dtype=F64, device=resolve_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        gdev = generator.device if generator else dev
        if self.integer:
            m = int(self.max_shift)
            t = torch.randint(-m, m + 1, (n, self.param_dim), generator=generator, device=gdev).to(F64)
        else:
            t = (2 * torch.rand(n, self.param_dim, generator=generator, dtype=F64, device=gdev) - 1) * self.max_shift
        return t.to(dev)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """A square grid of shifts, ``n`` per axis (default: every integer shift in the box)."""
        n = 2 * int(self.max_shift) + 1 if n is None else n
        axis = torch.linspace(-self.max_shift, self.max_shift, n, dtype=F64, device=resolve_device(device))
        if self.integer:
            axis = axis.round().unique()
        mesh = torch.meshgrid(*([axis] * self.param_dim), indexing="xy")
        return torch.stack([m.reshape(-1) for m in mesh], 1)

    def testing_elements(self, device=None) -> Tensor:
        """Unit shifts along each axis and their sum (exact on a grid)."""
        eye = torch.eye(self.param_dim, dtype=F64, device=resolve_device(device))
        return torch.cat([eye, -eye, eye.sum(0, keepdim=True)])

    def matrix(self, elements: Tensor) -> Tensor:
        return torch.eye(self.param_dim, dtype=F64, device=elements.device).expand(elements.shape[0], -1, -1)

    def translation(self, elements: Tensor) -> Tensor:
        return elements.to(F64)


class Translation2d(Translation):
    """Translations of the plane (image shifts in pixels, ``(dx, dy)``); see :class:`Translation`."""

    def __init__(self, max_shift: float = 4.0, integer: bool = True) -> None:
        super().__init__(2, max_shift, integer)
