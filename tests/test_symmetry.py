"""Symmetry construction from objects and from spec strings."""

from __future__ import annotations

import pytest
import torch

import eqmonitor as eqm
from eqmonitor import actions as A
from eqmonitor import groups as G


@pytest.mark.parametrize(
    "group, cls",
    [("so2", G.SO2), ("c4", G.Cyclic), ("d8", G.Dihedral), ("flip", G.Flip), ("translation", G.Translation),
     ("scale", G.Scale), ("so3", G.SO3), ("o3", G.O3), ("s5", G.Permutation)],
)  # fmt: skip
def test_group_specs(group, cls):
    assert isinstance(eqm.Symmetry.from_spec(group=group, input="invariant").group, cls)


def test_kinds():
    inv = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant")
    eq = eqm.Symmetry.from_spec(group="c4", input="image", output="equivariant")
    cov = eqm.Symmetry.from_spec(group="c4", input="image", output="vector_field")
    assert (inv.kind, eq.kind, cov.kind) == ("invariant", "equivariant", "covariant")
    assert eq.output_action is eq.input_action


def test_spec_kwargs_reach_the_parts():
    sym = eqm.Symmetry.from_spec(
        name="shift", group="translation", input="image", output="keypoints",
        group_kwargs={"max_shift": 2}, input_kwargs={"padding": "circular"}, output_kwargs={"image_size": (8, 8)},
    )  # fmt: skip
    assert sym.group.max_shift == 2 and sym.input_action.padding == "circular"
    assert sym.output_action.image_size == (8, 8)


def test_bad_specs_say_what_to_use():
    with pytest.raises(ValueError, match="Unknown group spec 'so4'"):
        eqm.Symmetry.from_spec(group="so4")
    with pytest.raises(ValueError, match="`input` to be an Action or one of"):
        eqm.Symmetry.from_spec(input="pixels")
    with pytest.raises(ValueError, match="`error` to be one of"):
        eqm.Symmetry.from_spec(error="l7")
    with pytest.raises(TypeError, match="actions.Custom"):
        eqm.Symmetry(group=G.SO2(), input_action=lambda g, x: x)
    with pytest.raises(ValueError, match="without '/'"):
        eqm.Symmetry(group=G.SO2(), input_action=A.ImageAction(), name="a/b")


def test_custom_error_callable():
    def l1(actual, expected, labels=None):
        return (actual - expected).abs().flatten(1).sum(1)

    sym = eqm.Symmetry(group=G.Cyclic(4), input_action=A.ImageAction(), error=l1, name="c4")
    res = eqm.functional.orbit_errors(lambda x: x.flatten(1)[:, :2], torch.ones(2, 1, 3, 3), sym, [1], max_batch=4)
    assert res.distance == "l1" and float(res.max()) == 0.0
