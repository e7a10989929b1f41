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
   maps, ViT-style token grids, invariant globally pooled maps;
5. a flat feature ``[B, D]`` from its origin (:func:`~eqmonitor.functional._features.resolve_actions`): the
   model's output has the symmetry's output action; ``nn.Flatten`` or a contiguous reshape in ``forward``
   (``torch.flatten``, ``view``) of a feature carries its action (a permutation of the entries, on exact elements);
   the output of a layer with an invariant input is invariant; elementwise activations keep their input's action.

A layer whose action cannot be known, or a map too small to keep a pixel inside the disc mask, is *not measured*
(``LayerErrors.not_measured`` says why; its errors are NaN, never 0), and ``first_failing`` is judged among the
measured layers only.

**Captures** (:mod:`~eqmonitor.functional._captures`) are immune to in-place operations (``ReLU(inplace=True)``,
``out += identity``): inputs are copied before the layer runs, outputs as it returns, and the measuring passes
compare each output inside its hook. A **self-check** re-runs the reference batch at the identity element: every
layer must reproduce its capture (cumulative and isolated errors at float precision), else it is reported as
``"capture unreliable"`` with no number. Parametrized modules (``weight_norm``, ``spectral_norm``, ``orthogonal``,
``register_parametrization``) are one layer each; what is inside their ``parametrizations`` is never hooked, and the
parametrized weights are computed once per probe (``parametrize.cached``).

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
from torch.nn.utils import parametrize

from eqmonitor._verdicts import default_tolerance
from eqmonitor.actions.base import Action
from eqmonitor.functional._captures import Recorder
from eqmonitor.functional._features import (
    ReshapedAction,
    TokenGridAction,
    feature_action,
    resolve_actions,
    token_grid,
)
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
    "ReshapedAction",
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


def _parametrization_internals(named: dict[str, nn.Module]) -> set:
    """Names of the modules inside the ``parametrizations`` of parametrized modules (``weight_norm``,
    ``spectral_norm``, ``orthogonal``, ``register_parametrization``): they compute a weight, not a feature."""
    roots = [
        f"{n}.parametrizations" if n else "parametrizations" for n, m in named.items() if parametrize.is_parametrized(m)
    ]
    return {n for n in named if any(n == r or n.startswith(r + ".") for r in roots)}


def _is_leaf(module: nn.Module) -> bool:
    """No children, or only the ``parametrizations`` of a parametrized module (which is one layer)."""
    return all(k == "parametrizations" and parametrize.is_parametrized(module) for k, _ in module.named_children())


def _select_layers(model: nn.Module, layers: LayerSpec, adapted: dict) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    internal = _parametrization_internals(named)
    if layers is None:
        chosen, blocks = {}, []
        for n, m in named.items():
            if not n or n in internal or any(n.startswith(b + ".") for b in blocks) or isinstance(m, _SKIPPED_TYPES):
                continue
            if n in adapted or isinstance(m, _ATOMIC_TYPES):
                blocks.append(n)
                chosen[n] = m
            elif _is_leaf(m):
                chosen[n] = m
        return chosen
    if callable(layers):
        return {n: m for n, m in named.items() if n and n not in internal and layers(n, m)}
    missing = [n for n in layers if n not in named]
    if missing:
        raise ValueError(f"Unknown layer names {missing}; the model has {sorted(n for n in named if n)}.")
    inside = [n for n in layers if n in internal]
    if inside:
        raise ValueError(
            f"{inside} are inside a parametrization (they compute a parametrized weight, not a feature); name the "
            "parametrized module itself, e.g. "
            f"{sorted({n.split('.parametrizations')[0] or '<the model>' for n in inside})}."
        )
    return {n: named[n] for n in layers}


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
    recorder = Recorder(modules, adapters)
    try:
        bar_desc = f"eqmonitor: {symmetry.name} layers"
        with (
            isolated(model, train=mode == "train"),
            parametrize.cached(),
            progress_bar(k * n, bar_desc, progress) as bar,
        ):
            x0 = phi.prepare(group, x)
            recorder.mode = "keep"
            recorder.keep_input(x0)
            out = model(x0)
            recorder.mode = "off"
            final = symmetry.select_output(out) if symmetry.output_key is not None else out
            names = list(recorder.order)
            probe = _Probe(symmetry, x0, elements, names, recorder, modules, adapters, feature_actions or {}, final)
            recorder.reset()
            probe.run(model, recorder, max_batch, bar)
            probe.self_check(model, recorder, tol / 100)
    finally:
        recorder.remove()
    exact = phi.exact_elements(group, elements, x.shape)
    return LayerErrors.build(
        names=names,
        types=[type(modules[nm]).__name__ for nm in names],
        cumulative=probe.cumulative.reshape(len(names), k, n).transpose(1, 2),
        isolated=probe.isolated.reshape(len(names), k, n).transpose(1, 2),
        elements=elements,
        exact=exact,
        tolerance=tol,
        symmetry=symmetry.name,
        dtype=dtype,
        mode=mode,
        not_measured=probe.reasons,
        self_check=probe.identity,
        kept_bytes=probe.kept_bytes,
    )


