"""The test-side log readers, checked against a real offline W&B run and real TensorBoard event files."""

from __future__ import annotations

import math
import os
import socket
import time
import zlib

import numpy as np
import pytest
from logreaders import (
    BLOCK_SIZE,
    CHUNK_HEADER,
    FIRST,
    FULL,
    LAST,
    MIDDLE,
    WANDB_HEADER,
    iter_wandb_payloads,
    read_tensorboard,
    read_wandb_offline,
    wandb_run_file,
)


def _encode(payloads: list[bytes]) -> bytes:
    """A ``.wandb`` file holding ``payloads``, written the way wandb-core's LevelDB writer does (an independent model
    of the format: header inside block 0, zero-padded block tails, chunks split at block boundaries)."""
    out = bytearray(WANDB_HEADER.pack(b":W&B", 0xBEE1, 0))
    for payload in payloads:
        first = True
        while True:
            room = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if room < CHUNK_HEADER.size:
                out += bytes(room)
                continue
            piece, payload = payload[: room - CHUNK_HEADER.size], payload[room - CHUNK_HEADER.size :]
            last = not payload
            kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            out += CHUNK_HEADER.pack(zlib.crc32(bytes([kind]) + piece), len(piece), kind) + piece
            first = False
            if last:
                break
    return bytes(out)


# ------------------------------------------------------------------------------------------ the format alone
def test_decoder_handles_block_tails_and_split_records(tmp_path):
    header = WANDB_HEADER.size
    chunk = CHUNK_HEADER.size
    payloads = [
        b"a" * (BLOCK_SIZE - header - chunk - 3),  # leaves a 3-byte tail: padding
        b"b" * (BLOCK_SIZE - chunk - chunk),  # leaves exactly one chunk header: an empty FIRST chunk, then the rest
        b"c" * 5,
        b"",  # an empty record is a FULL chunk of length 0
        bytes(range(256)) * 300,  # 76,800 bytes: FIRST, MIDDLE, LAST
        b"d" * 10,
    ]
    data = _encode(payloads)
    assert data[BLOCK_SIZE - 3 : BLOCK_SIZE] == bytes(3)
    kinds = {data[i + 6] for i in range(BLOCK_SIZE, len(data), BLOCK_SIZE)}  # chunk types at block starts
    assert {LAST, MIDDLE} <= kinds
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data)
    assert list(iter_wandb_payloads(path)) == payloads


def test_decoder_rejects_corruption_and_tolerates_a_cut_tail(tmp_path):
    data = _encode([b"x" * 100, b"y" * 40_000, b"z" * 100])
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data[:50] + b"!" + data[51:])
    with pytest.raises(ValueError, match="CRC mismatch in the chunk at byte 7"):
        list(iter_wandb_payloads(path))
    path.write_bytes(b"LDB" + data[3:])
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        list(iter_wandb_payloads(path))
    path.write_bytes(data[: len(data) - 50])  # the writer died inside the last record
    with pytest.warns(RuntimeWarning, match="truncated chunk"):
        assert list(iter_wandb_payloads(path)) == [b"x" * 100, b"y" * 40_000]
    path.write_bytes(data[:BLOCK_SIZE])  # died between the FIRST and LAST chunks of the 40,000-byte record
    with pytest.warns(RuntimeWarning, match="incomplete"):
        assert list(iter_wandb_payloads(path)) == [b"x" * 100]


