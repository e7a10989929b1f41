"""Rotation matrices and angles of the plane, shared by the planar and spatial groups."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__: list = []


def rotation_2d(angle: Tensor) -> Tensor:
    """``[K] -> [K, 2, 2]`` rotation matrices ``[[cos, -sin], [sin, cos]]``."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


QUARTER_TOL = 1e-14  # radians: how close to a multiple of π/2 an angle must be to count as a quarter turn


def rotation_2d_exact(angle: Tensor) -> Tensor:
    """Like :func:`rotation_2d`, but quarter turns (within ``1e-14`` rad) get exact integer matrices:
    ``cos(π/2)`` is 6e-17 in float64, not 0, and a quarter turn must stay an index map of the pixel grid.
    """
    quarter = angle / (math.pi / 2)
    turns = quarter.round()
    near = (quarter - turns).abs() * (math.pi / 2) < QUARTER_TOL
    exact = rotation_2d(turns * (math.pi / 2)).round()
    return torch.where(near[:, None, None], exact, rotation_2d(angle))


def wrap_angle(a: Tensor) -> Tensor:
    """Angles in ``[0, 2π)``: ``remainder`` rounds tiny negative angles up to exactly ``2π``; those become 0."""
    r = torch.remainder(a, 2 * math.pi)
    return torch.where(r >= 2 * math.pi, torch.zeros_like(r), r)
