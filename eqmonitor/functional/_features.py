"""Feature actions: how a group element acts on a network's intermediate features, derived from the input action.

For image inputs (an :class:`~eqmonitor.actions.ImageAction`):

- feature maps ``[B, C, h, w]`` with ``h, w > 1`` move like the image at their own resolution (shifts scaled by
  ``w / W``, ``h / H``; quarter turns and flips stay exact);
- ViT-style tokens ``[B, N, C]`` whose last ``gh * gw`` tokens tile the image in square patches (``gh / gw = H / W``,
  row-major as ``Conv2d(stride=p)(x).flatten(2).transpose(1, 2)`` gives them) move like a ``[C, gh, gw]`` map; up
  to 8 extra tokens in front (class, register tokens; fewer than the grid's) are left untouched;
- globally pooled maps ``[B, C, 1, 1]`` are invariant;
- under the disc mask, a map too small to keep a pixel inside the disc (2×2 keeps none) has no action: its errors
  would read exactly 0, measuring nothing.

Features shaped like the input use the input action. A flat feature ``[B, D]`` has no action that its shape could
tell (an invariant pooled vector, a flattened map, a hidden layer of a head): :func:`resolve_actions` derives it from
where the feature came from, else it is not measured; anything else has no derived action (``None``).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from eqmonitor.actions.base import Action, Invariant
from eqmonitor.actions.image import ImageAction, disc_mask
from eqmonitor.groups import Group
from eqmonitor.symmetry import Symmetry

__all__ = ["ReshapedAction", "TokenGridAction", "feature_action", "resolve_actions", "token_grid"]

_MAX_EXTRA_TOKENS = 8


class _RescaledGroup:
    """A planar group seen at another resolution: same matrices, translations scaled by ``factor = (sx, sy)``."""

    def __init__(self, base: Group, factor: tuple[float, float]) -> None:
        self._base, self._factor = base, factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def translation(self, elements: Tensor) -> Tensor:
        t = self._base.translation(elements)
        return t * torch.tensor(self._factor, dtype=t.dtype, device=t.device)

    def __repr__(self) -> str:
        return f"{self._base!r}@{self._factor[0]:g}x{self._factor[1]:g}"


def token_grid(n_tokens: int, height: int, width: int) -> Optional[tuple[int, int, int]]:
    """``(extra, gh, gw)`` if ``n_tokens = extra + gh * gw`` tokens are ``extra`` front tokens and a row-major grid of
    square ``p × p`` patches tiling an ``height × width`` image (``gh = height / p``, ``gw = width / p``, both ≥ 2,
    ``extra ≤ 8`` and fewer than the grid's tokens), the fewest extra tokens first; else ``None``.

    Example:
        >>> token_grid(197, 224, 224), token_grid(16, 16, 16), token_grid(12, 16, 16)
        ((1, 14, 14), (0, 4, 4), None)
    """
    for extra in range(min(_MAX_EXTRA_TOKENS, n_tokens) + 1):
        grid = n_tokens - extra
        if grid < 4 or extra >= grid or (height * width) % grid:
            continue
        p = round(((height * width) // grid) ** 0.5)
        if p * p * grid == height * width and height % p == 0 and width % p == 0:
            gh, gw = height // p, width // p
            if min(gh, gw) >= 2:
                return extra, gh, gw
    return None


class TokenGridAction(Action):
    """An image action on ViT-style tokens ``[B, extra + gh * gw, C]``: the last ``gh * gw`` tokens, row-major, are a
    ``[C, gh, gw]`` feature map moved by ``image``; the ``extra`` front tokens (class, registers) are left as they are.

    Args:
        grid: ``(gh, gw)``, the patch grid.
        extra: how many tokens come before the grid.
        image: the action on the map (default: an unmasked :class:`~eqmonitor.actions.ImageAction`).
    """

    def __init__(self, grid: tuple[int, int], extra: int = 0, image: Optional[ImageAction] = None) -> None:
        self.grid, self.extra = (int(grid[0]), int(grid[1])), int(extra)
        self.image = image if image is not None else ImageAction(mask=None)

    def __repr__(self) -> str:
        return f"TokenGridAction(grid={self.grid}, extra={self.extra}, image={self.image!r})"

    def _to_map(self, x: Tensor) -> Tensor:
        gh, gw = self.grid
        return x[:, self.extra :].reshape(x.shape[0], gh, gw, x.shape[-1]).permute(0, 3, 1, 2)

    def _from_map(self, x: Tensor, fmap: Tensor) -> Tensor:
        tokens = fmap.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[-1])
        return torch.cat([x[:, : self.extra], tokens], 1) if self.extra else tokens

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        return self._from_map(x, self.image.prepare(group, self._to_map(x)))

    def plan(self, group: Group, elements: Tensor, shape: torch.Size, dtype: torch.dtype) -> Any:
        return self.image.plan(group, elements, self.grid, dtype)

    def apply(self, group: Group, plan: Any, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        return self._from_map(x, self.image.apply(group, plan, rows, self._to_map(x), all_exact))

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        plan = self.plan(group, elements, x.shape, x.dtype)
        return self.apply(group, plan, torch.arange(x.shape[0], device=x.device), self.prepare(group, x))

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        return self.image.exact_elements(group, elements, self.grid)

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        n = self.extra + self.grid[0] * self.grid[1]
        if x.ndim != 3 or x.shape[1] != n:
            raise RuntimeError(f"{self!r} acts on tokens [B, {n}, C], but the {role} has shape {tuple(x.shape)}.")


class ReshapedAction(Action):
    """An action on features that are a row-major reshape of features of ``shape`` (per sample) acted on by ``inner``:
    ``nn.Flatten`` of a feature map, ``torch.flatten`` or ``view`` in ``forward``. On the exact elements of an image
    action this is a permutation of the entries.

    Args:
        inner: the action on the features before the reshape.
        shape: their per-sample shape, e.g. ``(C, h, w)``.
    """

    def __init__(self, inner: Action, shape: Sequence[int]) -> None:
        self.inner, self.shape = inner, tuple(int(s) for s in shape)

    def __repr__(self) -> str:
        return f"ReshapedAction({self.inner!r}, shape={self.shape})"

    def _unflat(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def prepare(self, group: Group, x: Tensor) -> Tensor:
        return self.inner.prepare(group, self._unflat(x)).reshape(x.shape)

    def plan(self, group: Group, elements: Tensor, shape: torch.Size, dtype: torch.dtype) -> Any:
        return self.inner.plan(group, elements, torch.Size((shape[0], *self.shape)), dtype)

    def apply(self, group: Group, plan: Any, rows: Tensor, x: Tensor, all_exact: Optional[bool] = None) -> Tensor:
        return self.inner.apply(group, plan, rows, self._unflat(x), all_exact).reshape(x.shape)

    def __call__(self, group: Group, elements: Tensor, x: Tensor) -> Tensor:
        return self.inner(group, elements, self._unflat(x)).reshape(x.shape)

    def exact_elements(self, group: Group, elements: Tensor, shape: torch.Size) -> Tensor:
        return self.inner.exact_elements(group, elements, torch.Size((shape[0], *self.shape)))

    def check(self, group: Group, x: Tensor, role: str = "input") -> None:
        super().check(group, x, role)
        n = math.prod(self.shape)
        if x.ndim < 1 or x[:1].numel() != n:
            raise RuntimeError(f"{self!r} acts on features of {n} entries per sample, but the {role} has shape "
                               f"{tuple(x.shape)}.")  # fmt: skip


TOO_SMALL = "feature map too small for the disc mask"


def derive_action(
    symmetry: Symmetry, input_shape: torch.Size, feature_shape: torch.Size, masked: bool = True
) -> tuple[Optional[tuple[Any, Action]], Optional[str]]:
    """:func:`feature_action` and, where it is ``None``, why: ``"unknown feature action"`` or :data:`TOO_SMALL`."""
    group, phi = symmetry.group, symmetry.input_action
    if len(feature_shape) <= 1:
        return None, "unknown feature action"
    same = tuple(feature_shape) == tuple(input_shape)
    if isinstance(phi, ImageAction) and len(input_shape) >= 2 and (len(feature_shape) >= 3 or not same):
        big_h, big_w = input_shape[-2:]
        if len(feature_shape) >= 3:
            (h, w), extra = feature_shape[-2:], None
        else:
            tokens = token_grid(feature_shape[0], big_h, big_w)
            if tokens is None:
                return None, "unknown feature action"
            extra, h, w = tokens
        if h == 1 and w == 1:
            return (group, Invariant()), None
        mask = "disc" if masked and phi.uses_mask(group) else None
        if mask is not None and not bool(disc_mask(h, w).any()):
            return None, TOO_SMALL
        factor = (w / big_w, h / big_h)
        seen = group if factor == (1.0, 1.0) else _RescaledGroup(group, factor)
        image = ImageAction(mask=mask, interpolation=phi.interpolation, padding=phi.padding)
        return (seen, image if extra is None else TokenGridAction((h, w), extra, image)), None
    return ((group, phi), None) if same else (None, "unknown feature action")


def feature_action(
    symmetry: Symmetry, input_shape: torch.Size, feature_shape: torch.Size, masked: bool = True
) -> Optional[tuple[Any, Action]]:
    """``(group, action)`` acting on features of ``feature_shape`` (per sample), or ``None`` if none can be derived
    from the shape alone (flat features ``[D]``; maps too small for the disc mask).

    Feature maps (and token grids) are masked to the inscribed disc like the input (``masked``), except when they are
    a layer's input in the isolated test: masking there would cut what the layer reads near the disc's edge.
    """
    return derive_action(symmetry, input_shape, feature_shape, masked)[0]


#: modules that act entry by entry: a flat feature keeps its action through them
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.Softsign, nn.LogSigmoid, nn.Threshold,
    nn.Hardshrink, nn.Softshrink, nn.Identity, nn.Dropout, nn.AlphaDropout,
)  # fmt: skip
MODEL_INPUT = ""  # the name a recorder gives the model's input


def _reshaped(act: Optional[tuple], shape: Sequence[int]) -> Optional[tuple]:
    """The action on a reshape of features of ``shape`` acted on by ``act``: invariant if ``act`` leaves them be."""
    if act is None or act[1].is_identity:
        return act
    if act[1].invariant_on(tuple(shape)):
        return act[0], Invariant()
    return act[0], ReshapedAction(act[1], shape)


def resolve_actions(
    symmetry: Symmetry,
    input_shape: torch.Size,
    names: list,
    rec: Any,
    modules: dict,
    adapters: dict,
    overrides: dict,
    model_output: Optional[str],
) -> tuple[dict, dict, dict]:
    """``(outs, ins, reasons)``: the output action of every layer (``None``: not measured), the input action of every
    layer with one tensor input whose action is known (isolated test), and why a layer's isolated error cannot be
    measured, in forward order (``rec``: a recorder after its reference pass; see ``layerwise`` for the precedence).

    Flat features ``[B, D]`` take their action from their origin: the model's output has the symmetry's output
    action; an ``nn.Flatten`` or a contiguous reshape in ``forward`` of a feature carries that feature's action
    (:class:`ReshapedAction`); the output of a layer whose input is invariant is invariant; elementwise activations
    keep their input's action. Any other flat feature has an unknown action.
    """
    phi_act = (symmetry.group, symmetry.input_action)
    outs: dict = {MODEL_INPUT: phi_act}
    outs_u: dict = {MODEL_INPUT: phi_act}  # unmasked, for a later layer's input
    shapes: dict = {MODEL_INPUT: tuple(input_shape)}
    ins, reasons, declared = {}, {}, {}

    def tensor_action(nm: str, shape: tuple, masked: bool) -> tuple[Optional[tuple], Optional[str]]:
        """The action on layer ``nm``'s input (of per-sample ``shape``), from its shape or its origin."""
        if len(shape) >= 2:
            return derive_action(symmetry, input_shape, torch.Size(shape), masked)
        pool = outs if masked else outs_u
        p, q = rec.producer.get(nm), rec.reshaped_from.get(nm)
        if p is not None and p in pool:
            return pool[p], reasons.get(p) if pool[p] is None else None
        if q is not None and q in pool:
            return _reshaped(pool[q], shapes[q]), reasons.get(q) if pool[q] is None else None
        return None, "unknown feature action"

    for nm in names:
        out_shape, u = tuple(rec.outputs[nm].shape[1:]), rec.inputs[nm]
        u_shape = None if u is None else tuple(u.shape[1:])
        shapes[nm] = out_shape
        adapter, override = adapters.get(nm), overrides.get(nm)
        source = declared.get(rec.producer.get(nm))  # the action of an adapted layer that produced the input
        why = None
        if override is not None:
            outs[nm] = outs_u[nm] = _override(symmetry, override)
            why = "skipped" if outs[nm] is None else None
        elif adapter is not None:
            outs[nm] = outs_u[nm] = declared[nm] = (_group(adapter, symmetry), adapter.output_action)
        elif declared.get(rec.same_as.get(nm)) is not None:  # e.g. a module that unwraps an adapted output
            outs[nm] = outs_u[nm] = declared[nm] = declared[rec.same_as[nm]]
        elif source is not None and u_shape == out_shape:
            outs[nm] = outs_u[nm] = declared[nm] = source
        elif len(out_shape) >= 2:
            outs[nm], why = derive_action(symmetry, input_shape, torch.Size(out_shape), True)
            outs_u[nm] = derive_action(symmetry, input_shape, torch.Size(out_shape), False)[0]
        elif nm == model_output:
            outs[nm] = outs_u[nm] = (symmetry.group, symmetry.output_action)
        else:
            outs[nm], outs_u[nm], why = _flat_output(nm, u_shape, out_shape, rec, modules, tensor_action)
        if u is None:
            reasons[nm] = why or "several inputs"
            continue
        if override is not None and u_shape == out_shape:
            act = outs[nm]
        elif adapter is not None and adapter.input_action is not None:
            act = (_group(adapter, symmetry), adapter.input_action)
        elif adapter is not None or source is not None:
            act = source
        else:
            act = tensor_action(nm, u_shape, masked=False)[0]
        if act is not None:
            ins[nm] = act
        if outs[nm] is None:
            reasons[nm] = why or "unknown feature action"
        elif act is None:
            reasons[nm] = "unknown input action"
    return {nm: outs[nm] for nm in names}, ins, reasons


def _flat_output(nm: str, u_shape, out_shape, rec: Any, modules: dict, tensor_action) -> tuple:
    """``(masked action, unmasked action, why not)`` of a flat output ``[B, D]`` that is not the model's output."""
    if u_shape is None:
        return None, None, "unknown feature action"
    masked, why = tensor_action(nm, u_shape, True)
    unmasked, _ = tensor_action(nm, u_shape, False)
    how = rec.from_input.get(nm, "")
    if unmasked is not None and unmasked[1].is_identity:  # a function of an invariant feature is invariant
        return unmasked, unmasked, None
    if how == "reshape":  # nn.Flatten, or any module returning a reshape of its input
        return _reshaped(masked, u_shape), _reshaped(unmasked, u_shape), why
    if u_shape == out_shape and (how == "same" or isinstance(modules[nm], _ELEMENTWISE)):
        return masked, unmasked, why
    return None, None, "unknown feature action"


def _group(adapter: Any, symmetry: Symmetry) -> Any:
    return symmetry.group if adapter.group is None else adapter.group


def _override(symmetry: Symmetry, override: Any) -> Optional[tuple]:
    if isinstance(override, str) and override == "skip":
        return None
    if isinstance(override, str) and override == "invariant":
        return symmetry.group, Invariant()
    if isinstance(override, Action):
        return symmetry.group, override
    raise ValueError(f"Expected a feature action override: an Action, 'invariant' or 'skip'; got {override!r}.")
