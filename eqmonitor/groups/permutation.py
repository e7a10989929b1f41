"""S_n: permutations of a set of n items."""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups.base import I64, Group, resolve_device

__all__ = ["Permutation"]


class Permutation(Group):
    """The symmetric group ``S_n``; elements are permutations ``[K, n]`` int64 acting by gathering: ``x[σ]``.

    Acting with ``σ`` and then ``τ`` gathers ``x[σ][τ] = x[σ[τ]]``, so ``compose(τ, σ) = σ[τ]``.
    """

    param_names = ("perm",)
    continuous = False
    abelian = False
    layout = "finite"
    space_dim = None
    dtype = I64

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive integer, but got {n!r}.")
        self.n = self.param_dim = n
        self.name = f"s{n}"
        self.abelian = n <= 2

    def __repr__(self) -> str:
        return f"Permutation({self.n})"

    def order(self) -> int:
        return math.factorial(self.n)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.gather(b, 1, a)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.argsort(a, dim=1)

    def identity(self, device=None) -> Tensor:
        return torch.arange(self.n, device=resolve_device(device))[None]

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        u = torch.rand(n, self.n, generator=generator, device=generator.device if generator else dev)
        return torch.argsort(u, dim=1).to(dev)

    def all_elements(self, device=None) -> Tensor:
        if self.order() > 40320:
            raise ValueError(f"{self!r} has {self.order()} elements; use `sample` instead of `all_elements`.")
        return torch.tensor(list(itertools.permutations(range(self.n))), dtype=I64, device=resolve_device(device))

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """The ``n`` cyclic shifts of the set (default: all of them), an ordered subgroup that plots on a line."""
        n = self.n if n is None else min(n, self.n)
        base = torch.arange(self.n, device=resolve_device(device))
        return torch.stack([torch.roll(base, -s) for s in range(n)])

    def testing_elements(self, device=None) -> Tensor:
        """The identity, a transposition, a cyclic shift and a reversal."""
        base = torch.arange(self.n, device=resolve_device(device))
        swap = base.clone()
        if self.n > 1:
            swap[0], swap[1] = 1, 0
        return torch.stack([base, swap, torch.roll(base, -1), base.flip(0)])

    def describe(self, element: Tensor) -> str:
        values = element.reshape(-1).tolist()
        return "perm=" + ("[" + ",".join(map(str, values)) + "]" if len(values) <= 12 else f"[{values[0]},…]")
