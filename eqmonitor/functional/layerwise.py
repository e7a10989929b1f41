"""Layer-wise errors: *where* along a network the symmetry breaks.

Forward hooks capture each chosen layer's input ``u`` and output at ``x`` and at ``φ(g, x)``:

- *cumulative* error of layer ``m``: ``d(h_m(φ(g, x)), ρ_m(g) · h_m(x))``: where the error appears and how it grows;
- *isolated* error: ``d(m(ρ_in(g) · u), ρ_m(g) · m(u))``: the layer alone, on its actual input at ``x``; the first
  layer (in forward order) whose isolated error is above the dtype's tolerance is the culprit.

``ρ_m``, the action on a feature, is derived from the input action: for image inputs, feature maps ``[B, C, h, w]``
with ``h, w > 1`` move like the image at their own resolution (shifts scaled by ``w / W``, ``h / H``; quarter turns
and flips stay exact), pooled or flattened features (``[B, D]``, ``[B, C, 1, 1]``) are invariant; features shaped
like the input use the input action. Anything else is skipped unless the caller names an action for that layer.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from eqmonitor.actions.base import Action, Invariant
from eqmonitor.actions.image import ImageAction
from eqmonitor.functional._isolation import isolated, model_dtype
from eqmonitor.functional.distances import relative
from eqmonitor.functional.orbit import _exact_hint, _orbit_errors_arg_validation, _orbit_errors_tensor_validation
from eqmonitor.groups import Group
from eqmonitor.report import default_tolerance
from eqmonitor.results import LayerErrors
from eqmonitor.symmetry import Symmetry

__all__ = ["feature_action", "layer_errors"]

_F64 = torch.float64
_SKIPPED_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
LayerSpec = Union[None, Sequence[str], Callable[[str, nn.Module], bool]]


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


def feature_action(
    symmetry: Symmetry, input_shape: torch.Size, feature_shape: torch.Size, masked: bool = True
) -> Optional[tuple[Any, Action]]:
    """``(group, action)`` acting on features of ``feature_shape`` (per sample), or ``None`` if none can be derived.

    Feature maps are masked to the inscribed disc like the input (``masked``), except when they are a layer's
    input in the isolated test: masking there would cut what the layer reads near the disc's edge."""
    group, phi = symmetry.group, symmetry.input_action
    if len(feature_shape) <= 1:
        return group, Invariant()
    if isinstance(phi, ImageAction) and len(feature_shape) >= 3:
        h, w = feature_shape[-2:]
        if h == 1 and w == 1:
            return group, Invariant()
        big_h, big_w = input_shape[-2:]
        factor = (w / big_w, h / big_h)
        seen = group if factor == (1.0, 1.0) else _RescaledGroup(group, factor)
        mask = "disc" if masked and phi.uses_mask(group) else None
        return seen, ImageAction(mask=mask, interpolation=phi.interpolation, padding=phi.padding)
    if tuple(feature_shape) == tuple(input_shape):
        return group, phi
    return None


def _select_layers(model: nn.Module, layers: LayerSpec) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if layers is None:
        return {n: m for n, m in named.items() if n and not list(m.children()) and not isinstance(m, _SKIPPED_TYPES)}
    if callable(layers):
        return {n: m for n, m in named.items() if n and layers(n, m)}
    missing = [n for n in layers if n not in named]
    if missing:
        raise ValueError(f"Unknown layer names {missing}; the model has {sorted(n for n in named if n)}.")
    return {n: named[n] for n in layers}


