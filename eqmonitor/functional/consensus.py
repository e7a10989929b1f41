"""Consensus (NERO §2.5): the orbit average of a model's back-transformed outputs, a stand-in for the ground truth
where there are no labels.

For a sample ``x``, elements ``g_1 … g_K``, input action ``φ`` and output action ``φ̃``:

.. math:: c(x) = \\frac{1}{K} \\sum_k φ̃\\big(g_k^{-1},\\ h(φ(g_k, x))\\big)

averaged the right way for the output space: vectors, boxes and fields are averaged in the output action's own
representation; class scores (an invariant output ``[N, C]``, ``C ≥ 2``) are averaged as probabilities,
``c(x) = (1/K) Σ_k softmax(h(φ(g_k, x)))``. The consensus errors compare the model's output at each element with the
consensus moved forward to that element:

.. math:: e(x_n, g_k) = d\\big(h(φ(g_k, x_n)),\\ φ̃(g_k, c(x_n))\\big)

with the symmetry's distance ``d`` (class scores compared as log-probabilities, ``log_softmax(h)`` against
``log c``). These are the NERO errors when labels are absent. An exactly equivariant model's consensus is its own
output and its consensus errors are zero; interpolated elements (and the output action's own noise floor) add their
round-trip error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from eqmonitor._distances import max_abs, max_abs_of_scaled, relative, relative_of_scaled, scaled_pair
from eqmonitor.functional._chunking import resolve_chunk_size
from eqmonitor.functional._isolation import isolated
from eqmonitor.functional._validation import check_probe_args, check_probe_inputs
from eqmonitor.functional.orbit import _check_output, _orbit_errors_run, _orbit_inputs
from eqmonitor.results import OrbitErrors
from eqmonitor.symmetry import Symmetry

__all__ = ["REFERENCES", "check_reference", "consensus", "consensus_errors", "orbit_errors_with_consensus"]

#: what orbit errors compare each output with (see :func:`orbit_errors_with_consensus`)
REFERENCES = ("identity", "consensus")

_F64 = torch.float64


def _validated(model: Callable, x: Tensor, symmetry: Symmetry, elements, max_batch) -> tuple[Tensor, Tensor]:
    """``x`` and ``elements`` checked and on the model's device (the shared probe checks; no labels needed)."""
    check_probe_args(model, symmetry, max_batch)
    # the consensus needs no labels; the `confidence` error cannot be computed without them (see consensus_errors)
    dummy = torch.zeros(x.shape[0], dtype=torch.long) if symmetry.needs_labels and isinstance(x, Tensor) else None
    x, elements, _ = check_probe_inputs(model, x, symmetry, elements, dummy)
    return x, elements


def _is_classifier(symmetry: Symmetry, y: Tensor) -> bool:
    """Whether the output ``y`` holds class scores: invariant, ``[N, C]`` with ``C ≥ 2``."""
    return symmetry.output_action.is_identity and y.ndim == 2 and y.shape[1] >= 2


def check_reference(reference: object) -> None:
    """Raise a ``ValueError`` unless ``reference`` is one of :data:`REFERENCES`."""
    if not (isinstance(reference, str) and reference in REFERENCES):
        raise ValueError(
            f"Expected `reference` to be one of {REFERENCES}, but got {reference!r}: 'identity' compares each output "
            "with the model's own output at the identity moved forward, 'consensus' with the orbit's consensus."
        )


def _refuse_labels(symmetry: Symmetry) -> None:
    if isinstance(symmetry, Symmetry) and symmetry.needs_labels:
        raise ValueError(
            f"The `{symmetry.error_name}` error needs labels, and the consensus stands in for labels that are absent;"
            " use an error such as 'kl', 'flip' or 'relative' for consensus errors."
        )


def _moved(symmetry: Symmetry, elements: Tensor, y: Tensor, n: int) -> Tensor:
    """``φ̃(g_k, y_i)`` for the element-major rows ``i = k·n + s`` of ``y [K·n, ...]`` (float64)."""
    phi_out, group = symmetry.output_action, symmetry.group
    if phi_out.is_identity:
        return y
    ks = torch.arange(elements.shape[0], device=y.device).repeat_interleave(n)
    return phi_out.apply(group, phi_out.plan(group, elements, y.shape, _F64), ks, y)


def _consensus_of(ys: Tensor, symmetry: Symmetry, elements: Tensor, n: int) -> Tensor:
    """``[n, ...]`` consensus of the prepared float64 outputs ``ys [K·n, ...]`` (element-major): the mean of the
    probabilities for class scores, else the mean of the outputs moved back by ``g_k⁻¹``."""
    k = elements.shape[0]
    if _is_classifier(symmetry, ys):
        return ys.softmax(1).reshape(k, n, -1).mean(0)
    back = _moved(symmetry, symmetry.group.inverse(elements), ys, n)
    return back.reshape(k, n, *ys.shape[1:]).mean(0)


