"""Probe set: the fixed inputs every check measures, drawn once from validation data with a seeded generator.

Why not the train loader: iterating it would advance its sampler and the global RNG (a ``DataLoader`` iterator draws
its base seed from the global generator unless it has its own), so training with the monitor would differ from
training without it. Map-style datasets are indexed directly (indices from a private ``torch.Generator``, collated
with the loader's ``collate_fn``); an iterable dataset is read from its start. Either way the draw runs inside
:func:`isolated_rng`, so a dataset whose ``__getitem__`` draws random augmentations from the global streams (torch
CPU and CUDA, Python's ``random``, NumPy's legacy global generator) leaves them exactly as they were.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "ProbeSet",
    "draw_indices",
    "isolated_rng",
    "probe_for_fit",
    "probe_from_data",
    "probe_from_loader",
    "select_input",
]

Selector = Union[None, int, str]
_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pos", "data")
_LABEL_KEYS = ("y", "label", "labels", "target", "targets")


@dataclass
class ProbeSet:
    """Inputs ``x [n, ...]`` and optional ``labels [n]`` on one device, plus the dataset indices they came from."""

    x: Tensor
    labels: Optional[Tensor]
    indices: Optional[list[int]]

    def to(self, device: torch.device) -> "ProbeSet":
        labels = None if self.labels is None else self.labels.to(device)
        return ProbeSet(self.x.to(device), labels, self.indices)

    def __len__(self) -> int:
        return self.x.shape[0]

    def head(self, n: int) -> "ProbeSet":
        """The first ``n`` samples (ranks trim their shares to the smallest one, so all run the same forwards)."""
        labels = None if self.labels is None else self.labels[:n]
        return ProbeSet(self.x[:n], labels, None if self.indices is None else self.indices[:n])


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the block with every global random stream saved and restored: torch's CPU generator and each initialised
    CUDA device's, Python's ``random`` and NumPy's global generator (what dataset augmentations draw from)."""
    py_state = random.getstate()
    try:
        import numpy as np

        np_state = np.random.get_state()
    except ImportError:  # pragma: no cover - numpy is a dependency
        np, np_state = None, None
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        if np is not None:
            np.random.set_state(np_state)


def _pick(batch: Any, selector: Selector, keys: Sequence[str], what: str, required: bool) -> Optional[Tensor]:
    if selector is not None:
        try:
            value = batch[selector]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(
                f"Cannot select the {what} with {selector!r} from a batch of type {type(batch).__name__}."
            ) from err
        if not isinstance(value, Tensor):
            raise TypeError(f"The {what} selected with {selector!r} is a {type(value).__name__}, not a tensor.")
        return value
    if isinstance(batch, Tensor):
        return batch if what == "input" else None
    if isinstance(batch, (tuple, list)) and batch:
        pos = 0 if what == "input" else 1
        value = batch[pos] if len(batch) > pos else None
        if isinstance(value, Tensor):
            return value
    if isinstance(batch, dict):
        for key in keys:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    if required:
        raise TypeError(
            f"Cannot find the model input in a batch of type {type(batch).__name__}"
            + (f" with keys {sorted(map(str, batch))}" if isinstance(batch, dict) else "")
            + ": pass `input_key=` (an index or a dict key) to the monitor."
        )
    return None


def select_input(batch: Any, input_key: Selector = None, label_key: Selector = None) -> tuple[Tensor, Optional[Tensor]]:
    """``(x, labels)`` from one collated batch: a tensor, ``(x, y, ...)``, or a dict; selectors override the guess.

    >>> select_input((torch.zeros(2, 3), torch.tensor([0, 1])))[1]
    tensor([0, 1])
    """
    x = _pick(batch, input_key, _INPUT_KEYS, "input", required=True)
    labels = _pick(batch, label_key, _LABEL_KEYS, "labels", required=False)
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != x.shape[0] or labels.is_floating_point()):
        labels = None  # not class labels (e.g. regression targets): NERO confidence curves need integer classes
    return x, labels


