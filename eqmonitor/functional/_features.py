"""Feature actions: how a group element acts on a network's intermediate features, derived from the input action.

For image inputs (an :class:`~eqmonitor.actions.ImageAction`):

- feature maps ``[B, C, h, w]`` with ``h, w > 1`` move like the image at their own resolution (shifts scaled by
  ``w / W``, ``h / H``; quarter turns and flips stay exact);
- ViT-style tokens ``[B, N, C]`` whose last ``gh * gw`` tokens tile the image in square patches (``gh / gw = H / W``,
  row-major as ``Conv2d(stride=p)(x).flatten(2).transpose(1, 2)`` gives them) move like a ``[C, gh, gw]`` map; up
  to 8 extra tokens in front (class, register tokens; fewer than the grid's) are left untouched;
- pooled or flattened features (``[B, D]``, ``[B, C, 1, 1]``) are invariant.

Features shaped like the input use the input action; anything else has no derived action (``None``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from eqmonitor.actions.base import Action, Invariant
from eqmonitor.actions.image import ImageAction
from eqmonitor.groups import Group
from eqmonitor.symmetry import Symmetry

__all__ = ["TokenGridAction", "feature_action", "token_grid"]

_MAX_EXTRA_TOKENS = 8


class _RescaledGroup:
    """A planar group seen at another resolution: same matrices, translations scaled by ``factor = (sx, sy)``."""

    def __init__(self, base: Group, factor: tuple[float, float]) -> None:
        self._base, self._factor = base, factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def translation(self, elements: Tensor) -> Tensor:
        t = self._base.translation(elements)
        return t * torch.tensor(self._factor, dtype=t.dtype, device=t.device)

    def __repr__(self) -> str:
        return f"{self._base!r}@{self._factor[0]:g}x{self._factor[1]:g}"


def token_grid(n_tokens: int, height: int, width: int) -> Optional[tuple[int, int, int]]:
    """``(extra, gh, gw)`` if ``n_tokens = extra + gh * gw`` tokens are ``extra`` front tokens and a row-major grid of
    square ``p × p`` patches tiling an ``height × width`` image (``gh = height / p``, ``gw = width / p``, both ≥ 2,
    ``extra ≤ 8`` and fewer than the grid's tokens), the fewest extra tokens first; else ``None``.

    Example:
        >>> token_grid(197, 224, 224), token_grid(16, 16, 16), token_grid(12, 16, 16)
        ((1, 14, 14), (0, 4, 4), None)
    """
    for extra in range(min(_MAX_EXTRA_TOKENS, n_tokens) + 1):
        grid = n_tokens - extra
        if grid < 4 or extra >= grid or (height * width) % grid:
            continue
        p = round(((height * width) // grid) ** 0.5)
        if p * p * grid == height * width and height % p == 0 and width % p == 0:
            gh, gw = height // p, width // p
            if min(gh, gw) >= 2:
                return extra, gh, gw
    return None


class TokenGridAction(Action):
    """An image action on ViT-style tokens ``[B, extra + gh * gw, C]``: the last ``gh * gw`` tokens, row-major, are a
    ``[C, gh, gw]`` feature map moved by ``image``; the ``extra`` front tokens (class, registers) are left as they are.

    Args:
        grid: ``(gh, gw)``, the patch grid.
        extra: how many tokens come before the grid.
        image: the action on the map (default: an unmasked :class:`~eqmonitor.actions.ImageAction`).
    """

    def __init__(self, grid: tuple[int, int], extra: int = 0, image: Optional[ImageAction] = None) -> None:
        self.grid, self.extra = (int(grid[0]), int(grid[1])), int(extra)
        self.image = image if image is not None else ImageAction(mask=None)

    def __repr__(self) -> str:
        return f"TokenGridAction(grid={self.grid}, extra={self.extra}, image={self.image!r})"

    def _to_map(self, x: Tensor) -> Tensor:
        gh, gw = self.grid
        return x[:, self.extra :].reshape(x.shape[0], gh, gw, x.shape[-1]).permute(0, 3, 1, 2)

    def _from_map(self, x: Tensor, fmap: Tensor) -> Tensor:
        tokens = fmap.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[-1])
        return torch.cat([x[:, : self.extra], tokens], 1) if self.extra else tokens

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        return self._from_map(x, self.image.prepare(group, self._to_map(x)))

    def plan(self, group: Group, elements: Tensor, shape: torch.Size, dtype: torch.dtype) -> Any:
        return self.image.plan(group, elements, self.grid, dtype)

    def apply(self, group: Group, plan: Any, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        return self._from_map(x, self.image.apply(group, plan, rows, self._to_map(x), all_exact))

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        plan = self.plan(group, elements, x.shape, x.dtype)
        return self.apply(group, plan, torch.arange(x.shape[0], device=x.device), self.prepare(group, x))

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        return self.image.exact_elements(group, elements, self.grid)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        n = self.extra + self.grid[0] * self.grid[1]
        if x.ndim != 3 or x.shape[1] != n:
            raise RuntimeError(f"{self!r} acts on tokens [B, {n}, C], but the {role} has shape {tuple(x.shape)}.")


def feature_action(
    symmetry: Symmetry, input_shape: torch.Size, feature_shape: torch.Size, masked: bool = True
) -> Optional[tuple[Any, Action]]:
    """``(group, action)`` acting on features of ``feature_shape`` (per sample), or ``None`` if none can be derived.

    Feature maps (and token grids) are masked to the inscribed disc like the input (``masked``), except when they are
    a layer's input in the isolated test: masking there would cut what the layer reads near the disc's edge.
    """
    group, phi = symmetry.group, symmetry.input_action
    if len(feature_shape) <= 1:
        return group, Invariant()
    same = tuple(feature_shape) == tuple(input_shape)
    if isinstance(phi, ImageAction) and len(input_shape) >= 2 and (len(feature_shape) >= 3 or not same):
        big_h, big_w = input_shape[-2:]
        if len(feature_shape) >= 3:
            (h, w), extra = feature_shape[-2:], None
        else:
            tokens = token_grid(feature_shape[0], big_h, big_w)
            if tokens is None:
                return None
            extra, h, w = tokens
        if h == 1 and w == 1:
            return group, Invariant()
        factor = (w / big_w, h / big_h)
        seen = group if factor == (1.0, 1.0) else _RescaledGroup(group, factor)
        mask = "disc" if masked and phi.uses_mask(group) else None
        image = ImageAction(mask=mask, interpolation=phi.interpolation, padding=phi.padding)
        return seen, image if extra is None else TokenGridAction((h, w), extra, image)
    return (group, phi) if same else None
