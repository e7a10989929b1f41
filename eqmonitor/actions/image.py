"""Image actions: rotations, flips, shifts and scalings of ``[B, ..., H, W]`` tensors.

One action serves every planar group: element ``g`` maps a point ``p`` (pixel units, about the image centre
``((W-1)/2, (H-1)/2)``) to ``M p + t`` (``group.matrix`` / ``group.translation``), and the image moves with it:
``(g·x)(p) = x(M⁻¹(p − t))``. Elements that map the pixel grid onto itself (multiples of 90° on a square image, flips,
integer shifts) are applied *exactly*, as an index gather (the same values ``torch.rot90`` / ``flip`` / ``roll``
give); all others resample bilinearly with ``grid_sample``. Rotations by other angles lose the corners, so by default
(``mask="auto"``) images acted on by such groups are masked to the inscribed disc, before and after acting.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from eqmonitor.actions.base import Action
from eqmonitor.groups import Cyclic, Dihedral, Group, is_signed_permutation

__all__ = ["ImageAction", "RotateImage", "disc_mask", "transform_image"]

_MASKS = ("auto", "disc", None)
_PADDINGS = ("zeros", "circular")
_INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


def disc_mask(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """``[H, W]`` mask of the pixels whose centres lie in the inscribed disc of radius ``(min(H, W) - 1) / 2``."""
    ys = torch.arange(height, device=device, dtype=torch.float64) - (height - 1) / 2
    xs = torch.arange(width, device=device, dtype=torch.float64) - (width - 1) / 2
    r = (min(height, width) - 1) / 2
    return ((ys[:, None] ** 2 + xs[None, :] ** 2) <= r * r + 1e-9).to(dtype)


def _centred_coords(height: int, width: int, device) -> Tensor:
    """``[H*W, 2]`` pixel-centre coordinates ``(x, y)`` about the image centre, float64."""
    ys = torch.arange(height, device=device, dtype=torch.float64) - (height - 1) / 2
    xs = torch.arange(width, device=device, dtype=torch.float64) - (width - 1) / 2
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)


def _source_coords(matrix: Tensor, translation: Tensor, height: int, width: int) -> Tensor:
    """``[B, H*W, 2]`` source pixel coordinates (column, row) of every output pixel: ``M⁻¹(p − t) + c``."""
    p = _centred_coords(height, width, matrix.device)
    minv = torch.linalg.inv(matrix)
    q = torch.einsum("bij,bnj->bni", minv, p[None] - translation[:, None, :])
    return q + torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64, device=matrix.device)


def _gather(x: Tensor, col: Tensor, row: Tensor, valid: Optional[Tensor]) -> Tensor:
    """``x [B, C, H, W]`` read at integer ``col, row [B, H*W]``; reads outside ``valid`` (if given) are zero."""
    b, c, h, w = x.shape
    idx = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))[:, None, :].expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, idx)
    if valid is not None:
        out = out * valid[:, None, :].to(x.dtype)
    return out.reshape(b, c, h, w)


def _exact(x: Tensor, q: Tensor, padding: str) -> Tensor:
    b, c, h, w = x.shape
    col, row = q[..., 0].round().long(), q[..., 1].round().long()
    if padding == "circular":
        return _gather(x, col.remainder(w), row.remainder(h), None)
    return _gather(x, col, row, (col >= 0) & (col < w) & (row >= 0) & (row < h))


def _bilinear_circular(x: Tensor, q: Tensor) -> Tensor:
    """Bilinear resampling at ``q [B, H*W, 2]`` with the image wrapped around (periodic boundary)."""
    b, c, h, w = x.shape
    q0 = q.floor()
    frac = (q - q0).to(x.dtype)
    c0, r0 = q0[..., 0].long(), q0[..., 1].long()
    fx, fy = frac[..., 0][:, None, :].reshape(b, 1, h, w), frac[..., 1][:, None, :].reshape(b, 1, h, w)
    out = 0
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    for dc, dr, weight in corners:
        out = out + weight * _gather(x, (c0 + dc).remainder(w), (r0 + dr).remainder(h), None)
    return out


def _resample(x: Tensor, matrix: Tensor, translation: Tensor, interpolation: str, padding: str) -> Tensor:
    b, c, h, w = x.shape
    if padding == "circular":
        return _bilinear_circular(x, _source_coords(matrix, translation, h, w))
    # grid_sample's normalised coordinates: pixel units scaled by S = diag(W/2, H/2) (align_corners=False)
    s = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=x.device)
    minv = torch.linalg.inv(matrix)
    a = minv * s[None, None, :] / s[None, :, None]
    t = -torch.einsum("bij,bj->bi", minv, translation) / s
    theta = torch.cat([a, t[:, :, None]], 2).to(x.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def transform_image(
    x: Tensor,
    matrix: Tensor,
    translation: Tensor,
    *,
    exact: Optional[Tensor] = None,
    interpolation: str = "bilinear",
    padding: str = "zeros",
) -> Tensor:
    """Move images ``x [B, ..., H, W]`` by affine maps ``p -> M p + t`` (``matrix [B, 2, 2]``, ``translation [B, 2]``,
    pixel units about the image centre), one map per row.

    Rows flagged in ``exact [B]`` (default: signed-permutation ``M``, integer ``t`` and, for 90° turns, a square image)
    are gathered exactly; the rest are resampled.
    """
    shape = x.shape
    h, w = shape[-2:]
    x4 = x.reshape(shape[0], -1, h, w)
    if exact is None:
        exact = _grid_exact(matrix, translation, h, w)
    n_exact = int(exact.sum())
    if n_exact == shape[0]:
        out = _exact(x4, _source_coords(matrix, translation, h, w), padding)
    elif n_exact == 0:
        out = _resample(x4, matrix, translation, interpolation, padding)
    else:
        out = torch.empty_like(x4)
        ei, ri = exact.nonzero()[:, 0], (~exact).nonzero()[:, 0]
        out[ei] = _exact(x4[ei], _source_coords(matrix[ei], translation[ei], h, w), padding)
        out[ri] = _resample(x4[ri], matrix[ri], translation[ri], interpolation, padding)
    return out.reshape(shape)


def _grid_exact(matrix: Tensor, translation: Tensor, height: int, width: int) -> Tensor:
    exact = is_signed_permutation(matrix) & ((translation - translation.round()).abs() < 1e-9).all(-1)
    if height != width:  # a quarter turn maps an H x W grid onto itself only if it is square
        exact = exact & (matrix[:, 0, 0].round().abs() == 1)
    return exact


def _has_off_grid_rotations(group: Group) -> bool:
    if isinstance(group, (Cyclic, Dihedral)):
        return 4 % group.n != 0
    try:
        return not bool(_grid_exact(group.matrix(group.grid(8)), torch.zeros(1, 2, dtype=torch.float64), 1, 1).all())
    except TypeError:
        return False


class ImageAction(Action):
    """A planar group acting on images ``[B, ..., H, W]`` (the last two dimensions are space).

    .. math:: (g \\cdot x)(p) = x(M_g^{-1}(p - t_g))

    Args:
        mask: ``"disc"`` masks images to the inscribed disc (before and after acting), ``None`` never masks,
            ``"auto"`` masks only for groups with rotations off the pixel grid (e.g. SO(2), C8).
        interpolation: ``grid_sample`` mode for elements off the grid: ``"bilinear"``, ``"nearest"``, ``"bicubic"``.
        padding: what enters from outside the image: ``"zeros"``, or ``"circular"`` (a torus; right for periodic
            images and circular convolutions, bilinear only).
    """

    exact = False

    def __init__(self, mask: Optional[str] = "auto", interpolation: str = "bilinear", padding: str = "zeros") -> None:
        if mask not in _MASKS:
            raise ValueError(f"Expected `mask` to be one of {_MASKS}, but got {mask!r}.")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"Expected `interpolation` to be one of {_INTERPOLATIONS}, but got {interpolation!r}.")
        if padding not in _PADDINGS:
            raise ValueError(f"Expected `padding` to be one of {_PADDINGS}, but got {padding!r}.")
        if padding == "circular" and interpolation != "bilinear":
            raise ValueError("`padding='circular'` supports `interpolation='bilinear'` only.")
        self.mask, self.interpolation, self.padding = mask, interpolation, padding
        self._mask_cache: dict = {}

    def __repr__(self) -> str:
        args = f"mask={self.mask!r}, interpolation={self.interpolation!r}, padding={self.padding!r}"
        return f"{type(self).__name__}({args})"

    def uses_mask(self, group: Group) -> bool:
        """Whether images are masked to the inscribed disc for this group."""
        return self.mask == "disc" or (self.mask == "auto" and _has_off_grid_rotations(group))

    def _disc(self, x: Tensor) -> Tensor:
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._mask_cache:
            self._mask_cache[key] = disc_mask(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return self._mask_cache[key]

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        return x * self._disc(x) if self.uses_mask(group) else x

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        matrix, translation = group.matrix(elements), group.translation(elements)
        x = self.prepare(group, x)
        out = transform_image(x, matrix, translation, interpolation=self.interpolation, padding=self.padding)
        return self.prepare(group, out)

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        return _grid_exact(group.matrix(elements), group.translation(elements), shape[-2], shape[-1])

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        if group.space_dim != 2:
            raise ValueError(
                f"{self!r} needs a planar group (SO2, Cyclic, Dihedral, Flip, Translation2d, Scale), but got {group!r}."
            )
        if x.ndim < 3 or not x.is_floating_point():
            raise RuntimeError(
                f"{self!r} acts on floating-point images [B, ..., H, W], but the {role} has shape "
                f"{tuple(x.shape)} and dtype {x.dtype}. If the {role} is not an image, choose another action "
                "(e.g. `Invariant()` for class scores, `Points()` for coordinates)."
            )


class RotateImage(ImageAction):
    """:class:`ImageAction` under its DESIGN name, for rotation groups (SO(2), C_n, D_n)."""
