"""D_n: the rotations of the plane by multiples of 2π/n and the reflections."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from eqmonitor.groups._matrices import rotation_2d_exact
from eqmonitor.groups.base import F64, I64, Group, resolve_device

__all__ = ["Dihedral"]


class Dihedral(Group):
    """The dihedral group ``D_n``: rotations by multiples of ``2π/n`` and reflections.

    An element ``(k, f)`` (``[K, 2]`` int64) is ``r^k m^f``: first the mirror ``m: x -> -x`` (a left-right flip) if
    ``f = 1``, then the rotation by ``2πk/n``. So ``(k1, f1)(k2, f2) = (k1 + (-1)^f1 k2, f1 + f2)``.
    """

    param_dim = 2
    param_names = ("k", "flip")
    continuous = False
    abelian = False
    layout = "finite"
    dtype = I64

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive integer, but got {n!r}.")
        self.n = n
        self.name = f"d{n}"
        self.abelian = n <= 2

    def __repr__(self) -> str:
        return f"Dihedral({self.n})"

    def order(self) -> int:
        return 2 * self.n

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        sign = 1 - 2 * a[:, 1:2]
        k = torch.remainder(a[:, 0:1] + sign * b[:, 0:1], self.n)
        return torch.cat([k, torch.remainder(a[:, 1:2] + b[:, 1:2], 2)], 1)

    def inverse(self, a: Tensor) -> Tensor:
        k = torch.where(a[:, 1:2] == 1, a[:, 0:1], torch.remainder(-a[:, 0:1], self.n))
        return torch.cat([k, a[:, 1:2]], 1)

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 2, dtype=I64, device=resolve_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        idx = torch.randint(2 * self.n, (n,), generator=generator, device=generator.device if generator else dev)
        return self.all_elements(dev)[idx.to(dev)]

    def all_elements(self, device=None) -> Tensor:
        k = torch.arange(self.n, dtype=I64, device=resolve_device(device))
        return torch.cat([torch.stack([k, torch.zeros_like(k)], 1), torch.stack([k, torch.ones_like(k)], 1)])

    def matrix(self, elements: Tensor) -> Tensor:
        rot = rotation_2d_exact(elements[:, 0].to(F64) * (2 * math.pi / self.n))
        mirror = torch.ones(elements.shape[0], 2, dtype=F64, device=elements.device)
        mirror[:, 0] = 1 - 2 * elements[:, 1].to(F64)
        return rot * mirror[:, None, :]

    def describe(self, element: Tensor) -> str:
        k, f = (int(v) for v in element.reshape(-1))
        return f"k={k} ({360.0 * k / self.n:.1f}°){', flipped' if f else ''}"