# ------------------------------------------------------------------------------------------ a real W&B run
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """Offline W&B with every directory it may write to (its dirs, HOME, the working directory) inside tmp_path,
    and Python-side connections to anything but this machine refused."""
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "HOME", "cwd"):
        (tmp_path / var.lower()).mkdir()
        if var != "cwd":
            monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path / "cwd")
    for var, value in (("MODE", "offline"), ("SILENT", "true"), ("CONSOLE", "off"), ("DISABLE_GIT", "true")):
        monkeypatch.setenv(f"WANDB_{var}", value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    real_connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"an offline W&B run tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    return tmp_path


def test_wandb_offline_run_reads_back(wandb_offline, capsys):
    wandb = pytest.importorskip("wandb")
    images = {4: np.zeros((24, 32, 3), dtype=np.uint8), 8: np.zeros((24, 32, 3), dtype=np.uint8)}
    images[4][:, :, 0] = np.arange(32, dtype=np.uint8) * 8
    images[8][5:10, 3:7] = (10, 200, 30)
    t0 = time.perf_counter()
    run = wandb.init(mode="offline", dir=os.environ["WANDB_DIR"], project="eqmonitor-tests", config={"lr": 0.1})
    t_init = time.perf_counter() - t0
    values = {0: 0.5, 4: float("nan"), 8: 0.125}
    for step, value in values.items():
        run.log({"equivariance/c4/error_mean": value, "trainer/global_step": step}, step=step)
        if step in images:
            run.log({"equivariance/c4/nero_aggregate": wandb.Image(images[step])}, step=step)
    run.alert(title="eqmonitor: c4 drifted", text="error_mean rose 3x", level=wandb.AlertLevel.WARN, wait_duration=30)
    run.summary["best"] = 0.125
    t0 = time.perf_counter()
    run.finish()
    t_finish = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[wandb offline] init {t_init:.2f} s, finish {t_finish:.3f} s")

    out = read_wandb_offline(os.environ["WANDB_DIR"])  # the one offline-run-* under WANDB_DIR/wandb
    assert out["project"] == "eqmonitor-tests" and out["run_id"]
    assert out["record_types"][0] == "header" and out["record_types"][-1] == "exit"
    rows = [r for r in out["history"] if "equivariance/c4/error_mean" in r]
    assert [(r["_step"], r["trainer/global_step"]) for r in rows] == [(0, 0), (4, 4), (8, 8)]
    logged = [r["equivariance/c4/error_mean"] for r in rows]
    assert logged[0] == 0.5 and math.isnan(logged[1]) and logged[2] == 0.125
    # an image logged at a step shares that step's row; its file name does not name the step, the row's path does
    media = {r["_step"]: r["equivariance/c4/nero_aggregate"] for r in rows if "equivariance/c4/nero_aggregate" in r}
    assert sorted(media) == [4, 8]
    assert out["images"] == sorted(m["path"] for m in media.values())
    pil = pytest.importorskip("PIL.Image")
    run_dir = wandb_run_file(os.environ["WANDB_DIR"]).parent
    for step, m in media.items():
        assert m["_type"] == "image-file" and (m["width"], m["height"]) == (32, 24)
        assert m["path"].startswith("media/images/equivariance/c4/nero_aggregate_") and m["path"].endswith(".png")
        with pil.open(run_dir / "files" / m["path"]) as png:
            np.testing.assert_array_equal(np.asarray(png.convert("RGB")), images[step])
    assert out["alerts"] == [
        {"title": "eqmonitor: c4 drifted", "text": "error_mean rose 3x", "level": "WARN", "wait_duration": 30.0}
    ]
    assert out["summary"]["best"] == 0.125 and out["summary"]["equivariance/c4/error_mean"] == 0.125
    # the reader's model of the format reproduces wandb-core's file byte for byte (header, blocks, CRCs)
    path = wandb_run_file(run_dir)
    assert _encode(list(iter_wandb_payloads(path))) == path.read_bytes()
    # nothing outside tmp: no ~/.config/wandb, ~/.netrc or ./wandb
    assert not list((wandb_offline / "home").iterdir()) and not list((wandb_offline / "cwd").iterdir())


def test_wandb_records_spanning_blocks(wandb_offline):
    wandb = pytest.importorskip("wandb")
    run = wandb.init(mode="offline", dir=os.environ["WANDB_DIR"], project="eqmonitor-tests")
    wide = {f"equivariance/c4/layer/block{i:04d}.conv": i / 1024 for i in range(3000)}  # one ~100 KB record
    run.log(wide, step=0)
    run.log({"after": 1.0}, step=1)
    run.finish()
    path = wandb_run_file(os.environ["WANDB_DIR"])
    assert path.stat().st_size > 3 * BLOCK_SIZE
    out = read_wandb_offline(path)
    (row,) = [r for r in out["history"] if "equivariance/c4/layer/block0000.conv" in r]
    assert {k: row[k] for k in wide} == wide
    assert [r["after"] for r in out["history"] if "after" in r] == [1]  # wandb writes 1.0 as the JSON number 1
    assert _encode(list(iter_wandb_payloads(path))) == path.read_bytes()


def test_wandb_run_file_needs_one_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="one offline W&B run"):
        wandb_run_file(tmp_path)


# ------------------------------------------------------------------------------------------ TensorBoard
def test_tensorboard_scalars_and_images(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    for step, value in ((0, 0.5), (5, 0.25), (10, 0.125)):
        writer.add_scalar("equivariance/c4/error_mean", value, global_step=step)
    writer.add_scalar("equivariance/c4/error_max", 2.0, global_step=10)
    writer.add_image("equivariance/c4/nero_aggregate", np.zeros((24, 32, 3), np.uint8), 0, dataformats="HWC")
    writer.add_image("equivariance/c4/nero_aggregate", np.full((40, 50, 3), 255, np.uint8), 5, dataformats="HWC")
    writer.close()
    tb = read_tensorboard(tmp_path)
    assert tb["scalars"] == {
        "equivariance/c4/error_mean": [(0, 0.5), (5, 0.25), (10, 0.125)],
        "equivariance/c4/error_max": [(10, 2.0)],
    }
    assert tb["images"] == {"equivariance/c4/nero_aggregate": [(0, 32, 24), (5, 50, 40)]}


def test_tensorboard_keeps_every_point(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    for step in range(1500):  # more than the default reservoir of 1,000 scalars
        writer.add_scalar("x", float(step), global_step=step)
    writer.close()
    assert [s for s, _ in read_tensorboard(tmp_path)["scalars"]["x"]] == list(range(1500))
