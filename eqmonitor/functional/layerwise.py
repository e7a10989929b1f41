"""Layer-wise errors: *where* along a network the symmetry breaks.

Forward hooks capture each chosen layer's input ``u`` and output at ``x`` and at ``φ(g, x)``:

- *cumulative* error of layer ``m``: ``d(h_m(φ(g, x)), ρ_m(g) · h_m(x))``: where the error appears and how it grows;
- *isolated* error: ``d(m(ρ_in(g) · u), ρ_m(g) · m(u))``: the layer alone, on its actual input at ``x``; the first
  layer (in forward order) whose isolated error is above the dtype's tolerance is the culprit.

``ρ_m``, the action on a feature, comes from (first match wins):

1. the caller's override for that layer (``feature_actions={"name": action | "invariant" | "skip"}``);
2. a registered *feature adapter* (below) that recognises the module, e.g. an e3nn module with ``irreps_out``;
3. the producer of the layer's input: a layer whose input is the output of an adapted layer has that layer's action
   on its input and, if its output has the same shape, on its output (an activation between two e3nn layers); a
   layer that returns an adapted layer's output tensor itself (an unwrapping step) has its action;
4. the input action at the feature's resolution (:func:`~eqmonitor.functional._features.feature_action`): image
   maps, ViT-style token grids, invariant pooled features; anything else is skipped.

**Adapter protocol.** Libraries whose modules declare their representations (e3nn's ``irreps_in`` / ``irreps_out``,
escnn's ``in_type`` / ``out_type``) plug in with ``register_feature_adapter(fn)``: ``fn(module, symmetry)`` returns a
:class:`FeatureAdapter` for modules it knows, ``None`` for the rest (the first non-``None`` answer wins, in
registration order). An adapter gives ``output_action`` (on the module's output tensor), optionally
``input_action`` (on its input tensor, for the isolated test; ``None``: the producer's action, else no isolated
test), the ``group`` the actions read the elements with (``None``: the symmetry's group), and ``wrap`` / ``unwrap``
between tensors and what the module takes and returns (e.g. escnn's ``GeometricTensor``): hooks record
``unwrap(output)`` and ``unwrap(input)``, and the isolated test calls ``unwrap(module(wrap(ρ_in(g) · u)))``. Adapted
modules are atomic blocks for the default layer selection (their children are not measured apart). Importing
:mod:`eqmonitor.integrations.e3nn` registers the e3nn adapter.

``mode="train"`` probes the model in train mode (normalisation layers use the batch statistics of each chunk of
``max_batch`` transformed samples, the reference those of ``x``), dropout and attention dropout off, buffers restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from eqmonitor._verdicts import default_tolerance
from eqmonitor.actions.base import Action, Invariant
from eqmonitor.functional._features import TokenGridAction, feature_action, token_grid
from eqmonitor.functional._isolation import isolated, model_dtype
from eqmonitor.functional._validation import check_probe_args as _orbit_errors_arg_validation
from eqmonitor.functional._validation import check_probe_inputs as _orbit_errors_tensor_validation
from eqmonitor.functional.distances import relative
from eqmonitor.functional.orbit import _exact_hint
from eqmonitor.groups import Group
from eqmonitor.progress import progress_bar
from eqmonitor.results import LayerErrors
from eqmonitor.symmetry import Symmetry

__all__ = [
    "FeatureAdapter",
    "TokenGridAction",
    "feature_action",
    "layer_errors",
    "register_feature_adapter",
    "token_grid",
]

_F64 = torch.float64
_MODES = ("eval", "train")
_SKIPPED_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
#: blocks measured whole by default: their submodules are not all called as modules (attention, fast paths)
_ATOMIC_TYPES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.MultiheadAttention)
LayerSpec = Union[None, Sequence[str], Callable[[str, nn.Module], bool]]


@dataclass
class FeatureAdapter:
    """How a library module's features transform: see the module docstring for the protocol.

    Attributes:
        output_action: acts on the module's output tensor (after ``unwrap``).
        input_action: acts on the module's input tensor (isolated test); ``None``: derive it from the layer that
            produced the input, or skip the isolated test.
        group: the group the actions read the elements with; ``None``: the symmetry's group.
        wrap: tensor -> what the module takes (e.g. an escnn ``GeometricTensor``); ``None``: the tensor itself.
        unwrap: module output (or input) -> tensor; ``None``: it already is a tensor.
    """

    output_action: Action
    input_action: Optional[Action] = None
    group: Optional[Group] = None
    wrap: Optional[Callable[[Tensor], Any]] = None
    unwrap: Optional[Callable[[Any], Tensor]] = None


_ADAPTERS: list[Callable[[nn.Module, Symmetry], Optional[FeatureAdapter]]] = []


def register_feature_adapter(fn: Callable[[nn.Module, Symmetry], Optional[FeatureAdapter]]) -> None:
    """Register ``fn(module, symmetry) -> FeatureAdapter | None`` for :func:`layer_errors` (once; later calls with
    the same function do nothing). Adapters are asked in registration order; the first non-``None`` answer wins."""
    if not callable(fn):
        raise TypeError(f"Expected `fn` to be callable(module, symmetry) -> FeatureAdapter | None, got {fn!r}.")
    if fn not in _ADAPTERS:
        _ADAPTERS.append(fn)


def _adapters_for(model: nn.Module, symmetry: Symmetry) -> dict[str, FeatureAdapter]:
    out = {}
    for name, module in model.named_modules():
        for fn in _ADAPTERS:
            adapter = fn(module, symmetry)
            if adapter is not None:
                if not isinstance(adapter, FeatureAdapter) or not isinstance(adapter.output_action, Action):
                    raise TypeError(
                        f"Feature adapter {fn!r} returned {adapter!r} for `{name}`; expected a FeatureAdapter with an "
                        "Action as `output_action`, or None."
                    )
                out[name] = adapter
                break
    return out


def _select_layers(model: nn.Module, layers: LayerSpec, adapted: dict) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if layers is None:
        chosen, blocks = {}, []
        for n, m in named.items():
            if not n or any(n.startswith(b + ".") for b in blocks) or isinstance(m, _SKIPPED_TYPES):
                continue
            if n in adapted or isinstance(m, _ATOMIC_TYPES):
                blocks.append(n)
                chosen[n] = m
            elif not list(m.children()):
                chosen[n] = m
        return chosen
    if callable(layers):
        return {n: m for n, m in named.items() if n and layers(n, m)}
    missing = [n for n in layers if n not in named]
    if missing:
        raise ValueError(f"Unknown layer names {missing}; the model has {sorted(n for n in named if n)}.")
    return {n: named[n] for n in layers}


class _Recorder:
    """Forward hooks that keep each layer's first (unwrapped) tensor input and output of the current forward, and
    which recorded layer produced each input."""

    def __init__(self, modules: dict[str, nn.Module], adapters: dict[str, FeatureAdapter]) -> None:
        self.adapters = adapters
        self.reset()
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str) -> Callable:
        unwrap = getattr(self.adapters.get(name), "unwrap", None) or (lambda v: v)

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if name in self.outputs:
                return  # first call only (a module reused within a forward is measured at its first use)
            out = unwrap(output)
            if not isinstance(out, Tensor):
                return
            u = unwrap(args[0]) if len(args) == 1 else None
            u = u if isinstance(u, Tensor) else None
            self.outputs[name], self.inputs[name] = out, u
            self.producer[name] = self._by_id.get(id(u)) if u is not None else None
            self.same_as[name] = self._by_id.get(id(out))  # it returns another layer's output tensor itself
            self._by_id.setdefault(id(out), name)  # valid while `outputs` holds the tensor
            self.order.append(name)

        return hook

    def reset(self) -> None:
        self.inputs: dict[str, Optional[Tensor]] = {}
        self.outputs: dict[str, Tensor] = {}
        self.producer: dict[str, Optional[str]] = {}
        self.same_as: dict[str, Optional[str]] = {}
        self._by_id: dict[int, str] = {}
        self.order: list[str] = []

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
    mode: str = "eval",
    validate_args: bool = True,
    progress: bool = False,
) -> LayerErrors:
    """Cumulative and isolated errors of each chosen layer of ``model``, ``[L, N, K]`` each, and the first failing one.

    Args:
        model: an ``nn.Module`` (left exactly as found; hooks are removed even when the model raises). Its output
            may be a tuple, dict or ``ModelOutput``: only the layers' tensors are compared (a symmetry's
            ``output_key`` is checked to fit the output, so a wrong one fails here as in the other probes).
        x: ``[N, ...]`` samples; ``symmetry``, ``elements``: as for :func:`~eqmonitor.functional.orbit_errors`.
        layers: ``None`` (leaf modules but identities and dropouts; attention blocks and modules with a feature
            adapter whole), a list of module names, or ``fn(name, module)``.
        feature_actions: per-layer overrides of the output action: an :class:`Action`, ``"invariant"`` or ``"skip"``
            (they win over adapters); also the input action of a layer whose input has the output's shape.
        max_batch: (sample × element) pairs per forward; in ``mode="train"`` these chunks are the batches whose
            statistics normalisation layers use.
        tolerance: isolated relative error above which a layer fails; default: the top of the dtype's
            ``excellent`` band. Judged on the exact elements when there are any (interpolation is not a layer's
            fault), else on all.
        mode: ``"eval"`` (default) or ``"train"``: every module but dropouts and attention in train mode (batch
            statistics); buffers and flags are restored bit-exactly.
        progress: show a progress bar once the test has run for a couple of seconds.

    Returns:
        :class:`~eqmonitor.results.LayerErrors`, in the layers' forward order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module (hooks need modules), got {type(model).__name__}.")
    if mode not in _MODES:
        raise ValueError(f"Expected `mode` to be one of {_MODES}, but got {mode!r}.")
    if validate_args:
        _orbit_errors_arg_validation(model, symmetry, max_batch)
    x, elements, _ = _orbit_errors_tensor_validation(model, x, symmetry, elements, None)
    adapters = _adapters_for(model, symmetry) if _ADAPTERS else {}
    modules = _select_layers(model, layers, adapters)
    adapters = {nm: a for nm, a in adapters.items() if nm in modules}
    group, phi = symmetry.group, symmetry.input_action
    n, k = x.shape[0], elements.shape[0]
    dtype = model_dtype(model) or x.dtype
    tol = default_tolerance(dtype) if tolerance is None else tolerance
    recorder = _Recorder(modules, adapters)
    try:
        bar_desc = f"eqmonitor: {symmetry.name} layers"
        with isolated(model, train=mode == "train"), progress_bar(k * n, bar_desc, progress) as bar:
            x0 = phi.prepare(group, x)
            out = model(x0)
            if symmetry.output_key is not None:  # not compared here, but a selector that does not fit is an error
                symmetry.select_output(out)
            names = list(recorder.order)
            at_x = {nm: recorder.outputs[nm] for nm in names}
            inputs_x = {nm: recorder.inputs[nm] for nm in names}
            acts, in_acts = _resolve_all(symmetry, x.shape[1:], names, recorder, adapters, feature_actions or {})
            # a layer whose batch is not the model's (e.g. inside a group-averaging wrapper that stacks the copies of
            # each sample into the batch) has no per-sample features to compare: not measured
            acts = {nm: a if at_x[nm].shape[0] == n else None for nm, a in acts.items()}
            in_acts = {nm: a for nm, a in in_acts.items() if acts[nm] is not None and inputs_x[nm].shape[0] == n}
            recorder.reset()
            cumulative = torch.full((len(names), k * n), float("nan"), dtype=_F64, device=x.device)
            isolated_e = torch.full_like(cumulative, float("nan"))
            plan_in = phi.plan(group, elements, x0.shape, x0.dtype)
            plans = {nm: a[1].plan(a[0], elements, at_x[nm].shape, _F64) for nm, a in acts.items() if a is not None}
            refs = {nm: a[1].prepare(a[0], at_x[nm].to(_F64)) for nm, a in acts.items() if a is not None}
            plans_u = {
                nm: a[1].plan(a[0], elements, inputs_x[nm].shape, inputs_x[nm].dtype) for nm, a in in_acts.items()
            }
            refs_u = {nm: a[1].prepare(a[0], inputs_x[nm]) for nm, a in in_acts.items()}
            ex = phi.exact_elements(group, elements, x0.shape).tolist()
            for start in range(0, k * n, max_batch):
                stop = min(start + max_batch, k * n)
                bar.update(stop - start)
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
                    if nm in in_acts:
                        g_i, a_i = in_acts[nm]
                        ut = a_i.apply(g_i, plans_u[nm], ks, refs_u[nm].index_select(0, rows))
                        out = a_m.prepare(g_m, _call(modules[nm], adapters.get(nm), ut).to(_F64))
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
        mode=mode,
    )


