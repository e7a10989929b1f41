"""Groups: elements as batched tensors, sampling, plot grids, laws, and which elements act exactly on a pixel grid.

Every group stores its elements as a tensor ``[K, p]`` (``p = group.param_dim``), one element per row, and implements
its laws (``compose``, ``inverse``, ``identity``) as batched tensor functions on the elements' device. Continuous
parameters are ``float64`` (an angle in radians, a shift in pixels, a log-scale, a flattened rotation matrix); discrete
ones are ``int64`` (a rotation index, a flip bit, a permutation).

Groups that act on the plane or on space also give each element's geometry, which the actions use:
``matrix(elements) -> [K, d, d]`` and ``translation(elements) -> [K, d]`` (pixels for images), so that one image action
serves rotations, flips, shifts and scalings alike. The plane's frame is the array frame of ``grid_sample``: ``x``
runs along the width (columns, to the right), ``y`` along the height (rows, downward), and a positive angle turns
``+x`` towards ``+y`` (clockwise as an image is usually drawn, rows going down).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "Cyclic",
    "Dihedral",
    "Flip",
    "Group",
    "O3",
    "Permutation",
    "SO2",
    "SO3",
    "Scale",
    "Translation",
    "Translation2d",
    "is_signed_permutation",
]

_F64 = torch.float64
_I64 = torch.int64
_EXACT_TOL = 1e-9


def _device(device: Optional[torch.device | str], generator: Optional[torch.Generator] = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def _rotation_2d(angle: Tensor) -> Tensor:
    """``[K] -> [K, 2, 2]`` rotation matrices ``[[cos, -sin], [sin, cos]]``."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


_QUARTER_TOL = 1e-14  # radians: how close to a multiple of π/2 an angle must be to count as a quarter turn


def _rotation_2d_exact(angle: Tensor) -> Tensor:
    """Like :func:`_rotation_2d`, but quarter turns (within ``1e-14`` rad) get exact integer matrices:
    ``cos(π/2)`` is 6e-17 in float64, not 0, and a quarter turn must stay an index map of the pixel grid.
    """
    quarter = angle / (math.pi / 2)
    turns = quarter.round()
    near = (quarter - turns).abs() * (math.pi / 2) < _QUARTER_TOL
    exact = _rotation_2d(turns * (math.pi / 2)).round()
    return torch.where(near[:, None, None], exact, _rotation_2d(angle))


def _wrap_angle(a: Tensor) -> Tensor:
    """Angles in ``[0, 2π)``: ``remainder`` rounds tiny negative angles up to exactly ``2π``; those become 0."""
    r = torch.remainder(a, 2 * math.pi)
    return torch.where(r >= 2 * math.pi, torch.zeros_like(r), r)


def is_signed_permutation(matrix: Tensor) -> Tensor:
    """``[K, d, d] -> bool [K]``: whether each matrix permutes axes and flips signs (an index map on a grid)."""
    r = torch.round(matrix)
    integral = ((matrix - r).abs() < _EXACT_TOL).flatten(1).all(1)
    unit = (r.abs().sum(-1) == 1).all(-1) & (r.abs().sum(-2) == 1).all(-1)
    return integral & unit


