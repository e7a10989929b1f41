"""Covariant 2-D vector fields ``[B, ..., 2k, H, W]``: the domain moves *and* the vectors turn.

.. math:: (g \\cdot v)(p) = M_g\\, v(M_g^{-1}(p - t_g))

Channels come in consecutive pairs ``(v_x, v_y)`` in the array frame (``x`` along the width, ``y`` down the rows),
which is the optical-flow / PIV convention of ``(u, v)``; shifts move the domain only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqmonitor.actions.image import ImageAction, transform_image
from eqmonitor.groups import Group

__all__ = ["VectorField"]


class VectorField(ImageAction):
    """A planar group acting on vector fields ``[B, 2k, H, W]`` (or ``[B, ..., 2k, H, W]``); see :class:`ImageAction`
    for ``mask``, ``interpolation`` and ``padding``."""

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        matrix, translation = group.matrix(elements), group.translation(elements)
        moved = transform_image(
            self.prepare(group, x), matrix, translation, interpolation=self.interpolation, padding=self.padding
        )
        shape = moved.shape
        pairs = moved.reshape(shape[0], -1, 2, shape[-2], shape[-1])
        turned = torch.einsum("bij,bkjhw->bkihw", matrix.to(x.dtype), pairs).reshape(shape)
        return self.prepare(group, turned)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        if x.ndim < 4 or x.shape[-3] % 2:
            raise RuntimeError(
                f"{self!r} expects [B, 2k, H, W] with (v_x, v_y) channel pairs, but the {role} has shape "
                f"{tuple(x.shape)} ({x.shape[-3]} channels). Use `ImageAction()` for scalar channels."
            )