class _Recorder:
    """Forward hooks that keep each layer's first tensor input and output of the current forward."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.inputs: dict[str, Optional[Tensor]] = {}
        self.outputs: dict[str, Tensor] = {}
        self.order: list[str] = []
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if name in self.outputs or not isinstance(output, Tensor):
                return  # first call only (a module reused within a forward is measured at its first use)
            self.outputs[name] = output
            single = len(args) == 1 and isinstance(args[0], Tensor)
            self.inputs[name] = args[0] if single else None
            self.order.append(name)

        return hook

    def reset(self) -> None:
        self.inputs, self.outputs, self.order = {}, {}, []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def layer_errors(
    model: nn.Module,
    x: Tensor,
    symmetry: Symmetry,
    elements: Union[Tensor, Sequence],
    *,
    layers: LayerSpec = None,
    feature_actions: Optional[dict[str, Union[Action, str]]] = None,
    max_batch: int = 256,
    tolerance: Optional[float] = None,
    validate_args: bool = True,
) -> LayerErrors:
    """Cumulative and isolated errors of each chosen layer of ``model``, ``[L, N, K]`` each, and the first failing one.

    Args:
        model: an ``nn.Module`` (left exactly as found; hooks are removed even when the model raises).
        x: ``[N, ...]`` samples; ``symmetry``, ``elements``: as for :func:`~eqmonitor.functional.orbit_errors`.
        layers: ``None`` (leaf modules but identities and dropouts), a list of module names, or ``fn(name, module)``.
        feature_actions: per-layer overrides: an :class:`Action`, ``"invariant"`` or ``"skip"``.
        max_batch: (sample × element) pairs per forward.
        tolerance: isolated relative error above which a layer fails; default: the top of the dtype's
            ``excellent`` band. Judged on the exact elements when there are any (interpolation is not a layer's
            fault), else on all.

    Returns:
        :class:`~eqmonitor.results.LayerErrors`, in the layers' forward order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module (hooks need modules), got {type(model).__name__}.")
    if validate_args:
        _orbit_errors_arg_validation(model, symmetry, max_batch)
    x, elements, _ = _orbit_errors_tensor_validation(model, x, symmetry, elements, None)
    modules = _select_layers(model, layers)
    overrides = feature_actions or {}
    group, phi = symmetry.group, symmetry.input_action
    n, k = x.shape[0], elements.shape[0]
    dtype = model_dtype(model) or x.dtype
    tol = default_tolerance(dtype) if tolerance is None else tolerance
    recorder = _Recorder(modules)
    try:
        with isolated(model):
            x0 = phi.prepare(group, x)
            model(x0)
            names = list(recorder.order)
            at_x = {nm: recorder.outputs[nm] for nm in names}
            inputs_x = {nm: recorder.inputs[nm] for nm in names}
            recorder.reset()
            acts = {nm: _resolve(symmetry, x.shape[1:], at_x[nm].shape[1:], overrides.get(nm)) for nm in names}
            in_acts = {
                nm: _resolve(symmetry, x.shape[1:], inputs_x[nm].shape[1:], overrides.get(nm), masked=False)
                for nm in names
                if inputs_x[nm] is not None
            }
            cumulative = torch.full((len(names), k * n), float("nan"), dtype=_F64, device=x.device)
            isolated_e = torch.full_like(cumulative, float("nan"))
            plan_in = phi.plan(group, elements, x0.shape, x0.dtype)
            plans = {nm: a[1].plan(a[0], elements, at_x[nm].shape, _F64) for nm, a in acts.items() if a is not None}
            refs = {nm: a[1].prepare(a[0], at_x[nm].to(_F64)) for nm, a in acts.items() if a is not None}
            ex = phi.exact_elements(group, elements, x0.shape).tolist()
            for start in range(0, k * n, max_batch):
                stop = min(start + max_batch, k * n)
                idx = torch.arange(start, stop, device=x.device)
                ks, rows = idx // n, idx % n
                hint = _exact_hint(ex, start // n, (stop - 1) // n)
                model(phi.apply(group, plan_in, ks, x0.index_select(0, rows), hint))
                for li, nm in enumerate(names):
                    if acts[nm] is None or nm not in recorder.outputs:
                        continue
                    g_m, a_m = acts[nm]
                    actual = a_m.prepare(g_m, recorder.outputs[nm].to(_F64))
                    expected = a_m.apply(g_m, plans[nm], ks, refs[nm].index_select(0, rows))
                    cumulative[li, start:stop] = relative(actual, expected)
                    if in_acts.get(nm) is not None:
                        g_i, a_i = in_acts[nm]
                        u = inputs_x[nm].index_select(0, rows)
                        ut = a_i(g_i, elements.index_select(0, ks), a_i.prepare(g_i, u))
                        out = a_m.prepare(g_m, modules[nm](ut).to(_F64))
                        isolated_e[li, start:stop] = relative(out, expected)
                recorder.reset()
    finally:
        recorder.remove()
    exact = phi.exact_elements(group, elements, x.shape)
    return LayerErrors.build(
        names=names,
        types=[type(modules[nm]).__name__ for nm in names],
        cumulative=cumulative.reshape(len(names), k, n).transpose(1, 2),
        isolated=isolated_e.reshape(len(names), k, n).transpose(1, 2),
        elements=elements,
        exact=exact,
        tolerance=tol,
        symmetry=symmetry.name,
        dtype=dtype,
    )


def _resolve(symmetry: Symmetry, input_shape, feature_shape, override, masked: bool = True) -> Optional[tuple]:
    if override == "skip":
        return None
    if override == "invariant":
        return symmetry.group, Invariant()
    if isinstance(override, Action):
        return symmetry.group, override
    if override is not None:
        raise ValueError(f"Expected a feature action override: an Action, 'invariant' or 'skip'; got {override!r}.")
    return feature_action(symmetry, input_shape, feature_shape, masked)
