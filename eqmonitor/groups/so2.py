"""SO(2): rotations of the plane by any angle."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups._matrices import rotation_2d_exact, wrap_angle
from eqmonitor.groups.base import F64, Group, resolve_device

__all__ = ["SO2"]


class SO2(Group):
    """Rotations of the plane by any angle; elements are angles in radians, ``[K, 1]``, in ``[0, 2π)``."""

    name = "so2"
    param_names = ("angle",)
    layout = "circle"

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return wrap_angle(a + b)

    def inverse(self, a: Tensor) -> Tensor:
        return wrap_angle(-a)

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=F64, device=resolve_device(device))

    def equal(self, a: Tensor, b: Tensor, atol: float = 1e-9) -> Tensor:
        d = torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi
        return (d.abs() <= atol).all(-1)

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = resolve_device(device, generator)
        u = torch.rand(n, 1, generator=generator, dtype=F64, device=generator.device if generator else dev)
        return (2 * math.pi * u).to(dev)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """``n`` evenly spaced angles starting at 0 (default 72, i.e. 5° steps)."""
        n = 72 if n is None else n
        return (torch.arange(n, dtype=F64, device=resolve_device(device)) * (2 * math.pi / n))[:, None]

    def testing_elements(self, device=None) -> Tensor:
        """The four exact rotations (multiples of 90°)."""
        return self.grid(4, device)

    def matrix(self, elements: Tensor) -> Tensor:
        return rotation_2d_exact(elements[:, 0].to(F64))

    def describe(self, element: Tensor) -> str:
        a = float(element.reshape(-1)[0])
        return f"angle={a:.3f} ({math.degrees(a):.1f}°)"
