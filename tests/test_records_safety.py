"""Records on hostile or damaged folders: paths that leave the folder, temporaries left by a SIGKILL, file modes
that follow the umask, valid-JSON lines of the wrong shape."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

from eqmonitor.records import RECORDS_FILE, RecordWriter, load_arrays, read_records


def _record(step, symmetry="c4"):
    return {"symmetry": symmetry, "epoch": step // 4, "global_step": step, "metrics": {"error_mean": float(step)}}


def _line(step, arrays):
    return json.dumps({**_record(step), "time": 1.0, "arrays": arrays}) + "\n"


def _add_line(directory, text):
    with open(directory / RECORDS_FILE, "a", encoding="utf-8") as fh:
        fh.write(text)


def _steps(records):
    return [r["global_step"] for r in records]


# ------------------------------------------------------------------------------------- paths from records
@pytest.fixture()
def victim(tmp_path):
    """A file outside the records folder ``tmp_path/run/eqm`` that a crafted record names."""
    path = tmp_path / "victim.npz"
    np.savez(path, secret=np.arange(3))
    return path


def _crafted_arrays(kind, victim, directory):
    if kind == "relative":
        return "../../victim.npz"
    if kind == "absolute":
        return str(victim)
    if kind == "symlink":  # inside the folder by name, outside once resolved
        (directory / "checks" / "c4-step000000008.npz").symlink_to(victim)
        return "checks/c4-step000000008.npz"
    return RECORDS_FILE  # inside the folder, but not an array file: truncation would delete the records themselves


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink", "records_file"])
def test_truncation_never_deletes_a_file_a_record_names_outside_checks(tmp_path, victim, kind):
    directory = tmp_path / "run" / "eqm"
    writer = RecordWriter(directory)
    for step in (0, 4):
        writer.append(_record(step), {"errors": np.full(2, step)})
    _add_line(directory, _line(8, _crafted_arrays(kind, victim, directory)))
    with pytest.warns(RuntimeWarning, match="line 3.*outside"):
        assert RecordWriter(directory, resume_after=4).truncate_after(4) == 0  # the constructor dropped it
    assert victim.is_file() and (directory / RECORDS_FILE).is_file()
    assert _steps(read_records(directory)) == [0, 4]
    assert load_arrays(read_records(directory)[-1], directory)["errors"].tolist() == [4, 4]


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink", "records_file"])
def test_load_arrays_and_readers_refuse_paths_outside_checks(tmp_path, victim, kind):
    directory = tmp_path / "run" / "eqm"
    RecordWriter(directory).append(_record(0), {"errors": np.zeros(2)})
    arrays = _crafted_arrays(kind, victim, directory)
    with pytest.raises(ValueError, match="outside"):
        load_arrays({**_record(8), "arrays": arrays}, directory)
    _add_line(directory, _line(8, arrays))
    with pytest.warns(RuntimeWarning, match="line 2.*outside"):
        assert _steps(read_records(directory)) == [0]


def test_a_symlinked_records_folder_still_reads(tmp_path):
    RecordWriter(tmp_path / "real").append(_record(0), {"errors": np.ones(2)})
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (record,) = read_records(tmp_path / "link")
    assert load_arrays(record, tmp_path / "link")["errors"].tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------------- stale temporaries
_KILLED = """
import os, signal, sys
import numpy as np
from eqmonitor import records
writer = records.RecordWriter(sys.argv[1])
writer.append({"symmetry": "c4", "epoch": 0, "global_step": 0, "metrics": {}}, {"errors": np.zeros(2)})
writer.append({"symmetry": "c4", "epoch": 1, "global_step": 4, "metrics": {}}, {"errors": np.zeros(2)})
die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "npz":
    records.np.savez_compressed = die
    writer.append({"symmetry": "c4", "epoch": 2, "global_step": 8, "metrics": {}}, {"errors": np.zeros(2)})
else:
    records.os.replace = die
    writer.truncate_after(0)
