"""Points and vectors in space: coordinates ``[B, N, d]`` (or ``[B, d]``) rotate and translate, vectors only turn.

.. math:: g \\cdot p = M_g p + t_g, \\qquad g \\cdot v = M_g v \\;(\\det M_g\\, M_g v \\text{ for pseudovectors})
"""

from __future__ import annotations

from torch import Tensor

from eqmonitor.actions.base import Action
from eqmonitor.groups import Group

__all__ = ["Points", "Vectors"]


class Points(Action):
    """A group acting on coordinates in the last dimension of ``[B, ..., d]`` (d = 2 or 3).

    Args:
        translate: apply the translation part (coordinates); ``False`` for displacement vectors.
        pseudo: multiply by ``det M`` (pseudovectors such as angular momentum under reflections).
    """

    def __init__(self, translate: bool = True, pseudo: bool = False) -> None:
        self.translate, self.pseudo = translate, pseudo

    def __repr__(self) -> str:
        return f"{type(self).__name__}(translate={self.translate}, pseudo={self.pseudo})"

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        matrix = group.matrix(elements)
        shape = x.shape
        flat = x.reshape(shape[0], -1, shape[-1])
        out = flat @ matrix.transpose(1, 2).to(x.dtype)
        if self.pseudo:
            out = out * matrix.det().to(x.dtype)[:, None, None]
        if self.translate:
            out = out + group.translation(elements).to(x.dtype)[:, None, :]
        return out.reshape(shape)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        if group.space_dim is None:
            raise ValueError(f"{self!r} needs a group acting on space (SO2, SO3, O3, Translation), got {group!r}.")
        if x.ndim < 2 or x.shape[-1] != group.space_dim or not x.is_floating_point():
            raise RuntimeError(
                f"{self!r} under {group!r} acts on floating-point coordinates [B, ..., {group.space_dim}], but the "
                f"{role} has shape {tuple(x.shape)} and dtype {x.dtype}. Put the coordinates in the last dimension, "
                "or use a `Custom` action for mixed coordinate/feature tensors."
            )


class Vectors(Points):
    """Vectors (forces, velocities, dipoles): rotated and reflected, never translated."""

    def __init__(self, pseudo: bool = False) -> None:
        super().__init__(translate=False, pseudo=pseudo)

    def __repr__(self) -> str:
        return f"Vectors(pseudo={self.pseudo})"
