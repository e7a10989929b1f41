"""Property tests of the groups: laws, sampling, geometry (matrix / translation), grid exactness and spec parsing.

Every group stores elements as ``[K, p]`` rows; the laws are checked on batches drawn from a seeded generator (the
seed comes from hypothesis, so a failure is reproducible from the printed seed).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eqmonitor.groups import (
    O3,
    SO2,
    SO3,
    Cyclic,
    Dihedral,
    Flip,
    Group,
    Permutation,
    Scale,
    Translation,
    Translation2d,
    group_from_spec,
)

FAST = settings(max_examples=25, deadline=None)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
F64 = torch.float64

# (id, factory): a fresh instance per test, so no test sees state another one left behind
GROUPS = {
    "so2": SO2,
    "c1": lambda: Cyclic(1),
    "c4": lambda: Cyclic(4),
    "c6": lambda: Cyclic(6),
    "d1": lambda: Dihedral(1),
    "d3": lambda: Dihedral(3),
    "d4": lambda: Dihedral(4),
    "flip": lambda: Flip("horizontal"),
    "vflip": lambda: Flip("vertical"),
    "translation1d": lambda: Translation(1),
    "translation2d": lambda: Translation2d(max_shift=3),
    "translation2d_float": lambda: Translation2d(max_shift=2.5, integer=False),
    "translation3d": lambda: Translation(3),
    "scale": Scale,
    "so3": SO3,
    "o3": O3,
    "s1": lambda: Permutation(1),
    "s2": lambda: Permutation(2),
    "s5": lambda: Permutation(5),
}
FINITE = ["c1", "c4", "c6", "d1", "d3", "d4", "flip", "vflip", "s1", "s2", "s5"]
SPACE = [k for k in GROUPS if not k.startswith("s") or k in ("so2", "so3", "scale")]  # groups with matrix()
PLANAR = [k for k in SPACE if GROUPS[k]().space_dim == 2]

group_ids = pytest.mark.parametrize("name", list(GROUPS))


def _sample(group: Group, n: int, seed: int) -> torch.Tensor:
    return group.sample(n, generator=torch.Generator().manual_seed(seed))


def _identity(group: Group, n: int) -> torch.Tensor:
    return group.identity().expand(n, -1)


def _assert_same(group: Group, a: torch.Tensor, b: torch.Tensor, atol: float = 1e-9) -> None:
    same = group.equal(a, b, atol=atol)
    assert same.shape == (a.shape[0],)
    assert bool(same.all()), f"{group!r}: elements differ:\n{a[~same]}\nvs\n{b[~same]}"


# SO2.matrix gives exact integer matrices for angles within 1e-14 rad of a quarter turn (so that quarter turns stay
# index maps); that moves entries by at most ~1e-14, so checks that may draw such angles allow 1e-12.
SNAP_TOL = 1e-12


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-12) -> None:
    """A cheap ``assert_close`` (shapes equal, max abs difference at most ``atol``): hypothesis calls it a lot."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = float((actual - expected).abs().max()) if actual.numel() else 0.0
    assert err <= atol, f"max abs difference {err:.3g} > {atol:g}"


