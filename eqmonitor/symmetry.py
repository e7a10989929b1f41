"""Symmetry: a group with its input action, output action and error, named; buildable from spec strings (YAML)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable, Optional, Union

from torch import Tensor

from eqmonitor import actions as A
from eqmonitor._distances import CLASSIFICATION_DISTANCES, resolve_distance
from eqmonitor.groups import Group, group_from_spec

__all__ = ["OutputKey", "Symmetry", "resolve_symmetries"]

#: what picks the compared tensor out of a model's output: a mapping key or attribute name, an index, or a callable
OutputKey = Union[None, int, str, Callable[[Any], Tensor]]

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

    The output action decides the :attr:`kind`: :class:`~eqmonitor.actions.Invariant` (invariant), the input's own
    action (equivariant), or another action of the same group (covariant).

    Args:
        group: the group, e.g. ``groups.SO2()``.
        input_action: ``φ``, how an element acts on the model's input.
        output_action: ``φ̃``, how it acts on the model's output.
        error: a distance name (``"relative"``, ``"max_abs"``, ``"rms"``, ``"symmetric_relative"``, ``"kl"``,
            ``"flip"``, ``"confidence"``) or ``fn(actual, expected, labels=None) -> [B]``.
        name: the logging namespace (``equivariance/<name>/...``).
        output_key: which part of the model's output to compare, for models that return ``(logits, features)``,
            ``{"logits": ...}`` or a ``ModelOutput``: a key (``str``: a mapping key, else an attribute), an index
            (``int``: into a tuple or list, or the values of a mapping in order, as ``ModelOutput[i]``), or a
            callable ``fn(output) -> Tensor``; ``None`` (default): the output must be a tensor. Applied by every
            probe (orbit, layer-wise, gradients, Lie derivative) through :meth:`select_output`.

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
    output_key: OutputKey = None

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
        key = self.output_key
        if not (key is None or callable(key) or isinstance(key, (str, int))) or isinstance(key, bool):
            raise TypeError(
                f"Expected `output_key` to be None, a key (str), an index (int) or a callable, but got {key!r}."
            )

    @property
    def kind(self) -> str:
        """What the symmetry asks of the model, from its output action:

        - ``"invariant"``: the output does not move (:class:`~eqmonitor.actions.Invariant`), ``h(g·x) = h(x)``;
        - ``"equivariant"``: the output moves by the input's own action (the same object, or an action of the same
          class with the same settings, as ``from_spec(input="image", output="image")`` builds), ``h(g·x) = g·h(x)``;
        - ``"covariant"``: the output moves by another action of the group, ``h(φ(g, x)) = φ̃(g, h(x))`` with
          ``φ̃ ≠ φ`` (images in, a vector field or points out).

        Example:
            >>> import eqmonitor as eqm
            >>> [eqm.Symmetry.from_spec(group="c4", input="image", output=o).kind for o in ("image", "vector_field")]
            ['equivariant', 'covariant']
        """
        if self.output_action.is_identity:
            return "invariant"
        if _same_action(self.output_action, self.input_action):
            return "equivariant"
        return "covariant"

    @property
    def needs_labels(self) -> bool:
        return self.error_name == "confidence"

    @property
    def compares_classes(self) -> bool:
        return self.error_name in CLASSIFICATION_DISTANCES

    def __repr__(self) -> str:
        key = "" if self.output_key is None else f", output_key={_describe_key(self.output_key)}"
        return (
            f"Symmetry(name={self.name!r}, group={self.group!r}, input={self.input_action!r}, "
            f"output={self.output_action!r}, error={self.error_name!r}{key})"
        )

    def with_output_key(self, output_key: OutputKey) -> "Symmetry":
        """This symmetry with ``output_key`` replacing its own (``dataclasses.replace``); itself when ``output_key``
        is ``None``, so that an argument left unset keeps the symmetry's selector. The supported way for a caller
        (``EquivarianceMonitor``, ``EquivarianceError``, ``audit``) to apply its ``output_key=`` argument.

        Example:
            >>> import eqmonitor as eqm
            >>> sym = eqm.Symmetry.from_spec(group="c4").with_output_key("logits")
            >>> sym.output_key, sym.with_output_key(None) is sym
            ('logits', True)
        """
        return self if output_key is None else replace(self, output_key=output_key)

    def select_output(self, output: Any) -> Tensor:
        """The tensor to compare, picked out of the model's raw ``output`` by :attr:`output_key`.

        Raises:
            TypeError: the output (or the selection) is not a tensor, or the selector does not suit the output's
                type (an index into a dict without that key, a key into a tuple).
            ValueError: an index out of range, or a key the output does not have (the message lists the keys).

        Example:
            >>> import torch, eqmonitor as eqm
            >>> sym = eqm.Symmetry.from_spec(group="c4", output_key=0)
            >>> sym.select_output((torch.ones(2, 3), torch.zeros(2, 5))).shape
            torch.Size([2, 3])
        """
        key = self.output_key
        if key is None:
            if isinstance(output, Tensor):
                return output
            raise TypeError(
                f"The model returned {_describe_output(output)}, but eqmonitor compares tensors; pass `output_key=` (a "
                "key, an index or a callable) to the Symmetry / EquivarianceMonitor / EquivarianceError / audit"
                f"{_suggest_key(output)}."
            )
        if callable(key):
            selected = key(output)
        elif isinstance(key, str):
            selected = _select_by_name(output, key)
        else:
            selected = _select_by_index(output, key)
        if not isinstance(selected, Tensor):
            raise TypeError(
                f"`output_key={_describe_key(key)}` picked {_describe_output(selected)} out of the model's output, but "
                "eqmonitor compares tensors; choose a selector that gives the tensor to check."
            )
        return selected

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
        output_key: OutputKey = None,
    ) -> "Symmetry":
        """Build a symmetry from names, for configs: ``group`` as in ``groups.group_from_spec`` (``"so2"``, ``"c4"``,
        ``"d4"``, ``"flip"``, ``"translation"``, ``"scale"``, ``"so3"``, ``"o3"``, ``"s5"``); ``input`` and
        ``output`` among ``"image"``, ``"vector_field"``, ``"points"``, ``"vectors"``, ``"set"``, ``"keypoints"``,
        ``"boxes"``, ``"invariant"``, and ``output="equivariant"`` for the input's own action.
        """
        g = group if isinstance(group, Group) else group_from_spec(group, **(group_kwargs or {}))
        phi = _action_from_spec(input, _INPUTS, "input", input_kwargs or {})
        phi_out = _action_from_spec(output, _OUTPUTS, "output", output_kwargs or {})
        out = phi if phi_out is None else phi_out
        return cls(group=g, input_action=phi, output_action=out, error=error, name=name, output_key=output_key)


def _settings(action: A.Action) -> tuple[type, dict[str, Any]]:
    """An action's class and public attributes (its settings; ``_``-prefixed caches left out)."""
    return type(action), {k: v for k, v in vars(action).items() if not k.startswith("_")}


