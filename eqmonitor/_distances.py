"""Distances between an actual output ``h(g·x)`` and the expected one ``g·h(x)``, one value per sample.

Every distance takes ``actual, expected: [B, ...]`` (float64) and optional ``labels [B]`` and returns ``[B]``,
reduced over all output components.

- ``relative`` (default): ``‖a − b‖₂ / (‖b‖₂ + ε)``
- ``max_abs``: ``max |a − b|`` (e3nn's ``equivariance_error``)
- ``rms``: ``sqrt(mean((a − b)²))``
- ``symmetric_relative``: ``‖a − b‖ / (‖a‖ + ‖b‖ + ε)``, in ``[0, 1]`` (EMLP's)
- ``kl``: ``KL(softmax(b) ‖ softmax(a))`` over the class dimension 1 (logits), averaged over any other dimensions
- ``flip``: top-1 disagreement over dimension 1, in ``{0, 1}`` (a fraction for dense outputs)
- ``confidence``: ``|p_y(a) − p_y(b)|``, the change in the softmax confidence of the true class ``y`` (NERO; labels)

The norm-based distances (``relative``, ``max_abs``, ``rms``, ``symmetric_relative``) divide both operands by a
per-sample power of two ``s = 2^e`` near ``max(|a|, |b|)`` before subtracting and taking norms, then scale back
(``relative`` and ``symmetric_relative`` are ratios: ``ε`` becomes ``ε / s``). Scaling by a power of two is exact, so
on ordinary values the results are bit-for-bit those of the plain formulas, while finite outputs near the dtype's
largest values (``‖a − b‖₂`` of float64 outputs near ``1e300`` overflows) give finite errors. A sample whose ``a`` or
``b`` holds NaN/Inf gives NaN.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

__all__ = ["DISTANCES", "Distance", "resolve_distance"]  # the public path is eqmonitor.functional.distances

EPS = 1e-12

Distance = Callable[..., Tensor]


class ScaledPair(NamedTuple):
    """Both operands ``[B, D]`` divided by the per-sample power of two ``scale [B]`` (its inverse: ``inv``)."""

    a: Tensor
    b: Tensor
    scale: Tensor
    inv: Tensor
    finite: Tensor  # bool [B]: every component of a and b is finite


def _pow2(k: Tensor, dtype: torch.dtype) -> Tensor:
    """Exactly ``2**k`` for int64 ``k`` in the normal exponent range (built from the float64 exponent bits)."""
    return ((k + 1023) << 52).view(torch.float64).to(dtype)


def scaled_pair(actual: Tensor, expected: Tensor) -> ScaledPair:
    """``actual``, ``expected`` flattened to ``[B, D]`` and divided by ``2^e``, ``e`` the exponent of the sample's
    largest magnitude over both (clamped so that ``2^±e`` stay normal; 0 for non-finite or all-zero samples)."""
    a, b = actual.flatten(1), expected.flatten(1)
    if a.shape[1] == 0:
        one = a.new_ones(a.shape[0])
        return ScaledPair(a, b, one, one, torch.ones_like(one, dtype=torch.bool))
    peak = torch.maximum(a.abs().amax(1), b.abs().amax(1))  # NaN or Inf where either operand is
    finite = torch.isfinite(peak)
    limit = int(-math.log2(torch.finfo(a.dtype).tiny))  # 2^limit and 2^-limit are normal numbers
    e = torch.where(finite, torch.frexp(peak).exponent.long(), 0).clamp(-limit, limit)
    inv = _pow2(-e, a.dtype)
    return ScaledPair(a * inv.unsqueeze(1), b * inv.unsqueeze(1), _pow2(e, a.dtype), inv, finite)


def _nan_unless(values: Tensor, finite: Tensor) -> Tensor:
    return values.masked_fill(~finite, float("nan"))


def relative_of_scaled(p: ScaledPair) -> Tensor:
    """:func:`relative` of a pair already scaled (one scaling can serve several distances)."""
    return _nan_unless((p.a - p.b).norm(dim=1) / (p.b.norm(dim=1) + EPS * p.inv), p.finite)


def max_abs_of_scaled(p: ScaledPair) -> Tensor:
    """:func:`max_abs` of a pair already scaled."""
    return _nan_unless((p.a - p.b).abs().amax(dim=1) * p.scale, p.finite)


def relative(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    """``‖a − b‖₂ / (‖b‖₂ + ε)`` per sample, computed scaled (see the module docstring).

    Example:
        >>> a = torch.tensor([[3e300, 4e300]], dtype=torch.float64)
        >>> relative(a, torch.zeros_like(a)).item() > 1e300, relative(2 * a, a).item()
        (True, 1.0)
    """
    return relative_of_scaled(scaled_pair(actual, expected))


def max_abs(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    """``max |a − b|`` per sample, computed scaled (see the module docstring)."""
    return max_abs_of_scaled(scaled_pair(actual, expected))


def rms(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    """``sqrt(mean((a − b)²))`` per sample, computed scaled (see the module docstring)."""
    p = scaled_pair(actual, expected)
    return _nan_unless((p.a - p.b).pow(2).mean(dim=1).sqrt() * p.scale, p.finite)


def symmetric_relative(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    """``‖a − b‖ / (‖a‖ + ‖b‖ + ε)`` per sample, in ``[0, 1]``, computed scaled (see the module docstring)."""
    p = scaled_pair(actual, expected)
    return _nan_unless((p.a - p.b).norm(dim=1) / (p.a.norm(dim=1) + p.b.norm(dim=1) + EPS * p.inv), p.finite)


def kl(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    log_p, log_q = expected.log_softmax(1), actual.log_softmax(1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(1)
    return per_position.reshape(per_position.shape[0], -1).mean(1)


def flip(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    return (actual.argmax(1) != expected.argmax(1)).to(actual.dtype).reshape(actual.shape[0], -1).mean(1)


def confidence(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    if labels is None:
        raise ValueError("The `confidence` error needs `labels` (the true class of each sample).")
    idx = labels.reshape(-1, 1).long()
    return (actual.softmax(1).gather(1, idx) - expected.softmax(1).gather(1, idx)).abs()[:, 0]


DISTANCES: dict[str, Distance] = {
    "relative": relative,
    "max_abs": max_abs,
    "rms": rms,
    "symmetric_relative": symmetric_relative,
    "kl": kl,
    "flip": flip,
    "confidence": confidence,
}
#: distances that compare class scores over dimension 1
CLASSIFICATION_DISTANCES = ("kl", "flip", "confidence")
#: distances bounded above by 1 (their plots get an upper bound)
BOUNDED_DISTANCES = ("symmetric_relative", "flip", "confidence")


def resolve_distance(error: Union[str, Distance]) -> tuple[str, Distance]:
    """``(name, fn)`` for a distance name or a user callable ``fn(actual, expected, labels=None) -> [B]``."""
    if callable(error):
        return getattr(error, "__name__", "custom"), error
    if isinstance(error, str) and error in DISTANCES:
        return error, DISTANCES[error]
    raise ValueError(f"Expected `error` to be one of {sorted(DISTANCES)} or a callable, but got {error!r}.")
