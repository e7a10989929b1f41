"""Distances: scaled norms (finite errors for finite outputs near the float64 limit, bit-for-bit the plain formulas on
ordinary values), zeros give 0, NaN exactly where an operand is not finite; orbit tables NaN exactly at the pairs
counted non-finite."""

from __future__ import annotations

import math

import pytest
import torch

import eqmonitor as eqm
from eqmonitor.functional import orbit_errors
from eqmonitor.functional.distances import EPS, max_abs, relative, rms, symmetric_relative

_F64 = torch.float64
NORM_DISTANCES = {"relative": relative, "max_abs": max_abs, "rms": rms, "symmetric_relative": symmetric_relative}
#: the plain formulas (what the distances computed before scaling)
PLAIN = {
    "relative": lambda a, b: (a - b).flatten(1).norm(dim=1) / (b.flatten(1).norm(dim=1) + EPS),
    "max_abs": lambda a, b: (a - b).flatten(1).abs().amax(dim=1),
    "rms": lambda a, b: (a - b).flatten(1).pow(2).mean(dim=1).sqrt(),
    "symmetric_relative": lambda a, b: (
        (a - b).flatten(1).norm(dim=1) / (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1) + EPS)
    ),
}


@pytest.mark.parametrize("name", NORM_DISTANCES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ordinary_values_are_bit_for_bit_the_plain_formulas(name, dtype):
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        scale = 10.0 ** (trial % 17 - 8)  # 1e-8 ... 1e8
        a = torch.randn(7, 3, 5, generator=g, dtype=_F64).to(dtype) * scale
        b = a + torch.randn(7, 3, 5, generator=g, dtype=_F64).to(dtype) * scale * 10.0 ** -(trial % 9)
        assert torch.equal(NORM_DISTANCES[name](a, b), PLAIN[name](a, b)), (name, trial)


def test_outputs_near_1e300_give_the_right_finite_errors():
    g = torch.Generator().manual_seed(1)
    v, w = torch.randn(5, 40, generator=g, dtype=_F64), torch.randn(5, 40, generator=g, dtype=_F64)
    big = 2.0**1000  # ~1e301: the plain squares overflow; scaling by a power of two keeps the test exact
    for name, fn in NORM_DISTANCES.items():
        assert not torch.isfinite(PLAIN[name](v * big, w * big)).all() or name == "max_abs"  # the bug being fixed
        got = fn(v * big, w * big)  # ε is negligible at this scale: the reference leaves it out
        want = {
            "relative": (v - w).norm(dim=1) / w.norm(dim=1),
            "symmetric_relative": (v - w).norm(dim=1) / (v.norm(dim=1) + w.norm(dim=1)),
        }.get(name, PLAIN[name](v, w) * big)
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, want, rtol=1e-15, atol=0, msg=name)
    # not a power of two, and at the float64 limit: still finite, still right
    a, b = torch.tensor([[1.7e308, -1e308]], dtype=_F64), torch.tensor([[1.2e308, -0.9e308]], dtype=_F64)
    want = math.hypot(1.7e308 - 1.2e308, -1e308 + 0.9e308) / math.hypot(1.2e308, -0.9e308)  # hypot: no overflow
    assert float(relative(a, b)) == pytest.approx(want, rel=1e-15, abs=0)
    assert float(max_abs(a, b)) == 1.7e308 - 1.2e308 and torch.isfinite(rms(a, b)).all()


def test_zeros_give_zero_not_nan():
    z = torch.zeros(3, 4, dtype=_F64)
    for name, fn in NORM_DISTANCES.items():
        assert fn(z, z).tolist() == [0.0, 0.0, 0.0], name
    assert float(relative(torch.tensor([[3.0, 4.0]], dtype=_F64), torch.zeros(1, 2, dtype=_F64))) == 5.0 / EPS
    one_side = symmetric_relative(torch.tensor([[3.0, 4.0]], dtype=_F64), torch.zeros(1, 2, dtype=_F64))
    assert float(one_side) == 5.0 / (5.0 + EPS)


def test_nan_exactly_where_an_operand_is_not_finite():
    a = torch.ones(4, 3, dtype=_F64)
    b = a.clone()
    a[1, 0], b[2, 2], a[3, 1] = float("nan"), float("inf"), -float("inf")
    for name, fn in NORM_DISTANCES.items():
        out = fn(a, b)
        assert out.isnan().tolist() == [False, True, True, True], name


def test_orbit_tables_are_nan_exactly_at_the_nonfinite_pairs():
    """Outputs 1e300-scale, NaN for some samples, +Inf for others: finite pairs get finite errors in every table."""

    def model(x):
        out = x.flatten(1)[:, :4] * 1e300
        first = x.flatten(1)[:, 0:1]
        out = torch.where(first > 1.0, torch.full_like(out, float("nan")), out)
        return torch.where(first < -1.0, torch.full_like(out, float("inf")), out)

    x = torch.randn(24, 1, 4, 4, dtype=_F64, generator=torch.Generator().manual_seed(2))
    for error in ("relative", "rms", "symmetric_relative", "max_abs", "flip"):
        sym = eqm.Symmetry.from_spec(group="c4", error=error)
        res = orbit_errors(model, x, sym, sym.group.all_elements())
        # the model output at g·x (or h(x)) is not finite
        x0 = sym.input_action.prepare(sym.group, x)
        bad = torch.stack(
            [
                ~torch.isfinite(model(sym.input_action(sym.group, g[None].expand(24, -1), x0))).all(1)
                | ~torch.isfinite(model(x0)).all(1)
                for g in sym.group.all_elements()
            ],
            1,
        )
        assert 0 < int(bad.sum()) < bad.numel()
        assert torch.equal(res.nonfinite, bad), error
        for table in (res.errors, res.abs_errors, res.rel_errors, res.flips):
            assert torch.equal(table.isnan(), bad), error
        assert torch.isfinite(res.rel_errors[~bad]).all() and float(res.rel_errors[~bad].max()) > 0.1
        assert int(res.nonfinite_count()) == int(bad.sum()) and res.n_nonfinite == int(bad.sum())


def test_relative_table_of_1e300_outputs_matches_the_unscaled_model():
    def small(x):
        return x.flatten(1)[:, :6]

    x = torch.randn(8, 1, 5, 5, dtype=_F64, generator=torch.Generator().manual_seed(3))
    sym = eqm.Symmetry.from_spec(group="c4")
    e = sym.group.all_elements()
    ref = orbit_errors(lambda x: small(x) * 1e6, x, sym, e)  # ε (1e-12) is negligible against outputs ~1e6 too
    big = orbit_errors(lambda x: small(x) * 1e300, x, sym, e)
    assert not big.nonfinite.any()
    torch.testing.assert_close(big.rel_errors, ref.rel_errors, rtol=1e-14, atol=0)
    torch.testing.assert_close(big.abs_errors, ref.abs_errors * 1e294, rtol=1e-14, atol=0)