def _same_action(a: A.Action, b: A.Action) -> bool:
    """Whether two actions act alike: the same object, or the same class with equal settings (a setting that
    cannot be compared to a bool, such as a tensor, counts as different)."""
    if a is b:
        return True
    try:
        return bool(_settings(a) == _settings(b))
    except (RuntimeError, TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ output selection
def _describe_key(key: OutputKey) -> str:
    return getattr(key, "__name__", repr(key)) if callable(key) else repr(key)


def _describe_output(output: Any) -> str:
    """``"a tuple of 2"``, ``"a dict with keys ['logits']"``, ``"a Tensor"``: what a model returned, for messages."""
    name = type(output).__name__
    if isinstance(output, Mapping):
        return f"a {name} with keys {list(output.keys())}"
    if isinstance(output, Sequence) and not isinstance(output, str):
        return f"a {name} of {len(output)}"
    return f"a {name}"


def _suggest_key(output: Any) -> str:
    if isinstance(output, Mapping) and len(output):
        return f", e.g. `output_key={next(iter(output.keys()))!r}`"
    if isinstance(output, Sequence) and not isinstance(output, str) and len(output):
        return ", e.g. `output_key=0`"
    return ""


def _names_of(output: Any) -> list[str]:
    """The keys (mapping) or public attribute names (namedtuple, dataclass, plain object) of ``output``."""
    if isinstance(output, Mapping):
        return [str(k) for k in output.keys()]
    names = getattr(output, "_fields", None)
    if names is None and is_dataclass(output):
        names = [f.name for f in fields(output)]
    if names is None:
        names = list(getattr(output, "__dict__", {}))
    return [n for n in names if not n.startswith("_")]


def _select_by_name(output: Any, key: str) -> Any:
    if isinstance(output, Mapping):
        if key in output:
            return output[key]
        value = getattr(output, key, None)  # a ModelOutput-like attribute, but not a method such as `items`
        if value is not None and not callable(value):
            return value
    elif not isinstance(output, Tensor) and hasattr(output, key):
        return getattr(output, key)
    names = _names_of(output) if not isinstance(output, Tensor) else []
    if not (names or isinstance(output, Mapping)):
        raise TypeError(
            f"The model returned {_describe_output(output)}; `output_key={key!r}` selects a key or an attribute of a "
            "mapping or an object (use an index for tuples, or a callable)."
        )
    what = "keys" if isinstance(output, Mapping) else "attributes"
    raise ValueError(f"`output_key={key!r}` does not fit the model's output: no key {key!r}; {what} are {names}.")


def _select_by_index(output: Any, index: int) -> Any:
    if isinstance(output, Mapping):
        if index in output:
            return output[index]
        items = list(output.values())  # positional, as `ModelOutput[i]` (which holds no None values)
    elif isinstance(output, Sequence) and not isinstance(output, str):
        items = output
    else:
        raise TypeError(
            f"The model returned {_describe_output(output)}; `output_key={index!r}` indexes a tuple, a list or the "
            "values of a mapping (use a key for attributes, or a callable)."
        )
    if not -len(items) <= index < len(items):
        raise ValueError(f"The model returned {_describe_output(output)}; `output_key={index}` is out of range.")
    return items[index]


def resolve_symmetries(symmetries: Union[Symmetry, dict, list], output_key: Any = None) -> list[Symmetry]:
    """A list of named :class:`Symmetry` from a Symmetry, a ``from_spec`` dict (YAML), or a list of them; a given
    ``output_key`` replaces each symmetry's output selector."""
    items = symmetries if isinstance(symmetries, (list, tuple)) else [symmetries]
    out = []
    for item in items:
        if isinstance(item, Symmetry):
            out.append(item)
        elif isinstance(item, dict):
            out.append(Symmetry.from_spec(**item))
        else:
            raise TypeError(
                f"Expected a Symmetry or a dict of `Symmetry.from_spec` arguments, got {type(item).__name__}."
            )
    if not out:
        raise ValueError("`symmetries` is empty: give at least one symmetry to monitor.")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Symmetry names are logging namespaces and must be unique, got {names}.")
    if output_key is not None:
        out = [s.with_output_key(output_key) for s in out]
    return out
