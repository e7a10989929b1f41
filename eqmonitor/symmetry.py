"""Symmetry: a group with its input action, output action and error, named; buildable from spec strings (YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from torch import Tensor

from eqmonitor import actions as A
from eqmonitor.functional.distances import CLASSIFICATION_DISTANCES, resolve_distance
from eqmonitor.groups import Group, group_from_spec

__all__ = ["Symmetry"]

_INPUTS: dict[str, Callable[..., A.Action]] = {
    "image": A.ImageAction,
    "vector_field": A.VectorField,
    "points": A.Points,
    "vectors": A.Vectors,
    "set": A.Permute,
    "keypoints": A.Keypoints,
    "boxes": A.Boxes,
    "invariant": A.Invariant,
}
_OUTPUTS = {**_INPUTS, "equivariant": None}


def _action_from_spec(spec: Union[str, A.Action], registry: dict, role: str, kwargs: dict) -> Optional[A.Action]:
    if isinstance(spec, A.Action):
        return spec
    if isinstance(spec, str) and spec in registry:
        return None if registry[spec] is None else registry[spec](**kwargs)
    raise ValueError(f"Expected `{role}` to be an Action or one of {sorted(registry)}, but got {spec!r}.")


@dataclass
class Symmetry:
    """What a model should respect: ``h(φ(g, x)) = φ̃(g, h(x))`` for every element ``g`` of ``group``.

    The output action decides the kind: :class:`~eqmonitor.actions.Invariant` (invariant), the input action
    (equivariant), or another action of the same group (covariant).

    Args:
        group: the group, e.g. ``groups.SO2()``.
        input_action: ``φ``, how an element acts on the model's input.
        output_action: ``φ̃``, how it acts on the model's output.
        error: a distance name (``"relative"``, ``"max_abs"``, ``"rms"``, ``"symmetric_relative"``, ``"kl"``,
            ``"flip"``, ``"confidence"``) or ``fn(actual, expected, labels=None) -> [B]``.
        name: the logging namespace (``equivariance/<name>/...``).

    Example:
        >>> import eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(name="rotation", group="c4", input="image", output="invariant")
        >>> sym.group, sym.kind, sym.error_name
        (Cyclic(4), 'invariant', 'relative')
    """

    group: Group
    input_action: A.Action
    output_action: A.Action = field(default_factory=A.Invariant)
    error: Union[str, Callable[..., Tensor]] = "relative"
    name: str = "symmetry"

    def __post_init__(self) -> None:
        if not isinstance(self.group, Group):
            raise TypeError(f"Expected `group` to be an eqmonitor Group, but got {type(self.group).__name__}.")
        for role in ("input_action", "output_action"):
            if not isinstance(getattr(self, role), A.Action):
                raise TypeError(
                    f"Expected `{role}` to be an eqmonitor Action, but got {type(getattr(self, role)).__name__}; "
                    "wrap a function in `actions.Custom(fn)`."
                )
        self.error_name, self.distance = resolve_distance(self.error)
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"Expected `name` to be a non-empty string without '/', but got {self.name!r}.")

    @property
    def kind(self) -> str:
        """``"invariant"``, ``"equivariant"`` (same action in and out) or ``"covariant"``."""
        if self.output_action.is_identity:
            return "invariant"
        if self.output_action is self.input_action:
            return "equivariant"
        return "covariant"

    @property
    def needs_labels(self) -> bool:
        return self.error_name == "confidence"

    @property
    def compares_classes(self) -> bool:
        return self.error_name in CLASSIFICATION_DISTANCES

    def __repr__(self) -> str:
        return (
            f"Symmetry(name={self.name!r}, group={self.group!r}, input={self.input_action!r}, "
            f"output={self.output_action!r}, error={self.error_name!r})"
        )

    @classmethod
    def from_spec(
        cls,
        name: str = "symmetry",
        group: Union[str, Group] = "so2",
        input: Union[str, A.Action] = "image",
        output: Union[str, A.Action] = "invariant",
        error: Union[str, Callable[..., Tensor]] = "relative",
        group_kwargs: Optional[dict[str, Any]] = None,
        input_kwargs: Optional[dict[str, Any]] = None,
        output_kwargs: Optional[dict[str, Any]] = None,
    ) -> "Symmetry":
        """Build a symmetry from names, for configs: ``group`` as in ``groups.group_from_spec`` (``"so2"``, ``"c4"``,
        ``"d4"``, ``"flip"``, ``"translation"``, ``"scale"``, ``"so3"``, ``"o3"``, ``"s5"``); ``input`` and
        ``output`` among ``"image"``, ``"vector_field"``, ``"points"``, ``"vectors"``, ``"set"``, ``"keypoints"``,
        ``"boxes"``, ``"invariant"``, and ``output="equivariant"`` for the input's own action.
        """
        g = group if isinstance(group, Group) else group_from_spec(group, **(group_kwargs or {}))
        phi = _action_from_spec(input, _INPUTS, "input", input_kwargs or {})
        phi_out = _action_from_spec(output, _OUTPUTS, "output", output_kwargs or {})
        return cls(group=g, input_action=phi, output_action=phi if phi_out is None else phi_out, error=error, name=name)
