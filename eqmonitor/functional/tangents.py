"""Input, output and feature tangents ``τ = d/dt|₀ (g_t · x)`` of the plane's one-parameter subgroups, analytic.

Images move as ``(g·x)(p) = x(M_t⁻¹(p − t_t))``, so ``τ(x)(p) = −∇x(p) · v(p)`` with the generator's vector field
``v`` (rotation ``(−y, x)``, shifts ``e_x`` / ``e_y``, scaling ``p``; pixel units about the image centre); vector
fields also turn their vectors. The image gradient ``∇x`` is taken by one of :data:`TANGENTS`:

- ``"fd8"`` (default), ``"fd6"``, ``"fd4"``: central finite differences of that order (``order + 1`` points); within
  ``order / 2`` pixels of the border, the widest central stencil that fits (down to fourth order) and at the last two
  pixels fourth-order stencils on the five nearest pixels, so nothing outside the image is read: the image is a
  window onto a smooth scene, and its border is not a moving edge. Higher-order one-sided stencils are not used:
  they amplify sharp content at the border (on digits, nine-point ones read a 4× larger shift derivative). With
  ``padding="circular"`` the stencils wrap around.
- ``"spectral"``: the Fourier derivative ``F⁻¹(i k F x)``, exact for band-limited periodic images (``padding=
  "circular"``). For ``padding="zeros"`` the image is first split as ``x = p + s`` (Moisan's periodic-plus-smooth
  decomposition, ``s`` discrete-harmonic with the jumps of ``x`` across opposite borders), ``∂p`` spectral and
  ``∂s`` by second-order differences; the derivative of ``p`` still jumps at the border, so this rings unless the
  image vanishes there.
- ``"central"``: ``(x[i+1] − x[i−1]) / 2`` with zeros outside the image (or wrapping around), the default before:
  the small-angle derivative of bilinear resampling. Its error, ``−∂³x / 6`` per unit, is what dominates when the
  model's true Lie derivative is small (a nearly invariant model read 1.6–2.1× its true value).

Measured against images rendered analytically at each angle, shift or scale (``benchmarks/bench_lie_accuracy.py``):
see :mod:`eqmonitor.functional.lie`.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
from torch import Tensor

from eqmonitor.actions.fields import VectorField
from eqmonitor.actions.image import ImageAction, disc_mask
from eqmonitor.groups import SO2, Cyclic, Dihedral, Group, Scale, Translation
from eqmonitor.symmetry import Symmetry

__all__ = ["GENERATORS", "TANGENTS", "image_tangent"]

_F64 = torch.float64
#: the one-parameter subgroups of the plane's affine maps that :func:`~eqmonitor.functional.lie_derivative` knows
GENERATORS = ("rotation", "translation_x", "translation_y", "scale")
#: how :func:`image_tangent` takes the image gradient; the first is the default
TANGENTS = ("fd8", "fd6", "fd4", "spectral", "central")
_GENERATOR_MATRIX = {"rotation": ((0.0, -1.0), (1.0, 0.0)), "scale": ((1.0, 0.0), (0.0, 1.0))}


def _shifted(x: Tensor, dim: int, k: int, circular: bool) -> Tensor:
    """``x[i + k]`` along ``dim``, with zeros outside (or wrapping around if ``circular``)."""
    if circular:
        return torch.roll(x, -k, dim)
    n = x.shape[dim]
    if abs(k) >= n:
        return torch.zeros_like(x)
    pad = torch.zeros_like(x.narrow(dim, 0, abs(k)))
    return torch.cat([x.narrow(dim, k, n - k), pad], dim) if k > 0 else torch.cat([pad, x.narrow(dim, 0, n + k)], dim)


def _central_difference(x: Tensor, dim: int, circular: bool) -> Tensor:
    """``(x[i+1] − x[i−1]) / 2`` along ``dim``, with zeros outside (or wrapping around if ``circular``)."""
    return (_shifted(x, dim, 1, circular) - _shifted(x, dim, -1, circular)) / 2


@functools.lru_cache(maxsize=None)
def _stencil(offsets: tuple[int, ...]) -> tuple[float, ...]:
    """The first-derivative weights on ``offsets`` exact for polynomials of degree ``len(offsets) − 1``: ``w_j =
    ℓ_j'(0)`` of the Lagrange basis (Fornberg's finite-difference weights), in exact rational arithmetic."""
    weights = []
    for j, sj in enumerate(offsets):
        others = [sk for k, sk in enumerate(offsets) if k != j]
        total = Fraction(0)
        for m, sm in enumerate(others):
            term = Fraction(1, sj - sm)
            for k, sk in enumerate(others):
                if k != m:
                    term *= Fraction(-sk, sj - sk)
            total += term
        weights.append(float(total))
    return tuple(weights)


_EDGE = 4  # the order of the stencils at the last pixels before the border


def _edge_offsets(i: int, n: int, half: int) -> tuple[int, ...]:
    """The stencil of pixel ``i`` of ``n`` that reads nothing outside the image: the widest central one up to
    ``half`` each side that fits, down to fourth order; at the last two pixels the nearest five, biased inwards
    (fourth order). Wider one-sided stencils would amplify a sharp border (their weights sum to 78 in absolute value
    for nine points, against 10.7 for five)."""
    k = min(i, n - 1 - i, half)
    if k >= _EDGE // 2 or k == half:
        return tuple(range(-k, k + 1))
    m = min(_EDGE, n - 1)  # the nearest m + 1 points: order m
    lo = min(max(i - k, 0), n - 1 - m) if i < n - 1 - i else max(min(i + k, n - 1) - m, 0)
    return tuple(range(lo - i, lo - i + m + 1))


def _wrap(x: Tensor, dim: int, k: int) -> Tensor:
    """The ``|k|`` pixels that wrap in before (``k < 0``) or after (``k > 0``) ``x`` along ``dim``, for any length."""
    n = x.shape[dim]
    idx = torch.arange(n - abs(k), n, device=x.device) % n if k < 0 else torch.arange(k, device=x.device) % n
    return x.index_select(dim, idx)


def _high_order_difference(x: Tensor, dim: int, order: int, circular: bool) -> Tensor:
    """The derivative along ``dim`` by ``order``-th-order central differences (``order + 1`` points); within
    ``order / 2`` pixels of the ends (unless ``circular``) the stencils of :func:`_edge_offsets`, so nothing outside
    the image is read."""
    n, half = x.shape[dim], order // 2
    if n == 1:
        return torch.zeros_like(x)
    central = _stencil(tuple(range(-half, half + 1)))
    if circular or n > order:
        if circular:
            ends = [x.narrow(dim, n - half, half) if half <= n else _wrap(x, dim, -half), x]
            padded = torch.cat(ends + [x.narrow(dim, 0, half) if half <= n else _wrap(x, dim, half)], dim)
        else:
            zeros = torch.zeros_like(x.narrow(dim, 0, 1)).expand(
                *x.shape[: dim % x.ndim], half, *x.shape[dim % x.ndim + 1 :]
            )
            padded = torch.cat([zeros, x, zeros], dim)
        out = torch.zeros_like(x)
        for k, w in zip(range(-half, half + 1), central):
            if w != 0.0:
                out.add_(padded.narrow(dim, half + k, n), alpha=w)
        if circular:
            return out
    else:
        out = torch.zeros_like(x)
    u = x.movedim(dim, -1)
    rows = range(n) if n <= order else [*range(half), *range(n - half, n)]
    ends = []
    for i in rows:
        offsets = _edge_offsets(i, n, half)
        w = torch.tensor(_stencil(offsets), dtype=u.dtype, device=u.device)
        ends.append(u[..., i + offsets[0] : i + offsets[-1] + 1] @ w)
    fixed = out.movedim(dim, -1).clone()
    fixed[..., list(rows)] = torch.stack(ends, -1)
    return fixed.movedim(-1, dim)


def _wavenumbers(n: int, device: torch.device) -> Tensor:
    """``2π · fftfreq(n)`` (radians per pixel), the Nyquist mode of an even ``n`` set to 0 (its derivative is not
    real)."""
    k = torch.fft.fftfreq(n, device=device, dtype=_F64) * (2 * math.pi)
    if n % 2 == 0:
        k[n // 2] = 0.0
    return k


def _fourier_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(∂_x x, ∂_y x)`` of periodic images ``[..., H, W]`` by the Fourier derivative."""
    h, w = x.shape[-2:]
    spectrum = torch.fft.fft2(x)
    kx, ky = _wavenumbers(w, x.device), _wavenumbers(h, x.device)[:, None]
    dx = torch.fft.ifft2(spectrum * (1j * kx)).real
    dy = torch.fft.ifft2(spectrum * (1j * ky)).real
    return dx, dy


