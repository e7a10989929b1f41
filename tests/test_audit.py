"""audit() / assert_equivariant() and the AuditReport formats."""

from __future__ import annotations

import json
import math

import pytest
import torch

import eqmonitor as eqm
from eqmonitor.report import default_tolerance, verdict
from eqmonitor.summary import summarize


def test_verdict_bands_scale_with_dtype():
    assert verdict(5e-7) == "exact"
    assert verdict(5e-5) == "excellent"
    assert verdict(5e-3) == "approximate"
    assert verdict(5e-2) == "broken"
    assert verdict(5e-7, torch.float64) == "approximate"
    assert verdict(5e-13, torch.float64) == "exact"
    assert verdict(float("nan")) == "non-finite"
    assert default_tolerance(torch.float32) == 1e-4 and default_tolerance(torch.float64) == 1e-9


def test_audit_report_formats(c4_averaged, digits, rotation):
    x, _ = digits
    report = eqm.audit(c4_averaged, x[:16], rotation, n_elements=8)
    assert report.n_samples == 16 and report.n_elements == 8 and report.kind == "invariant"
    assert report.verdict_exact == "exact" and report.verdict_interpolated not in ("exact", "excellent")
    assert report.verdict == report.verdict_interpolated
    text = report.to_text()
    assert "exact, relative" in text and "interp, relative" in text and "angle=0.785" in text
    md = report.to_markdown()
    assert md.startswith("### eqmonitor audit") and "| element |" in md
    data = json.loads(report.to_json())
    assert data["verdict"] == report.verdict and len(data["elements"]) == 8
    assert data["stats"]["relative"]["error_max"] == pytest.approx(report.stats["relative"]["error_max"])
    assert data["stats"]["relative"] == summarize(report.orbit, "rel_errors").to_floats()
    assert "orbit" not in data


def test_audit_defaults_use_all_elements_of_small_finite_groups(c4_averaged, digits):
    x, _ = digits
    sym = eqm.Symmetry.from_spec(name="d4", group="d4")
    report = eqm.audit(c4_averaged, x[:8], sym)
    assert report.n_elements == 8
    # flips are not in C4: the C4-averaged CNN is invariant to rotations but not to mirrors
    flipped = [r for r in report.elements if "flipped" in r["element"]]
    assert all(r["error_mean"] > 1e-3 for r in flipped)
    assert report.verdict == "broken"


def test_audit_is_seeded_and_leaves_global_rng_alone(c4_averaged, digits):
    x, _ = digits
    sym = eqm.Symmetry.from_spec(name="so3", group="so3", input="points", output="invariant")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    pts = torch.randn(5, 4, 3)
    state = torch.get_rng_state()
    a = eqm.audit(model, pts, sym, n_elements=6, seed=3)
    b = eqm.audit(model, pts, sym, n_elements=6, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.to_dict() == b.to_dict()


def test_assert_equivariant_uses_the_models_dtype(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4)).double()
    sym = eqm.Symmetry.from_spec(name="c4", group="c4")
    errors = eqm.assert_equivariant(model, x[:8].double(), sym)
    assert float(errors.max()) < 1e-9  # float64 tolerance, not float32's


def test_assert_equivariant_failure_names_worst_element(trained_cnn, digits):
    x, _ = digits
    sym = eqm.Symmetry.from_spec(name="c4", group="c4")
    with pytest.raises(AssertionError) as info:
        eqm.assert_equivariant(trained_cnn, x[:8], sym)
    msg = str(info.value)
    assert msg.startswith("c4: relative error") and "tolerance 1.0e-04" in msg and "k=" in msg and "sample" in msg


def test_assert_equivariant_explicit_tolerance(c4_averaged, digits, rotation):
    x, _ = digits
    eqm.assert_equivariant(c4_averaged, x[:8], rotation, elements=[math.pi / 4], tolerance=0.5)
    with pytest.raises(AssertionError):
        eqm.assert_equivariant(c4_averaged, x[:8], rotation, elements=[math.pi / 4], tolerance=1e-6)


def test_audit_layer_and_gradient_sections(digits):
    from torch import nn

    x, y = digits
    torch.manual_seed(0)
    model = eqm.demos.C4EquivariantCNN()
    model.conv2 = nn.Conv2d(8, 8, 3, padding=1)  # injected bug
    sym = eqm.Symmetry.from_spec(name="c4", group="c4")
    report = eqm.audit(model, x[:8], sym, labels=y[:8], layers=True, gradients=True)
    assert report.layers["first_failing"] == "conv2" and "convolution" in report.layers["likely_cause"]
    assert report.gradients["verdict"] == "broken" and "conv2.weight" in report.gradients["broken_params"]
    text = report.to_text()
    assert "first failing layer: conv2" in text and "<-- first failing" in text and "input gradient error" in text
    assert json.loads(report.to_json())["layers"]["first_failing"] == "conv2"
    assert "first failing layer" in report.to_markdown()
    good = eqm.audit(eqm.demos.C4EquivariantCNN(), x[:8], sym, labels=y[:8], layers=True, gradients=True)
    assert good.layers["first_failing"] is None and good.gradients["verdict"] in ("exact", "excellent")


# ==================================================================================================== noise floor
def _nonsquare(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, 12, 20, generator=torch.Generator().manual_seed(0))


