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


@pytest.mark.parametrize("action", ["image", "points", "vectors", "set", "vector_field"])
def test_same_action_in_and_out_is_equivariant(action):
    """Two equal actions built apart (``output="image"``, not ``"equivariant"``) make an equivariant symmetry."""
    group = {"points": "so3", "vectors": "so3", "set": "s4"}.get(action, "c4")
    sym = eqm.Symmetry.from_spec(group=group, input=action, output=action)
    assert sym.output_action is not sym.input_action and sym.kind == "equivariant"


def test_kind_tells_settings_and_callables_apart():
    """Another setting of the same action class, or another function, is a covariant symmetry."""
    padded = eqm.Symmetry.from_spec(group="c4", input="image", output="image", output_kwargs={"padding": "circular"})
    assert padded.kind == "covariant"
    pts = eqm.Symmetry.from_spec(group="so3", input="points", output="points", output_kwargs={"translate": False})
    assert pts.kind == "covariant"
    fn = eqm.actions.Custom(lambda g, x: x.flip(-1))
    other = eqm.actions.Custom(lambda g, x: x.flip(-1))
    group = eqm.groups.Cyclic(4)
    assert eqm.Symmetry(group, fn, fn).kind == "equivariant"
    assert eqm.Symmetry(group, fn, other).kind == "covariant"


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