def _against_consensus(ys: Tensor, c: Tensor, symmetry: Symmetry, elements: Tensor) -> tuple[Tensor, Tensor]:
    """``(actual, expected)`` ``[K·n, ...]``: the outputs and the consensus moved forward to each element (class
    scores as ``log_softmax(h)`` against ``log c``)."""
    k, n = elements.shape[0], c.shape[0]
    if _is_classifier(symmetry, ys):
        return ys.log_softmax(1), c.clamp_min(torch.finfo(_F64).tiny).log().repeat(k, 1)
    return ys, _moved(symmetry, elements, c.repeat(k, *([1] * (c.ndim - 1))), n)


def _orbit_outputs(
    model: Callable, x: Tensor, symmetry: Symmetry, elements: Tensor, max_batch: Union[int, str]
) -> tuple[Tensor, torch.dtype]:
    """``(outputs [K·N, ...], output dtype)``: the prepared outputs ``h(φ(g_k, x_n))`` in float64, element-major;
    runs the model on all ``K·N`` (element × sample) pairs in chunks."""
    group, phi, phi_out = symmetry.group, symmetry.input_action, symmetry.output_action
    n, k = x.shape[0], elements.shape[0]
    total = n * k
    x0 = phi.prepare(group, x)
    plan_in = phi.plan(group, elements, x0.shape, x0.dtype)

    def moved(start: int, stop: int) -> tuple[Tensor, Tensor]:
        idx = torch.arange(start, stop, device=x.device)  # element-major pairs: element idx // n, sample idx % n
        ks = idx // n
        return phi.apply(group, plan_in, ks, x0.index_select(0, idx % n)), ks

    key = ("consensus", tuple(x.shape[1:]), x.dtype, x.device.type, x.device.index, repr(group), repr(phi))
    chunk = resolve_chunk_size(model, max_batch, key, lambda size: model(moved(0, size)[0]), total, x.device)
    outs = []
    for start in range(0, total, chunk):
        xt, _ = moved(start, min(start + chunk, total))
        out = symmetry.select_output(model(xt))
        if start == 0:
            _check_output(out, symmetry)
        outs.append(phi_out.prepare(group, out.to(_F64)))
    ys = outs[0] if len(outs) == 1 else torch.cat(outs)
    if ys.shape[0] != total:
        raise RuntimeError(f"The model returned {ys.shape[0]} outputs for {total} inputs; it must keep the batch.")
    return ys, out.dtype


def consensus(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    elements: Union[Tensor, Sequence],
    *,
    max_batch: Union[int, str] = "auto",
) -> Tensor:
    """The consensus ``c(x) = ⟨φ̃(g⁻¹, h(φ(g, x)))⟩_g`` of ``model`` over ``elements`` for every sample of ``x``.

    Class scores (an invariant output ``[N, C]``, ``C ≥ 2``) are averaged as softmax probabilities, and the result is
    those probabilities (each row sums to 1); any other output (vectors, boxes, fields, scalars) is the plain mean of
    the back-transformed outputs, in the output action's representation (after its ``prepare``, e.g. a field's mask).

    Args:
        model: an ``nn.Module`` or callable mapping a batch to a tensor (or to an output ``output_key`` selects from).
        x: the samples ``[N, ...]``, on any device (moved to the model's).
        symmetry: the symmetry whose input and output actions move the samples and bring the outputs back.
        elements: ``[K, p]`` group elements (``[K]`` for one-parameter groups) to average over.
        max_batch: ``"auto"`` (tuned once per model and input shape) or the most (element × sample) pairs per forward.

    Returns:
        ``[N, ...]`` consensus, shaped like the model's output, in its dtype, on the model's device.

    Raises:
        TypeError, ValueError, RuntimeError: bad arguments, inputs or outputs, as for
            :func:`~eqmonitor.functional.orbit_errors`.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4))
        >>> sym = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant")
        >>> x = torch.randn(4, 1, 28, 28)
        >>> c = eqm.functional.consensus(model, x, sym, sym.group.all_elements())
        >>> c.shape, bool(torch.allclose(c.sum(1), torch.ones(4)))
        (torch.Size([4, 10]), True)
        >>> bool(torch.allclose(c, model.eval()(x).softmax(1), atol=1e-6))
        True
    """
    x, elements = _validated(model, x, symmetry, elements, max_batch)
    with isolated(model):
        ys, dtype = _orbit_outputs(model, x, symmetry, elements, max_batch)
    return _consensus_of(ys, symmetry, elements, x.shape[0]).to(dtype)