def _in_group(group: Group, g: torch.Tensor) -> None:
    """Assert that every row of ``g`` is an element of ``group`` (shape, dtype and the group's constraints)."""
    assert g.ndim == 2 and g.shape[1] == group.param_dim
    assert g.dtype == group.dtype
    if isinstance(group, SO2):
        assert bool(((g >= 0) & (g < 2 * math.pi)).all())
    elif isinstance(group, Cyclic):
        assert bool(((g >= 0) & (g < group.n)).all())
    elif isinstance(group, Dihedral):
        assert bool(((g[:, 0] >= 0) & (g[:, 0] < group.n)).all())
        assert bool(((g[:, 1] == 0) | (g[:, 1] == 1)).all())
    elif isinstance(group, Flip):
        assert bool(((g == 0) | (g == 1)).all())
    elif isinstance(group, Translation):
        assert bool((g.abs() <= group.max_shift).all())
        if group.integer:
            assert torch.equal(g, g.round())
    elif isinstance(group, Scale):
        lo, hi = math.log(group.min_scale), math.log(group.max_scale)
        assert bool(((g >= lo) & (g <= hi)).all())
    elif isinstance(group, SO3):  # and O3
        m = g.reshape(-1, 3, 3)
        eye = torch.eye(3, dtype=F64).expand_as(m)
        _close(m @ m.transpose(1, 2), eye)
        det = torch.linalg.det(m)
        if isinstance(group, O3):
            _close(det.abs(), torch.ones_like(det))
        else:
            _close(det, torch.ones_like(det))
    elif isinstance(group, Permutation):
        assert torch.equal(g.sort(1).values, torch.arange(group.n).expand_as(g))
    else:  # pragma: no cover - a new group needs a membership rule here
        raise AssertionError(f"no membership rule for {group!r}")


# ================================================================================================ laws
@group_ids
@FAST
@given(seed=SEEDS, n=st.integers(1, 6))
def test_group_laws(name, seed, n):
    """Identity is neutral, inverses round-trip, composition is associative, (ab)⁻¹ = b⁻¹a⁻¹, and results stay in
    the group (one hypothesis run per group for all laws, to keep the file fast)."""
    group = GROUPS[name]()
    e = group.identity()
    assert e.shape == (1, group.param_dim) and e.dtype == group.dtype
    _in_group(group, e)
    a, b, c = _sample(group, 3 * n, seed).split(n)
    eye = _identity(group, n)
    # identity
    _assert_same(group, group.compose(eye, a), a)
    _assert_same(group, group.compose(a, eye), a)
    _assert_same(group, group.inverse(eye), eye)
    # inverse
    inv = group.inverse(a)
    assert inv.shape == a.shape and inv.dtype == a.dtype
    _assert_same(group, group.compose(a, inv), eye)
    _assert_same(group, group.compose(inv, a), eye)
    _assert_same(group, group.inverse(inv), a)
    # associativity
    _assert_same(group, group.compose(group.compose(a, b), c), group.compose(a, group.compose(b, c)))
    # (ab)⁻¹ = b⁻¹ a⁻¹
    ab = group.compose(a, b)
    _assert_same(group, group.inverse(ab), group.compose(group.inverse(b), inv))
    # closure: a product and an inverse are elements again (a sum of shifts or log-scales may leave the *sampling*
    # box, which is fine, so only shape and dtype are checked there)
    assert ab.shape == a.shape and ab.dtype == a.dtype
    if not isinstance(group, (Translation, Scale)):
        _in_group(group, ab)
        _in_group(group, inv)


@pytest.mark.parametrize("name", ["c4", "c6", "flip", "translation2d", "so2", "scale", "d1", "s2"])
@FAST
@given(seed=SEEDS)
def test_abelian_groups_commute(name, seed):
    group = GROUPS[name]()
    assert group.abelian
    a, b = _sample(group, 8, seed).split(4)
    _assert_same(group, group.compose(a, b), group.compose(b, a))


@pytest.mark.parametrize("name", ["d3", "d4", "so3", "o3", "s5"])
def test_non_abelian_groups_do_not_commute(name):
    group = GROUPS[name]()
    assert not group.abelian
    a, b = _sample(group, 400, 0).split(200)
    assert not bool(group.equal(group.compose(a, b), group.compose(b, a)).all())


# ================================================================================================ sampling
@group_ids
@FAST
@given(seed=SEEDS, n=st.integers(1, 50))
def test_sampling_is_reproducible_and_lands_in_group(name, seed, n):
    group = GROUPS[name]()
    g1, g2 = _sample(group, n, seed), _sample(group, n, seed)
    assert g1.shape == (n, group.param_dim)
    assert torch.equal(g1, g2)
    _in_group(group, g1)