class Group(ABC):
    """A group whose elements are rows of a tensor ``[K, p]``.

    Attributes:
        name: short spec name (``"so2"``, ``"c4"``) used in keys and reports.
        param_dim: ``p``, the number of parameters per element.
        param_names: what each parameter means, for reports (``("angle",)``).
        continuous: whether the group is a continuous (Lie) group.
        abelian: whether elements commute.
        layout: plot layout hint: ``"circle"``, ``"line"``, ``"plane"``, ``"finite"`` or ``"so3_planes"``.
        space_dim: dimension of the space it acts on (2 for the plane, 3 for space), ``None`` if it does not.
    """

    name: str = "group"
    param_dim: int = 1
    param_names: tuple[str, ...] = ("g",)
    continuous: bool = True
    abelian: bool = True
    layout: str = "line"
    space_dim: Optional[int] = 2
    dtype: torch.dtype = _F64

    # ----------------------------------------------------------------------------------------------- laws
    @abstractmethod
    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """``a · b`` row by row: acting with the result is acting with ``b`` first, then ``a``."""

    @abstractmethod
    def inverse(self, a: Tensor) -> Tensor:
        """``a⁻¹`` row by row."""

    @abstractmethod
    def identity(self, device: Optional[torch.device | str] = None) -> Tensor:
        """The identity element, ``[1, p]``."""

    def equal(self, a: Tensor, b: Tensor, atol: float = 1e-9) -> Tensor:
        """``bool [K]``: whether two batches of elements are the same elements (angles compared on the circle)."""
        if not a.dtype.is_floating_point:
            return (a == b).all(-1)
        return ((a - b).abs() <= atol).all(-1)

    # ----------------------------------------------------------------------------------------------- drawing
    @abstractmethod
    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """``n`` elements drawn from the Haar (uniform) measure, ``[n, p]``, from ``generator`` if given."""

    def order(self) -> Optional[int]:
        """Number of elements, ``None`` for an infinite group."""
        return None

    def all_elements(self, device=None) -> Tensor:
        """Every element of a finite group, ``[order, p]``."""
        raise ValueError(f"{self!r} is infinite; use `sample` or `grid` instead of `all_elements`.")

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """A fixed, evenly spread set of elements for plots (``n`` of them where that applies), ``[K, p]``."""
        return self.all_elements(device)

    def testing_elements(self, device=None) -> Tensor:
        """A small fixed set to test on: every element of a finite group, the grid-exact ones of a continuous one."""
        return self.all_elements(device)

    def elements(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """``n`` elements to probe with: all of a finite group if it has at most ``n``, else Haar samples."""
        order = self.order()
        if order is not None and order <= n:
            return self.all_elements(device)
        return self.sample(n, generator=generator, device=device)

    # ----------------------------------------------------------------------------------------------- geometry
    def matrix(self, elements: Tensor) -> Tensor:
        """Linear part of the action on space, ``[K, d, d]`` float64."""
        raise TypeError(f"{self!r} does not act on space; it has no `matrix`.")

    def translation(self, elements: Tensor) -> Tensor:
        """Translation part of the action on space, ``[K, d]`` float64 (pixels for images)."""
        return torch.zeros(elements.shape[0], self.space_dim or 0, dtype=_F64, device=elements.device)

    def exact_on_grid(self, elements: Tensor) -> Tensor:
        """``bool [K]``: elements that map a pixel grid onto itself (signed permutations and integer shifts)."""
        if self.space_dim is None:
            return torch.ones(elements.shape[0], dtype=torch.bool, device=elements.device)
        t = self.translation(elements)
        return is_signed_permutation(self.matrix(elements)) & ((t - t.round()).abs() < _EXACT_TOL).all(-1)

    # ----------------------------------------------------------------------------------------------- reports
    def describe(self, element: Tensor) -> str:
        """One element as ``name=value`` pairs, e.g. ``angle=0.785``."""
        values = element.reshape(-1).tolist()
        return ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(self.param_names, values)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _check_elements(self, elements: Tensor) -> None:
        if elements.ndim != 2 or elements.shape[1] != self.param_dim:
            raise ValueError(
                f"Expected elements of {self!r} to have shape [K, {self.param_dim}], but got {tuple(elements.shape)}."
            )


# ==================================================================================================== the plane
class SO2(Group):
    """Rotations of the plane by any angle; elements are angles in radians, ``[K, 1]``, in ``[0, 2π)``."""

    name = "so2"
    param_names = ("angle",)
    layout = "circle"

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return _wrap_angle(a + b)

    def inverse(self, a: Tensor) -> Tensor:
        return _wrap_angle(-a)

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=_F64, device=_device(device))

    def equal(self, a: Tensor, b: Tensor, atol: float = 1e-9) -> Tensor:
        d = torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi
        return (d.abs() <= atol).all(-1)

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        u = torch.rand(n, 1, generator=generator, dtype=_F64, device=generator.device if generator else dev)
        return (2 * math.pi * u).to(dev)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """``n`` evenly spaced angles starting at 0 (default 72, i.e. 5° steps)."""
        n = 72 if n is None else n
        return (torch.arange(n, dtype=_F64, device=_device(device)) * (2 * math.pi / n))[:, None]

    def testing_elements(self, device=None) -> Tensor:
        """The four exact rotations (multiples of 90°)."""
        return self.grid(4, device)

    def matrix(self, elements: Tensor) -> Tensor:
        return _rotation_2d_exact(elements[:, 0].to(_F64))

    def describe(self, element: Tensor) -> str:
        a = float(element.reshape(-1)[0])
        return f"angle={a:.3f} ({math.degrees(a):.1f}°)"


