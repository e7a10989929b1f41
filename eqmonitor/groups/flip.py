"""The two-element group of one mirror of the plane."""

from __future__ import annotations

import torch
from torch import Tensor

from eqmonitor.groups.base import F64, I64, Group, resolve_device

__all__ = ["Flip"]


class Flip(Group):
    """The two-element group of one mirror; elements are flip bits, ``[K, 1]`` int64.

    Args:
        axis: ``"horizontal"`` mirrors left-right (``x -> -x``), ``"vertical"`` mirrors up-down (``y -> -y``).
    """

    param_names = ("flip",)
    continuous = False
    layout = "finite"
    dtype = I64

    def __init__(self, axis: str = "horizontal") -> None:
        if axis not in ("horizontal", "vertical"):
            raise ValueError(f"Expected `axis` to be 'horizontal' or 'vertical', but got {axis!r}.")
        self.axis = axis
        self.name = "flip" if axis == "horizontal" else "vflip"

    def __repr__(self) -> str:
        return f"Flip({self.axis!r})"

    def order(self) -> int:
        return 2

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, 2)

    def inverse(self, a: Tensor) -> Tensor:
        return a.clone()

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=I64, device=resolve_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        return torch.randint(2, (n, 1), generator=generator, device=generator.device if generator else dev).to(dev)

    def all_elements(self, device=None) -> Tensor:
        return torch.arange(2, dtype=I64, device=resolve_device(device))[:, None]

    def matrix(self, elements: Tensor) -> Tensor:
        diag = torch.ones(elements.shape[0], 2, dtype=F64, device=elements.device)
        diag[:, 0 if self.axis == "horizontal" else 1] = 1 - 2 * elements[:, 0].to(F64)
        return torch.diag_embed(diag)
