"""C_n: the rotations of the plane by multiples of 2π/n."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from eqmonitor.groups._matrices import rotation_2d_exact
from eqmonitor.groups.base import F64, I64, Group, resolve_device

__all__ = ["Cyclic"]


class Cyclic(Group):
    """The cyclic group ``C_n`` of rotations by multiples of ``2π/n``; elements are indices ``k``, ``[K, 1]`` int64."""

    param_names = ("k",)
    continuous = False
    layout = "circle"
    dtype = I64

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive integer, but got {n!r}.")
        self.n = n
        self.name = f"c{n}"

    def __repr__(self) -> str:
        return f"Cyclic({self.n})"

    def order(self) -> int:
        return self.n

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, self.n)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.remainder(-a, self.n)

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=I64, device=resolve_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        k = torch.randint(self.n, (n, 1), generator=generator, device=generator.device if generator else dev)
        return k.to(dev)

    def all_elements(self, device=None) -> Tensor:
        return torch.arange(self.n, dtype=I64, device=resolve_device(device))[:, None]

    def angle(self, elements: Tensor) -> Tensor:
        """Rotation angle of each element, ``[K]`` float64."""
        return elements[:, 0].to(F64) * (2 * math.pi / self.n)

    def matrix(self, elements: Tensor) -> Tensor:
        return rotation_2d_exact(self.angle(elements))

    def describe(self, element: Tensor) -> str:
        k = int(element.reshape(-1)[0])
        return f"k={k} ({360.0 * k / self.n:.1f}°)"