def _periodic_smooth(x: Tensor) -> tuple[Tensor, Tensor]:
    """Moisan's decomposition ``x = p + s`` of images ``[..., H, W]``: ``s`` is discrete-harmonic inside, with the
    jumps of ``x`` across opposite borders, so ``p`` is periodic without the border's jump (L. Moisan, "Periodic plus
    smooth image decomposition", J. Math. Imaging Vis. 2011)."""
    h, w = x.shape[-2:]
    v = torch.zeros_like(x)
    rows = x[..., -1, :] - x[..., 0, :]
    cols = x[..., :, -1] - x[..., :, 0]
    v[..., 0, :] += rows
    v[..., -1, :] -= rows
    v[..., :, 0] += cols
    v[..., :, -1] -= cols
    q = torch.arange(h, dtype=_F64, device=x.device)[:, None]
    r = torch.arange(w, dtype=_F64, device=x.device)
    denom = 2 * torch.cos(2 * math.pi * q / h) + 2 * torch.cos(2 * math.pi * r / w) - 4
    denom[0, 0] = 1.0
    s_hat = torch.fft.fft2(v) / denom
    s_hat[..., 0, 0] = 0.0
    s = torch.fft.ifft2(s_hat).real
    return x - s, s


def _gradient(x: Tensor, method: str, circular: bool) -> tuple[Tensor, Tensor]:
    """``(∂_x x, ∂_y x)`` of images ``[..., H, W]`` (float64) by ``method`` (see the module docstring)."""
    if method == "central":
        return _central_difference(x, -1, circular), _central_difference(x, -2, circular)
    if method != "spectral":
        order = int(method[2:])
        return _high_order_difference(x, -1, order, circular), _high_order_difference(x, -2, order, circular)
    if circular:
        return _fourier_gradient(x)
    p, s = _periodic_smooth(x)
    dx, dy = _fourier_gradient(p)
    return dx + _smooth_difference(s, -1), dy + _smooth_difference(s, -2)


