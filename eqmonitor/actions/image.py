"""Image actions: rotations, flips, shifts and scalings of ``[B, ..., H, W]`` tensors.

One action serves every planar group: element ``g`` maps a point ``p`` (pixel units, about the image centre
``((W-1)/2, (H-1)/2)``) to ``M p + t`` (``group.matrix`` / ``group.translation``), and the image moves with it:
``(g·x)(p) = x(M⁻¹(p − t))``. Elements that map the pixel grid onto itself (multiples of 90° on a square image, flips,
integer shifts) are applied *exactly*, as an index gather (the same values ``torch.rot90`` / ``flip`` / ``roll``
give); all others resample bilinearly with ``grid_sample``. Rotations by other angles lose the corners, so by default
(``mask="auto"``) images acted on by such groups are masked to the inscribed disc, before and after acting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from eqmonitor.actions.base import Action
from eqmonitor.groups import Cyclic, Dihedral, Group, is_signed_permutation

__all__ = ["ImageAction", "ImagePlan", "RotateImage", "apply_image_plan", "disc_mask", "plan_image", "transform_image"]

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


def _gather(x: Tensor, index: Tensor, valid: Optional[Tensor]) -> Tensor:
    """``x [B, C, H, W]`` read at flat pixel ``index [B, H*W]``; reads where ``valid`` is False (if given) are zero."""
    b, c, h, w = x.shape
    out = x.reshape(b, c, h * w).gather(2, index[:, None, :].expand(b, c, h * w))
    if valid is not None:
        out = out * valid[:, None, :].to(x.dtype)
    return out.reshape(b, c, h, w)


def _bilinear_circular(x: Tensor, q: Tensor) -> Tensor:
    """Bilinear resampling at ``q [B, H*W, 2]`` with the image wrapped around (periodic boundary)."""
    b, c, h, w = x.shape
    q0 = q.floor()
    frac = (q - q0).to(x.dtype)
    c0, r0 = q0[..., 0].long(), q0[..., 1].long()
    fx, fy = frac[..., 0].reshape(b, 1, h, w), frac[..., 1].reshape(b, 1, h, w)
    out = 0
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    for dc, dr, weight in corners:
        out = out + weight * _gather(x, (r0 + dr).remainder(h) * w + (c0 + dc).remainder(w), None)
    return out


def _grid_exact(matrix: Tensor, translation: Tensor, height: int, width: int) -> Tensor:
    exact = is_signed_permutation(matrix) & ((translation - translation.round()).abs() < 1e-9).all(-1)
    if height != width:  # a quarter turn maps an H x W grid onto itself only if it is square
        exact = exact & (matrix[:, 0, 0].round().abs() == 1)
    return exact


@dataclass
class ImagePlan:
    """Everything about ``K`` elements' action on ``H × W`` images that does not depend on the pixels, computed once:
    which elements are exact, their gather indices, and the sampling grids of the others.

    Attributes:
        exact: ``bool [K]``; ``exact_list``: the same on the host (decides the path without a device sync).
        index, valid: ``[K, H*W]`` flat source pixel and in-range flag of every output pixel (exact elements).
        grid: ``[K, H, W, 2]`` ``grid_sample`` grid (zero padding), or ``coords [K, H*W, 2]`` source pixel
            coordinates (circular padding).
    """

    exact: Tensor
    exact_list: list[bool]
    index: Tensor
    valid: Optional[Tensor]
    grid: Optional[Tensor]
    coords: Optional[Tensor]
    interpolation: str
    matrix: Tensor


def plan_image(
    matrix: Tensor,
    translation: Tensor,
    height: int,
    width: int,
    dtype: torch.dtype,
    *,
    interpolation: str = "bilinear",
    padding: str = "zeros",
    exact: Optional[Tensor] = None,
) -> ImagePlan:
    """Plan the affine maps ``p -> M p + t`` (``matrix [K, 2, 2]``, ``translation [K, 2]``, pixel units about the
    image centre) on ``H × W`` images: source pixel ``q = M⁻¹(p − t) + c`` of every output pixel ``p``."""
    if exact is None:
        exact = _grid_exact(matrix, translation, height, width)
    q = _source_coords(matrix, translation, height, width)  # [K, H*W, 2] float64
    col, row = q[..., 0].round().long(), q[..., 1].round().long()
    if padding == "circular":
        index, valid = row.remainder(height) * width + col.remainder(width), None
    else:
        valid = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        index = row.clamp(0, height - 1) * width + col.clamp(0, width - 1)
        valid = None if bool(valid.all()) else valid
    grid = coords = None
    if not bool(exact.all()):
        if padding == "circular":
            coords = q
        else:  # grid_sample's normalised coordinates (align_corners=False): (q - c) * 2 / size
            centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64, device=q.device)
            size = torch.tensor([width / 2, height / 2], dtype=torch.float64, device=q.device)
            grid = ((q - centre) / size).to(dtype).reshape(-1, height, width, 2)
    return ImagePlan(exact, exact.tolist(), index, valid, grid, coords, interpolation, matrix)


def apply_image_plan(plan: ImagePlan, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
    """Move images ``x [B, ..., H, W]`` by the planned elements ``rows [B]`` (indices into the plan).

    ``all_exact`` (``True``/``False``), when the caller knows it, skips the per-call check of which rows are exact.
    """
    shape = x.shape
    x4 = x.reshape(shape[0], -1, shape[-2], shape[-1])

    def exact_path(r: Tensor, xs: Tensor) -> Tensor:
        return _gather(xs, plan.index.index_select(0, r), None if plan.valid is None else plan.valid.index_select(0, r))

    def resample_path(r: Tensor, xs: Tensor) -> Tensor:
        if plan.coords is not None:
            return _bilinear_circular(xs, plan.coords.index_select(0, r))
        grid = plan.grid.index_select(0, r)
        return F.grid_sample(xs, grid, mode=plan.interpolation, padding_mode="zeros", align_corners=False)

    if all_exact is None:
        flags = plan.exact.index_select(0, rows)
        n_exact = int(flags.sum())
        all_exact = True if n_exact == shape[0] else (False if n_exact == 0 else None)
    if all_exact is True:
        out = exact_path(rows, x4)
    elif all_exact is False:
        out = resample_path(rows, x4)
    else:
        out = torch.empty_like(x4)
        ei, ri = flags.nonzero()[:, 0], (~flags).nonzero()[:, 0]
        out[ei] = exact_path(rows[ei], x4[ei])
        out[ri] = resample_path(rows[ri], x4[ri])
    return out.reshape(shape)


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
    h, w = x.shape[-2:]
    plan = plan_image(matrix, translation, h, w, x.dtype, interpolation=interpolation, padding=padding, exact=exact)
    return apply_image_plan(plan, torch.arange(x.shape[0], device=x.device), x)


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
        self._uses_mask: dict[str, bool] = {}

    def __repr__(self) -> str:
        args = f"mask={self.mask!r}, interpolation={self.interpolation!r}, padding={self.padding!r}"
        return f"{type(self).__name__}({args})"

    def uses_mask(self, group: Group) -> bool:
        """Whether images are masked to the inscribed disc for this group."""
        if self.mask != "auto":
            return self.mask == "disc"
        key = repr(group)
        if key not in self._uses_mask:
            self._uses_mask[key] = _has_off_grid_rotations(group)
        return self._uses_mask[key]

    def _disc(self, x: Tensor) -> Tensor:
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._mask_cache:
            self._mask_cache[key] = disc_mask(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return self._mask_cache[key]

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        return x * self._disc(x) if self.uses_mask(group) else x

    def plan(self, group: Group, elements: Tensor, shape: torch.Size, dtype: torch.dtype) -> ImagePlan:
        m, t = group.matrix(elements), group.translation(elements)
        return plan_image(m, t, shape[-2], shape[-1], dtype, interpolation=self.interpolation, padding=self.padding)

    def apply(self, group: Group, plan: ImagePlan, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        return self.prepare(group, apply_image_plan(plan, rows, x, all_exact))

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        plan = self.plan(group, elements, x.shape, x.dtype)
        return self.apply(group, plan, torch.arange(x.shape[0], device=x.device), self.prepare(group, x))

    def invariant_on(self, shape: tuple[int, ...]) -> bool:
        """A ``1 × 1`` map has no space to move in (a globally pooled feature), as the layer-wise test treats it."""
        return len(shape) >= 2 and tuple(shape[-2:]) == (1, 1)

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
    """:class:`ImageAction` under the name the docs use, for rotation groups (SO(2), C_n, D_n)."""