@group_ids
def test_different_seeds_give_different_samples(name):
    group = GROUPS[name]()
    if group.order() == 1:
        pytest.skip("a one-element group has one sample")
    assert not torch.equal(_sample(group, 64, 1), _sample(group, 64, 2))


@FAST
@given(seed=SEEDS)
def test_so2_samples_are_uniform_on_the_circle(seed):
    # Kolmogorov–Smirnov statistic against U[0, 2π). At n = 4000 the 0.1% critical value is 1.95/√n ≈ 0.031; the bound
    # 0.05 is loose on purpose (a false alarm has probability ~1e-8) yet catches e.g. sampling [0, π) or a bias.
    n = 4000
    angles = _sample(SO2(), n, seed)[:, 0].sort().values
    cdf = angles / (2 * math.pi)
    i = torch.arange(1, n + 1, dtype=F64)
    d = torch.maximum((i / n - cdf).abs().max(), (cdf - (i - 1) / n).abs().max())
    assert float(d) < 0.05


@FAST
@given(seed=SEEDS)
def test_so3_samples_are_haar(seed):
    # Under Haar measure the rotation angle θ ∈ [0, π] has density (1 - cos θ)/π, i.e. CDF (θ - sin θ)/π.
    n = 4000
    m = _sample(SO3(), n, seed).reshape(-1, 3, 3)
    cos = ((m.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    theta = torch.arccos(cos).sort().values
    cdf = (theta - torch.sin(theta)) / math.pi
    i = torch.arange(1, n + 1, dtype=F64)
    d = torch.maximum((i / n - cdf).abs().max(), (cdf - (i - 1) / n).abs().max())
    assert float(d) < 0.05
    # the rotation axis is isotropic: the mean of the matrix is ~0
    assert float(m.mean(0).abs().max()) < 0.1


def test_o3_samples_both_parities():
    det = torch.linalg.det(_sample(O3(), 2000, 0).reshape(-1, 3, 3))
    frac = float((det < 0).to(F64).mean())
    assert 0.4 < frac < 0.6


@pytest.mark.parametrize("name", ["c4", "c6", "d3", "d4", "flip", "vflip", "s1", "s2"])
def test_sampling_hits_every_element(name):
    group = GROUPS[name]()
    g = _sample(group, 2000, 0)
    everything = group.all_elements()
    hit = (g[:, None, :] == everything[None, :, :]).all(-1).any(0)
    assert bool(hit.all()), f"never sampled: {everything[~hit]}"


def test_sampling_hits_every_permutation_of_four():
    group = Permutation(4)
    g = _sample(group, 3000, 0)
    assert len({tuple(row) for row in g.tolist()}) == 24
    counts = torch.unique(g, dim=0, return_counts=True)[1].to(F64)
    assert float(counts.min()) > 3000 / 24 / 2  # roughly uniform


@pytest.mark.parametrize("name", ["translation2d", "translation2d_float"])
def test_translation_samples_fill_the_box(name):
    group = GROUPS[name]()
    g = _sample(group, 4000, 0)
    assert float(g.min()) < -0.9 * group.max_shift and float(g.max()) > 0.9 * group.max_shift
    if group.integer:
        assert set(g.unique().tolist()) == set(range(-int(group.max_shift), int(group.max_shift) + 1))
    else:
        assert not torch.equal(g, g.round())


def test_sample_honours_device_argument():
    for name in GROUPS:
        group = GROUPS[name]()
        assert group.sample(3, device="cpu").device.type == "cpu"


# ================================================================================================ finite groups
@pytest.mark.parametrize("name", FINITE)
def test_order_matches_all_elements(name):
    group = GROUPS[name]()
    everything = group.all_elements()
    assert group.order() == everything.shape[0]
    assert everything.shape[1] == group.param_dim and everything.dtype == group.dtype
    assert torch.unique(everything, dim=0).shape[0] == group.order()  # no repeats
    _in_group(group, everything)
    _assert_same(group, everything[:1], group.identity())  # identity first
    assert not group.continuous


@pytest.mark.parametrize("name", FINITE)
def test_finite_group_is_closed(name):
    group = GROUPS[name]()
    everything = group.all_elements()
    k = everything.shape[0]
    a = everything.repeat_interleave(k, 0)
    b = everything.repeat(k, 1)
    ab = group.compose(a, b)
    assert bool((ab[:, None, :] == everything[None, :, :]).all(-1).any(1).all())
    # Cayley table rows are permutations (cancellation law)
    table = (ab[:, None, :] == everything[None, :, :]).all(-1).to(torch.int64).argmax(1).reshape(k, k)
    assert torch.equal(table.sort(1).values, torch.arange(k).expand(k, k))


def test_permutation_orders():
    assert [Permutation(n).order() for n in (1, 2, 3, 5)] == [1, 2, 6, 120]
    with pytest.raises(ValueError):
        Permutation(9).all_elements()


@pytest.mark.parametrize("name", ["so2", "translation2d", "scale", "so3", "o3"])
def test_infinite_groups_have_no_order(name):
    group = GROUPS[name]()
    assert group.order() is None
    assert group.continuous
    with pytest.raises(ValueError, match="infinite"):
        group.all_elements()


def test_elements_uses_all_elements_when_small():
    assert torch.equal(Cyclic(4).elements(10), Cyclic(4).all_elements())
    assert Cyclic(40).elements(10, generator=torch.Generator().manual_seed(0)).shape == (10, 1)
    assert SO2().elements(7, generator=torch.Generator().manual_seed(0)).shape == (7, 1)


def test_dihedral_composition_table():
    # (k1, f1)(k2, f2) = (k1 + (-1)^f1 k2, f1 + f2): a mirror conjugates a rotation into its inverse
    d = Dihedral(4)
    m, r = torch.tensor([[0, 1]]), torch.tensor([[1, 0]])
    assert torch.equal(d.compose(m, r), torch.tensor([[3, 1]]))
    assert torch.equal(d.compose(r, m), torch.tensor([[1, 1]]))
    assert torch.equal(d.compose(d.compose(m, r), m), torch.tensor([[3, 0]]))


def test_permutation_composition_convention():
    # acting with σ then τ gathers x[σ][τ] = x[σ[τ]], so compose(τ, σ) = σ[τ]
    p = Permutation(4)
    sigma, tau = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[0, 2, 1, 3]])
    x = torch.tensor([10, 11, 12, 13])
    assert torch.equal(x[sigma[0]][tau[0]], x[p.compose(tau, sigma)[0]])