def _smooth_difference(s: Tensor, dim: int) -> Tensor:
    """Second-order differences of a smooth ``s`` along ``dim``, one-sided at the ends (nothing is read outside)."""
    n = s.shape[dim]
    if n == 1:
        return torch.zeros_like(s)
    return torch.gradient(s, dim=dim, edge_order=2 if n > 2 else 1)[0]


def image_tangent(
    x: Tensor,
    generator: str,
    *,
    padding: str = "zeros",
    shift_scale: tuple[float, float] = (1.0, 1.0),
    vector_field: bool = False,
    method: str = TANGENTS[0],
) -> Tensor:
    """The analytic tangent ``τ(x) = d/dt|₀ (g_t·x)`` of images ``x [B, ..., H, W]`` under a one-parameter subgroup.

    .. math:: τ(x)(p) = −∇x(p) · v(p) \\quad (+\\, A\\, x(p) \\text{ for vector fields})

    with ``v = (−y, x)`` (rotation, per radian), ``e_x`` / ``e_y`` (shifts, per pixel) or ``p`` (scaling, per unit of
    log-scale), in pixel units about the image centre, and ``∇`` by ``method`` (see the module docstring).

    Args:
        x: ``[B, ..., H, W]`` images.
        generator: one of :data:`GENERATORS`.
        padding: ``"zeros"`` (zeros outside the image) or ``"circular"`` (periodic images).
        shift_scale: ``(sx, sy)``, the size of one shift step in this tensor's pixels (``w / W``, ``h / H`` for a
            feature map of an image ``W`` wide, ``H`` high); rotations and scalings do not depend on it.
        vector_field: channels are ``(v_x, v_y)`` pairs that turn with the plane (``[B, ..., 2k, H, W]``).
        method: the image gradient, one of :data:`TANGENTS`: ``"spectral"`` (Fourier, with the periodic-plus-smooth
            split for ``padding="zeros"``), ``"fd4"`` (fourth-order differences) or ``"central"`` (second-order).

    Returns:
        ``[B, ..., H, W]`` the tangent, float64.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 5, 5, dtype=torch.float64); x[0, 0, 2, 3] = 1.0  # one bright pixel right of centre
        >>> t = image_tangent(x, "rotation", method="central")  # turning +x towards +y moves it down
        >>> float(t[0, 0, 3, 3]), float(t[0, 0, 1, 3])
        (0.5, -0.5)
    """
    if generator not in GENERATORS:
        raise ValueError(f"Expected `generator` to be one of {GENERATORS}, but got {generator!r}.")
    if method not in TANGENTS:
        raise ValueError(f"Expected `method` (the tangent) to be one of {TANGENTS}, but got {method!r}.")
    xd = x.to(_F64)
    h, w = xd.shape[-2:]
    dx, dy = _gradient(xd, method, padding == "circular")
    cols = torch.arange(w, dtype=_F64, device=x.device) - (w - 1) / 2
    rows = (torch.arange(h, dtype=_F64, device=x.device) - (h - 1) / 2)[:, None]
    if generator == "rotation":
        tangent = rows * dx - cols * dy
    elif generator == "translation_x":
        tangent = -shift_scale[0] * dx
    elif generator == "translation_y":
        tangent = -shift_scale[1] * dy
    else:
        tangent = -(cols * dx + rows * dy)
    if vector_field and generator in _GENERATOR_MATRIX:
        a = torch.tensor(_GENERATOR_MATRIX[generator], dtype=_F64, device=x.device)
        pairs = xd.reshape(*xd.shape[:-3], -1, 2, h, w)
        tangent = tangent + torch.einsum("ij,...jhw->...ihw", a, pairs).reshape(xd.shape)
    return tangent