class Cyclic(Group):
    """The cyclic group ``C_n`` of rotations by multiples of ``2π/n``; elements are indices ``k``, ``[K, 1]`` int64."""

    param_names = ("k",)
    continuous = False
    layout = "circle"
    dtype = _I64

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive integer, but got {n!r}.")
        self.n = n
        self.name = f"c{n}"

    def __repr__(self) -> str:
        return f"Cyclic({self.n})"

    def order(self) -> int:
        return self.n

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, self.n)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.remainder(-a, self.n)

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=_I64, device=_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        k = torch.randint(self.n, (n, 1), generator=generator, device=generator.device if generator else dev)
        return k.to(dev)

    def all_elements(self, device=None) -> Tensor:
        return torch.arange(self.n, dtype=_I64, device=_device(device))[:, None]

    def angle(self, elements: Tensor) -> Tensor:
        """Rotation angle of each element, ``[K]`` float64."""
        return elements[:, 0].to(_F64) * (2 * math.pi / self.n)

    def matrix(self, elements: Tensor) -> Tensor:
        return _rotation_2d_exact(self.angle(elements))

    def describe(self, element: Tensor) -> str:
        k = int(element.reshape(-1)[0])
        return f"k={k} ({360.0 * k / self.n:.1f}°)"


class Dihedral(Group):
    """The dihedral group ``D_n``: rotations by multiples of ``2π/n`` and reflections.

    An element ``(k, f)`` (``[K, 2]`` int64) is ``r^k m^f``: first the mirror ``m: x -> -x`` (a left-right flip) if
    ``f = 1``, then the rotation by ``2πk/n``. So ``(k1, f1)(k2, f2) = (k1 + (-1)^f1 k2, f1 + f2)``.
    """

    param_dim = 2
    param_names = ("k", "flip")
    continuous = False
    abelian = False
    layout = "finite"
    dtype = _I64

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive integer, but got {n!r}.")
        self.n = n
        self.name = f"d{n}"
        self.abelian = n <= 2

    def __repr__(self) -> str:
        return f"Dihedral({self.n})"

    def order(self) -> int:
        return 2 * self.n

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        sign = 1 - 2 * a[:, 1:2]
        k = torch.remainder(a[:, 0:1] + sign * b[:, 0:1], self.n)
        return torch.cat([k, torch.remainder(a[:, 1:2] + b[:, 1:2], 2)], 1)

    def inverse(self, a: Tensor) -> Tensor:
        k = torch.where(a[:, 1:2] == 1, a[:, 0:1], torch.remainder(-a[:, 0:1], self.n))
        return torch.cat([k, a[:, 1:2]], 1)

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 2, dtype=_I64, device=_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        idx = torch.randint(2 * self.n, (n,), generator=generator, device=generator.device if generator else dev)
        return self.all_elements(dev)[idx.to(dev)]

    def all_elements(self, device=None) -> Tensor:
        k = torch.arange(self.n, dtype=_I64, device=_device(device))
        return torch.cat([torch.stack([k, torch.zeros_like(k)], 1), torch.stack([k, torch.ones_like(k)], 1)])

    def matrix(self, elements: Tensor) -> Tensor:
        rot = _rotation_2d_exact(elements[:, 0].to(_F64) * (2 * math.pi / self.n))
        mirror = torch.ones(elements.shape[0], 2, dtype=_F64, device=elements.device)
        mirror[:, 0] = 1 - 2 * elements[:, 1].to(_F64)
        return rot * mirror[:, None, :]

    def describe(self, element: Tensor) -> str:
        k, f = (int(v) for v in element.reshape(-1))
        return f"k={k} ({360.0 * k / self.n:.1f}°){', flipped' if f else ''}"