# ================================================================================================ geometry
@pytest.mark.parametrize("name", SPACE)
@FAST
@given(seed=SEEDS, n=st.integers(1, 5))
def test_matrix_and_translation_are_a_homomorphism(name, seed, n):
    # the affine map p -> M p + t composes as (M_a, t_a)(M_b, t_b) = (M_a M_b, M_a t_b + t_a)
    group = GROUPS[name]()
    a, b = _sample(group, 2 * n, seed).split(n)
    ab = group.compose(a, b)
    ma, mb, mab = group.matrix(a), group.matrix(b), group.matrix(ab)
    d = group.space_dim
    tol = SNAP_TOL if isinstance(group, SO2) else 1e-12
    assert ma.shape == (n, d, d) and ma.dtype == F64
    _close(mab, ma @ mb, tol)
    ta, tb, tab = group.translation(a), group.translation(b), group.translation(ab)
    assert ta.shape == (n, d) and ta.dtype == F64
    _close(tab, torch.einsum("bij,bj->bi", ma, tb) + ta, tol)
    _close(group.matrix(group.identity()), torch.eye(d, dtype=F64)[None], atol=0)
    _close(group.matrix(group.inverse(a)) @ ma, torch.eye(d, dtype=F64).expand_as(ma), tol)


@pytest.mark.parametrize("name", ["so2", "c4", "c6", "d3", "d4", "flip", "vflip", "so3", "o3"])
@FAST
@given(seed=SEEDS)
def test_matrices_are_orthogonal(name, seed):
    group = GROUPS[name]()
    m = group.matrix(_sample(group, 6, seed))
    tol = SNAP_TOL if isinstance(group, SO2) else 1e-12
    _close(m @ m.transpose(1, 2), torch.eye(m.shape[-1], dtype=F64).expand_as(m), tol)


