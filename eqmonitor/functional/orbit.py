"""Orbit errors: how far a model is from its symmetry, over many samples and group elements, batched.

For samples ``x_n`` and elements ``g_k``:

.. math:: e(x_n, g_k) = d\\big(h(φ(g_k, x_n)),\\ φ̃(g_k, h(x_n))\\big)

``h(x)`` is computed once per sample (not once per element); all ``K·N`` pairs go through the model in chunks of
the fastest size for that model and device; transforms are batched tensor ops; comparisons are done in float64; the
model is left exactly as found (see ``_isolation``). A chunk mixes samples and elements unless ``chunking`` says
otherwise; a model whose output for one sample depends on the rest of its batch is detected on the first chunk and
warned about (see ``_coupling``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from eqmonitor._distances import max_abs, relative
from eqmonitor._distances import max_abs_of_scaled as _max_abs
from eqmonitor._distances import relative_of_scaled as _relative
from eqmonitor._distances import scaled_pair as _scaled
from eqmonitor.functional._chunking import check_chunking, pair_ranges, resolve_chunk_size, sample_block
from eqmonitor.functional._coupling import warn_if_coupled
from eqmonitor.functional._isolation import isolated, model_device, model_dtype
from eqmonitor.functional._validation import check_probe_args as _orbit_errors_arg_validation
from eqmonitor.functional._validation import check_probe_inputs as _orbit_errors_tensor_validation
from eqmonitor.groups.base import as_elements as _as_elements
from eqmonitor.progress import progress_bar
from eqmonitor.results import OrbitErrors
from eqmonitor.symmetry import Symmetry

__all__ = ["noise_floor", "orbit_errors"]

_F64 = torch.float64
_FLOOR_BUDGET = 1 << 22  # tensor elements per round-trip chunk of the noise floor
_COMPARE_BUDGET = 1 << 22  # buffered output elements per batch of comparisons


def _check_output(y: Tensor, symmetry: Symmetry) -> Tensor:
    """Check a selected output ``y`` against the symmetry's output action (shape kept, class scores if needed)."""
    symmetry.output_action.check(symmetry.group, y, "output")
    ident = symmetry.group.identity(y.device).expand(y.shape[0], -1)
    moved = symmetry.output_action(symmetry.group, ident, y.to(_F64))
    if moved.shape != y.shape:
        raise RuntimeError(
            f"The output action {symmetry.output_action!r} turned an output of shape {tuple(y.shape)} into "
            f"{tuple(moved.shape)}; the two sides of the comparison must have the same shape."
        )
    if symmetry.compares_classes and (y.ndim < 2 or y.shape[1] < 2):
        raise RuntimeError(
            f"The `{symmetry.error_name}` error compares class scores over dimension 1, but the output has shape "
            f"{tuple(y.shape)}; use a regression error such as 'relative'."
        )
    return y


def _forward_rows(model: Callable, x: Tensor, symmetry: Symmetry, alone: bool) -> Tensor:
    """The selected output of ``model`` on the batch ``x``, or on each of its rows alone (``chunking="per_sample"``:
    the transforms and comparisons stay batched, only the model sees one input at a time)."""
    if not alone or x.shape[0] == 1:
        return symmetry.select_output(model(x))
    return torch.cat([symmetry.select_output(model(x[i : i + 1])) for i in range(x.shape[0])])


def _forward_chunks(model: Callable, x: Tensor, chunk: int, symmetry: Symmetry) -> Tensor:
    """``h(x)`` (the selected output) in chunks, checked against the symmetry's output action."""
    outs = [symmetry.select_output(model(x[i : i + chunk])) for i in range(0, x.shape[0], chunk)]
    _check_output(outs[0], symmetry)
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _exact_hint(exact: list[bool], k_lo: int, k_hi: int) -> Optional[bool]:
    """Whether the elements ``exact[k_lo:k_hi + 1]`` are all exact (True), none (False) or mixed (None)."""
    part = exact[k_lo : k_hi + 1]
    return True if all(part) else (False if not any(part) else None)