class Flip(Group):
    """The two-element group of one mirror; elements are flip bits, ``[K, 1]`` int64.

    Args:
        axis: ``"horizontal"`` mirrors left-right (``x -> -x``), ``"vertical"`` mirrors up-down (``y -> -y``).
    """

    param_names = ("flip",)
    continuous = False
    layout = "finite"
    dtype = _I64

    def __init__(self, axis: str = "horizontal") -> None:
        if axis not in ("horizontal", "vertical"):
            raise ValueError(f"Expected `axis` to be 'horizontal' or 'vertical', but got {axis!r}.")
        self.axis = axis
        self.name = "flip" if axis == "horizontal" else "vflip"

    def __repr__(self) -> str:
        return f"Flip({self.axis!r})"

    def order(self) -> int:
        return 2

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a + b, 2)

    def inverse(self, a: Tensor) -> Tensor:
        return a.clone()

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=_I64, device=_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        return torch.randint(2, (n, 1), generator=generator, device=generator.device if generator else dev).to(dev)

    def all_elements(self, device=None) -> Tensor:
        return torch.arange(2, dtype=_I64, device=_device(device))[:, None]

    def matrix(self, elements: Tensor) -> Tensor:
        diag = torch.ones(elements.shape[0], 2, dtype=_F64, device=elements.device)
        diag[:, 0 if self.axis == "horizontal" else 1] = 1 - 2 * elements[:, 0].to(_F64)
        return torch.diag_embed(diag)


class Translation(Group):
    """Translations of ``R^d`` by shifts (pixels for images), ``[K, d]`` float64.

    Translations are not compact, so ``sample`` draws uniformly from the box ``[-max_shift, max_shift]^d`` (integers
    only if ``integer=True``, which keeps image shifts exact) and ``grid`` spans the same box.

    Args:
        dim: dimension ``d`` of the space.
        max_shift: half-width of the sampling box.
        integer: draw integer shifts only.
    """

    layout = "plane"

    def __init__(self, dim: int = 2, max_shift: float = 4.0, integer: bool = True) -> None:
        if dim < 1:
            raise ValueError(f"Expected `dim` to be positive, but got {dim!r}.")
        if not max_shift > 0:
            raise ValueError(f"Expected `max_shift` to be positive, but got {max_shift!r}.")
        self.space_dim = self.param_dim = dim
        self.max_shift, self.integer = float(max_shift), integer
        self.param_names = ("dx", "dy", "dz")[:dim] if dim <= 3 else tuple(f"d{i}" for i in range(dim))
        self.name = "translation" if dim == 2 else f"translation{dim}d"
        self.layout = "plane" if dim == 2 else "line"

    def __repr__(self) -> str:
        return f"Translation(dim={self.space_dim}, max_shift={self.max_shift:g}, integer={self.integer})"

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, self.param_dim, dtype=_F64, device=_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        gdev = generator.device if generator else dev
        if self.integer:
            m = int(self.max_shift)
            t = torch.randint(-m, m + 1, (n, self.param_dim), generator=generator, device=gdev).to(_F64)
        else:
            t = (2 * torch.rand(n, self.param_dim, generator=generator, dtype=_F64, device=gdev) - 1) * self.max_shift
        return t.to(dev)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """A square grid of shifts, ``n`` per axis (default: every integer shift in the box)."""
        n = 2 * int(self.max_shift) + 1 if n is None else n
        axis = torch.linspace(-self.max_shift, self.max_shift, n, dtype=_F64, device=_device(device))
        if self.integer:
            axis = axis.round().unique()
        mesh = torch.meshgrid(*([axis] * self.param_dim), indexing="xy")
        return torch.stack([m.reshape(-1) for m in mesh], 1)

    def testing_elements(self, device=None) -> Tensor:
        """Unit shifts along each axis and their sum (exact on a grid)."""
        eye = torch.eye(self.param_dim, dtype=_F64, device=_device(device))
        return torch.cat([eye, -eye, eye.sum(0, keepdim=True)])

    def matrix(self, elements: Tensor) -> Tensor:
        return torch.eye(self.param_dim, dtype=_F64, device=elements.device).expand(elements.shape[0], -1, -1)

    def translation(self, elements: Tensor) -> Tensor:
        return elements.to(_F64)


