"""orbit_errors: known answers, agreement with a naive loop, chunking, zero interference and bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional import orbit_errors
from eqmonitor.functional.distances import relative


def naive_errors(model, x, sym, elements):
    """Reference: one element at a time, f(x) recomputed each time (the audit template's loop)."""
    x0 = sym.input_action.prepare(sym.group, x)
    rows = []
    with torch.no_grad():
        for g in elements:
            ge = g[None].expand(x.shape[0], -1)
            actual = model(sym.input_action(sym.group, ge, x0)).double()
            expected = sym.output_action(sym.group, ge, model(x0).double())
            rows.append(sym.distance(actual, expected, None))
    return torch.stack(rows, 1)


# ------------------------------------------------------------------------------------------------ known answers
def test_c4_group_averaged_cnn_is_invariant_at_float_precision(c4_averaged, digits, c4):
    x, _ = digits
    res = orbit_errors(c4_averaged, x, c4, c4.group.all_elements())
    assert res.errors.shape == (64, 4) and res.elements.shape == (4, 1)
    assert res.exact.all()
    assert float(res.max()) < 1e-6
    assert (res.input_floor == 0).all()
    eqm.assert_equivariant(c4_averaged, x, c4)


def test_deepsets_is_permutation_invariant():
    torch.manual_seed(0)
    model = eqm.demos.DeepSets(in_features=3, out_features=4)
    sym = eqm.Symmetry.from_spec(name="perm", group="s7", input="set", output="invariant")
    x = torch.randn(16, 7, 3)
    res = orbit_errors(model, x, sym, sym.group.sample(20, generator=torch.Generator().manual_seed(1)))
    assert float(res.max()) < 1e-6
    eqm.assert_equivariant(model, x, sym)


def test_permutation_equivariant_layer_under_permute_output():
    torch.manual_seed(0)
    model = nn.Linear(3, 5)  # acts on each item alone: permutation-equivariant on [B, N, F]
    sym = eqm.Symmetry.from_spec(name="perm", group="s6", input="set", output="set")
    res = orbit_errors(model, torch.randn(4, 6, 3), sym, sym.group.sample(10, generator=torch.Generator()))
    assert float(res.max("abs_errors")) < 1e-6


def test_plain_cnn_is_broken_at_45_degrees(trained_cnn, digits, rotation):
    x, _ = digits
    report = eqm.audit(trained_cnn, x, rotation, elements=[math.pi / 4])
    assert report.verdict == "broken"
    assert report.stats["relative"]["mean"] > 0.1
    # the model error is far above what the transform itself loses
    assert report.stats["relative"]["mean"] > 2 * report.elements[0]["input_floor"]
    with pytest.raises(AssertionError, match=r"relative error .* at angle=0\.785"):
        eqm.assert_equivariant(trained_cnn, x, rotation, elements=[math.pi / 4])


def test_c4_averaged_cnn_exact_and_interpolated_reported_apart(c4_averaged, digits, rotation):
    x, _ = digits
    res = orbit_errors(c4_averaged, x, rotation, rotation.group.grid(8))
    assert res.exact.tolist() == [True, False] * 4
    exact, interp = res.subset(res.exact), res.subset(~res.exact)
    assert float(exact.max()) < 1e-6
    assert float(interp.mean()) > 1e-4  # interpolation error is visible
    assert (interp.input_floor > 1e-3).all() and (exact.input_floor == 0).all()


def test_matches_naive_per_element_loop(trained_cnn, digits, rotation):
    x, _ = digits
    elements = rotation.group.grid(12)
    res = orbit_errors(trained_cnn, x[:16], rotation, elements)
    ref = naive_errors(trained_cnn, x[:16], rotation, elements)
    torch.testing.assert_close(res.errors, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_batch", [1, 7, 64, 10_000, "auto"])
def test_chunk_size_does_not_change_results(trained_cnn, digits, rotation, max_batch):
    x, _ = digits
    elements = rotation.group.grid(6)
    ref = orbit_errors(trained_cnn, x[:10], rotation, elements, max_batch=10_000)
    res = orbit_errors(trained_cnn, x[:10], rotation, elements, max_batch=max_batch)
    torch.testing.assert_close(res.errors, ref.errors, rtol=1e-5, atol=1e-6)


def test_equivariant_conv_under_translation_with_circular_padding():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular")
    sym = eqm.Symmetry(
        group=eqm.groups.Translation2d(max_shift=5),
        input_action=eqm.actions.ImageAction(padding="circular"),
        output_action=eqm.actions.ImageAction(padding="circular"),
        name="shift",
    )
    x = torch.randn(4, 2, 12, 12)
    res = orbit_errors(conv, x, sym, sym.group.grid())
    assert res.exact.all() and float(res.max()) < 1e-6
    zero_pad = nn.Conv2d(2, 3, 3, padding=1)  # zero padding breaks circular shift equivariance at the border
    assert float(orbit_errors(zero_pad, x, sym, sym.group.grid()).max()) > 1e-2


def test_classifier_outputs_give_flips_and_confidence(trained_cnn, digits, rotation):
    x, y = digits
    sym = eqm.Symmetry.from_spec(name="rotation", group="so2", error="confidence")
    res = orbit_errors(trained_cnn, x, sym, [0.0, math.pi / 2], labels=y)
    assert res.flips is not None and res.confidence is not None and res.confidence_ref is not None
    assert not res.flips[:, 0].any()
    torch.testing.assert_close(res.confidence[:, 0], res.confidence_ref)
    assert res.flip_rate() > 0


# ------------------------------------------------------------------------------------------------ zero interference
class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def test_zero_interference():
    torch.manual_seed(0)
    model = Mixed()
    model.train()
    model.drop.eval()  # mixed flags: BN in train mode, dropout in eval mode
    x = torch.randn(6, 1, 8, 8)
    model(x).sum().backward()  # populate .grad and BN stats
    flags = {n: m.training for n, m in model.named_modules()}
    state = copy.deepcopy(model.state_dict())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    sym = eqm.Symmetry.from_spec(name="rotation", group="so2")
    orbit_errors(model, x, sym, sym.group.grid(5))
    assert {n: m.training for n, m in model.named_modules()} == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # includes BN running stats and num_batches_tracked
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.is_grad_enabled()


def test_precision_settings_restored():
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    try:
        seen = {}

        def model(x):
            seen["tf32"] = torch.backends.cuda.matmul.allow_tf32
            seen["precision"] = torch.get_float32_matmul_precision()
            return x.flatten(1).sum(1, keepdim=True)

        sym = eqm.Symmetry.from_spec(group="c4")
        orbit_errors(model, torch.randn(2, 1, 4, 4), sym, [1], max_batch=8)
        assert seen == {"tf32": False, "precision": "highest"}
        assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[0], before[1]
        torch.set_float32_matmul_precision(before[2])


def test_model_flags_restored_when_model_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.lin(x.flatten(1))

    model = Boom().train()
    sym = eqm.Symmetry.from_spec(group="c4")
    with pytest.raises(RuntimeError, match="boom"):
        orbit_errors(model, torch.randn(2, 1, 4, 4), sym, [1], max_batch=8)
    assert model.training and model.lin.training


# ------------------------------------------------------------------------------------------------ bad input
def test_non_tensor_batch_is_rejected(c4_averaged, c4):
    with pytest.raises(TypeError, match=r"batch\[0\]"):
        orbit_errors(c4_averaged, (torch.randn(2, 1, 28, 28), torch.zeros(2)), c4, [1])


def test_empty_batch_is_rejected(c4_averaged, c4):
    with pytest.raises(ValueError, match="at least one sample"):
        orbit_errors(c4_averaged, torch.randn(0, 1, 28, 28), c4, [1])


def test_dtype_mismatch_is_rejected(c4_averaged, c4):
    with pytest.raises(TypeError, match=r"x.to\(torch.float32\)"):
        orbit_errors(c4_averaged, torch.randn(2, 1, 28, 28, dtype=torch.float64), c4, [1])


def test_input_the_action_cannot_act_on(c4):
    with pytest.raises(RuntimeError, match=r"images \[B, \.\.\., H, W\].*shape \(4, 3\)"):
        orbit_errors(nn.Linear(3, 2), torch.randn(4, 3), c4, [1])


def test_output_the_action_cannot_act_on():
    sym = eqm.Symmetry.from_spec(group="c4", input="image", output="equivariant")
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))  # returns [B, 2], not an image
    with pytest.raises(RuntimeError, match=r"output has shape \(3, 2\)"):
        orbit_errors(model, torch.randn(3, 1, 4, 4), sym, [1])


