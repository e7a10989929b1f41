"""Chunk sizes for pushing many (sample × element) pairs through a model.

One huge batch is not the fast path on a CPU (DESIGN §8: 2,304 rotated 28×28 inputs took 278 ms as one batch and
79 ms in chunks of 128), and on a GPU larger is faster until memory runs out. ``max_batch="auto"`` times the model on
a few candidate sizes the first time a (model, input shape, dtype, device) is seen and caches the fastest.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable, Hashable, Union

import torch
from torch import Tensor

_CANDIDATES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_SLOWER = 1.05  # stop the sweep once a size is this much slower per sample than the best so far
_MAX_SECONDS = 1.0  # ... or once one forward takes this long: larger chunks cannot pay back the tuning
_cache: "weakref.WeakKeyDictionary[object, dict[Hashable, tuple[int, int]]]" = weakref.WeakKeyDictionary()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(model: Callable, batch: Tensor) -> float:
    _sync(batch.device)
    start = time.perf_counter()
    model(batch)
    _sync(batch.device)
    return time.perf_counter() - start


def tune_chunk_size(model: Callable, make_batch: Callable[[int], Tensor], total: int) -> int:
    """Fastest chunk size among ``_CANDIDATES`` (up to ``total``), timing ``model(make_batch(n))`` per sample."""
    sizes = [s for s in _CANDIDATES if s < total] + [min(total, _CANDIDATES[-1])]
    sizes = sorted(set(sizes))
    best, best_rate = sizes[0], float("inf")
    _time_forward(model, make_batch(sizes[0]))  # warm-up: allocator, kernels, caches
    for size in sizes:
        try:
            batch = make_batch(size)
            seconds = min(_time_forward(model, batch) for _ in range(2))
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
            break
        rate = seconds / size
        if rate < best_rate:
            best, best_rate = size, rate
        elif rate > _SLOWER * best_rate:
            break
        if seconds > _MAX_SECONDS:
            break
    return best


def resolve_chunk_size(
    model: Callable, max_batch: Union[int, str], key: Hashable, make_batch: Callable[[int], Tensor], total: int
) -> int:
    """The chunk size for ``total`` pairs: ``max_batch`` itself if an integer, else the cached or tuned fastest."""
    if max_batch != "auto":
        return max(1, min(int(max_batch), total))
    try:
        per_model = _cache.setdefault(model, {})
    except TypeError:  # not weak-referenceable: tune every time
        per_model = {}
    size, tuned_total = per_model.get(key, (0, 0))
    if size == 0 or (size >= tuned_total and total > tuned_total):  # unknown, or capped by a smaller probe
        size, tuned_total = tune_chunk_size(model, make_batch, total), total
        per_model[key] = (size, tuned_total)
    return min(size, total)


def clear_cache() -> None:
    """Forget every tuned chunk size."""
    _cache.clear()
