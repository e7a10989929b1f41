"""2-D vector fields ``[B, ..., 2k, H, W]``: the domain moves *and* the vectors turn.

.. math:: (g \\cdot v)(p) = M_g\\, v(M_g^{-1}(p - t_g))

Channels come in consecutive pairs ``(v_x, v_y)`` in the array frame (``x`` along the width, ``y`` down the rows),
which is the optical-flow / PIV convention of ``(u, v)``; shifts move the domain only.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from eqmonitor.actions.image import ImageAction, ImagePlan, apply_image_plan
from eqmonitor.groups import Group

__all__ = ["VectorField"]


class VectorField(ImageAction):
    """A planar group acting on vector fields ``[B, 2k, H, W]`` (or ``[B, ..., 2k, H, W]``); see :class:`ImageAction`
    for ``mask``, ``interpolation`` and ``padding``."""

    def apply(self, group: Group, plan: ImagePlan, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        moved = apply_image_plan(plan, rows, x, all_exact)
        shape = moved.shape
        pairs = moved.reshape(shape[0], -1, 2, shape[-2], shape[-1])
        matrix = plan.matrix.index_select(0, rows).to(x.dtype)
        return self.prepare(group, torch.einsum("bij,bkjhw->bkihw", matrix, pairs).reshape(shape))

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        if x.ndim < 4 or x.shape[-3] % 2:
            raise RuntimeError(
                f"{self!r} expects [B, 2k, H, W] with (v_x, v_y) channel pairs, but the {role} has shape "
                f"{tuple(x.shape)} ({x.shape[-3]} channels). Use `ImageAction()` for scalar channels."
            )
