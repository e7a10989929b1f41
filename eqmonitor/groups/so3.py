"""SO(3): rotations of space, and the rotation matrices it draws (Haar-random, about an axis)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups._matrices import rotation_2d_exact
from eqmonitor.groups.base import F64, Group, resolve_device

__all__ = ["SO3"]


def random_rotations(n: int, generator=None, device=None) -> Tensor:
    """Haar-random rotation matrices ``[n, 3, 3]`` from normalised Gaussian quaternions."""
    dev = resolve_device(device, generator)
    q = torch.randn(n, 4, generator=generator, dtype=F64, device=generator.device if generator else dev).to(dev)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        1,
    ).reshape(n, 3, 3)  # fmt: skip


def axis_rotations(angles: Tensor, axis: int) -> Tensor:
    """Rotations by ``angles [K]`` about coordinate axis ``axis`` (0, 1, 2), ``[K, 3, 3]``."""
    r2 = rotation_2d_exact(angles)
    out = torch.eye(3, dtype=F64, device=angles.device).repeat(angles.shape[0], 1, 1)
    i, j = [a for a in range(3) if a != axis]
    out[:, i, i], out[:, i, j], out[:, j, i], out[:, j, j] = r2[:, 0, 0], r2[:, 0, 1], r2[:, 1, 0], r2[:, 1, 1]
    return out


class SO3(Group):
    """Rotations of space; elements are rotation matrices flattened row-major, ``[K, 9]`` float64."""

    name = "so3"
    param_dim = 9
    param_names = ("R",)
    abelian = False
    layout = "so3_planes"
    space_dim = 3

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return (a.reshape(-1, 3, 3) @ b.reshape(-1, 3, 3)).reshape(-1, 9)

    def inverse(self, a: Tensor) -> Tensor:
        return a.reshape(-1, 3, 3).transpose(1, 2).reshape(-1, 9)

    def identity(self, device=None) -> Tensor:
        return torch.eye(3, dtype=F64, device=resolve_device(device)).reshape(1, 9)

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        return random_rotations(n, generator, device).reshape(n, 9)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """Rotations about the x, y and z axes, ``n`` angles each (default 72: 5° steps), ``[3n, 9]``."""
        n = 72 if n is None else n
        angles = torch.arange(n, dtype=F64, device=resolve_device(device)) * (2 * math.pi / n)
        return torch.cat([axis_rotations(angles, ax) for ax in range(3)]).reshape(-1, 9)

    def testing_elements(self, device=None) -> Tensor:
        """Eight fixed Haar-random rotations (seed 0)."""
        g = torch.Generator().manual_seed(0)
        return random_rotations(8, g).reshape(8, 9).to(resolve_device(device))

    def matrix(self, elements: Tensor) -> Tensor:
        return elements.to(F64).reshape(-1, 3, 3)

    def translation(self, elements: Tensor) -> Tensor:
        return torch.zeros(elements.shape[0], 3, dtype=F64, device=elements.device)

    def describe(self, element: Tensor) -> str:
        r = element.reshape(3, 3).to(F64)
        angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(r.trace()) - 1) / 2))))
        return f"rotation by {angle:.1f}°"
