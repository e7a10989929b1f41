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
"""

from __future__ import annotations

from typing import Callable, Optional, Union

from torch import Tensor

__all__ = ["DISTANCES", "Distance", "resolve_distance"]

EPS = 1e-12

Distance = Callable[..., Tensor]


def relative(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    return (actual - expected).flatten(1).norm(dim=1) / (expected.flatten(1).norm(dim=1) + EPS)


def max_abs(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    return (actual - expected).flatten(1).abs().amax(dim=1)


def rms(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    return (actual - expected).flatten(1).pow(2).mean(dim=1).sqrt()


def symmetric_relative(actual: Tensor, expected: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    a, b = actual.flatten(1), expected.flatten(1)
    return (a - b).norm(dim=1) / (a.norm(dim=1) + b.norm(dim=1) + EPS)


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
