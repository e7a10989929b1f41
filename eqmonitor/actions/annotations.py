"""Image annotations that move with the image: keypoints ``[B, K, 2]`` and boxes ``[B, K, 4]`` in pixel coordinates.

Coordinates are ``(x, y)`` = (column, row) of pixel centres, the frame of :class:`~eqmonitor.actions.ImageAction`, so
``g · keypoint = M (p − c) + c + t`` with ``c`` the image centre. Boxes ``(x1, y1, x2, y2)`` map to the axis-aligned
hull of their moved corners: exact for shifts, flips and quarter turns; an over-estimate for other rotations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqmonitor.actions.base import Action
from eqmonitor.groups import Group

__all__ = ["Boxes", "Keypoints"]


class Keypoints(Action):
    """Keypoints ``[B, ..., 2]`` of an ``image_size = (H, W)`` image, moved like the image."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        if len(image_size) != 2:
            raise ValueError(f"Expected `image_size` to be (H, W), but got {image_size!r}.")
        self.image_size = tuple(int(s) for s in image_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size})"

    def _centre(self, x: Tensor) -> Tensor:
        h, w = self.image_size
        return torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=x.dtype, device=x.device)

    def _move(self, group: Group, elements: Tensor, p: Tensor) -> Tensor:
        """``p [B, M, 2]`` -> moved points."""
        c = self._centre(p)
        m, t = group.matrix(elements).to(p.dtype), group.translation(elements).to(p.dtype)
        return (p - c) @ m.transpose(1, 2) + c + t[:, None, :]

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        return self._move(group, elements, x.reshape(x.shape[0], -1, 2)).reshape(x.shape)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        if group.space_dim != 2:
            raise ValueError(f"{self!r} needs a planar group, but got {group!r}.")
        if x.ndim < 2 or x.shape[-1] != self._width or not x.is_floating_point():
            raise RuntimeError(
                f"{self!r} acts on floating-point [B, ..., {self._width}] tensors, but the {role} has shape "
                f"{tuple(x.shape)} and dtype {x.dtype}."
            )

    _width = 2


class Boxes(Keypoints):
    """Boxes ``[B, ..., 4]`` as ``(x1, y1, x2, y2)``: the axis-aligned hull of the four moved corners."""

    _width = 4

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        boxes = x.reshape(x.shape[0], -1, 4)
        x1, y1, x2, y2 = boxes.unbind(-1)
        corners = torch.stack([torch.stack(c, -1) for c in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], 2)  # [B, M, 4, 2]
        moved = self._move(group, elements, corners.reshape(x.shape[0], -1, 2)).reshape(corners.shape)
        lo, hi = moved.min(2).values, moved.max(2).values
        return torch.cat([lo, hi], -1).reshape(x.shape)