def _default_generator(group: Group) -> str:
    if isinstance(group, (SO2, Cyclic, Dihedral)):
        return "rotation"
    if isinstance(group, Translation) and group.space_dim == 2:
        return "translation_x"
    if isinstance(group, Scale):
        return "scale"
    raise ValueError(f"Cannot infer a one-parameter subgroup of {group!r}; pass `generator=` one of {GENERATORS}.")


def _reach(method: str) -> int:
    """How many pixels away the image gradient of ``method`` reads (the spectral one reads everywhere: 1 is kept)."""
    return int(method[2:]) // 2 if method.startswith("fd") else 1


def _inner_disc(height: int, width: int, device: torch.device, reach: int = 1) -> Tensor:
    """``[H, W]`` the inscribed disc less its edge: the pixels whose neighbours up to ``reach`` pixels away along rows
    and columns all lie in the disc too."""
    m = disc_mask(height, width, device, _F64)
    inner = m.clone()
    for k in range(1, reach + 1):
        if k >= min(height, width):
            return torch.zeros_like(m)
        inner[k:] *= m[:-k]
        inner[:-k] *= m[k:]
        inner[:, k:] *= m[:, :-k]
        inner[:, :-k] *= m[:, k:]
    return inner


def _mask_output(symmetry: Symmetry, d: Tensor, method: str = TANGENTS[0]) -> Tensor:
    """Mask a derivative like the output action masks outputs; for disc-masked image outputs, also leave out the
    disc's edge, where the differences of ``τ_φ̃`` (stencils of ``method``) would read across the mask's edge."""
    phi_out, group = symmetry.output_action, symmetry.group
    if isinstance(phi_out, ImageAction) and phi_out.uses_mask(group):
        return d * _inner_disc(d.shape[-2], d.shape[-1], d.device, _reach(method))
    return phi_out.prepare(group, d)


def _output_tangent(symmetry: Symmetry, generator: str, y: Tensor, method: str = TANGENTS[0]) -> Tensor:
    """``τ_φ̃(y)``: zero for an invariant output, the image (or vector-field) tangent for an image output action."""
    phi_out = symmetry.output_action
    if phi_out.is_identity:
        return torch.zeros_like(y, dtype=_F64)
    vector_field = isinstance(phi_out, VectorField)
    return image_tangent(y, generator, padding=phi_out.padding, vector_field=vector_field, method=method)


def _feature_tangent(
    feature: Tensor, input_shape: torch.Size, generator: str, padding: str, name: str, method: str = TANGENTS[0]
) -> Tensor:
    """The tangent of an intermediate feature, by its shape (the feature actions of the layer-wise tests)."""
    shape = feature.shape[1:]
    if len(shape) <= 1 or (len(shape) >= 3 and shape[-2:] == (1, 1)):
        return torch.zeros_like(feature, dtype=_F64)
    if len(shape) >= 3 or tuple(shape) == tuple(input_shape):
        factor = (shape[-1] / input_shape[-1], shape[-2] / input_shape[-2])
        return image_tangent(feature, generator, padding=padding, shift_scale=factor, method=method)
    raise RuntimeError(
        f"Cannot derive a tangent for the output of layer {name!r}, of shape {tuple(feature.shape)}: only feature "
        "maps [B, C, h, w] and pooled features [B, D] are supported. Attribute to coarser layers that skip it."
    )