def test_nonsquare_image_invariant_model_is_within_the_noise_floor(c4):
    from torch import nn

    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # invariant to every permutation of the pixels
    report = eqm.audit(pooled, _nonsquare(), c4, progress=False)
    quarter = [r for r in report.elements if r["element"].startswith(("k=1", "k=3"))]
    assert [r["exact"] for r in quarter] == [False, False]  # quarter turns of a 12×20 image interpolate
    assert report.not_exact == [r["element"] for r in quarter]
    for r in quarter:  # the model error is large, the transform's larger still
        assert 0.1 < r["error_mean"] <= r["noise_floor"] and r["verdict"] == "within the noise floor"
    assert report.verdict_exact == "exact" and report.verdict_interpolated == "within the noise floor"
    assert report.verdict == "within the noise floor"
    text, md, data = report.to_text(), report.to_markdown(), json.loads(report.to_json())
    assert "WITHIN THE NOISE FLOOR" in text and "interpolated on this input (non-square image)" in text
    assert "**verdict**: WITHIN THE NOISE FLOOR" in md and "non-square image" in md
    assert data["verdict"] == "within the noise floor" and data["not_exact"] == report.not_exact
    assert [r["verdict"] for r in data["elements"]] == [r["verdict"] for r in report.elements]


def test_nonsquare_image_broken_model_is_still_broken(c4):
    report = eqm.audit(lambda x: x[:, :, 0, :].mean(-1), _nonsquare(), c4, progress=False)  # the top row
    half = next(r for r in report.elements if r["element"].startswith("k=2"))
    assert half["exact"] and half["verdict"] == "broken"  # 180° is exact on any grid: the model error shows
    assert report.verdict == "broken" and "BROKEN" in report.to_text()


def test_an_error_above_the_noise_floor_is_broken(c4_averaged, digits, rotation):
    report = eqm.audit(c4_averaged, digits[0][:8], rotation, elements=[0.0, math.pi / 4], progress=False)
    row = report.elements[1]
    assert not row["exact"] and row["error_mean"] > row["noise_floor"] and row["verdict"] == "broken"
    assert report.verdict == "broken"


def test_deprecated_report_names_still_answer(c4_averaged, digits, c4):
    report = eqm.audit(c4_averaged, digits[0][:4], c4, progress=False)
    with pytest.warns(DeprecationWarning, match="error_mean"):
        assert report.stats["relative"]["mean"] == report.stats["relative"]["error_mean"]
    with pytest.warns(DeprecationWarning, match="error_mean"):
        assert report.elements[0]["mean"] == report.elements[0]["error_mean"]
    with pytest.warns(DeprecationWarning, match="exact_error"):
        assert report.exact_mean == report.exact_error
    with pytest.warns(DeprecationWarning, match="nonfinite_count"):
        assert report.n_nonfinite == report.nonfinite_count == 0


def _square_images(n: int, size: int = 32, side: int = 4, seed: int = 0) -> torch.Tensor:
    """``n`` noise-free images with one bright square each, within 4 pixels of the centre."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size)
    for i, (r, c) in enumerate(torch.randint(-4, 5, (n, 2), generator=g).tolist()):
        top, left = (size - side) // 2 + r, (size - side) // 2 + c
        images[i, 0, top : top + side, left : left + side] = 1.0
    return images


def _centroid_boxes(images: torch.Tensor) -> torch.Tensor:
    """A box of side 4 about the intensity centroid: translation-covariant while the object stays inside."""
    w = images[:, 0].clamp_min(0) ** 2
    axis = torch.arange(images.shape[-1], dtype=images.dtype)
    mass = w.sum((1, 2))
    cx, cy = (w.sum(1) * axis).sum(1) / mass, (w.sum(2) * axis).sum(1) / mass
    return torch.stack([cx - 2, cy - 2, cx + 2, cy + 2], 1)


def test_audit_against_the_consensus_of_boxes():
    from eqmonitor.actions import Boxes, ImageAction
    from eqmonitor.groups import Translation

    sym = eqm.Symmetry(Translation(2, max_shift=6, integer=True), ImageAction(mask=None), Boxes((32, 32)))
    x = _square_images(8)
    exact = eqm.audit(_centroid_boxes, x, sym, n_elements=12, reference="consensus", progress=False)
    assert exact.verdict == "exact" and "against the consensus" in exact.to_text()
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 32 * 32, 4))  # fmt: skip
    broken = eqm.audit(cnn, x, sym, n_elements=12, reference="consensus", progress=False)
    assert broken.verdict == "broken"
    expected = eqm.functional.consensus_errors(cnn, x, sym, broken.orbit.elements)
    assert broken.stats["relative"]["error_max"] == pytest.approx(float(expected.max()), rel=1e-6)
    assert broken.orbit.reference == "consensus"


def test_audit_against_the_consensus_of_a_classifier(c4_averaged, digits, c4):
    x, _ = digits
    kl = eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant", error="kl")
    assert eqm.audit(c4_averaged, x[:16], kl, reference="consensus", progress=False).verdict == "exact"
    torch.manual_seed(0)
    plain = eqm.demos.SmallCNN().eval()
    report = eqm.audit(plain, x[:16], kl, reference="consensus", progress=False)
    expected = eqm.functional.consensus_errors(plain, x[:16], kl, kl.group.all_elements())
    assert report.stats["kl"]["error_mean"] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert report.verdict not in ("exact", "excellent") and report.kind == "invariant, against the consensus"
    own = eqm.audit(plain, x[:16], kl, progress=False)
    assert own.kind == "invariant" and own.stats["kl"]["error_mean"] != report.stats["kl"]["error_mean"]


def test_audit_refuses_a_bad_reference(c4_averaged, digits, c4):
    x, _ = digits
    with pytest.raises(ValueError, match="Expected `reference` to be one of"):
        eqm.audit(c4_averaged, x[:4], c4, reference="labels", progress=False)
    conf = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error="confidence")
    with pytest.raises(ValueError, match="needs labels"):
        eqm.audit(c4_averaged, x[:4], conf, reference="consensus", progress=False)
