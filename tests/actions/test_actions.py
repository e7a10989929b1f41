"""Property tests of the actions: group laws (exact for index maps, within a measured floor for interpolation),
agreement with torch's own rot90 / flip / roll, the coordinate frame, covariance of a finite-difference gradient, the
annotations moving with the image, and the input checks.

Frame (see ``eqmonitor.groups``): ``x`` runs along the columns (right), ``y`` along the rows (down) and a positive
angle turns ``+x`` towards ``+y``, i.e. clockwise as an image is drawn on screen.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from eqmonitor.actions import (
    Boxes,
    Custom,
    ImageAction,
    Invariant,
    Keypoints,
    Permute,
    Points,
    Representation,
    VectorField,
    Vectors,
    disc_mask,
)
from eqmonitor.groups import O3, SO2, SO3, Cyclic, Dihedral, Flip, Permutation, Scale, Translation, Translation2d

FAST = settings(max_examples=25, deadline=None)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
F64 = torch.float64


# ================================================================================================ helpers
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape: int, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _rows(group, elements: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of one element (``[1, p]`` or ``[p]``)."""
    return elements.reshape(1, -1).expand(n, -1)


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """A cheap ``assert_close``: same shape, max abs difference at most ``atol`` (hypothesis calls this a lot)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = float((actual - expected).abs().max()) if actual.numel() else 0.0
    assert err <= atol, f"max abs difference {err:.3g} > {atol:g}"


def _coords(h: int, w: int):
    """Centred pixel coordinates ``X`` (columns), ``Y`` (rows), ``[H, W]`` float64."""
    ys = torch.arange(h, dtype=F64) - (h - 1) / 2
    xs = torch.arange(w, dtype=F64) - (w - 1) / 2
    return torch.meshgrid(xs, ys, indexing="xy")


def _blobs(seed: int, batch: int = 2, size: int = 32) -> torch.Tensor:
    """Smooth test images ``[B, 1, S, S]``: sums of 1-3 Gaussian blobs (σ in [3, 5] px, centres within 6 px of the
    image centre, so that they are nearly zero on the rim of the inscribed disc)."""
    g = _gen(seed)
    xx, yy = _coords(size, size)
    out = torch.zeros(batch, 1, size, size, dtype=F64)
    for b in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cx, cy = ((2 * torch.rand(2, generator=g, dtype=F64) - 1) * 6).tolist()
            sigma = 3 + 2 * float(torch.rand(1, generator=g, dtype=F64))
            weight = 0.5 + float(torch.rand(1, generator=g, dtype=F64))
            out[b, 0] += weight * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return out


def _grad(f: torch.Tensor) -> torch.Tensor:
    """Central differences on a periodic grid: ``f [B, H, W] -> [B, 2, H, W]`` with channels ``(d/dx, d/dy)``,
    ``x`` along the columns and ``y`` along the rows (the frame of :class:`VectorField`)."""
    dx = (torch.roll(f, -1, dims=-1) - torch.roll(f, 1, dims=-1)) / 2
    dy = (torch.roll(f, -1, dims=-2) - torch.roll(f, 1, dims=-2)) / 2
    return torch.stack([dx, dy], -3)


def _random_elements(group, n: int, seed: int) -> torch.Tensor:
    return group.sample(n, generator=_gen(seed))


C4, D4 = Cyclic(4), Dihedral(4)
IMAGE = ImageAction(mask=None)
IMAGE_CIRC = ImageAction(mask=None, padding="circular")
FIELD = VectorField(mask=None)
FIELD_CIRC = VectorField(mask=None, padding="circular")

# exact (group, action, input-maker) cases: every element acts as an index map, so the laws hold bit for bit
square_sizes = st.integers(1, 9)


def _image(seed, b, s, h=None, w=None, c=2):
    return _randn(seed, b, c, h or s, w or s)


def _boxes(seed, b, hi):
    """Valid boxes ``[B, 2, 4]`` (x1 <= x2, y1 <= y2) on the quarter-pixel lattice in ``[0, hi / 4)``."""
    c = torch.randint(0, hi, (b, 2, 2, 2), generator=_gen(seed)).double() / 4  # [B, box, corner, xy]
    return torch.cat([c.min(2).values, c.max(2).values], -1)


EXACT_CASES = {
    "c4-image": (C4, IMAGE, lambda seed, b, s: _image(seed, b, s)),
    "c4-image-circ": (C4, IMAGE_CIRC, lambda seed, b, s: _image(seed, b, s)),
    "d4-image": (D4, IMAGE, lambda seed, b, s: _image(seed, b, s)),
    "d4-image-5d": (D4, IMAGE, lambda seed, b, s: _randn(seed, b, 2, 3, s, s)),
    "c2-image-rect": (Cyclic(2), IMAGE, lambda seed, b, s: _image(seed, b, s, s, s + 3)),
    "flip-image-rect": (Flip("horizontal"), IMAGE, lambda seed, b, s: _image(seed, b, s, s + 2, s)),
    "vflip-image-rect": (Flip("vertical"), IMAGE, lambda seed, b, s: _image(seed, b, s, s, s + 1)),
    "shift-image-circ": (Translation2d(max_shift=5), IMAGE_CIRC, lambda seed, b, s: _image(seed, b, s, s, s + 2)),
    "d4-field": (D4, FIELD, lambda seed, b, s: _randn(seed, b, 4, s, s)),
    "d4-field-circ": (D4, FIELD_CIRC, lambda seed, b, s: _randn(seed, b, 2, s, s)),
    "shift-field-circ": (Translation2d(max_shift=5), FIELD_CIRC, lambda seed, b, s: _randn(seed, b, 2, s + 1, s)),
    "s5-permute": (Permutation(5), Permute(), lambda seed, b, s: _randn(seed, b, 5, 3)),
    "s4-permute-dim2": (Permutation(4), Permute(dim=2), lambda seed, b, s: _randn(seed, b, 3, 4, 2)),
    "s4-permute-int": (
        Permutation(4),
        Permute(dim=-1),
        lambda seed, b, s: torch.randint(9, (b, 2, 4), generator=_gen(seed)),
    ),
    # keypoints / boxes on a quarter-pixel lattice: all the arithmetic is exact in float64
    "d4-keypoints": (
        D4,
        Keypoints((8, 8)),
        lambda seed, b, s: torch.randint(0, 29, (b, 3, 2), generator=_gen(seed)).double() / 4,
    ),
    "shift-keypoints": (
        Translation2d(),
        Keypoints((5, 7)),
        lambda seed, b, s: torch.randint(-8, 40, (b, 3, 2), generator=_gen(seed)).double() / 4,
    ),
    "d4-boxes": (D4, Boxes((9, 9)), lambda seed, b, s: _boxes(seed, b, 33)),
    "shift-boxes": (Translation2d(), Boxes((6, 4)), lambda seed, b, s: _boxes(seed, b, 25)),
    "c4-points": (C4, Points(), lambda seed, b, s: torch.randint(-9, 9, (b, 4, 2), generator=_gen(seed)).double()),
    "shift-points": (
        Translation(3),
        Points(),
        lambda seed, b, s: torch.randint(-9, 9, (b, 4, 3), generator=_gen(seed)).double(),
    ),
    "shift-vectors": (Translation2d(), Vectors(), lambda seed, b, s: _randn(seed, b, 4, 2)),
    "c4-invariant": (C4, Invariant(), lambda seed, b, s: _randn(seed, b, 3)),
    "c4-representation": (
        C4,
        Representation(C4.matrix, dim=1, name="c4-rep"),
        lambda seed, b, s: torch.randint(-9, 9, (b, 2, 3), generator=_gen(seed)).double(),
    ),
    "c6-custom": (
        Cyclic(6),
        Custom(lambda e, x: torch.gather(x, 1, (torch.arange(6)[None] - e).remainder(6)), name="cyclic_roll"),
        lambda seed, b, s: _randn(seed, b, 6),
    ),
}
exact_cases = pytest.mark.parametrize("case", list(EXACT_CASES))


# ================================================================================================ group laws, exact
@exact_cases
@FAST
@given(seed=SEEDS, b=st.integers(1, 4), s=square_sizes)
def test_exact_action_laws(case, seed, b, s):
    """For elements that act as index maps (or exact lattice arithmetic), the action laws hold bit for bit:
    identity, composition φ(g, φ(h, x)) == φ(gh, x), inverse round trips, and rows acting independently.
    (One hypothesis run per case for all four laws keeps the file fast.)"""
    group, action, make = EXACT_CASES[case]
    x = make(seed, b, s)
    action.check(group, x)
    # identity
    out = action(group, _rows(group, group.identity(), b), x)
    assert out.dtype == x.dtype
    assert torch.equal(out, x)
    # composition
    g, h = _random_elements(group, 2 * b, seed).split(b)
    assert bool(action.exact_elements(group, g, x.shape).all())
    lhs = action(group, g, action(group, h, x))
    assert lhs.shape == x.shape
    assert torch.equal(lhs, action(group, group.compose(g, h), x))
    # inverse
    assert torch.equal(action(group, group.inverse(g), action(group, g, x)), x)
    assert torch.equal(action(group, g, action(group, group.inverse(g), x)), x)
    # one batched call == one call per row (the action never mixes rows)
    out = action(group, g, x)
    for i in range(b):
        assert torch.equal(out[i : i + 1], action(group, g[i : i + 1], x[i : i + 1]))


# ================================================================================================ points in space
@pytest.mark.parametrize("group", [SO3(), O3()], ids=["so3", "o3"])
@pytest.mark.parametrize("action", [Points(), Vectors(), Vectors(pseudo=True)], ids=["points", "vectors", "pseudo"])
@FAST
@given(seed=SEEDS, b=st.integers(1, 4), n=st.integers(1, 5))
def test_points_group_laws_in_space(group, action, seed, b, n):
    x = _randn(seed, b, n, 3)
    action.check(group, x)
    assert torch.equal(action(group, _rows(group, group.identity(), b), x), x)
    g, h = _random_elements(group, 2 * b, seed + 1).split(b)
    _close(action(group, g, action(group, h, x)), action(group, group.compose(g, h), x), 1e-12)
    _close(action(group, group.inverse(g), action(group, g, x)), x, 1e-12)
    # norms are preserved
    _close(action(group, g, x).norm(dim=-1), x.norm(dim=-1), 1e-12)
    # [B, 3] works as well as [B, N, 3]
    _close(action(group, g, x[:, 0]), action(group, g, x)[:, 0], 1e-15)


@FAST
@given(seed=SEEDS, b=st.integers(1, 4))
def test_cross_product_is_a_pseudovector(seed, b):
    # a × b turns with det(R) R under O(3): exactly the pseudo-vector action
    o3 = O3()
    u, v = _randn(seed, 2, b, 3)
    g = _random_elements(o3, b, seed)
    vec, pseudo = Vectors(), Vectors(pseudo=True)
    _close(torch.cross(vec(o3, g, u), vec(o3, g, v), dim=-1), pseudo(o3, g, torch.cross(u, v, dim=-1)), 1e-12)
    inversion = -o3.identity().expand(b, -1)
    assert torch.equal(pseudo(o3, inversion, u), u)
    assert torch.equal(vec(o3, inversion, u), -u)


def test_points_translate_and_vectors_do_not():
    t = Translation(3)
    shift = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)
    p = torch.tensor([[[0.0, 1.0, 2.0]]], dtype=F64)
    assert torch.equal(Points()(t, shift, p), p + shift[:, None])
    assert torch.equal(Vectors()(t, shift, p), p)
    assert torch.equal(Points(translate=False)(t, shift, p), p)


@FAST
@given(angle=st.floats(-10, 10, allow_nan=False), x=st.floats(-5, 5), y=st.floats(-5, 5))
def test_planar_points_rotate_in_our_frame(angle, x, y):
    p = torch.tensor([[[x, y]]], dtype=F64)
    out = Points()(SO2(), torch.tensor([[angle % (2 * math.pi)]], dtype=F64), p)
    c, s = math.cos(angle), math.sin(angle)
    _close(out, torch.tensor([[[c * x - s * y, s * x + c * y]]], dtype=F64), 1e-12 * (1 + abs(x) + abs(y)))


def test_planar_points_quarter_turn_maps_x_to_y():
    assert torch.equal(
        Points()(C4, torch.tensor([[1]]), torch.tensor([[[1.0, 0.0]]], dtype=F64)),
        torch.tensor([[[0.0, 1.0]]], dtype=F64),
    )


@FAST
@given(seed=SEEDS, b=st.integers(1, 4))
def test_representation_of_so3_and_dim(seed, b):
    so3 = SO3()
    rep_last = Representation(so3.matrix)
    rep_dim1 = Representation(so3.matrix, dim=1)
    x = _randn(seed, b, 5, 3)
    g, h = _random_elements(so3, 2 * b, seed).split(b)
    _close(rep_last(so3, g, rep_last(so3, h, x)), rep_last(so3, so3.compose(g, h), x), 1e-12)
    _close(rep_dim1(so3, g, x.transpose(1, 2)), rep_last(so3, g, x).transpose(1, 2), 1e-12)
    _close(rep_last(so3, g, x), Points()(so3, g, x), 1e-12)


# ================================================================================================ permutations
@FAST
@given(seed=SEEDS, b=st.integers(1, 4))
def test_permute_gathers(seed, b):
    s = Permutation(6)
    x = _randn(seed, b, 6, 2)
    sigma = _random_elements(s, b, seed)
    out = Permute()(s, sigma, x)
    for i in range(b):
        assert torch.equal(out[i], x[i][sigma[i]])


# ================================================================================================ images vs torch
@pytest.mark.parametrize("k", range(4))
@FAST
@given(seed=SEEDS, b=st.integers(1, 3), s=st.integers(1, 9))
def test_c4_matches_rot90_clockwise(k, seed, b, s):
    # pinned: our k = 1 (+90°, +x towards +y = down) is torch.rot90(x, -1, dims=(-2, -1)), clockwise on screen
    x = _image(seed, b, s)
    g = torch.full((b, 1), k, dtype=torch.int64)
    expected = torch.rot90(x, -k, dims=(-2, -1))
    assert torch.equal(IMAGE(C4, g, x), expected)
    assert torch.equal(IMAGE_CIRC(C4, g, x), expected)
    assert torch.equal(ImageAction(mask=None, interpolation="nearest")(C4, g, x), expected)
    assert torch.equal(ImageAction()(C4, g, x), expected)  # mask="auto" does not mask C4


def test_c4_direction_by_hand():
    # a bright pixel right of the centre goes below the centre under +90°
    x = torch.zeros(1, 1, 3, 3, dtype=F64)
    x[0, 0, 1, 2] = 1.0  # row 1 (middle), column 2 (right)
    out = IMAGE(C4, torch.tensor([[1]]), x)
    expected = torch.zeros_like(x)
    expected[0, 0, 2, 1] = 1.0  # row 2 (bottom), column 1 (middle)
    assert torch.equal(out, expected)


@FAST
@given(seed=SEEDS, b=st.integers(1, 3), h=st.integers(1, 8), w=st.integers(1, 8))
def test_flips_match_torch_flip(seed, b, h, w):
    x = _image(seed, b, 0, h, w)
    one = torch.ones(b, 1, dtype=torch.int64)
    assert torch.equal(IMAGE(Flip("horizontal"), one, x), torch.flip(x, dims=(-1,)))
    assert torch.equal(IMAGE(Flip("vertical"), one, x), torch.flip(x, dims=(-2,)))
    mirror = torch.tensor([[0, 1]]).expand(b, -1)  # D_n's m: x -> -x, a left-right flip
    assert torch.equal(IMAGE(Dihedral(4), mirror, x), torch.flip(x, dims=(-1,)))
    assert torch.equal(IMAGE(Dihedral(3), mirror, x), torch.flip(x, dims=(-1,)))
    assert torch.equal(IMAGE(Cyclic(2), one, x), torch.rot90(x, 2, dims=(-2, -1)))


@FAST
@given(seed=SEEDS, h=st.integers(1, 8), w=st.integers(1, 8), dx=st.integers(-12, 12), dy=st.integers(-12, 12))
def test_integer_circular_shift_matches_roll(seed, h, w, dx, dy):
    x = _image(seed, 2, 0, h, w)
    g = torch.tensor([[dx, dy]], dtype=F64).expand(2, -1)
    assert torch.equal(IMAGE_CIRC(Translation2d(), g, x), torch.roll(x, shifts=(dy, dx), dims=(-2, -1)))


@FAST
@given(seed=SEEDS, h=st.integers(1, 8), w=st.integers(1, 8), dx=st.integers(-9, 9), dy=st.integers(-9, 9))
def test_integer_zero_padded_shift_matches_roll_with_zero_fill(seed, h, w, dx, dy):
    x = _image(seed, 2, 0, h, w)
    g = torch.tensor([[dx, dy]], dtype=F64).expand(2, -1)
    expected = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    rows, cols = torch.arange(h), torch.arange(w)
    keep = ((rows - dy >= 0) & (rows - dy < h))[:, None] & ((cols - dx >= 0) & (cols - dx < w))[None, :]
    assert torch.equal(IMAGE(Translation2d(), g, x), expected * keep)


# ================================================================================================ SO(2) on images
@FAST
@given(seed=SEEDS, b=st.integers(1, 3), s=st.integers(1, 9), k=st.integers(0, 3))
def test_so2_quarter_turn_in_float64_is_exact(seed, b, s, k):
    so2 = SO2()
    x = _image(seed, b, s)
    angle = torch.full((b, 1), k * (math.pi / 2), dtype=F64)  # k·(π/2) as a float64 (3π/2 is not exact in binary)
    assert bool(ImageAction().exact_elements(so2, angle, x.shape).all())
    c4 = IMAGE(C4, torch.full((b, 1), k), x)
    assert torch.equal(IMAGE(so2, angle, x), c4)
    assert torch.equal(IMAGE_CIRC(so2, angle, x), c4)
    # with the default mask ("auto" masks SO2 to the disc, which a quarter turn maps onto itself)
    disc = disc_mask(s, s, dtype=F64)
    assert torch.equal(ImageAction()(so2, angle, x), c4 * disc)
    assert torch.equal(IMAGE(so2, so2.grid(4)[k : k + 1].expand(b, -1), x), c4)


def test_so2_quarter_turn_in_float32_image():
    x = torch.randn(2, 1, 6, 6, generator=_gen(0))
    out = IMAGE(SO2(), torch.full((2, 1), math.pi / 2, dtype=F64), x)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.rot90(x, -1, dims=(-2, -1)))


@FAST
@given(
    angle=st.floats(0.1, 2 * math.pi - 0.1),
    position=st.floats(0, 2 * math.pi),
    size=st.sampled_from([(32, 32), (24, 32), (32, 26)]),
)
def test_rotation_moves_an_off_centre_blob_where_the_frame_says(angle, position, size):
    # no zero-angle trap: a non-zero angle really changes a non-symmetric image, and the blob's centroid goes to
    # R(angle) · centre (positive angle turns +x towards +y), also for angles off the pixel grid and on non-square
    # images (where grid_sample's normalised coordinates scale x and y differently)
    h, w = size
    xx, yy = _coords(h, w)
    r = 6.0
    cx, cy = r * math.cos(position), r * math.sin(position)
    blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2))[None, None]
    out = IMAGE(SO2(), torch.tensor([[angle]], dtype=F64), blob)[0, 0]
    change = float((out - blob[0, 0]).norm() / blob.norm())
    assert change > 0.15  # measured ≥ 0.27 at |angle| = 0.1
    mass = out.sum()
    centroid = torch.stack([(out * xx).sum() / mass, (out * yy).sum() / mass])
    expected = torch.tensor([cx * math.cos(angle) - cy * math.sin(angle), cx * math.sin(angle) + cy * math.cos(angle)])
    _close(centroid, expected.double(), 0.02)  # measured ≤ 3e-3 px
    _close(mass, blob.sum(), 0.05 * float(blob.sum()))


# Floors for bilinear SO(2) on smooth 32×32 float64 blobs (σ 3–5 px, mask="disc"), measured with these very
# helpers over seeds 0..999 (2000 images): composition error max 0.023 (median 0.010), inverse round trip max 0.039
# (median 0.017), relative L2. Bilinear resampling smooths a little every time it is applied, so φ(g, φ(h, x)) (two
# resamplings) differs from φ(gh, x) (one) by about one resampling's smoothing; the round trip resamples twice
# against none. The bounds leave a ~2× margin over the measured worst case; a wrong frame, centre or composition
# order gives errors of order one.
SO2_COMPOSITION_FLOOR = 0.05
SO2_ROUND_TRIP_FLOOR = 0.08


@FAST
@given(seed=SEEDS)
def test_so2_composition_within_interpolation_floor(seed):
    so2, action = SO2(), ImageAction(mask="disc")
    x = _blobs(seed)
    g, h = _random_elements(so2, 4, seed).split(2)
    lhs = action(so2, g, action(so2, h, x))
    rhs = action(so2, so2.compose(g, h), x)
    err = (lhs - rhs).flatten(1).norm(dim=1) / rhs.flatten(1).norm(dim=1)
    assert float(err.max()) < SO2_COMPOSITION_FLOOR


@FAST
@given(seed=SEEDS)
def test_so2_inverse_round_trip_within_interpolation_floor(seed):
    so2, action = SO2(), ImageAction(mask="disc")
    x = _blobs(seed)
    g = _random_elements(so2, 2, seed)
    back = action(so2, so2.inverse(g), action(so2, g, x))
    ref = action.prepare(so2, x)
    err = (back - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    assert float(err.max()) < SO2_ROUND_TRIP_FLOOR


@FAST
@given(seed=SEEDS)
def test_so2_identity_with_disc_mask_is_exact_on_prepared_images(seed):
    so2, action = SO2(), ImageAction(mask="disc")
    x = _blobs(seed)
    ref = action.prepare(so2, x)
    assert torch.equal(ref, x * disc_mask(32, 32, dtype=F64))
    assert torch.equal(action(so2, so2.identity().expand(2, -1), x), ref)
    assert torch.equal(ImageAction()(so2, so2.identity().expand(2, -1), x), ref)  # "auto" masks SO(2)


@pytest.mark.parametrize(
    "action", [ImageAction(), ImageAction(mask="disc"), VectorField()], ids=["image-auto", "image-disc", "field-auto"]
)
@FAST
@given(seed=SEEDS, angle=st.floats(0, 2 * math.pi, exclude_max=True), s=st.integers(2, 12))
def test_disc_mask_is_applied_to_outputs(action, seed, angle, s):
    # masked before *and* after acting: nothing outside the inscribed disc, even where a rotation brings in corners
    x = _randn(seed, 1, 2, s, s + (seed % 2))
    outside = disc_mask(x.shape[-2], x.shape[-1], dtype=F64) == 0
    out = action(SO2(), torch.tensor([[angle]], dtype=F64), x)
    assert bool((out[..., outside] == 0).all())


@FAST
@given(seed=SEEDS)
def test_mixed_exact_and_interpolated_rows(seed):
    # a batch mixing grid-exact and off-grid angles gives the same rows as acting on each row alone
    so2 = SO2()
    x = _blobs(seed, batch=4)
    angles = torch.tensor([[math.pi / 2], [0.3], [math.pi], [float(_random_elements(so2, 1, seed))]], dtype=F64)
    for action in (IMAGE, IMAGE_CIRC, ImageAction(mask="disc"), FIELD):
        xx = x.expand(-1, 2, -1, -1).contiguous() if isinstance(action, VectorField) else x
        out = action(so2, angles, xx)
        for i in range(4):
            _close(out[i : i + 1], action(so2, angles[i : i + 1], xx[i : i + 1]), 1e-12)


@FAST
@given(seed=SEEDS, dx=st.floats(-3, 3), dy=st.floats(-3, 3))
def test_subpixel_circular_shifts_compose_within_floor(seed, dx, dy):
    # a smooth periodic image: circular bilinear shifts compose up to the interpolation floor (measured < 0.01)
    h = w = 16
    g = _gen(seed)
    xx, yy = torch.meshgrid(torch.arange(w, dtype=F64), torch.arange(h, dtype=F64), indexing="xy")
    phase = 2 * math.pi * torch.rand(2, generator=g, dtype=F64)
    f = (torch.sin(2 * math.pi * xx / w + phase[0]) + torch.cos(2 * math.pi * yy / h + phase[1]))[None, None]
    t = Translation2d(integer=False)
    a = torch.tensor([[dx, dy]], dtype=F64)
    b = torch.tensor([[0.5, -0.25]], dtype=F64)
    lhs = IMAGE_CIRC(t, a, IMAGE_CIRC(t, b, f))
    rhs = IMAGE_CIRC(t, t.compose(a, b), f)
    assert float((lhs - rhs).norm() / rhs.norm()) < 0.05
    # a shift by exactly one period along x is the identity
    assert torch.equal(IMAGE_CIRC(t, torch.tensor([[float(w), 0.0]], dtype=F64), f), f)


def test_zero_and_circular_padding_agree_for_small_subpixel_shifts_in_the_interior():
    xx, yy = _coords(16, 16)
    f = torch.exp(-(xx**2 + yy**2) / 8)[None, None]
    g = torch.tensor([[0.3, -0.7]], dtype=F64)
    t = Translation2d(integer=False)
    _close(IMAGE(t, g, f)[..., 2:-2, 2:-2], IMAGE_CIRC(t, g, f)[..., 2:-2, 2:-2], 1e-12)
    # and both move the blob by the shift
    out = IMAGE(t, g, f)[0, 0]
    centroid = torch.stack([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    _close(centroid, g[0], 0.02)


def test_scale_identity_is_exact_and_scaling_moves_content_outwards():
    s = Scale(0.5, 2.0)
    xx, yy = _coords(32, 32)
    f = torch.exp(-((xx - 4) ** 2 + yy**2) / 4)[None, None]
    assert torch.equal(IMAGE(s, s.identity(), f), f)
    out = IMAGE(s, torch.tensor([[math.log(2.0)]], dtype=F64), f)[0, 0]
    centroid_x = float((out * xx).sum() / out.sum())
    assert abs(centroid_x - 8.0) < 0.1


# ================================================================================================ vector fields
@pytest.mark.parametrize("k", range(4))
def test_vector_field_constant_field_turns_with_c4(k):
    field = torch.zeros(1, 2, 6, 6, dtype=F64)
    field[:, 0] = 1.0
    out = FIELD(C4, torch.tensor([[k]]), field)
    c, s = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k]
    expected = torch.stack([torch.full((6, 6), c, dtype=F64), torch.full((6, 6), s, dtype=F64)])[None]
    assert torch.equal(out, expected)


@FAST
@given(angle=st.floats(0, 2 * math.pi, exclude_max=True))
def test_vector_field_constant_field_turns_with_so2_in_the_interior(angle):
    field = torch.zeros(1, 2, 16, 16, dtype=F64)
    field[:, 0] = 1.0
    out = FIELD(SO2(), torch.tensor([[angle]], dtype=F64), field)
    xx, yy = _coords(16, 16)
    interior = (xx**2 + yy**2) <= 5.5**2  # sources of these pixels are well inside the image
    # bilinear weights sum to one, so the interior is (cos, sin) to rounding
    _close(out[0, 0][interior], torch.full_like(out[0, 0][interior], math.cos(angle)), 1e-12)
    _close(out[0, 1][interior], torch.full_like(out[0, 1][interior], math.sin(angle)), 1e-12)


def test_vector_field_quarter_turn_by_hand():
    # rotating the constant field (1, 0) by +90° gives (0, 1): +x turns towards +y (down the rows)
    field = torch.zeros(1, 2, 5, 5, dtype=F64)
    field[:, 0] = 1.0
    out = FIELD(SO2(), torch.tensor([[math.pi / 2]], dtype=F64), field)
    assert torch.equal(out[:, 0], torch.zeros(1, 5, 5, dtype=F64))
    assert torch.equal(out[:, 1], torch.ones(1, 5, 5, dtype=F64))


def test_vector_field_moves_domain_like_an_image():
    # each channel's domain moves like ImageAction; the vectors are then turned by M
    x = _randn(3, 1, 2, 5, 5)
    for k in range(4):
        g = torch.tensor([[k]])
        moved = IMAGE(C4, g, x)
        m = C4.matrix(g)[0]
        assert torch.equal(FIELD(C4, g, x), torch.einsum("ij,bjhw->bihw", m, moved))
    shift = torch.tensor([[2.0, -1.0]], dtype=F64)
    assert torch.equal(FIELD_CIRC(Translation2d(), shift, x), IMAGE_CIRC(Translation2d(), shift, x))


@pytest.mark.parametrize("name", ["c4", "d4", "shift"])
@FAST
@given(seed=SEEDS, half=st.integers(1, 5), extra=st.integers(0, 3))
def test_gradient_is_covariant(name, seed, half, extra):
    # the key covariance test: central differences on a periodic grid commute with quarter turns, flips and integer
    # shifts when the image turns as a scalar field and the gradient as a vector field:
    #     grad(φ_image(g, f)) == φ_field(g, grad(f))
    size = 2 * half
    group = {"c4": C4, "d4": D4, "shift": Translation2d(max_shift=6)}[name]
    if name == "shift":  # shifts work on rectangles too
        f = _randn(seed, 3, size, size + extra)
    else:
        f = _randn(seed, 3, size, size)
    g = _random_elements(group, 3, seed)
    lhs = _grad(IMAGE_CIRC(group, g, f[:, None])[:, 0])
    rhs = FIELD_CIRC(group, g, _grad(f))
    _close(lhs, rhs, 1e-12)
    assert torch.equal(lhs, rhs)  # in fact bit for bit: values are only moved and negated


def test_gradient_of_a_ramp_rotated_by_hand():
    # f = x (the column coordinate): grad f = (1, 0) away from the wrap-around seam
    n = 8
    xx, yy = _coords(n, n)
    f = xx[None]
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    grad_f = _grad(f)
    assert torch.equal(grad_f[interior][:, 0], torch.ones(1, n - 2, n - 2, dtype=F64))
    assert torch.equal(grad_f[interior][:, 1], torch.zeros(1, n - 2, n - 2, dtype=F64))
    # by hand, +90° (x towards y): (g·f)(p) = f(M⁻¹ p) = f(y, -x) = y, the row coordinate
    rotated = IMAGE_CIRC(C4, torch.tensor([[1]]), f[:, None])[:, 0]
    assert torch.equal(rotated, yy[None])
    grad_rotated = _grad(rotated)
    assert torch.equal(grad_rotated[interior][:, 0], torch.zeros(1, n - 2, n - 2, dtype=F64))
    assert torch.equal(grad_rotated[interior][:, 1], torch.ones(1, n - 2, n - 2, dtype=F64))
    # which is the field action applied to grad f = (1, 0)
    assert torch.equal(FIELD_CIRC(C4, torch.tensor([[1]]), grad_f)[interior], grad_rotated[interior])


# ================================================================================================ annotations
@pytest.mark.parametrize("name", ["d4", "shift"])
@FAST
@given(seed=SEEDS, col=st.integers(0, 6), row=st.integers(0, 6))
def test_keypoints_follow_the_image(name, seed, col, row):
    # a single lit pixel at (col, row) lands where Keypoints moves (col, row)
    group = {"d4": D4, "shift": Translation2d(max_shift=3)}[name]
    size = 7
    g = _random_elements(group, 1, seed)
    moved = Keypoints((size, size))(group, g, torch.tensor([[[col, row]]], dtype=F64))[0, 0]
    assume(bool(((moved >= 0) & (moved <= size - 1)).all()))
    x = torch.zeros(1, 1, size, size, dtype=F64)
    x[0, 0, row, col] = 1.0
    out = IMAGE(group, g, x)[0, 0]
    assert out.sum() == 1.0
    r, c = divmod(int(out.argmax()), size)
    assert (c, r) == (int(moved[0]), int(moved[1]))


@FAST
@given(angle=st.floats(0, 2 * math.pi, exclude_max=True), col=st.floats(8, 23), row=st.floats(8, 23))
def test_keypoints_follow_a_blob_under_any_rotation(angle, col, row):
    size = 32
    xx, yy = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="xy")
    blob = torch.exp(-((xx - col) ** 2 + (yy - row) ** 2) / (2 * 1.5**2))[None, None]
    g = torch.tensor([[angle]], dtype=F64)
    moved = Keypoints((size, size))(SO2(), g, torch.tensor([[[col, row]]], dtype=F64))[0, 0]
    out = IMAGE(SO2(), g, blob)[0, 0]
    centroid = torch.stack([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    _close(centroid, moved, 0.05)


@pytest.mark.parametrize("name", ["c4", "d4", "shift"])
@FAST
@given(seed=SEEDS, data=st.data())
def test_boxes_follow_the_image(name, seed, data):
    # the lit rectangle's bounding box after the move equals the moved box (exact for these elements)
    size = 9
    group = {"c4": C4, "d4": D4, "shift": Translation2d(max_shift=2)}[name]
    x1 = data.draw(st.integers(2, 6))
    x2 = data.draw(st.integers(x1, 6))
    y1 = data.draw(st.integers(2, 6))
    y2 = data.draw(st.integers(y1, 6))
    g = _random_elements(group, 1, seed)
    box = torch.tensor([[[x1, y1, x2, y2]]], dtype=F64)
    moved = Boxes((size, size))(group, g, box)[0, 0]
    img = torch.zeros(1, 1, size, size, dtype=F64)
    img[0, 0, y1 : y2 + 1, x1 : x2 + 1] = 1.0
    out = IMAGE(group, g, img)[0, 0]
    rows, cols = out.nonzero().unbind(1)
    assert moved.tolist() == [cols.min().item(), rows.min().item(), cols.max().item(), rows.max().item()]


@FAST
@given(seed=SEEDS, angle=st.floats(0, 2 * math.pi, exclude_max=True))
def test_boxes_are_hulls_of_moved_corners(seed, angle):
    so2 = SO2()
    corners = torch.rand(1, 2, 2, generator=_gen(seed), dtype=F64) * 10
    x1, y1 = corners[0].min(0).values.tolist()
    x2, y2 = corners[0].max(0).values.tolist()
    box = torch.tensor([[[x1, y1, x2, y2]]], dtype=F64)
    g = torch.tensor([[angle]], dtype=F64)
    moved = Boxes((10, 12))(so2, g, box)[0, 0]
    pts = torch.tensor([[[x1, y1], [x2, y1], [x1, y2], [x2, y2]]], dtype=F64)
    kp = Keypoints((10, 12))(so2, g, pts)[0]
    _close(moved[:2], kp.min(0).values, 1e-12)
    _close(moved[2:], kp.max(0).values, 1e-12)
    assert bool((moved[:2] <= moved[2:]).all())


@FAST
@given(x=st.floats(-50, 50), y=st.floats(-50, 50))
def test_keypoints_identity_up_to_rounding(x, y):
    # (p - c) + c need not round back to p for arbitrary floats, so the identity holds to a few ulps here
    # (and bit for bit on the quarter-pixel lattice, see EXACT_CASES)
    p = torch.tensor([[[x, y]]], dtype=F64)
    _close(Keypoints((16, 16))(SO2(), SO2().identity(), p), p, 1e-13)


# ================================================================================================ checks
def test_check_rejects_non_tensors():
    cases = [
        (SO2(), ImageAction()),
        (SO2(), VectorField()),
        (SO3(), Points()),
        (SO3(), Vectors()),
        (Permutation(3), Permute()),
        (C4, Keypoints((4, 4))),
        (C4, Boxes((4, 4))),
        (C4, Invariant()),
        (SO3(), Representation(SO3().matrix)),
    ]
    for group, action in cases:
        with pytest.raises(TypeError, match="tensor"):
            action.check(group, [[1.0, 2.0, 3.0]])


def test_image_action_check():
    action = ImageAction()
    with pytest.raises(RuntimeError, match=r"images \[B, \.\.\., H, W\]"):
        action.check(SO2(), torch.zeros(4, 3))
    with pytest.raises(RuntimeError, match="floating-point"):
        action.check(SO2(), torch.zeros(2, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="planar group"):
        action.check(SO3(), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="planar group"):
        action.check(Permutation(3), torch.zeros(2, 1, 4, 4))
    action.check(SO2(), torch.zeros(2, 1, 4, 4))  # fine
    action.check(Translation2d(), torch.zeros(2, 4, 4))  # [B, H, W] is an image too


def test_image_action_constructor_rejects_bad_options():
    for kwargs in ({"mask": "square"}, {"interpolation": "cubic"}, {"padding": "reflect"}):
        with pytest.raises(ValueError):
            ImageAction(**kwargs)
    with pytest.raises(ValueError, match="circular"):
        ImageAction(padding="circular", interpolation="nearest")


def test_vector_field_check():
    with pytest.raises(RuntimeError, match="channel pairs"):
        VectorField().check(SO2(), torch.zeros(2, 3, 8, 8))
    with pytest.raises(RuntimeError):
        VectorField().check(SO2(), torch.zeros(2, 3))
    VectorField().check(SO2(), torch.zeros(2, 4, 8, 8))
    VectorField().check(SO2(), torch.zeros(2, 5, 2, 8, 8))


def test_vector_field_check_rejects_channel_less_tensors():
    with pytest.raises(RuntimeError, match="channel pairs"):
        VectorField().check(SO2(), torch.zeros(2, 8, 8))


def test_points_check():
    with pytest.raises(RuntimeError, match=r"\[B, \.\.\., 3\]"):
        Points().check(SO3(), torch.zeros(2, 5, 2))
    with pytest.raises(RuntimeError, match=r"\[B, \.\.\., 2\]"):
        Points().check(SO2(), torch.zeros(2, 5, 3))
    with pytest.raises(RuntimeError):
        Vectors().check(SO3(), torch.zeros(3))
    with pytest.raises(RuntimeError, match="floating-point"):
        Points().check(SO3(), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="acting on space"):
        Points().check(Permutation(3), torch.zeros(2, 3))
    Points().check(SO3(), torch.zeros(2, 3))
    Points().check(SO3(), torch.zeros(2, 5, 3))


def test_permute_check():
    with pytest.raises(RuntimeError, match="permutes 5 items"):
        Permute().check(Permutation(5), torch.zeros(2, 4, 3))
    with pytest.raises(RuntimeError, match="permutes 4 items"):
        Permute(dim=2).check(Permutation(4), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="Permutation"):
        Permute().check(C4, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError):
        Permute(dim=0)
    Permute().check(Permutation(4), torch.zeros(2, 4, 3))
    Permute(dim=-1).check(Permutation(3), torch.zeros(2, 4, 3))


def test_annotation_checks():
    with pytest.raises(RuntimeError, match=r"\[B, \.\.\., 2\]"):
        Keypoints((8, 8)).check(SO2(), torch.zeros(2, 5, 3))
    with pytest.raises(RuntimeError, match=r"\[B, \.\.\., 4\]"):
        Boxes((8, 8)).check(SO2(), torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="planar"):
        Keypoints((8, 8)).check(SO3(), torch.zeros(2, 5, 2))
    with pytest.raises(ValueError):
        Keypoints((8,))
    Keypoints((8, 8)).check(C4, torch.zeros(2, 5, 2))
    Boxes((8, 8)).check(C4, torch.zeros(2, 5, 4))


def test_representation_and_custom_checks():
    with pytest.raises(RuntimeError, match="size 3"):
        Representation(SO3().matrix).check(SO3(), torch.zeros(2, 5, 4))
    with pytest.raises(TypeError):
        Representation("not callable")
    Representation(SO3().matrix, dim=1).check(SO3(), torch.zeros(2, 3, 5))
    with pytest.raises(RuntimeError, match="shaped like"):
        Custom(lambda e, x: x[:, :1]).check(C4, torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="shaped like"):
        Custom(lambda e, x: 0.0).check(C4, torch.zeros(2, 3))
    with pytest.raises(TypeError):
        Custom(42)


def test_exact_elements():
    assert bool(IMAGE.exact_elements(D4, D4.all_elements(), torch.Size([1, 1, 6, 6])).all())
    # a quarter turn does not map a 4 x 6 grid onto itself; a half turn and flips do
    assert IMAGE.exact_elements(C4, C4.all_elements(), torch.Size([1, 1, 4, 6])).tolist() == [True, False, True, False]
    angles = torch.tensor([[0.0], [math.pi / 4], [math.pi / 2], [1.0]], dtype=F64)
    assert IMAGE.exact_elements(SO2(), angles, torch.Size([1, 1, 8, 8])).tolist() == [True, False, True, False]
    shifts = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=F64)
    assert IMAGE.exact_elements(Translation2d(), shifts, torch.Size([1, 1, 8, 8])).tolist() == [True, False]


def test_mask_auto_applies_to_off_grid_groups_only():
    action = ImageAction()
    assert action.uses_mask(SO2()) and action.uses_mask(Cyclic(8)) and action.uses_mask(Dihedral(3))
    assert not action.uses_mask(C4) and not action.uses_mask(D4) and not action.uses_mask(Cyclic(2))
    assert not action.uses_mask(Translation2d()) and not action.uses_mask(Flip())
    assert ImageAction(mask="disc").uses_mask(C4) and not ImageAction(mask=None).uses_mask(SO2())


def test_invariant_is_identity():
    x = torch.randn(3, 4)
    assert Invariant().is_identity and not IMAGE.is_identity
    assert Invariant()(SO2(), SO2().sample(3), x) is x