def test_matrix_frame_positive_angle_turns_x_towards_y():
    ex = torch.tensor([1.0, 0.0], dtype=F64)
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    assert torch.equal(SO2().matrix(torch.tensor([[math.pi / 2]], dtype=F64))[0], quarter)  # snapped exactly
    assert torch.equal(Cyclic(4).matrix(torch.tensor([[1]]))[0], quarter)
    assert torch.equal(Cyclic(4).matrix(torch.tensor([[1]]))[0] @ ex, torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.equal(Dihedral(4).matrix(torch.tensor([[1, 0]]))[0], quarter)
    assert torch.equal(Dihedral(4).matrix(torch.tensor([[0, 1]]))[0], torch.diag(torch.tensor([-1.0, 1.0], dtype=F64)))
    # (k, 1) = r^k m: mirror first, then rotate
    assert torch.equal(
        Dihedral(4).matrix(torch.tensor([[1, 1]]))[0], quarter @ torch.diag(torch.tensor([-1.0, 1.0])).double()
    )
    assert torch.equal(
        Flip("horizontal").matrix(torch.tensor([[1]]))[0], torch.diag(torch.tensor([-1.0, 1.0], dtype=F64))
    )
    assert torch.equal(
        Flip("vertical").matrix(torch.tensor([[1]]))[0], torch.diag(torch.tensor([1.0, -1.0], dtype=F64))
    )
    angle = 0.3
    m = SO2().matrix(torch.tensor([[angle]], dtype=F64))[0]
    _close(m @ ex, torch.tensor([math.cos(angle), math.sin(angle)], dtype=F64))


@pytest.mark.parametrize("angle", [1e-5, 1e-12, math.pi / 2 + 1e-5, math.pi + 2e-5])
def test_so2_matrix_of_small_angle_is_a_rotation(angle):
    m = SO2().matrix(torch.tensor([[angle]], dtype=F64))[0]
    expected = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=F64)
    _close(m, expected, 1e-15)


@pytest.mark.parametrize("k", range(4))
def test_c4_and_so2_agree_on_quarter_turns(k):
    so2 = SO2()
    angle = so2.grid(4)[k : k + 1]
    assert torch.equal(so2.matrix(angle), Cyclic(4).matrix(torch.tensor([[k]])))
    assert torch.equal(so2.testing_elements()[k : k + 1], angle)


def test_scale_matrix():
    s = Scale(0.5, 2.0)
    m = s.matrix(torch.tensor([[math.log(2.0)]], dtype=F64))
    _close(m[0], 2.0 * torch.eye(2, dtype=F64))


def test_translation_matrix_is_identity_and_translation_is_the_shift():
    t = Translation2d()
    g = torch.tensor([[1.5, -2.0]], dtype=F64)
    assert torch.equal(t.matrix(g)[0], torch.eye(2, dtype=F64))
    assert torch.equal(t.translation(g), g)
    assert t.param_names == ("dx", "dy")


def test_permutation_has_no_matrix():
    with pytest.raises(TypeError):
        Permutation(3).matrix(Permutation(3).identity())


# ================================================================================================ exact on the grid
def test_exact_on_grid_rotations():
    assert bool(Cyclic(4).exact_on_grid(Cyclic(4).all_elements()).all())
    assert bool(Dihedral(4).exact_on_grid(Dihedral(4).all_elements()).all())
    c8 = Cyclic(8).exact_on_grid(Cyclic(8).all_elements())
    assert c8.tolist() == [True, False, True, False, True, False, True, False]
    so2 = SO2()
    assert bool(so2.exact_on_grid(so2.grid(4)).all())
    assert bool(so2.exact_on_grid(so2.testing_elements()).all())
    angles = torch.tensor([[math.pi / 4], [0.1], [3 * math.pi / 4], [math.pi / 2 + 1e-6]], dtype=F64)
    assert not bool(so2.exact_on_grid(angles).any())
    c3 = Cyclic(3).exact_on_grid(Cyclic(3).all_elements())
    assert c3.tolist() == [True, False, False]


