"""A run's identity for comparisons: its probe set (inputs, labels, fingerprint), group elements and metadata.

Written once per run next to the records (see :mod:`eqmonitor.records`):

- ``probe.npz``: ``x`` (the probe inputs, at most :data:`MAX_PROBE_BYTES`: the first samples that fit), ``labels``
  and ``indices`` when known, and ``elements.<symmetry>`` (``[K, p]``) for each symmetry;
- ``run.json`` gains ``"meta"``: ``tag`` (the user's name for the run's strategy), ``model_class``, ``seed`` (the
  global seed of ``seed_everything``, if any), ``probe_seed``, ``hparams``, ``probe`` (``fingerprint``,
  ``n_samples``, ``stored_samples``, ``input_shape``, ``dtype``, ``has_labels``) and ``symmetries`` (name →
  ``group``, ``group_repr``, ``input``, ``output``, ``error``, ``n_elements``, ``elements_fingerprint``).

The fingerprint is a hash of the whole probe (shape, inputs as float32, labels), so two runs are compared sample by
sample only when they probed the same samples. Folders written before this have neither file; readers return
``None`` for them.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from eqmonitor._records_format import PathLike, _atomic_write, _to_json
from eqmonitor.records_read import _read_run_file, _records_file

__all__ = ["MAX_PROBE_BYTES", "PROBE_FILE", "fingerprint", "read_meta", "read_probe", "write_meta"]

PROBE_FILE = "probe.npz"
MAX_PROBE_BYTES = 32 * 2**20  # inputs kept for the explorer (the fingerprint always covers the whole probe)


def _host(t: Any) -> np.ndarray:
    """A host numpy array of a tensor or array (half and bfloat16 as float32)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    return np.asarray(t)


def fingerprint(*arrays: Optional[Any]) -> str:
    """16 hex digits of SHA-256 over the arrays' shapes and values (floats as float32, integers as int64)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = _host(a)
        a = np.ascontiguousarray(a, dtype=np.float32 if np.issubdtype(a.dtype, np.floating) else np.int64)
        h.update(repr(a.shape).encode() + b";")
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """``value`` as JSON types where it can be (via the records' encoder), its ``repr`` where it cannot."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    try:
        return _to_json(value, [], [])
    except TypeError:
        return repr(value)


def write_meta(
    directory: PathLike,
    *,
    x: Any,
    labels: Optional[Any],
    indices: Optional[list],
    elements: Mapping[str, Any],
    symmetries: Mapping[str, Mapping[str, Any]],
    tag: Optional[str] = None,
    model_class: Optional[str] = None,
    seed: Optional[int] = None,
    probe_seed: Optional[int] = None,
    hparams: Optional[Mapping[str, Any]] = None,
) -> dict:
    """Write ``probe.npz`` and the ``"meta"`` of ``run.json`` (which must exist: a :class:`RecordWriter` made it).

    Returns:
        The metadata written.
    """
    directory = Path(directory)
    x_np = _host(x)
    per = max(1, x_np[:1].nbytes)
    stored = int(min(x_np.shape[0], max(1, MAX_PROBE_BYTES // per)))
    arrays: dict[str, np.ndarray] = {"x": x_np[:stored]}
    if labels is not None:
        arrays["labels"] = _host(labels).astype(np.int64)
    if indices is not None:
        arrays["indices"] = np.asarray(indices, dtype=np.int64)
    for name, el in elements.items():
        arrays[f"elements.{name}"] = _host(el).astype(np.float64)
    meta = {
        "tag": tag,
        "model_class": model_class,
        "seed": seed,
        "probe_seed": probe_seed,
        "hparams": _jsonable(dict(hparams or {})),
        "probe": {
            "fingerprint": fingerprint(x_np, None if labels is None else arrays["labels"]),
            "n_samples": int(x_np.shape[0]),
            "stored_samples": stored,
            "input_shape": list(x_np.shape[1:]),
            "dtype": str(x_np.dtype),
            "has_labels": labels is not None,
        },
        "symmetries": {
            name: {**_jsonable(dict(spec)), "elements_fingerprint": fingerprint(arrays[f"elements.{name}"])}
            for name, spec in symmetries.items()
        },
    }

    def save(fh: Any) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        fh.write(buffer.getvalue())

    _atomic_write(directory / PROBE_FILE, save)
    info = _read_run_file(directory) or {}
    text = json.dumps({**info, "meta": meta}, indent=1, allow_nan=False) + "\n"
    _atomic_write(directory / "run.json", lambda fh: fh.write(text.encode("utf-8")))
    return meta


def _folder(path_or_dir: PathLike) -> Path:
    return _records_file(path_or_dir).parent


def read_meta(path_or_dir: PathLike) -> Optional[dict]:
    """The run's ``"meta"`` (see the module docstring), or ``None`` for a folder written without it."""
    info = _read_run_file(_folder(path_or_dir))
    meta = (info or {}).get("meta")
    return meta if isinstance(meta, dict) else None


def read_probe(path_or_dir: PathLike) -> Optional[dict[str, np.ndarray]]:
    """The arrays of ``probe.npz`` (``x``, ``labels``, ``indices``, ``elements.<symmetry>``), or ``None``."""
    path = _folder(path_or_dir) / PROBE_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}