def test_non_tensor_output_is_rejected(c4):
    with pytest.raises(TypeError, match=r"returned a dict with keys \[.logits.\].*pass `output_key=` \(a key"):
        orbit_errors(lambda x: {"logits": x.sum((1, 2, 3))}, torch.randn(2, 1, 4, 4), c4, [1])


def test_bad_elements_and_arguments(c4_averaged, c4):
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"shape \[K, 2\]"):
        orbit_errors(c4_averaged, x, eqm.Symmetry.from_spec(group="d4"), [1, 2])
    with pytest.raises(ValueError, match="max_batch"):
        orbit_errors(c4_averaged, x, c4, [1], max_batch=0)
    with pytest.raises(ValueError, match="finite"):
        orbit_errors(c4_averaged, torch.full((2, 1, 28, 28), float("nan")), c4, [1])
    with pytest.raises(ValueError, match="labels"):
        orbit_errors(c4_averaged, x, eqm.Symmetry.from_spec(group="c4", error="confidence"), [1])


def test_nan_outputs_are_reported_not_averaged(c4):
    def model(x):
        out = x.flatten(1)[:, :3].clone()
        out[x.flatten(1)[:, 0] > 0] = float("nan")  # NaN for some samples only
        return out

    x = torch.randn(16, 1, 4, 4)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.0, -1.0
    res = orbit_errors(model, x, c4, c4.group.all_elements(), max_batch=64)
    assert res.n_nonfinite > 0
    assert res.nonfinite.any() and not res.nonfinite.all()
    assert torch.isfinite(res.mean())  # statistics over the finite pairs only ...
    report = eqm.report.AuditReport.from_orbit(res)
    assert report.verdict == "non-finite" and report.n_nonfinite == res.n_nonfinite  # ... but never hidden
    assert "NON-FINITE" in report.to_text()


def test_relative_distance_is_what_it_says():
    a, b = torch.tensor([[3.0, 4.0]], dtype=torch.float64), torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    assert float(relative(b, a)) == pytest.approx(1.0)