def consensus_errors(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    elements: Union[Tensor, Sequence],
    *,
    max_batch: Union[int, str] = "auto",
) -> Tensor:
    """``[N, K]`` errors ``d(h(φ(g_k, x_n)), φ̃(g_k, c(x_n)))`` of the model's outputs at each element against the
    consensus moved forward to that element, with the symmetry's distance (float64, on the model's device).

    Class scores are compared as log-probabilities, ``log_softmax(h)`` against ``log c``, so that ``kl`` and ``flip``
    mean what they do for logits and ``relative`` is not thrown off by the logits' free offset. These are NERO's
    errors when labels are absent; the ``confidence`` error needs labels and is refused. Arguments as
    :func:`consensus`; the ``K·N`` outputs are held in float64, so bound ``N·K`` by memory.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4))
        >>> sym = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error="kl")
        >>> e = eqm.functional.consensus_errors(model, torch.randn(4, 1, 28, 28), sym, sym.group.all_elements())
        >>> e.shape, bool(e.max() < 1e-6)
        (torch.Size([4, 4]), True)
    """
    _refuse_labels(symmetry)
    x, elements = _validated(model, x, symmetry, elements, max_batch)
    with isolated(model):
        ys, _ = _orbit_outputs(model, x, symmetry, elements, max_batch)
    n, k = x.shape[0], elements.shape[0]
    actual, expected = _against_consensus(ys, _consensus_of(ys, symmetry, elements, n), symmetry, elements)
    errors = symmetry.distance(actual, expected, None)
    return errors.to(_F64).reshape(k, n).transpose(0, 1).contiguous()


def _consensus_result(orbit: OrbitErrors, ys: Tensor, symmetry: Symmetry) -> OrbitErrors:
    """``orbit``'s pairs against the consensus of their outputs ``ys [K·N, ...]`` (element-major): every per-pair
    table recomputed, the rest (elements, exactness, floors, top-1, probabilities) kept."""
    n, k, elements = orbit.n_samples, orbit.n_elements, orbit.elements
    actual, expected = _against_consensus(ys, _consensus_of(ys, symmetry, elements, n), symmetry, elements)
    pair = scaled_pair(actual, expected)
    rel, ab, dist = relative_of_scaled(pair), max_abs_of_scaled(pair), symmetry.distance
    err = rel if dist is relative else (ab if dist is max_abs else dist(actual, expected, None))
    nonfinite = (~pair.finite).reshape(k, n).transpose(0, 1).contiguous()

    def table(t: Tensor) -> Tensor:
        return t.to(_F64).reshape(k, n).transpose(0, 1).contiguous().masked_fill(nonfinite, float("nan"))

    flips = None if orbit.flips is None else table(actual.argmax(1) != expected.argmax(1))
    return replace(orbit, errors=table(err), abs_errors=table(ab), rel_errors=table(rel), nonfinite=nonfinite,
                   flips=flips, confidence=None, confidence_ref=None, reference="consensus")  # fmt: skip


def orbit_errors_with_consensus(
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
) -> tuple[OrbitErrors, OrbitErrors]:
    """The orbit errors against both references, from one pass of the model over the orbit.

    The first result is :func:`~eqmonitor.functional.orbit_errors` (``reference="identity"``): each output
    against the model's own output at the identity moved forward, ``d(h(φ(g_k, x_n)), φ̃(g_k, h(x_n)))``. The second
    (``reference="consensus"``) compares the same outputs with the consensus moved forward,
    ``d(h(φ(g_k, x_n)), φ̃(g_k, c(x_n)))``, as :func:`consensus_errors` does: every per-pair table (``errors``,
    ``rel_errors``, ``abs_errors``, ``nonfinite``; ``flips`` as top-1 against the consensus' top-1) is against
    the consensus, ``confidence`` is ``None``. The outputs the probe computes anyway are kept (``K·N`` of them in
    float64: bound ``N·K`` by memory) instead of running the model a second time. Arguments as
    :func:`~eqmonitor.functional.orbit_errors`; errors that need labels (``confidence``) are refused.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4))
        >>> sym = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error="kl")
        >>> own, cons = eqm.functional.orbit_errors_with_consensus(model, torch.randn(4, 1, 28, 28), sym, [0, 1, 2])
        >>> cons.reference, cons.errors.shape, bool(cons.max() < 1e-6)
        ('consensus', torch.Size([4, 3]), True)
    """
    _refuse_labels(symmetry)
    x, elements, labels = _orbit_inputs(model, x, symmetry, elements, labels, max_batch, chunking, validate_args)
    total = x.shape[0] * elements.shape[0]
    kept: list[Tensor] = []

    def sink(pos: Tensor, actual: Tensor) -> None:
        if not kept:
            kept.append(actual.new_full((total, *actual.shape[1:]), float("nan")))
        kept[0][pos] = actual

    orbit = _orbit_errors_run(model, x, symmetry, elements, labels, max_batch, chunking, floor_samples, progress,
                              keep_probs, sink)  # fmt: skip
    return orbit, _consensus_result(orbit, kept[0], symmetry)