@FAST
@given(dx=st.integers(-20, 20), dy=st.integers(-20, 20), frac=st.floats(0.01, 0.99))
def test_exact_on_grid_shifts(dx, dy, frac):
    t = Translation2d()
    assert bool(t.exact_on_grid(torch.tensor([[dx, dy]], dtype=F64)).all())
    assert not bool(t.exact_on_grid(torch.tensor([[dx + frac, dy]], dtype=F64)).any())
    assert not bool(t.exact_on_grid(torch.tensor([[dx, dy - frac]], dtype=F64)).any())


def test_exact_on_grid_flips_scales_and_permutations():
    for flip in (Flip("horizontal"), Flip("vertical")):
        assert bool(flip.exact_on_grid(flip.all_elements()).all())
    s = Scale()
    assert s.exact_on_grid(torch.tensor([[0.0], [0.1], [-0.05]], dtype=F64)).tolist() == [True, False, False]
    p = Permutation(4)
    assert bool(p.exact_on_grid(p.all_elements()).all())  # no space: always exact


def test_exact_on_grid_so3():
    so3 = SO3()
    assert bool(so3.exact_on_grid(so3.grid(4)).all())  # quarter turns about the axes
    assert not bool(so3.exact_on_grid(so3.testing_elements()).any())


# ================================================================================================ SO(2) details
def test_so2_equal_compares_on_the_circle():
    so2 = SO2()
    a = torch.tensor([[0.0], [2 * math.pi - 1e-12], [math.pi]], dtype=F64)
    b = torch.tensor([[2 * math.pi - 1e-12], [0.0], [-math.pi]], dtype=F64)
    assert so2.equal(a, b).tolist() == [True, True, True]
    assert not bool(so2.equal(torch.tensor([[0.1]], dtype=F64), torch.tensor([[0.2]], dtype=F64)).any())


@FAST
@given(seed=SEEDS)
def test_so2_grid_is_evenly_spaced(seed):
    n = int(torch.randint(1, 100, (1,), generator=torch.Generator().manual_seed(seed)))
    g = SO2().grid(n)
    assert g.shape == (n, 1) and float(g[0, 0]) == 0.0
    _close(g[:, 0].diff(), torch.full((n - 1,), 2 * math.pi / n, dtype=F64))
    assert SO2().grid().shape == (72, 1)


@FAST
@given(angle=st.floats(min_value=0.0, max_value=1e-16, exclude_min=True))
def test_so2_inverse_stays_in_half_open_range(angle):
    so2 = SO2()
    inv = so2.inverse(torch.tensor([[angle]], dtype=F64))
    assert 0.0 <= float(inv) < 2 * math.pi


@FAST
@given(a=st.floats(0.0, 2 * math.pi, exclude_max=True), b=st.floats(0.0, 2 * math.pi, exclude_max=True))
def test_so2_compose_of_valid_angles_stays_in_range(a, b):
    so2 = SO2()
    ab = so2.compose(torch.tensor([[a]], dtype=F64), torch.tensor([[b]], dtype=F64))
    assert 0.0 <= float(ab) < 2 * math.pi
    assert bool(so2.equal(ab, torch.tensor([[a + b]], dtype=F64)).all())