def _call(module: nn.Module, adapter: Optional[FeatureAdapter], u: Tensor) -> Tensor:
    """``unwrap(module(wrap(u)))`` with the adapter's wrap/unwrap (identities without one)."""
    wrap = adapter.wrap if adapter is not None and adapter.wrap is not None else None
    unwrap = adapter.unwrap if adapter is not None and adapter.unwrap is not None else None
    out = module(wrap(u) if wrap else u)
    return unwrap(out) if unwrap else out


def _resolve_all(
    symmetry: Symmetry, input_shape, names: list, recorder: _Recorder, adapters: dict, overrides: dict
) -> tuple[dict, dict]:
    """The output action of every layer (``None``: not measured) and the input action of every layer that has one
    tensor input and a known input action, in forward order (see the module docstring for the precedence)."""
    outs, ins, declared = {}, {}, {}
    for nm in names:
        out_shape, u = recorder.outputs[nm].shape[1:], recorder.inputs[nm]
        adapter, override = adapters.get(nm), overrides.get(nm)
        source = declared.get(recorder.producer.get(nm))  # the action of an adapted layer that produced the input
        if override is not None:
            outs[nm] = _override(symmetry, override)
        elif adapter is not None:
            outs[nm] = declared[nm] = (_group(adapter, symmetry), adapter.output_action)
        elif declared.get(recorder.same_as.get(nm)) is not None:  # e.g. a module that unwraps an adapted output
            outs[nm] = declared[nm] = declared[recorder.same_as[nm]]
        elif source is not None and u is not None and u.shape[1:] == out_shape:
            outs[nm] = declared[nm] = source
        else:
            outs[nm] = feature_action(symmetry, input_shape, out_shape)
        if u is None:
            continue
        if override is not None and u.shape[1:] == out_shape:
            act = outs[nm]
        elif adapter is not None and adapter.input_action is not None:
            act = (_group(adapter, symmetry), adapter.input_action)
        elif adapter is not None or source is not None:
            act = source
        else:
            act = feature_action(symmetry, input_shape, u.shape[1:], masked=False)
        if act is not None:
            ins[nm] = act
    return outs, ins


def _group(adapter: FeatureAdapter, symmetry: Symmetry) -> Any:
    return symmetry.group if adapter.group is None else adapter.group


def _override(symmetry: Symmetry, override: Union[Action, str]) -> Optional[tuple]:
    if override == "skip":
        return None
    if override == "invariant":
        return symmetry.group, Invariant()
    if isinstance(override, Action):
        return symmetry.group, override
    raise ValueError(f"Expected a feature action override: an Action, 'invariant' or 'skip'; got {override!r}.")
