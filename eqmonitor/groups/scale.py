"""Isotropic scalings of the plane."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups.base import F64, Group, resolve_device

__all__ = ["Scale"]


class Scale(Group):
    """Isotropic scalings ``x -> e^s x``; elements are log-scales ``s``, ``[K, 1]`` float64.

    Sampled uniformly in log-scale over ``[log min_scale, log max_scale]``.
    """

    name = "scale"
    param_names = ("log_scale",)
    layout = "line"

    def __init__(self, min_scale: float = 0.8, max_scale: float = 1.25) -> None:
        if not 0 < min_scale <= 1 <= max_scale:
            raise ValueError(f"Expected 0 < `min_scale` <= 1 <= `max_scale`, but got {min_scale!r}, {max_scale!r}.")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __repr__(self) -> str:
        return f"Scale(min_scale={self.min_scale:g}, max_scale={self.max_scale:g})"

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=F64, device=resolve_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        lo, hi = math.log(self.min_scale), math.log(self.max_scale)
        u = torch.rand(n, 1, generator=generator, dtype=F64, device=generator.device if generator else dev)
        return (lo + (hi - lo) * u).to(dev)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        n = 9 if n is None else n
        lo, hi = math.log(self.min_scale), math.log(self.max_scale)
        return torch.linspace(lo, hi, n, dtype=F64, device=resolve_device(device))[:, None]

    def testing_elements(self, device=None) -> Tensor:
        return self.grid(5, device)

    def matrix(self, elements: Tensor) -> Tensor:
        s = torch.exp(elements[:, 0].to(F64))
        return s[:, None, None] * torch.eye(2, dtype=F64, device=elements.device)

    def describe(self, element: Tensor) -> str:
        return f"scale={math.exp(float(element.reshape(-1)[0])):.3f}"