# ================================================================================================ specs
@pytest.mark.parametrize(
    ("spec", "cls", "attrs"),
    [
        ("so2", SO2, {}),
        ("SO2", SO2, {}),
        (" c4 ", Cyclic, {"n": 4}),
        ("c8", Cyclic, {"n": 8}),
        ("d4", Dihedral, {"n": 4}),
        ("D6", Dihedral, {"n": 6}),
        ("s5", Permutation, {"n": 5}),
        ("flip", Flip, {"axis": "horizontal"}),
        ("hflip", Flip, {"axis": "horizontal"}),
        ("vflip", Flip, {"axis": "vertical"}),
        ("translation", Translation, {"space_dim": 2}),
        ("translation2d", Translation, {"space_dim": 2}),
        ("shift", Translation, {"space_dim": 2}),
        ("translation3d", Translation, {"space_dim": 3}),
        ("translation1d", Translation, {"space_dim": 1}),
        ("scale", Scale, {}),
        ("so3", SO3, {}),
        ("o3", O3, {}),
    ],
)
def test_group_from_spec(spec, cls, attrs):
    group = group_from_spec(spec)
    assert type(group) is cls
    for key, value in attrs.items():
        assert getattr(group, key) == value
    assert group_from_spec(group.name).name == group.name  # the name round-trips


def test_group_from_spec_kwargs():
    t = group_from_spec("translation", max_shift=2.0, integer=False)
    assert t.max_shift == 2.0 and not t.integer
    assert group_from_spec("permutation", n=3).n == 3
    assert group_from_spec("scale", min_scale=0.5, max_scale=2.0).max_scale == 2.0


@pytest.mark.parametrize("spec", ["so4", "rotation", "c", "cx", "d-4", "", "permutation", "z2", "s"])
def test_group_from_spec_unknown(spec):
    with pytest.raises(ValueError, match="Unknown group spec"):
        group_from_spec(spec)


def test_constructors_reject_bad_arguments():
    for bad in (
        lambda: Cyclic(0),
        lambda: Dihedral(-1),
        lambda: Permutation(0),
        lambda: Cyclic(2.0),
        lambda: Flip("diagonal"),
        lambda: Translation(0),
        lambda: Translation(2, max_shift=0),
        lambda: Scale(1.2, 2.0),
        lambda: Scale(0.5, 0.9),
    ):
        with pytest.raises(ValueError):
            bad()


def test_check_elements_shape():
    with pytest.raises(ValueError, match=r"\[K, 2\]"):
        Dihedral(4)._check_elements(torch.zeros(3, 1, dtype=torch.int64))


@group_ids
def test_describe_and_repr(name):
    group = GROUPS[name]()
    e = group.identity()
    assert isinstance(group.describe(e[0]), str) and group.describe(e[0])
    assert repr(group).startswith(type(group).__name__.replace("Translation2d", "Translation"))


@pytest.mark.parametrize("gid", sorted(GROUPS))
def test_default_elements_method_and_audit_alias(gid):
    """``Group.default_elements``: all of a small finite group, the grid of a one-parameter group, else seeded Haar
    samples; ``eqmonitor.audit.default_elements`` is the same call."""
    from eqmonitor.audit import default_elements

    group = GROUPS[gid]()
    got = group.default_elements(8, torch.Generator().manual_seed(0))
    assert got.shape[1] == group.param_dim and got.dtype == group.dtype
    order = group.order()
    if order is not None and order <= 8:
        assert torch.equal(got, group.all_elements())
    elif order is None and group.param_dim == 1:
        assert torch.equal(got, group.grid(8))
    else:
        assert got.shape[0] == 8
    assert torch.equal(got, default_elements(group, 8, torch.Generator().manual_seed(0)))


def test_as_elements_checks_and_converts():
    from eqmonitor.groups.base import as_elements

    assert as_elements([0.5, 1.0], SO2()).dtype == F64
    assert as_elements(torch.eye(3)[None].expand(2, 3, 3), SO3()).shape == (2, 9)
    assert as_elements(torch.tensor([[1.0, 0.0]]), Dihedral(4)).dtype == torch.int64
    with pytest.raises(ValueError, match="non-integer"):
        as_elements(torch.tensor([[0.5]]), Cyclic(4))
    with pytest.raises(ValueError, match=r"shape \[K, 2\]"):
        as_elements(torch.zeros(3, 1, dtype=torch.int64), Dihedral(4))
