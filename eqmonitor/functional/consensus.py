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

from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from eqmonitor.functional._chunking import resolve_chunk_size
from eqmonitor.functional._isolation import isolated
from eqmonitor.functional._validation import check_probe_args, check_probe_inputs
from eqmonitor.functional.orbit import _check_output
from eqmonitor.symmetry import Symmetry

__all__ = ["consensus", "consensus_errors"]

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


def _orbit_outputs(
    model: Callable, x: Tensor, symmetry: Symmetry, elements: Tensor, max_batch: Union[int, str]
) -> tuple[Tensor, Tensor, torch.dtype]:
    """``(outputs [K, N, ...], consensus [N, ...], output dtype)``: the prepared outputs ``h(φ(g_k, x_n))`` in
    float64 and their consensus; runs the model on all ``K·N`` (element × sample) pairs in chunks."""
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
    dtype = out.dtype
    ys = outs[0] if len(outs) == 1 else torch.cat(outs)
    if ys.shape[0] != total:
        raise RuntimeError(f"The model returned {ys.shape[0]} outputs for {total} inputs; it must keep the batch.")
    if _is_classifier(symmetry, ys):
        return ys.reshape(k, n, *ys.shape[1:]), ys.softmax(1).reshape(k, n, -1).mean(0), dtype
    if phi_out.is_identity:
        back = ys
    else:
        ks = torch.arange(k, device=x.device).repeat_interleave(n)
        plan_back = phi_out.plan(group, group.inverse(elements), ys.shape, _F64)
        back = phi_out.apply(group, plan_back, ks, ys)
    return ys.reshape(k, n, *ys.shape[1:]), back.reshape(k, n, *ys.shape[1:]).mean(0), dtype


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
        _, c, dtype = _orbit_outputs(model, x, symmetry, elements, max_batch)
    return c.to(dtype)


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
    if isinstance(symmetry, Symmetry) and symmetry.needs_labels:
        raise ValueError(
            f"The `{symmetry.error_name}` error needs labels, and the consensus stands in for labels that are absent;"
            " use an error such as 'kl', 'flip' or 'relative' for consensus errors."
        )
    x, elements = _validated(model, x, symmetry, elements, max_batch)
    group, phi_out = symmetry.group, symmetry.output_action
    with isolated(model):
        ys, c, _ = _orbit_outputs(model, x, symmetry, elements, max_batch)
    k, n = ys.shape[:2]
    actual = ys.reshape(k * n, *ys.shape[2:])
    if _is_classifier(symmetry, actual):
        actual, expected = actual.log_softmax(1), c.clamp_min(torch.finfo(_F64).tiny).log().repeat(k, 1)
    else:
        expected = c.repeat(k, *([1] * (c.ndim - 1)))
        if not phi_out.is_identity:
            ks = torch.arange(k, device=x.device).repeat_interleave(n)
            expected = phi_out.apply(group, phi_out.plan(group, elements, expected.shape, _F64), ks, expected)
    errors = symmetry.distance(actual, expected, None)
    return errors.to(_F64).reshape(k, n).transpose(0, 1).contiguous()
