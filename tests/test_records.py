"""Records of every check: JSON lines + npz round trips, durability, torn lines, resume without duplicates."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from eqmonitor import records as records_module
from eqmonitor.records import (
    RECORDS_FILE,
    RecordWriter,
    RunMismatchError,
    carry_over,
    load_arrays,
    read_records,
    read_run_info,
    records_to_table,
)


def _record(step, symmetry="c4", **metrics):
    return {"symmetry": symmetry, "epoch": step // 4, "global_step": step, "metrics": metrics or {"error_mean": step}}


def _raw_lines(directory):
    return [json.loads(line) for line in (directory / RECORDS_FILE).read_text().splitlines() if line.strip()]


def test_round_trip_converts_tensors_numpy_and_nonfinite(tmp_path):
    writer = RecordWriter(tmp_path)
    record = {
        "symmetry": "rotation",
        "epoch": np.int64(2),
        "global_step": torch.tensor(40),
        "time": 1700000000.5,
        "metrics": {
            "error_mean": torch.tensor(0.25, dtype=torch.float64),
            "error_max": np.float32(float("inf")),
            "error_p95": float("nan"),
            "flip_rate": 0,
        },
        "layers": {"net.0": torch.tensor(float("-inf")), "net.2": np.float64(1e-7)},
        "alerts": [{"title": "drift", "level": "WARN", "value": float("nan"), "wait_duration": 60.0}],
        "breach": False,
        "first_failing_layer": None,
        "curve": torch.tensor([0.5, float("nan"), 2.0]),
    }
    written = writer.append(record)
    (read,) = read_records(tmp_path)
    assert set(read) == set(written) == set(record) | {"arrays"}
    assert read["arrays"] is None
    assert (read["symmetry"], read["epoch"], read["global_step"], read["time"]) == ("rotation", 2, 40, 1700000000.5)
    assert type(read["global_step"]) is int and type(read["metrics"]["flip_rate"]) is float
    assert read["metrics"]["error_mean"] == 0.25 and read["metrics"]["error_max"] == math.inf
    assert math.isnan(read["metrics"]["error_p95"])
    assert read["layers"]["net.0"] == -math.inf and read["layers"]["net.2"] == pytest.approx(1e-7)
    assert math.isnan(read["alerts"][0]["value"]) and read["alerts"][0]["title"] == "drift"
    assert read["curve"][0] == 0.5 and math.isnan(read["curve"][1]) and read["curve"][2] == 2.0
    assert read["breach"] is False and read["first_failing_layer"] is None
    assert json.dumps(written, sort_keys=True, default=str) == json.dumps(read, sort_keys=True, default=str)
    # the line itself is strict JSON: no NaN/Infinity tokens, non-finite values listed beside null
    line = (tmp_path / RECORDS_FILE).read_text()
    strict = json.loads(line, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert strict["metrics"]["error_p95"] is None
    assert sorted(map(tuple, (tuple(p) + (v,) for p, v in strict["_nonfinite"]))) == sorted(
        [
            ("alerts", 0, "value", "nan"),
            ("curve", 1, "nan"),
            ("layers", "net.0", "-inf"),
            ("metrics", "error_max", "inf"),
            ("metrics", "error_p95", "nan"),
        ]
    )


def test_time_is_added_when_missing(tmp_path):
    before = __import__("time").time()
    rec = RecordWriter(tmp_path).append(_record(0))
    assert before <= rec["time"] <= before + 60


def test_npz_round_trip(tmp_path):
    writer = RecordWriter(tmp_path)
    g = torch.Generator().manual_seed(0)
    errors = torch.rand(16, 4, generator=g, dtype=torch.float64)
    errors[3, 1] = float("nan")
    arrays = {
        "errors": errors,
        "nonfinite": torch.isnan(errors),
        "elements": np.arange(4, dtype=np.int64)[:, None],
        "half": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
    }
    rec = writer.append(_record(7), arrays)
    assert rec["arrays"] == "checks/c4-step000000007.npz"
    assert (tmp_path / rec["arrays"]).is_file()
    (read,) = read_records(tmp_path)
    loaded = load_arrays(read, tmp_path)
    assert set(loaded) == set(arrays)
    np.testing.assert_array_equal(loaded["errors"], errors.numpy())
    assert loaded["errors"].dtype == np.float64 and loaded["nonfinite"].dtype == np.bool_
    assert loaded["nonfinite"].sum() == 1 and loaded["nonfinite"][3, 1]
    np.testing.assert_array_equal(loaded["elements"], arrays["elements"])
    np.testing.assert_array_equal(loaded["half"], np.array([1.5, -2.0], dtype=np.float32))
    # the log directory above the records directory works too
    np.testing.assert_array_equal(load_arrays(read, tmp_path / RECORDS_FILE)["errors"], errors.numpy())


def test_each_line_is_on_disk_before_append_returns(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name the synced file")
    monkeypatch.setattr(records_module.os, "fsync", spy)
    writer = RecordWriter(tmp_path)
    writer.append(_record(0))
    with open(tmp_path / RECORDS_FILE, encoding="utf-8") as reader:  # a second handle, opened mid-run
        assert [json.loads(line)["global_step"] for line in reader.read().splitlines()] == [0]
        writer.append(_record(4), {"errors": np.ones((2, 2))})
        assert json.loads(reader.readline())["global_step"] == 4  # the new line is visible without closing anything
    assert synced.count(str((tmp_path / RECORDS_FILE).resolve())) == 2
    assert str((tmp_path / "checks" / "c4-step000000004.npz").resolve()) not in synced  # synced under its temp name
    assert any(".c4-step000000004.npz." in path for path in synced)


def test_torn_last_line_is_skipped_then_cut_by_the_next_writer(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.append(_record(0))
    writer.append(_record(4))
    with open(tmp_path / RECORDS_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"symmetry": "c4", "epoch": 2, "global_st')  # the process died here
    with pytest.warns(RuntimeWarning, match="last line"):
        assert [r["global_step"] for r in read_records(tmp_path)] == [0, 4]
    with pytest.warns(RuntimeWarning, match="cut off mid-write"):
        resumed = RecordWriter(tmp_path)
    resumed.append(_record(8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["global_step"] for r in read_records(tmp_path)] == [0, 4, 8]
    assert [r["global_step"] for r in _raw_lines(tmp_path)] == [0, 4, 8]


def test_corrupt_middle_line_is_skipped_with_its_number(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.append(_record(0))
    with open(tmp_path / RECORDS_FILE, "a", encoding="utf-8") as fh:
        fh.write("garbage\n")
    writer.append(_record(4))
    with pytest.warns(RuntimeWarning, match="line 2"):
        assert [r["global_step"] for r in read_records(tmp_path)] == [0, 4]


def test_resume_truncates_later_checks_and_their_arrays(tmp_path):
    first = RecordWriter(tmp_path)
    for step in (0, 4, 8, 12):
        first.append(_record(step), {"errors": np.full((2, 2), step)})
        first.append(_record(step, symmetry="so2"), {"errors": np.full((2, 3), step)})
    assert (tmp_path / "checks" / "c4-step000000012.npz").exists()
    second = RecordWriter(tmp_path, resume_after=8)  # the checkpoint was at step 8; the run died after step 12
    assert [(r["symmetry"], r["global_step"]) for r in _raw_lines(tmp_path)] == [
        (s, step) for step in (0, 4, 8) for s in ("c4", "so2")
    ]
    assert sorted(p.name for p in (tmp_path / "checks").iterdir()) == sorted(
        f"{s}-step{step:09d}.npz" for step in (0, 4, 8) for s in ("c4", "so2")
    )
    second.append(_record(12, error_mean=-1.0), {"errors": np.zeros((2, 2))})
    c4 = read_records(tmp_path, symmetry="c4")
    assert [r["global_step"] for r in c4] == [0, 4, 8, 12]
    assert c4[-1]["metrics"]["error_mean"] == -1.0
    assert load_arrays(c4[-1], tmp_path)["errors"].sum() == 0
    assert [r["global_step"] for r in read_records(tmp_path, symmetry="so2")] == [0, 4, 8]
    assert second.truncate_after(100) == 0 and len(_raw_lines(tmp_path)) == 7
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp file left by the rewrite


def test_readers_keep_the_last_record_of_a_step(tmp_path):
    writer = RecordWriter(tmp_path)
    for step, value in ((0, 1.0), (4, 2.0), (8, 3.0), (4, 20.0), (8, 30.0)):  # appended again without truncation
        writer.append(_record(step, error_mean=value))
    writer.append(_record(4, symmetry="so2", error_mean=5.0))
    records = read_records(tmp_path)
    assert [(r["symmetry"], r["global_step"], r["metrics"]["error_mean"]) for r in records] == [
        ("c4", 0, 1.0),
        ("c4", 4, 20.0),
        ("so2", 4, 5.0),
        ("c4", 8, 30.0),
    ]


def test_npz_writes_are_atomic(tmp_path, monkeypatch):
    writer = RecordWriter(tmp_path)
    writer.append(_record(4), {"errors": np.ones((3, 3))})
    for step in (0, 8):
        writer.append(_record(step), {"errors": np.zeros(2)})
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]

    def dies_mid_write(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(records_module.np, "savez_compressed", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        writer.append(_record(4, error_mean=99.0), {"errors": np.zeros((3, 3))})
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert [r["global_step"] for r in _raw_lines(tmp_path)] == [4, 0, 8]  # no line for the failed check
    (rec,) = [r for r in read_records(tmp_path) if r["global_step"] == 4]
    np.testing.assert_array_equal(load_arrays(rec, tmp_path)["errors"], np.ones((3, 3)))  # old file intact


def test_records_to_table(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.append({**_record(0, error_mean=0.5, error_max=1.0), "time": 10.0})
    writer.append({**_record(4, error_mean=float("nan")), "time": 11.0, "layers": {"conv": 0.2}})
    table = records_to_table(read_records(tmp_path))
    assert list(table) == ["symmetry", "global_step", "epoch", "time", "error_mean", "error_max", "layer/conv"]
    assert table["global_step"] == [0, 4] and table["epoch"] == [0, 1] and table["time"] == [10.0, 11.0]
    assert table["error_mean"][0] == 0.5 and math.isnan(table["error_mean"][1])
    assert table["error_max"][0] == 1.0 and math.isnan(table["error_max"][1])
    assert math.isnan(table["layer/conv"][0]) and table["layer/conv"][1] == 0.2
    assert records_to_table([]) == {"symmetry": [], "global_step": [], "epoch": [], "time": []}


def test_read_records_finds_the_file(tmp_path):
    log_dir = tmp_path / "version_0"
    RecordWriter(log_dir / "eqmonitor").append(_record(0))
    for where in (log_dir, log_dir / "eqmonitor", log_dir / "eqmonitor" / RECORDS_FILE, str(log_dir)):
        assert [r["global_step"] for r in read_records(where)] == [0]
    with pytest.raises(FileNotFoundError, match="records.jsonl"):
        read_records(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("record", "arrays", "error", "match"),
    [
        ({"symmetry": "c4", "epoch": 0, "metrics": {}}, None, ValueError, r"\['global_step'\] are missing"),
        ({**_record(0), "arrays": "x.npz"}, None, ValueError, "written by RecordWriter"),
        ({**_record(0), "_nonfinite": []}, None, ValueError, "written by RecordWriter"),
        (_record(0, symmetry="a/b"), None, ValueError, "file-name-safe"),
        (_record(0, symmetry=""), None, ValueError, "file-name-safe"),
        ({**_record(0), "global_step": -1}, None, ValueError, "non-negative integer"),
        ({**_record(0), "epoch": 1.5}, None, ValueError, "non-negative integer"),
        ({**_record(0), "metrics": [0.1]}, None, TypeError, "dict of scalars"),
        (_record(0, error_mean=torch.ones(2)), None, ValueError, "`error_mean` to be a scalar"),
        (_record(0, error_mean="low"), None, TypeError, "`error_mean` to be a number"),
        ({**_record(0), "layers": {1: 0.5}}, None, TypeError, "keys of record field `layers`"),
        ({**_record(0), "extra": {"obj": object()}}, None, TypeError, "`extra.obj`"),
        (_record(0), {"errors": [1.0, 2.0]}, TypeError, r"`arrays\['errors'\]`"),
    ],
)
def test_bad_records_are_refused_before_anything_is_written(tmp_path, record, arrays, error, match):
    writer = RecordWriter(tmp_path)
    with pytest.raises(error, match=match):
        writer.append(record, arrays)
    assert not (tmp_path / RECORDS_FILE).exists()
    assert not list((tmp_path / "checks").iterdir())


def test_load_arrays_without_arrays(tmp_path):
    rec = RecordWriter(tmp_path).append(_record(0))
    with pytest.raises(ValueError, match="without arrays"):
        load_arrays(rec, tmp_path)


# ---------------------------------------------------------------------------------------------- one run per folder
def test_the_writer_writes_run_json_when_it_creates_the_folder(tmp_path):
    before = __import__("time").time()
    RecordWriter(tmp_path / "eqm", "run-a").append(_record(0))
    info = json.loads((tmp_path / "eqm" / "run.json").read_text())
    assert info["run_id"] == "run-a" and before <= info["created"] <= before + 60
    assert info["eqmonitor_version"] == __import__("eqmonitor").__version__
    assert read_run_info(tmp_path / "eqm") == info
    generated = RecordWriter(tmp_path / "other")  # no run id (the transition signature): one is generated
    assert generated.run_id and read_run_info(tmp_path / "other")["run_id"] == generated.run_id
    assert RecordWriter(tmp_path / "other").run_id == generated.run_id  # reopened without an id: the same run


def test_a_fresh_run_never_writes_into_another_runs_folder(tmp_path):
    first = RecordWriter(tmp_path, "run-a")
    first.append(_record(0), {"errors": np.zeros(2)})
    with pytest.raises(RunMismatchError, match=r"run 'run-a'.*'run-b'.*new `records_dir`.*resume") as info:
        RecordWriter(tmp_path, "run-b")
    assert isinstance(info.value, ValueError)
    assert [r["global_step"] for r in read_records(tmp_path)] == [0]
    assert read_run_info(tmp_path)["run_id"] == "run-a"
    RecordWriter(tmp_path, "run-a").append(_record(4))  # the same run may reopen its folder
    assert [r["global_step"] for r in read_records(tmp_path)] == [0, 4]


def test_a_resumed_run_keeps_its_folder_under_any_run_id(tmp_path):
    RecordWriter(tmp_path, "run-a").append(_record(0))
    RecordWriter(tmp_path, "run-b", resume=True).append(_record(4))
    RecordWriter(tmp_path, "run-b").append(_record(8))  # run-b resumed here, so it may reopen the folder
    assert RecordWriter(tmp_path, "run-a", resume=True).run_id == "run-a"
    info = read_run_info(tmp_path)
    assert info["run_id"] == "run-a" and [r["run_id"] for r in info["resumes"]] == ["run-b", "run-a"]
    assert [r["global_step"] for r in read_records(tmp_path)] == [0, 4, 8]
    with pytest.raises(RunMismatchError):
        RecordWriter(tmp_path, "run-c")
    with pytest.raises(TypeError, match="run_id"):
        RecordWriter(tmp_path, 8)  # resume_after passed positionally


def test_folders_written_before_run_json_belong_to_an_unknown_run(tmp_path):
    RecordWriter(tmp_path).append(_record(0))
    (tmp_path / "run.json").unlink()  # a folder written by an earlier version
    with pytest.raises(RunMismatchError, match="unknown run"):
        RecordWriter(tmp_path, "run-b")
    assert not (tmp_path / "run.json").exists()
    RecordWriter(tmp_path, "run-b", resume=True).append(_record(4))
    assert read_run_info(tmp_path)["run_id"] == "run-b"
    (tmp_path / "empty").mkdir()
    RecordWriter(tmp_path / "empty", "run-c")  # an empty folder holds nobody's records
    assert read_run_info(tmp_path / "empty")["run_id"] == "run-c"


# ------------------------------------------------------------------------------------------- resume into a new folder
def test_carry_over_gives_the_new_folder_the_complete_history(tmp_path):
    a, b = tmp_path / "version_0" / "eqm", tmp_path / "version_1" / "eqm"
    first = RecordWriter(a, "run-a")
    for step in range(6):
        first.append(_record(step, error_mean=float(step)), {"errors": np.full(2, step)})
    first.append(_record(2, error_mean=20.0), {"errors": np.full(2, 20)})  # appended again: the last one wins
    first.append(_record(1, symmetry="so2", error_mean=math.nan))
    assert carry_over(a, b, up_to_step=3, run_id="run-b") == 5
    assert carry_over(a, b, up_to_step=3, run_id="run-b") == 0  # idempotent
    second = RecordWriter(b, "run-b", resume=True)
    for step in (4, 5):
        second.append(_record(step, error_mean=-float(step)), {"errors": np.full(2, -step)})
    assert carry_over(a, b, up_to_step=3, run_id="run-b") == 0
    records = read_records(b, symmetry="c4")
    assert [(r["global_step"], r["metrics"]["error_mean"]) for r in records] == [
        (0, 0.0),
        (1, 1.0),
        (2, 20.0),
        (3, 3.0),
        (4, -4.0),
        (5, -5.0),
    ]
    assert [load_arrays(r, b)["errors"][0] for r in records] == [0, 1, 20, 3, -4, -5]
    (so2,) = read_records(b, symmetry="so2")
    assert math.isnan(so2["metrics"]["error_mean"]) and so2["arrays"] is None
    steps = [(r["symmetry"], r["global_step"]) for r in _raw_lines(b)]
    assert len(steps) == len(set(steps)) == 7  # no step twice in the file itself
    assert read_run_info(b)["run_id"] == "run-b" and read_run_info(b)["carried_from"]["run_id"] == "run-a"
    assert [r["global_step"] for r in read_records(a, symmetry="c4")] == list(range(6))  # the source is untouched


def test_carry_over_refuses_paths_that_leave_the_source_and_folders_of_other_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    RecordWriter(a, "run-a").append(_record(0), {"errors": np.zeros(2)})
    (tmp_path / "victim.npz").write_bytes(b"secret")
    line = {**_record(1), "time": 1.0, "arrays": "../victim.npz"}
    with open(a / RECORDS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    with pytest.warns(RuntimeWarning, match="line 2.*outside"):
        assert carry_over(a, b, 5, "run-b") == 1
    assert sorted(p.name for p in (b / "checks").iterdir()) == ["c4-step000000000.npz"]
    with pytest.raises(RunMismatchError):
        carry_over(a, b, 5, "run-c")
    with pytest.raises(ValueError, match="same folder"):
        carry_over(a, a, 5, "run-a")
    with pytest.raises(FileNotFoundError):
        carry_over(tmp_path / "nowhere", tmp_path / "c", 5, "run-c")
    RecordWriter(tmp_path / "died_early", "run-d")  # the dead run wrote no check
    assert carry_over(tmp_path / "died_early", tmp_path / "d", 5, "run-e") == 0
    assert read_run_info(tmp_path / "d")["run_id"] == "run-e"