"""


@pytest.mark.parametrize("where", ["npz", "rewrite"])
def test_a_new_writer_removes_the_temporaries_of_a_killed_one_and_only_those(tmp_path, where):
    directory = tmp_path / "eqm"
    done = subprocess.run([sys.executable, "-c", _KILLED, str(directory), where], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    folder = directory / ("checks" if where == "npz" else "")
    before = set(os.listdir(directory)) | set(os.listdir(directory / "checks"))
    (left,) = [p for p in folder.iterdir() if p.name.startswith(".")]  # the killed write's temporary
    decoys = [".notes.tmp", "mine.npz.tmp", ".c4-step000000004.npz.bak", "c4-step000000004.npz.0123456789abcdef"]
    for name in decoys:
        (folder / name).write_bytes(b"user data")
    RecordWriter(directory)
    assert not left.exists()
    assert set(os.listdir(directory)) | set(os.listdir(directory / "checks")) == (before - {left.name}) | set(decoys)
    assert _steps(read_records(directory)) == [0, 4]


def test_temporaries_of_earlier_versions_are_removed_too(tmp_path):
    RecordWriter(tmp_path).append(_record(0), {"errors": np.zeros(2)})
    old = [tmp_path / "checks" / ".c4-step000000004.npz.k2_x9abc.tmp", tmp_path / ".records.jsonl.a1b2c3d4.tmp"]
    for path in old:
        path.write_bytes(b"")
    RecordWriter(tmp_path)
    assert not any(path.exists() for path in old)


# ------------------------------------------------------------------------------------- file modes
@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    expected = 0o666 & ~umask
    writer = RecordWriter(tmp_path / "eqm", "run-a")
    for step in (0, 4, 8):
        writer.append(_record(step), {"errors": np.zeros(2)})
    assert writer.truncate_after(4) == 1  # rewrites records.jsonl
    writer.append(_record(4), {"errors": np.ones(2)})  # replaces an npz
    with open(tmp_path / "plain", "w"):
        pass
    files = [p for p in (tmp_path / "eqm").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {RECORDS_FILE, "run.json", "c4-step000000004.npz"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(expected) for p in files}
    assert (tmp_path / "plain").stat().st_mode & 0o777 == expected


# ------------------------------------------------------------------------------------- lines of the wrong shape
_GOOD = {"symmetry": "c4", "epoch": 0, "global_step": 1, "metrics": {"e": 1.0}, "arrays": None}


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ({**_GOOD, "global_step": "7"}, "`global_step` is '7'"),
        ({**_GOOD, "global_step": -1}, "`global_step` is -1"),
        ({**_GOOD, "epoch": True}, "`epoch` is True"),
        ({**_GOOD, "metrics": [1]}, "`metrics` is \\[1\\]"),
        ({**_GOOD, "metrics": {"e": "low"}}, "`metrics.e` is 'low'"),
        ({**_GOOD, "symmetry": 4}, "`symmetry` is 4"),
        ({k: v for k, v in _GOOD.items() if k != "global_step"}, "no `global_step`"),
        ({**_GOOD, "layers": [0.1]}, "`layers` is \\[0.1\\]"),
        ({**_GOOD, "time": "noon"}, "`time` is 'noon'"),
        ({**_GOOD, "arrays": 5}, "`arrays` is 5"),
        ({**_GOOD, "_nonfinite": [[["metrics", "gone", "x"], "nan"]]}, "`_nonfinite`"),
        ({**_GOOD, "_nonfinite": [[["metrics", "e"], "huge"]]}, "`_nonfinite`"),
        ({**_GOOD, "_nonfinite": {"metrics": "nan"}}, "`_nonfinite`"),
        ([1, 2], "a JSON array, not an object"),
        ("record", "a JSON string, not an object"),
        (7, "a JSON number, not an object"),
    ],
)
def test_lines_of_the_wrong_shape_are_skipped_with_one_warning_each(tmp_path, line, match):
    writer = RecordWriter(tmp_path)
    writer.append(_record(0))
    _add_line(tmp_path, json.dumps(line) + "\n")
    writer.append(_record(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_records(tmp_path)
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)
    message = str(caught[0].message)
    assert "skipping line 2" in message and re.search(match, message), message
    assert caught[0].filename == __file__  # the warning points at the caller of read_records
    assert _steps(records) == [0, 4] and all(isinstance(r["metrics"], dict) for r in records)
    with pytest.warns(RuntimeWarning, match="line 2"):
        assert writer.truncate_after(0) == 2  # the bad line and step 4
    assert _steps(read_records(tmp_path)) == [0]