class Translation2d(Translation):
    """Translations of the plane (image shifts in pixels, ``(dx, dy)``); see :class:`Translation`."""

    def __init__(self, max_shift: float = 4.0, integer: bool = True) -> None:
        super().__init__(2, max_shift, integer)


class Scale(Group):
    """Isotropic scalings ``x -> e^s x``; elements are log-scales ``s``, ``[K, 1]`` float64.

    Sampled uniformly in log-scale over ``[log min_scale, log max_scale]``.
    """

    name = "scale"
    param_names = ("log_scale",)
    layout = "line"

    def __init__(self, min_scale: float = 0.8, max_scale: float = 1.25) -> None:
        if not 0 < min_scale <= 1 <= max_scale:
            raise ValueError(f"Expected 0 < `min_scale` <= 1 <= `max_scale`, but got {min_scale!r}, {max_scale!r}.")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __repr__(self) -> str:
        return f"Scale(min_scale={self.min_scale:g}, max_scale={self.max_scale:g})"

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def inverse(self, a: Tensor) -> Tensor:
        return -a

    def identity(self, device=None) -> Tensor:
        return torch.zeros(1, 1, dtype=_F64, device=_device(device))

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        lo, hi = math.log(self.min_scale), math.log(self.max_scale)
        u = torch.rand(n, 1, generator=generator, dtype=_F64, device=generator.device if generator else dev)
        return (lo + (hi - lo) * u).to(dev)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        n = 9 if n is None else n
        lo, hi = math.log(self.min_scale), math.log(self.max_scale)
        return torch.linspace(lo, hi, n, dtype=_F64, device=_device(device))[:, None]

    def testing_elements(self, device=None) -> Tensor:
        return self.grid(5, device)

    def matrix(self, elements: Tensor) -> Tensor:
        s = torch.exp(elements[:, 0].to(_F64))
        return s[:, None, None] * torch.eye(2, dtype=_F64, device=elements.device)

    def describe(self, element: Tensor) -> str:
        return f"scale={math.exp(float(element.reshape(-1)[0])):.3f}"


# ==================================================================================================== space
def _random_rotations(n: int, generator=None, device=None) -> Tensor:
    """Haar-random rotation matrices ``[n, 3, 3]`` from normalised Gaussian quaternions."""
    dev = _device(device, generator)
    q = torch.randn(n, 4, generator=generator, dtype=_F64, device=generator.device if generator else dev).to(dev)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        1,
    ).reshape(n, 3, 3)  # fmt: skip


def _axis_rotations(angles: Tensor, axis: int) -> Tensor:
    """Rotations by ``angles [K]`` about coordinate axis ``axis`` (0, 1, 2), ``[K, 3, 3]``."""
    r2 = _rotation_2d_exact(angles)
    out = torch.eye(3, dtype=_F64, device=angles.device).repeat(angles.shape[0], 1, 1)
    i, j = [a for a in range(3) if a != axis]
    out[:, i, i], out[:, i, j], out[:, j, i], out[:, j, j] = r2[:, 0, 0], r2[:, 0, 1], r2[:, 1, 0], r2[:, 1, 1]
    return out