def _round_trip(symmetry: Symmetry, action, elements: Tensor, x: Tensor, chunk: int, there: Any = None) -> Tensor:
    """``[K]`` mean over the samples of prepared ``x [M, ...]`` of ``‖φ(g⁻¹, φ(g, x)) − x‖ / ‖x‖`` (``there``: the
    action's plan for ``elements`` on ``x``'s shape, if the caller has it already)."""
    group, k, m = symmetry.group, elements.shape[0], x.shape[0]
    there = action.plan(group, elements, x.shape, x.dtype) if there is None else there
    back = action.plan(group, group.inverse(elements), x.shape, x.dtype)
    exact = action.exact_elements(group, elements, x.shape).tolist()
    # no model runs here: chunks as large as a fixed memory budget allows (fewer launches), never below the model's
    chunk = max(chunk, _FLOOR_BUDGET // max(1, x[:1].numel()))
    out = torch.empty(k * m, dtype=_F64, device=x.device)
    for start in range(0, k * m, chunk):
        stop = min(start + chunk, k * m)
        idx = torch.arange(start, stop, device=x.device)
        ks, xs = idx // m, x.index_select(0, idx % m)
        hint = _exact_hint(exact, start // m, (stop - 1) // m)
        there_back = action.apply(group, back, ks, action.apply(group, there, ks, xs, hint), hint)
        out[start:stop] = relative(there_back.to(_F64), xs.to(_F64))
    return out.reshape(k, m).mean(1)


def noise_floor(symmetry: Symmetry, elements: Tensor, x: Tensor, *, role: str = "input", chunk: int = 256) -> Tensor:
    """``[K]`` round-trip error of the symmetry's input (or ``role="output"``) action on ``x``: what the transform
    itself loses, so that model error can be told from transform error. Zero for exact elements.
    """
    action = symmetry.input_action if role == "input" else symmetry.output_action
    elements = _as_elements(elements, symmetry.group, x.device)
    return _round_trip(symmetry, action, elements, action.prepare(symmetry.group, x), chunk)


def _orbit_errors_update(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    elements: Tensor,
    labels: Optional[Tensor],
    max_batch: Union[int, str],
    floor_samples: int,
    bar: Any = None,
    keep_probs: bool = False,
    chunking: str = "mixed",
    sink: Optional[Callable[[Tensor, Tensor], None]] = None,
) -> dict:
    """All (sample × element) errors, ``[K·N]`` element-major, plus floors; runs inside :func:`isolated`.

    Each action is planned once for the ``K`` elements (grids, gather indices); exact elements are processed first so
    that a chunk mixes exact and interpolated elements at most once, and each chunk knows its path without a sync.
    The forwards are cut by :func:`~eqmonitor.functional._chunking.pair_ranges`; with ``"mixed"`` the first one is
    also tested for batch coupling. ``sink(pos, actual)``, when given, receives every batch of prepared float64
    outputs with their positions in the element-major table (the consensus reuses them: no second forward).
    """
    group, phi, phi_out = symmetry.group, symmetry.input_action, symmetry.output_action
    n, k = x.shape[0], elements.shape[0]
    x0 = phi.prepare(group, x)
    plan_in = phi.plan(group, elements, x0.shape, x0.dtype)
    exact_in = phi.exact_elements(group, elements, x0.shape)
    order = sorted(range(k), key=lambda i: not exact_in[i])  # exact elements first
    order_t = torch.tensor(order, dtype=torch.long, device=x.device)
    ex_in = [bool(exact_in[i]) for i in order]

    def step_input(start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.arange(start, stop, device=x.device) % (n * k)
        ks, rows = order_t.index_select(0, idx // n), idx % n
        hint = _exact_hint(ex_in, start // n, (stop - 1) // n) if stop <= n * k else None
        return phi.apply(group, plan_in, ks, x0.index_select(0, rows), hint), ks, rows

    key = ("orbit", tuple(x.shape[1:]), x.dtype, x.device.type, x.device.index, repr(group), repr(phi))
    if chunking == "per_sample":  # no tuning: the model sees one input at a time; `chunk` batches the rest
        chunk = min(256 if max_batch == "auto" else int(max_batch), n * k)
    else:
        chunk = resolve_chunk_size(model, max_batch, key, lambda size: model(step_input(0, size)[0]), n * k, x.device)
    y0 = _forward_chunks(model, x0, sample_block(chunk, n, chunking), symmetry)
    y0d = phi_out.prepare(group, y0.to(_F64))
    classifier = phi_out.is_identity and y0.ndim == 2 and y0.shape[1] >= 2
    with_conf = classifier and labels is not None
    plan_out = None if phi_out.is_identity else phi_out.plan(group, elements, y0d.shape, _F64)
    exact_out = phi_out.exact_elements(group, elements, y0.shape)
    ex_out = [bool(exact_out[i]) for i in order]

    total = n * k
    errors, abs_e, rel_e = (torch.empty(total, dtype=_F64, device=x.device) for _ in range(3))
    nonfinite = torch.empty(total, dtype=torch.bool, device=x.device)
    flips = torch.empty(total, dtype=_F64, device=x.device) if classifier else None
    conf = torch.empty(total, dtype=_F64, device=x.device) if with_conf else None
    top1 = torch.empty(total, dtype=torch.long, device=x.device) if classifier else None
    probs = torch.empty(total, y0.shape[1], dtype=torch.float32, device=x.device) if classifier and keep_probs else None
    ks_all = order_t.repeat_interleave(n)  # element (caller's order) and sample of each position, exact ones first
    rows_all = torch.arange(n, device=x.device).repeat(k)
    dist = symmetry.distance

    def compare(start: int, stop: int, actual: Tensor) -> None:
        """The pairs ``start:stop`` (their outputs ``actual``), compared with one batch of tensor ops."""
        ks, rows = ks_all[start:stop], rows_all[start:stop]
        ref = y0d.index_select(0, rows)
        hint = _exact_hint(ex_out, start // n, (stop - 1) // n)
        expected = ref if plan_out is None else phi_out.apply(group, plan_out, ks, ref, hint)
        lab = labels.index_select(0, rows) if labels is not None else None
        pos = ks * n + rows  # position in the element-major table of the caller's element order
        if sink is not None:
            sink(pos, actual)
        pair = _scaled(actual, expected)  # one scaling for both tables (and the distance, when it is one of them)
        rel_e[pos], abs_e[pos] = rel, ab = _relative(pair), _max_abs(pair)
        errors[pos] = rel if dist is relative else (ab if dist is max_abs else dist(actual, expected, lab))
        nonfinite[pos] = ~pair.finite  # NaN/Inf in the output or the expected output
        if flips is not None:
            flips[pos] = (actual.argmax(1) != expected.argmax(1)).to(_F64)
        if top1 is not None:
            top1[pos] = actual.argmax(1)
        if probs is not None:
            probs[pos] = actual.softmax(1).float()
        if conf is not None:
            conf[pos] = actual.softmax(1).gather(1, lab.reshape(-1, 1).long())[:, 0]

    # outputs are buffered and compared in batches of up to _COMPARE_BUDGET elements: the comparison is a few dozen
    # small ops, which cost more in launches than in arithmetic when run once per model chunk
    per_pair = max(1, y0[:1].numel())
    span = max(chunk, _COMPARE_BUDGET // per_pair // chunk * chunk)
    pending: list[Tensor] = []
    first = 0
    for start, stop in pair_ranges(n, k, chunk, chunking):
        if bar is not None:
            bar.update(stop - start)
        xt, _, _ = step_input(start, stop)
        out = _forward_rows(model, xt, symmetry, alone=chunking == "per_sample")
        if start == 0 and chunking == "mixed":
            forward = lambda t: symmetry.select_output(model(t))  # noqa: E731
            warn_if_coupled(model, key, chunk, forward, xt, out, model_dtype(model) or x.dtype)
        actual = phi_out.prepare(group, out.to(_F64))
        if actual.shape[1:] != y0.shape[1:]:
            raise RuntimeError(
                f"The model's output on transformed inputs has shape {tuple(actual.shape)}, but on the originals "
                f"{tuple(y0.shape[1:])} per sample; the output must not depend on the element's shape change."
            )
        pending.append(actual)
        if stop - first >= span or stop == total:
            compare(first, stop, pending[0] if len(pending) == 1 else torch.cat(pending))
            pending, first = [], stop

    m = min(n, floor_samples)
    return {
        "errors": errors,
        "abs_errors": abs_e,
        "rel_errors": rel_e,
        "nonfinite": nonfinite,
        "flips": flips,
        "confidence": conf,
        "top1": top1,
        "probs": probs,
        "confidence_ref": y0d.softmax(1).gather(1, labels.reshape(-1, 1).long())[:, 0] if with_conf else None,
        "input_floor": _round_trip(symmetry, phi, elements, x0[:m], chunk, there=plan_in),
        "output_floor": None if phi_out.is_identity else _round_trip(symmetry, phi_out, elements, y0d[:m], chunk),
        "exact": exact_in & exact_out,
        "shape": (n, k),
    }


def _orbit_errors_compute(state: dict, elements: Tensor, symmetry: Symmetry, dtype: torch.dtype) -> OrbitErrors:
    """Reshape the element-major pair statistics into ``[N, K]`` tables."""
    n, k = state["shape"]

    def table(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.reshape(k, n, *t.shape[1:]).transpose(0, 1).contiguous()

    nonfinite = table(state["nonfinite"])

    def pairs(name: str) -> Optional[Tensor]:  # every per-pair table is NaN exactly at the non-finite pairs
        t = table(state[name])
        return None if t is None else t.masked_fill(nonfinite, float("nan"))

    return OrbitErrors(
        errors=pairs("errors"),
        abs_errors=pairs("abs_errors"),
        rel_errors=pairs("rel_errors"),
        nonfinite=nonfinite,
        elements=elements,
        exact=state["exact"],
        input_floor=state["input_floor"],
        output_floor=state["output_floor"],
        flips=pairs("flips"),
        confidence=pairs("confidence"),
        confidence_ref=state["confidence_ref"],
        group=symmetry.group,
        distance=symmetry.error_name,
        symmetry=symmetry.name,
        dtype=dtype,
        top1=None if state["top1"] is None else table(state["top1"]).masked_fill(nonfinite, -1),
        probs=None if state["probs"] is None else table(state["probs"]).masked_fill(nonfinite[..., None], float("nan")),
    )


def orbit_errors(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    elements: Union[Tensor, Sequence],
    *,
    labels: Optional[Tensor] = None,
    max_batch: Union[int, str] = "auto",
    chunking: str = "mixed",
    floor_samples: int = 8,
    validate_args: bool = True,
    progress: bool = False,
    keep_probs: bool = False,
) -> OrbitErrors:
    """Errors of ``model`` under ``symmetry`` for every sample of ``x [N, ...]`` and element ``elements [K, p]``.

    Args:
        model: an ``nn.Module`` (or a callable) mapping a batch to a tensor, or to an output that the symmetry's
            ``output_key`` picks the tensor out of (a tuple, a dict, a ``ModelOutput``).
        x: the samples, on any device (moved to the model's).
        symmetry: the symmetry to test.
        elements: ``[K, p]`` group elements (``[K]`` for one-parameter groups).
        labels: ``[N]`` true classes, needed for the ``confidence`` error and NERO confidence curves.
        max_batch: ``"auto"`` (fastest chunk size, tuned once per model and input shape) or the largest number of
            (sample × element) pairs per forward, which bounds memory.
        chunking: which pairs may share a forward. ``"mixed"`` (default, fastest): any samples and elements; the
            first probe of a model also runs a few of its pairs again in other batches and warns with a
            :class:`~eqmonitor.functional.BatchCouplingWarning` if their outputs move (a model coupled across its
            batch). ``"per_element"``: blocks of ``max_batch`` samples (all ``N`` at most), the same blocks as the
            reference ``h(x)``, moved by one element per forward, i.e. ``h(g·X)`` against ``g·h(X)`` for a batch
            ``X``, as e3nn's and escnn's checks measure; set ``max_batch`` to the batch size the model is used with.
            ``"per_sample"``: each (sample, element) pair alone (``N·(K + 1)`` forwards of one input), so no forward
            mixes samples.
        floor_samples: how many samples the noise floor is measured on.
        validate_args: check arguments and tensors (switch off in a hot loop once they are known to be good).
        progress: show a progress bar once the probe has run for a couple of seconds (audits do; the training
            monitor never does).
        keep_probs: keep the class probabilities of every pair (``probs [N, K, C]``, class-score outputs only),
            for the records' detail view; the top-1 classes (``top1``) are always kept for class scores.

    Returns:
        :class:`~eqmonitor.results.OrbitErrors` with ``errors [N, K]`` on the model's device.

    Raises:
        TypeError: ``x`` is not a tensor, the model's output is not one and no ``output_key`` selects one, or
            ``x``'s dtype is not the model's.
        ValueError: empty ``x``, non-finite ``x``, malformed elements or labels, an unknown ``chunking``, or an
            ``output_key`` the output does not have (an index out of range, a missing key).
        RuntimeError: an action cannot act on the input or output (the message says which and why).

    Warns:
        BatchCouplingWarning: with ``chunking="mixed"``, the model's outputs for the same inputs changed when they
            were run in other batches (once per model and input signature).

    Example:
        >>> import torch, eqmonitor as eqm
        >>> model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4))
        >>> sym = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant")
        >>> x = torch.randn(8, 1, 28, 28)
        >>> res = eqm.functional.orbit_errors(model, x, sym, sym.group.all_elements())
        >>> res.errors.shape, bool(res.max() < 1e-6)
        (torch.Size([8, 4]), True)
    """
    x, elements, labels = _orbit_inputs(model, x, symmetry, elements, labels, max_batch, chunking, validate_args)
    return _orbit_errors_run(model, x, symmetry, elements, labels, max_batch, chunking, floor_samples, progress,
                             keep_probs)  # fmt: skip


def _orbit_inputs(
    model: Callable, x: Tensor, symmetry: Symmetry, elements: Any, labels: Optional[Tensor], max_batch: Any,
    chunking: str, validate_args: bool,
) -> tuple[Tensor, Tensor, Optional[Tensor]]:  # fmt: skip
    """``(x, elements, labels)`` checked (when ``validate_args``) and on the model's device."""
    if validate_args:
        _orbit_errors_arg_validation(model, symmetry, max_batch)
        check_chunking(chunking)
        return _orbit_errors_tensor_validation(model, x, symmetry, elements, labels)
    device = model_device(model, x.device)
    x, elements = x.to(device), _as_elements(elements, symmetry.group, device)
    return x, elements, labels.to(device) if labels is not None else None


def _orbit_errors_run(
    model: Callable, x: Tensor, symmetry: Symmetry, elements: Tensor, labels: Optional[Tensor], max_batch: Any,
    chunking: str, floor_samples: int, progress: bool, keep_probs: bool, sink: Any = None,
) -> OrbitErrors:  # fmt: skip
    """:func:`orbit_errors` on checked inputs (``sink``: see :func:`_orbit_errors_update`)."""
    total = x.shape[0] * elements.shape[0]
    with isolated(model), progress_bar(total, f"eqmonitor: {symmetry.name} orbit", progress) as bar:
        state = _orbit_errors_update(
            model, x, symmetry, elements, labels, max_batch, floor_samples, bar, keep_probs, chunking, sink
        )
    return _orbit_errors_compute(state, elements, symmetry, model_dtype(model) or x.dtype)
