"""Chunk sizes for pushing many (sample × element) pairs through a model.

One huge batch is not the fast path on a CPU (measured on a 2-core CPU: 2,304 rotated 28×28 inputs took 278 ms as
one batch and 79 ms in chunks of 128), and on a GPU larger is faster until memory runs out. ``max_batch="auto"``
times the model on a few candidate sizes the first time a (model, input shape, dtype, device) is seen and caches the
fastest.

``chunking`` says which pairs may share a forward. ``"mixed"`` (the default, and the fastest) fills each forward with
consecutive pairs, so one batch holds many samples and many elements. That is only sound for a model whose output
for one sample does not depend on the rest of its batch. For a model that is coupled across the batch (a graph built
over the whole batch, batch statistics, attention across samples), ``"per_element"`` moves fixed blocks of samples
by one element per forward, the same blocks as the reference forward (a user's batch, moved as a whole, as e3nn's
and escnn's own checks do), and ``"per_sample"`` runs each (sample, element) pair alone, so no forward ever holds
two inputs.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable, Hashable, Union

import torch

_CANDIDATES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_MAX_SECONDS = 1.0  # ... or once one forward takes this long: larger chunks cannot pay back the tuning
CHUNKINGS = ("mixed", "per_element", "per_sample")
_cache: "weakref.WeakKeyDictionary[object, dict[Hashable, tuple[int, int]]]" = weakref.WeakKeyDictionary()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step: Callable[[int], object], size: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step(size)
    _sync(device)
    return time.perf_counter() - start


def tune_chunk_size(step: Callable[[int], object], total: int, device: torch.device) -> int:
    """Fastest chunk size among ``_CANDIDATES`` (up to ``total``), timing one whole ``step(n)`` (transform and
    forward of ``n`` pairs) per sample: best of two runs per size; the sweep goes on past one slower size and stops
    at the second in a row; a larger size wins a near-tie (within 3%), as it needs fewer launches.
    """
    sizes = sorted({s for s in _CANDIDATES if s < total} | {min(total, _CANDIDATES[-1])})
    best, best_rate, slower = sizes[0], float("inf"), 0
    _time(step, sizes[0], device)  # warm-up: allocator, kernels, caches
    for size in sizes:
        try:
            seconds = min(_time(step, size, device) for _ in range(2))
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
            break
        rate = seconds / size
        if rate <= best_rate * 1.03:
            best, best_rate, slower = size, min(rate, best_rate), 0
        else:
            slower += 1
        if slower >= 2 or seconds > _MAX_SECONDS or size >= 8 * best:
            break
    return best


def resolve_chunk_size(
    model: Callable,
    max_batch: Union[int, str],
    key: Hashable,
    step: Callable[[int], object],
    total: int,
    device: torch.device,
) -> int:
    """The chunk size for ``total`` pairs: ``max_batch`` itself if an integer, else the cached or tuned fastest
    (``step(n)`` runs the work for ``n`` pairs)."""
    if max_batch != "auto":
        return max(1, min(int(max_batch), total))
    try:
        per_model = _cache.setdefault(model, {})
    except TypeError:  # not weak-referenceable: tune every time
        per_model = {}
    size, tuned_total = per_model.get(key, (0, 0))
    if size == 0 or (size >= tuned_total and total > tuned_total):  # unknown, or capped by a smaller probe
        size, tuned_total = tune_chunk_size(step, total, device), total
        per_model[key] = (size, tuned_total)
    return min(size, total)


def check_chunking(chunking: object) -> None:
    """Raise a ``ValueError`` unless ``chunking`` is one of :data:`CHUNKINGS`."""
    if not (isinstance(chunking, str) and chunking in CHUNKINGS):
        raise ValueError(f"Expected `chunking` to be one of {CHUNKINGS}, but got {chunking!r}.")


def sample_block(chunk: int, n: int, chunking: str) -> int:
    """How many samples share a forward of the reference ``h(x)``: ``chunk`` (at most ``n``) for ``"mixed"`` and
    ``"per_element"`` (there, the block of samples that each element moves as one batch); 1 for ``"per_sample"``."""
    return 1 if chunking == "per_sample" else max(1, min(chunk, n))


def pair_ranges(n: int, k: int, chunk: int, chunking: str) -> list[tuple[int, int]]:
    """``[start, stop)`` of each batch of pairs over the ``n·k`` element-major pairs (pair ``i`` is sample ``i % n``
    at element ``i // n``): transformed, pushed through the model and compared together.

    ``"mixed"`` and ``"per_sample"`` cut consecutive runs of ``chunk`` pairs (with ``"per_sample"`` the model then
    sees each row of a run alone); ``"per_element"`` never crosses an element and cuts each element's ``n`` samples
    into the blocks of :func:`sample_block`, the same blocks as the reference forward.

    Example:
        >>> pair_ranges(3, 2, 4, "mixed"), pair_ranges(3, 2, 2, "per_element")
        ([(0, 4), (4, 6)], [(0, 2), (2, 3), (3, 5), (5, 6)])
    """
    if chunking != "per_element":
        return [(start, min(start + chunk, n * k)) for start in range(0, n * k, chunk)]
    block = sample_block(chunk, n, chunking)
    return [(e * n + r, e * n + min(r + block, n)) for e in range(k) for r in range(0, n, block)]


def clear_cache() -> None:
    """Forget every tuned chunk size."""
    _cache.clear()
