"""Log readers for the tests: what a W&B offline run and TensorBoard event files hold, read back from disk.

W&B 0.31 (wandb-core, Go) writes an offline run to ``wandb/offline-run-<date>_<time>-<id>/``: ``run-<id>.wandb``, the
transaction log of every record the run produced, plus ``files/`` (``media/images/<key>_<n>_<hash>.png``). The old
Python ``DataStore`` reader is gone, so :func:`iter_wandb_records` decodes the file itself
(``core/pkg/leveldb/record.go`` and ``core/internal/transactionlog`` in wandb/wandb):

- a 7-byte file header ``:W&B`` + magic ``0xBEE1`` (uint16, little-endian) + version ``0`` (uint8). It sits *inside*
  the first 32 KiB block: block boundaries are file offsets ``k · 32768``, so the first block holds the header and
  ``32768 − 7`` bytes of chunks;
- then the LevelDB log format: 32 KiB blocks of chunks that never cross a block boundary; a chunk is a 7-byte header
  (CRC-32 uint32 LE, payload length uint16 LE, type uint8: 1 full, 2 first, 3 middle, 4 last) and its payload; a
  block tail shorter than 7 bytes is zero padding; the last block is not padded;
- the checksum is the plain IEEE CRC-32 (``zlib.crc32``) of the type byte followed by the payload: wandb opens the
  log with ``CRCAlgoIEEE``, not LevelDB's masked CRC-32C;
- each reassembled record is a serialised ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["iter_wandb_payloads", "iter_wandb_records", "read_tensorboard", "read_wandb_offline", "wandb_run_file"]

WANDB_MAGIC = b":W&B"
WANDB_HEADER = struct.Struct("<4sHB")  # ident, magic 0xBEE1, version
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

PathLike = Union[str, Path]


def wandb_run_file(run_dir: PathLike) -> Path:
    """The ``run-<id>.wandb`` of an offline run: ``run_dir`` is the run directory, the file, or a directory holding
    exactly one ``offline-run-*`` (``WANDB_DIR`` or its ``wandb/``)."""
    path = Path(run_dir)
    if path.is_file():
        return path
    found = sorted(path.glob("run-*.wandb"))
    if not found:
        found = sorted(path.glob("offline-run-*/run-*.wandb")) + sorted(path.glob("wandb/offline-run-*/run-*.wandb"))
    if len(found) != 1:
        raise FileNotFoundError(f"Expected one offline W&B run (run-*.wandb) under {str(path)!r}, found {found}.")
    return found[0]


def iter_wandb_payloads(path: PathLike) -> Iterator[bytes]:
    """Yield the raw record payloads of a ``.wandb`` file, checking the header and every chunk's CRC.

    Raises:
        ValueError: not a W&B file, a CRC mismatch, or chunks out of order (corruption in the middle).
    """
    data = Path(path).read_bytes()
    ident, magic, _version = WANDB_HEADER.unpack_from(data, 0)
    if ident != WANDB_MAGIC or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r}).")
    pos, pending = WANDB_HEADER.size, None
    while pos < len(data):
        room = BLOCK_SIZE - pos % BLOCK_SIZE
        if room < CHUNK_HEADER.size:  # block tail: zero padding
            pos += room
            continue
        if pos + CHUNK_HEADER.size > len(data):
            warnings.warn(f"{path}: truncated chunk header at byte {pos}; stopping.", RuntimeWarning, stacklevel=2)
            return
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if crc == length == kind == 0:  # a zeroed rest of block (pre-allocated file)
            pos += room
            continue
        start, end = pos + CHUNK_HEADER.size, pos + CHUNK_HEADER.size + length
        if end > len(data):
            warnings.warn(f"{path}: truncated chunk at byte {pos}; stopping.", RuntimeWarning, stacklevel=2)
            return
        if end - (pos - pos % BLOCK_SIZE) > BLOCK_SIZE:
            raise ValueError(f"{path}: chunk at byte {pos} crosses a block boundary.")
        payload = data[start:end]
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise ValueError(f"{path}: CRC mismatch in the chunk at byte {pos}.")
        pos = end
        if kind == FULL and pending is None:
            yield payload
        elif kind == FIRST and pending is None:
            pending = [payload]
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending.append(payload)
            if kind == LAST:
                yield b"".join(pending)
                pending = None
        else:
            raise ValueError(f"{path}: unexpected chunk type {kind} at byte {pos - length - CHUNK_HEADER.size}.")
    if pending is not None:
        warnings.warn(f"{path}: the last record is incomplete; dropping it.", RuntimeWarning, stacklevel=2)


def iter_wandb_records(path: PathLike) -> Iterator[Any]:
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file, in write order."""
    from wandb.proto import wandb_internal_pb2

    for payload in iter_wandb_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _item_key(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _item_value(item: Any) -> Any:
    """A ``HistoryItem``/``SummaryItem`` value: ``value_json`` (wandb's JSON, which spells NaN ``NaN``), else the
    typed ``value`` oneof that newer writers may use."""
    if item.value_json:
        return json.loads(item.value_json)
    which = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if which is None or which == "none":
        return None
    value = getattr(item, which)
    return json.loads(value) if which == "json" else value


def _set(target: dict, key: list[str], value: Any) -> None:
    for part in key[:-1]:
        target = target.setdefault(part, {})
    target[key[-1]] = value


def _delete(target: dict, key: list[str]) -> None:
    for part in key[:-1]:
        target = target.get(part, {})
    target.pop(key[-1], None)


def read_wandb_offline(run_dir: PathLike) -> dict:
    """What an offline W&B run logged.

    Returns:
        ``history``: one dict per ``history`` record (a logged step), key → decoded value; keys are as logged
        (``"trainer/global_step"``), media values are dicts (``{"_type": "image-file", "path": ..., "width": ...}``).
        ``alerts``: dicts with ``title``, ``text``, ``level`` and ``wait_duration`` in seconds (stored in ms).
        ``summary``: the summary after every update and removal. ``images``: the image files under
        ``files/media/images`` (paths relative to the run's ``files/``), sorted. ``run_id``, ``project``, and
        ``record_types``: the record kinds in write order.
    """
    path = wandb_run_file(run_dir)
    out: dict[str, Any] = {
        "history": [],
        "alerts": [],
        "summary": {},
        "record_types": [],
        "run_id": None,
        "project": None,
    }
    for record in iter_wandb_records(path):
        kind = record.WhichOneof("record_type")
        out["record_types"].append(kind)
        if kind == "history":
            row: dict = {}
            for item in record.history.item:
                _set(row, _item_key(item), _item_value(item))
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(out["summary"], _item_key(item), _item_value(item))
            for item in record.summary.remove:
                _delete(out["summary"], _item_key(item))
        elif kind == "alert":
            alert = record.alert
            out["alerts"].append(
                {
                    "title": alert.title,
                    "text": alert.text,
                    "level": alert.level,
                    "wait_duration": alert.wait_duration / 1e3,
                }
            )
        elif kind == "run":
            out["run_id"], out["project"] = record.run.run_id, record.run.project
    files = path.parent / "files"
    out["images"] = sorted(
        p.relative_to(files).as_posix() for p in (files / "media" / "images").rglob("*") if p.is_file()
    )
    return out


def read_tensorboard(log_dir: PathLike) -> dict:
    """Scalars and images of the event files in ``log_dir`` (not its subdirectories), with nothing sampled away.

    Returns:
        ``scalars``: tag → ``[(step, value)]``; ``images``: tag → ``[(step, width, height)]``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    return {
        "scalars": {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags["scalars"]},
        "images": {tag: [(e.step, e.width, e.height) for e in acc.Images(tag)] for tag in tags["images"]},
    }
