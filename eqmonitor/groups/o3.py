"""O(3): rotations and reflections of space."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups.base import F64
from eqmonitor.groups.so3 import SO3, random_rotations

__all__ = ["O3"]


class O3(SO3):
    """Rotations and reflections of space (``det = ±1``); elements are flattened matrices, ``[K, 9]`` float64."""

    name = "o3"

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        r = random_rotations(n, generator, device)
        gdev = generator.device if generator else r.device
        parity = torch.randint(2, (n,), generator=generator, device=gdev).to(r.device)
        return (r * (1 - 2 * parity.to(F64))[:, None, None]).reshape(n, 9)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        rot = super().grid(n, device)
        return torch.cat([rot, -rot])

    def testing_elements(self, device=None) -> Tensor:
        rot = super().testing_elements(device)
        return torch.cat([rot, -rot])

    def describe(self, element: Tensor) -> str:
        r = element.reshape(3, 3).to(F64)
        if torch.linalg.det(r) < 0:
            return "inversion ∘ " + super().describe(-element)
        return super().describe(element)
