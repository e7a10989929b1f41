"""Reference models with known symmetry properties, for the examples, the tests and the benchmarks.

- :class:`SmallCNN`: a plain CNN classifier (not rotation-invariant: a known-broken baseline).
- :class:`GroupAveraged`: symmetrises any model over a finite planar group (exactly invariant on its elements).
- :class:`DeepSets`: a permutation-invariant set model, ``ρ(Σ_i φ(x_i))``.
- :class:`RadialProfile`: a rotation-invariant function of a continuous image (radial intensity profile).
- :class:`C4SymmetricConv2d`: a convolution with a kernel averaged over quarter turns (C4-equivariant).
- :class:`C4EquivariantCNN`: C4-equivariant layer by layer, invariant at the end; its layers can be swapped for
  plain ones to test the layer-wise diagnostics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from eqmonitor.actions.image import ImageAction
from eqmonitor.groups import Group

__all__ = ["C4EquivariantCNN", "C4SymmetricConv2d", "DeepSets", "GroupAveraged", "RadialProfile", "SmallCNN"]


class SmallCNN(nn.Module):
    """Three 3×3 convolutions (the last two with stride 2), ReLU, then a linear head over the flattened feature map
    (``pool="flatten"``, a typical plain CNN) or over globally averaged features (``pool="avg"``):
    ``[B, C, H, W] -> [B, classes]``.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        width: channels of the hidden convolutions.
        batch_norm: put a BatchNorm after each convolution.
        dropout: dropout probability before the head.
        pool: ``"flatten"`` or ``"avg"``.
        size: input height and width (sets the head's size with ``pool="flatten"``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        batch_norm: bool = False,
        dropout: float = 0.0,
        pool: str = "flatten",
        size: int = 28,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(3):
            layers.append(nn.Conv2d(channels, width, 3, padding=1, stride=1 if i == 0 else 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            channels = width
        self.features = nn.Sequential(*layers)
        if pool not in ("flatten", "avg"):
            raise ValueError(f"Expected `pool` to be 'flatten' or 'avg', but got {pool!r}.")
        side = (((size + 1) // 2) + 1) // 2
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width * (1 if pool == "avg" else side * side), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


class GroupAveraged(nn.Module):
    """``h(x) = (1/|G|) Σ_g f(g·x)``: invariant to every element of a finite planar group ``G`` (e.g. C4, D4).

    Exactly invariant when ``G`` acts on the pixel grid by index maps (C4, D4, flips on square images): acting with
    ``g`` only permutes the terms of the sum, so the error is float rounding of the summation order.

    Args:
        model: the model to symmetrise, ``[B, ...] -> [B, ...]``, with an invariant output.
        group: a finite planar group.
    """

    def __init__(self, model: nn.Module, group: Group) -> None:
        super().__init__()
        if group.order() is None:
            raise ValueError(f"Expected a finite group to average over, but got {group!r}.")
        self.model, self.group = model, group
        self.action = ImageAction(mask=None)
        self._plans: dict = {}  # (H, W, device, dtype) -> the action's plan of the group's elements

    def _plan(self, x: Tensor) -> Any:
        """The action of every element on images of ``x``'s size, planned once (index maps, grids) and reused."""
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._plans:
            self._plans[key] = self.action.plan(self.group, self.group.all_elements(x.device), x.shape, x.dtype)
        return self._plans[key]

    def forward(self, x: Tensor) -> Tensor:
        plan = self._plan(x)
        k, b = len(plan.exact_list), x.shape[0]
        rows = torch.arange(k, device=x.device).repeat_interleave(b)
        stacked = self.action.apply(self.group, plan, rows, x.repeat(k, *([1] * (x.ndim - 1))))
        out = self.model(stacked)
        return out.reshape(k, b, *out.shape[1:]).mean(0)


class DeepSets(nn.Module):
    """``ρ(Σ_i φ(x_i))`` on sets ``[B, N, F] -> [B, out]``: invariant to permutations of the ``N`` items."""

    def __init__(self, in_features: int = 3, hidden: int = 32, out_features: int = 4) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.rho = nn.Sequential(nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.rho(self.phi(x).sum(1))


class RadialProfile(nn.Module):
    """Mean intensity in ``bins`` rings about the image centre, then a linear map: ``[B, C, H, W] -> [B, out]``.

    A rotation-invariant function of the continuous image; on a pixel grid it is invariant up to how rings cut
    pixels (exactly, for quarter turns and flips).
    """

    def __init__(self, size: int = 28, bins: int = 8, in_channels: int = 1, out_features: int = 4) -> None:
        super().__init__()
        c = (size - 1) / 2
        ys, xs = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
        radius = (xs.double() ** 2 + ys.double() ** 2).sqrt()
        ring = (radius / (c + 1e-9) * bins).floor().clamp(max=bins - 1).long()
        weights = torch.nn.functional.one_hot(ring.reshape(-1), bins).double()
        self.register_buffer("rings", (weights / weights.sum(0).clamp(min=1)).float())
        self.head = nn.Linear(bins * in_channels, out_features)

    def forward(self, x: Tensor) -> Tensor:
        profile = x.flatten(2) @ self.rings.to(x.dtype)  # [B, C, bins]
        return self.head(profile.flatten(1))


class C4SymmetricConv2d(nn.Conv2d):
    """A convolution whose kernel is averaged over the four quarter turns: equivariant to C4 on square inputs
    (with stride 1 and ``padding = kernel_size // 2``), each channel a scalar field (trivial fibre)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = (w + torch.rot90(w, 1, (-2, -1)) + torch.rot90(w, 2, (-2, -1)) + torch.rot90(w, 3, (-2, -1))) / 4
        return self._conv_forward(x, w, self.bias)


class C4EquivariantCNN(nn.Module):
    """Layer by layer C4-equivariant CNN on square images: symmetric 3×3 convolutions, ReLU, global average pooling
    and a linear head (``[B, C, H, W] -> [B, classes]``), invariant at the end. Each layer can be swapped for a
    non-equivariant one to test layer-wise diagnostics."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = C4SymmetricConv2d(in_channels, width, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = C4SymmetricConv2d(width, width, 3, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = C4SymmetricConv2d(width, width, 3, padding=1)
        self.act3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.act3(self.conv3(x))
        return self.head(self.flatten(self.pool(x)))