class SO3(Group):
    """Rotations of space; elements are rotation matrices flattened row-major, ``[K, 9]`` float64."""

    name = "so3"
    param_dim = 9
    param_names = ("R",)
    abelian = False
    layout = "so3_planes"
    space_dim = 3

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return (a.reshape(-1, 3, 3) @ b.reshape(-1, 3, 3)).reshape(-1, 9)

    def inverse(self, a: Tensor) -> Tensor:
        return a.reshape(-1, 3, 3).transpose(1, 2).reshape(-1, 9)

    def identity(self, device=None) -> Tensor:
        return torch.eye(3, dtype=_F64, device=_device(device)).reshape(1, 9)

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        return _random_rotations(n, generator, device).reshape(n, 9)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """Rotations about the x, y and z axes, ``n`` angles each (default 72: 5° steps), ``[3n, 9]``."""
        n = 72 if n is None else n
        angles = torch.arange(n, dtype=_F64, device=_device(device)) * (2 * math.pi / n)
        return torch.cat([_axis_rotations(angles, ax) for ax in range(3)]).reshape(-1, 9)

    def testing_elements(self, device=None) -> Tensor:
        """Eight fixed Haar-random rotations (seed 0)."""
        g = torch.Generator().manual_seed(0)
        return _random_rotations(8, g).reshape(8, 9).to(_device(device))

    def matrix(self, elements: Tensor) -> Tensor:
        return elements.to(_F64).reshape(-1, 3, 3)

    def translation(self, elements: Tensor) -> Tensor:
        return torch.zeros(elements.shape[0], 3, dtype=_F64, device=elements.device)

    def describe(self, element: Tensor) -> str:
        r = element.reshape(3, 3).to(_F64)
        angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(r.trace()) - 1) / 2))))
        return f"rotation by {angle:.1f}°"


class O3(SO3):
    """Rotations and reflections of space (``det = ±1``); elements are flattened matrices, ``[K, 9]`` float64."""

    name = "o3"

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        r = _random_rotations(n, generator, device)
        gdev = generator.device if generator else r.device
        parity = torch.randint(2, (n,), generator=generator, device=gdev).to(r.device)
        return (r * (1 - 2 * parity.to(_F64))[:, None, None]).reshape(n, 9)

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        rot = super().grid(n, device)
        return torch.cat([rot, -rot])

    def testing_elements(self, device=None) -> Tensor:
        rot = super().testing_elements(device)
        return torch.cat([rot, -rot])

    def describe(self, element: Tensor) -> str:
        r = element.reshape(3, 3).to(_F64)
        if torch.linalg.det(r) < 0:
            return "inversion ∘ " + super().describe(-element)
        return super().describe(element)