class _Probe:
    """The measuring passes of :func:`layer_errors`, once the reference pass has resolved every layer's actions."""

    def __init__(self, symmetry, x0, elements, names, rec, modules, adapters, overrides, final) -> None:
        self.symmetry, self.x0, self.elements, self.names = symmetry, x0, elements, names
        self.modules, self.adapters = modules, adapters
        n, k, self.kept_bytes = x0.shape[0], elements.shape[0], rec.kept_bytes
        at_x, inputs_x = dict(rec.outputs), dict(rec.inputs)
        output_layer = rec.find_output(final) if isinstance(final, Tensor) else None
        acts, in_acts, reasons = resolve_actions(
            symmetry, x0.shape[1:], names, rec, modules, adapters, overrides, output_layer
        )
        for nm in names:  # a layer whose batch is not the model's (e.g. inside a group-averaging wrapper that stacks
            # the copies of each sample into the batch) has no per-sample features to compare: not measured
            if at_x[nm].shape[0] != n:
                acts[nm], reasons[nm] = None, "not per-sample"
            elif rec.repeated(nm):
                acts[nm], reasons[nm] = None, f"called {rec.calls[nm]} times in one forward"
        self.in_acts = {nm: a for nm, a in in_acts.items() if acts[nm] is not None and inputs_x[nm].shape[0] == n}
        self.acts, self.reasons = acts, reasons
        self.cumulative = torch.full((len(names), k * n), float("nan"), dtype=_F64, device=x0.device)
        self.isolated = torch.full_like(self.cumulative, float("nan"))
        self.identity = torch.full((len(names), 2), float("nan"), dtype=_F64, device=x0.device)
        live = {nm: a for nm, a in acts.items() if a is not None}
        self.refs = {nm: a[1].prepare(a[0], at_x[nm].to(_F64)) for nm, a in live.items()}
        self.refs_u = {nm: a[1].prepare(a[0], inputs_x[nm]) for nm, a in self.in_acts.items()}
        self.plans = {nm: a[1].plan(a[0], elements, at_x[nm].shape, _F64) for nm, a in live.items()}
        self.plans_u = {
            nm: a[1].plan(a[0], elements, inputs_x[nm].shape, inputs_x[nm].dtype) for nm, a in self.in_acts.items()
        }
        e = symmetry.group.identity(x0.device).reshape(1, -1)
        self.id_plans = {nm: a[1].plan(a[0], e, at_x[nm].shape, _F64) for nm, a in live.items()}
        self.id_plans_u = {
            nm: a[1].plan(a[0], e, inputs_x[nm].shape, inputs_x[nm].dtype) for nm, a in self.in_acts.items()
        }

    def _measure(self, model, rec, x_in, ks, rows, plans, plans_u) -> tuple[dict, dict]:
        """One forward of ``x_in`` (pairs ``(rows, ks)``): inside each layer's hook (before any later in-place
        operation), its cumulative error, then its isolated error on the transformed reference input (so that no
        layer's expected output outlives its hook)."""
        cum, iso = {}, {}

        def on_output(nm: str, out: Tensor) -> None:
            if self.acts.get(nm) is None:
                return
            g_m, a_m = self.acts[nm]
            expected = a_m.apply(g_m, plans[nm], ks, self.refs[nm].index_select(0, rows))
            cum[nm] = relative(a_m.prepare(g_m, out.to(_F64)), expected)
            if nm in self.in_acts:
                g_i, a_i = self.in_acts[nm]
                ut = a_i.apply(g_i, plans_u[nm], ks, self.refs_u[nm].index_select(0, rows))
                rec.mode = "off"  # the layer alone: its own hooks (and its children's) record nothing
                try:
                    alone = _call(self.modules[nm], self.adapters.get(nm), ut)
                finally:
                    rec.mode = "measure"
                iso[nm] = relative(a_m.prepare(g_m, alone.to(_F64)), expected)

        rec.on_output, rec.mode = on_output, "measure"
        try:
            model(x_in)
        finally:
            rec.mode, rec.on_output = "off", None
            rec.reset()
        return cum, iso

    def run(self, model, rec, max_batch: int, bar) -> None:
        phi, group, x0 = self.symmetry.input_action, self.symmetry.group, self.x0
        n, k = x0.shape[0], self.elements.shape[0]
        plan_in = phi.plan(group, self.elements, x0.shape, x0.dtype)
        ex = phi.exact_elements(group, self.elements, x0.shape).tolist()
        for start in range(0, k * n, max_batch):
            stop = min(start + max_batch, k * n)
            bar.update(stop - start)
            idx = torch.arange(start, stop, device=x0.device)
            ks, rows = idx // n, idx % n
            x_in = phi.apply(group, plan_in, ks, x0.index_select(0, rows), _exact_hint(ex, start // n, (stop - 1) // n))
            cum, iso = self._measure(model, rec, x_in, ks, rows, self.plans, self.plans_u)
            for li, nm in enumerate(self.names):
                if nm in cum:
                    self.cumulative[li, start:stop] = cum[nm]
                if nm in iso:
                    self.isolated[li, start:stop] = iso[nm]

    def self_check(self, model, rec, precision: float) -> None:
        """At the identity, on the reference batch itself, every layer must reproduce its reference capture: its
        cumulative error (a second forward) and isolated error (the layer alone on its captured input) sit at float
        precision. A layer that does not is reported as ``"capture unreliable"``, with no number: one whose isolated
        error at the identity is not at float precision, and the first whose cumulative one is not (later layers
        only carry that difference on)."""
        n = self.x0.shape[0]
        zeros, rows = torch.zeros(n, dtype=torch.long, device=self.x0.device), torch.arange(n, device=self.x0.device)
        cum, iso = self._measure(model, rec, self.x0, zeros, rows, self.id_plans, self.id_plans_u)
        for li, nm in enumerate(self.names):
            if nm in cum:
                self.identity[li, 0] = cum[nm].max()
            if nm in iso:
                self.identity[li, 1] = iso[nm].max()
        cum_bad, bad = (self.identity.nan_to_num(nan=0.0) > precision).unbind(1)
        bad = bad.clone()
        first = cum_bad.nonzero()[:, 0].tolist()[:1]  # a second forward differs from the first from here on:
        if first and not bool(bad[: first[0]].any()):  # blamed on the first layer, unless an earlier one explains it
            bad[first[0]] = True
        for li in bad.nonzero()[:, 0].tolist():
            self.reasons[self.names[li]] = "capture unreliable"
            self.cumulative[li], self.isolated[li] = float("nan"), float("nan")


def _call(module: nn.Module, adapter: Optional[FeatureAdapter], u: Tensor) -> Tensor:
    """``unwrap(module(wrap(u)))`` with the adapter's wrap/unwrap (identities without one)."""
    wrap = adapter.wrap if adapter is not None and adapter.wrap is not None else None
    unwrap = adapter.unwrap if adapter is not None and adapter.unwrap is not None else None
    out = module(wrap(u) if wrap else u)
    return unwrap(out) if unwrap else out
