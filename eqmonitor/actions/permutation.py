"""Permutations of a set dimension: ``(σ · x)[:, i] = x[:, σ(i)]`` along ``dim``, one permutation per row."""

from __future__ import annotations

import torch
from torch import Tensor

from eqmonitor.actions.base import Action
from eqmonitor.groups import Group, Permutation

__all__ = ["Permute"]


class Permute(Action):
    """``Permutation(n)`` acting on dimension ``dim`` (default 1: the set of ``[B, N, F]``) by gathering.

    Args:
        dim: the set dimension, of size ``n``; must not be the batch dimension 0.
    """

    def __init__(self, dim: int = 1) -> None:
        if dim == 0:
            raise ValueError("Expected `dim` to be a set dimension, not the batch dimension 0.")
        self.dim = dim

    def __repr__(self) -> str:
        return f"Permute(dim={self.dim})"

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        xm = x.movedim(self.dim, 1)
        idx = elements.reshape(elements.shape[0], -1, *([1] * (xm.ndim - 2))).expand_as(xm)
        return torch.gather(xm, 1, idx).movedim(1, self.dim)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        if not isinstance(group, Permutation):
            raise ValueError(f"{self!r} needs a `Permutation(n)` group, but got {group!r}.")
        if x.ndim < 2 or x.shape[self.dim] != group.n:
            raise RuntimeError(
                f"{self!r} permutes {group.n} items, but the {role} has shape {tuple(x.shape)}. Set `dim` to the set "
                f"dimension (of size {group.n}) or use `Permutation({x.shape[self.dim] if x.ndim >= 2 else '?'})`."
            )