# ==================================================================================================== sets
class Permutation(Group):
    """The symmetric group ``S_n``; elements are permutations ``[K, n]`` int64 acting by gathering: ``x[σ]``.

    Acting with ``σ`` and then ``τ`` gathers ``x[σ][τ] = x[σ[τ]]``, so ``compose(τ, σ) = σ[τ]``.
    """

    param_names = ("perm",)
    continuous = False
    abelian = False
    layout = "finite"
    space_dim = None
    dtype = _I64

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be a positive integer, but got {n!r}.")
        self.n = self.param_dim = n
        self.name = f"s{n}"
        self.abelian = n <= 2

    def __repr__(self) -> str:
        return f"Permutation({self.n})"

    def order(self) -> int:
        return math.factorial(self.n)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.gather(b, 1, a)

    def inverse(self, a: Tensor) -> Tensor:
        return torch.argsort(a, dim=1)

    def identity(self, device=None) -> Tensor:
        return torch.arange(self.n, device=_device(device))[None]

    def sample(self, n: int, generator=None, device=None) -> Tensor:
        dev = _device(device, generator)
        u = torch.rand(n, self.n, generator=generator, device=generator.device if generator else dev)
        return torch.argsort(u, dim=1).to(dev)

    def all_elements(self, device=None) -> Tensor:
        if self.order() > 40320:
            raise ValueError(f"{self!r} has {self.order()} elements; use `sample` instead of `all_elements`.")
        import itertools

        return torch.tensor(list(itertools.permutations(range(self.n))), dtype=_I64, device=_device(device))

    def grid(self, n: Optional[int] = None, device=None) -> Tensor:
        """The ``n`` cyclic shifts of the set (default: all of them), an ordered subgroup that plots on a line."""
        n = self.n if n is None else min(n, self.n)
        base = torch.arange(self.n, device=_device(device))
        return torch.stack([torch.roll(base, -s) for s in range(n)])

    def testing_elements(self, device=None) -> Tensor:
        """The identity, a transposition, a cyclic shift and a reversal."""
        base = torch.arange(self.n, device=_device(device))
        swap = base.clone()
        if self.n > 1:
            swap[0], swap[1] = 1, 0
        return torch.stack([base, swap, torch.roll(base, -1), base.flip(0)])

    def describe(self, element: Tensor) -> str:
        values = element.reshape(-1).tolist()
        return "perm=" + ("[" + ",".join(map(str, values)) + "]" if len(values) <= 12 else f"[{values[0]},…]")


def group_from_spec(spec: str, **kwargs) -> Group:
    """A group from its spec name: ``"so2"``, ``"c4"``, ``"d4"``, ``"flip"``, ``"vflip"``, ``"translation"``,
    ``"translation3d"``, ``"scale"``, ``"so3"``, ``"o3"``, ``"s5"`` (``Permutation(5)``); ``kwargs`` go to the class.
    """
    s = spec.strip().lower()
    fixed: dict[str, type[Group] | object] = {"so2": SO2, "so3": SO3, "o3": O3, "scale": Scale}
    if s in fixed:
        return fixed[s](**kwargs)  # type: ignore[operator]
    if s in ("flip", "hflip", "mirror"):
        return Flip("horizontal", **kwargs)
    if s == "vflip":
        return Flip("vertical", **kwargs)
    if s in ("translation", "translation2d", "shift"):
        return Translation(2, **kwargs)
    if s in ("translation3d", "translation1d"):
        return Translation(int(s[-2]), **kwargs)
    for prefix, cls in (("c", Cyclic), ("d", Dihedral), ("s", Permutation)):
        if s.startswith(prefix) and s[1:].isdigit():
            return cls(int(s[1:]), **kwargs)
    if s in ("permutation", "perm") and "n" in kwargs:
        return Permutation(**kwargs)
    raise ValueError(
        f"Unknown group spec {spec!r}. Use one of 'so2', 'c<n>', 'd<n>', 'flip', 'vflip', 'translation', "
        "'translation3d', 'scale', 'so3', 'o3', 's<n>' (or 'permutation' with n=...)."
    )


def _as_elements(elements: Tensor | Sequence, group: Group, device=None) -> Tensor:
    """Accept a tensor ``[K, p]`` (or ``[K]`` when ``p = 1``) and return it on ``device`` with the group's dtype."""
    if not isinstance(elements, Tensor):  # Python numbers: keep float64 precision (pi/2 must stay a quarter turn)
        elements = torch.as_tensor(elements, dtype=group.dtype if group.dtype.is_floating_point else None)
    if elements.ndim == 1 and group.param_dim == 1:
        elements = elements[:, None]
    if group.param_dim == 9 and elements.ndim == 3 and elements.shape[1:] == (3, 3):
        elements = elements.reshape(-1, 9)
    group._check_elements(elements)
    if group.dtype.is_floating_point:
        elements = elements.to(dtype=_F64)
    elif elements.dtype.is_floating_point:
        if (elements != elements.round()).any():
            raise ValueError(f"Expected integer elements for {group!r}, but got non-integer values.")
        elements = elements.to(_I64)
    return elements.to(device) if device is not None else elements