def draw_indices(size: int, n: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's share of ``n`` indices drawn without replacement from ``range(size)`` by ``torch.Generator(seed)``.

    Every rank gets the same number of indices (``ceil(n / world_size)``; a short last share is padded by
    wrapping around), so every rank runs the same number of forwards.

    >>> draw_indices(10, 4, seed=0) == draw_indices(10, 4, seed=0)
    True
    """
    if size <= 0:
        raise ValueError("The validation dataset is empty: the monitor needs samples to probe.")
    n = min(n, size)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(size, generator=gen)[:n].tolist()
    per_rank = -(-n // world_size)
    padded = [chosen[i % n] for i in range(per_rank * world_size)]
    return padded[rank * per_rank : (rank + 1) * per_rank]


def collate_indices(dataset: Any, indices: list[int], collate_fn: Any) -> Any:
    """Collate ``dataset[i]`` for ``i`` in ``indices`` with the loader's ``collate_fn``."""
    if collate_fn is None:
        from torch.utils.data import default_collate

        collate_fn = default_collate
    return collate_fn([dataset[i] for i in indices])


def probe_from_loader(
    loader: Any,
    n: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    input_key: Selector = None,
    label_key: Selector = None,
) -> ProbeSet:
    """Draw this rank's probe set from a ``DataLoader`` (see the module docstring for how)."""
    with isolated_rng():
        return _probe_from_loader(loader, n, seed, rank, world_size, input_key, label_key)


def _probe_from_loader(
    loader: Any, n: int, seed: int, rank: int, world_size: int, input_key: Selector, label_key: Selector
) -> ProbeSet:
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        try:
            size = len(dataset)
        except TypeError:
            size = None
        if size is not None:
            idx = draw_indices(size, n, seed, rank, world_size)
            x, labels = select_input(
                collate_indices(dataset, idx, getattr(loader, "collate_fn", None)), input_key, label_key
            )
            return ProbeSet(x.detach().clone(), None if labels is None else labels.detach().clone(), idx)
    xs, ys = [], []
    for batch in loader:
        x, labels = select_input(batch, input_key, label_key)
        xs.append(x.detach().clone())
        ys.append(labels)
        if sum(len(t) for t in xs) >= n * world_size:
            break
    if not xs:
        raise ValueError("The validation loader yielded no batches: the monitor needs samples to probe.")
    x = torch.cat(xs)
    labels = torch.cat(ys) if all(y is not None for y in ys) else None
    idx = draw_indices(len(x), n, seed, rank, world_size)
    sel = torch.tensor(idx)
    return ProbeSet(x[sel], None if labels is None else labels[sel], None)


def probe_from_data(
    data: Any,
    n: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    input_key: Selector = None,
    label_key: Selector = None,
) -> ProbeSet:
    """Probe set from what the user passed as ``probe_data``: a tensor, an ``(x, y)`` pair, a dataset or a loader."""
    with isolated_rng():
        return _probe_from_data(data, n, seed, rank, world_size, input_key, label_key)


def _probe_from_data(
    data: Any, n: int, seed: int, rank: int, world_size: int, input_key: Selector, label_key: Selector
) -> ProbeSet:
    if isinstance(data, Tensor) or (isinstance(data, (tuple, list, dict)) and _is_batch(data)):
        x, labels = select_input(data, input_key, label_key)
        idx = draw_indices(len(x), n, seed, rank, world_size)
        sel = torch.tensor(idx, device=x.device)
        return ProbeSet(x[sel].detach().clone(), None if labels is None else labels[sel].detach().clone(), idx)
    if hasattr(data, "dataset"):
        return _probe_from_loader(data, n, seed, rank, world_size, input_key, label_key)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        idx = draw_indices(len(data), n, seed, rank, world_size)
        x, labels = select_input(collate_indices(data, idx, None), input_key, label_key)
        return ProbeSet(x.detach().clone(), None if labels is None else labels.detach().clone(), idx)
    raise TypeError(
        "`probe_data` must be a tensor, an (x, y) pair, a dict batch, a Dataset or a DataLoader; "
        f"got {type(data).__name__}."
    )


def _is_batch(batch: Any) -> bool:
    """Whether ``batch`` is one collated batch (its first tensor is the input), rather than a dataset."""
    try:
        select_input(batch)
    except (TypeError, ValueError):
        return False
    return True


def probe_for_fit(
    trainer: Any,
    pl_module: Any,
    n: int,
    seed: int,
    probe_data: Any = None,
    input_key: Selector = None,
    label_key: Selector = None,
) -> ProbeSet:
    """This rank's probe set for a fit: from ``probe_data`` or the fit's (first) validation loader, an equal share
    on every rank (the smallest rank's, if rank-local validation sets differ: every rank must run the same forwards
    and gather tensors of one shape), on the module's device, cast as Lightning casts batches (the precision plugin's
    ``convert_input``: ``"64-true"``, ``"bf16-true"``, ...) and then to the parameters' dtype.

    Every rank must call it (under DDP the share is agreed with one ``all_gather``).
    """
    rank, world = trainer.global_rank, trainer.world_size
    args = (n, seed, rank, world, input_key, label_key)
    if probe_data is not None:
        probe = probe_from_data(probe_data, *args)
    else:
        source = trainer.fit_loop.epoch_loop.val_loop._data_source
        if not source.is_defined():
            raise ValueError(
                "EquivarianceMonitor draws its probe set from the validation data, and this fit has none: pass "
                "`val_dataloaders` / define `val_dataloader()`, or give the monitor `probe_data=`."
            )
        loaders = source.dataloader()
        if isinstance(loaders, dict):
            loaders = next(iter(loaders.values()))
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0]
        probe = probe_from_loader(loaders, *args)
    if world > 1:
        counts = trainer.strategy.all_gather(torch.tensor(len(probe), device=pl_module.device))
        share = int(counts.min())
        if share == 0:
            raise ValueError(
                f"EquivarianceMonitor: a rank's validation data is empty (probe shares per rank: "
                f"{counts.tolist()}); give every rank validation samples, or pass `probe_data=`."
            )
        if share < len(probe):
            warnings.warn(
                f"EquivarianceMonitor: the ranks' validation sets give probe shares {counts.tolist()}; every rank "
                f"probes {share} samples (the smallest share), {share * world} in all.",
                stacklevel=2,
            )
            probe = probe.head(share)
    probe = probe.to(pl_module.device)
    x = trainer.precision_plugin.convert_input(probe.x)
    dtype = next((p.dtype for p in pl_module.parameters() if p.is_floating_point()), None)
    if x.is_floating_point() and dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    return ProbeSet(x, probe.labels, probe.indices)
