"""The ``eqmonitor`` command line on real records: outputs, exit codes, messages without tracebacks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compare_specs import OLD_RECORDS

from eqmonitor.cli import EXIT_INCOMPARABLE, EXIT_NO_RECORDS, EXIT_OK, EXIT_USAGE, main

ROOT = Path(__file__).parents[2]


def test_compare_writes_tables_and_figures(two_runs, tmp_path, capsys):
    root, monitors = two_runs
    out = tmp_path / "out"
    assert main(["compare", str(root / "none"), str(root / "c4"), "--symmetry", "c4", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "| none |" in printed and "| c4 |" in printed and "Paired" in printed
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["none", "c4"]
    final = monitors["c4"].history["c4"][-1]["metrics"]["error_mean"]
    assert float(rows[1]["final_error"]) == pytest.approx(final)
    result = json.loads((out / "summary.json").read_text())
    assert result["symmetry"] == "c4" and result["paired"][0]["run"] == "c4" and result["paired_skipped"] is None
    assert set(result["per_class"]["c4"]) == {str(c) for c in monitors["c4"].probe.labels.unique().tolist()}
    for name in ("aggregate", "curves", "per_class"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary.md").read_text().startswith("# c4: 2 runs")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eqmonitor", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["compare", "{tmp}/nowhere"], EXIT_NO_RECORDS, "does not exist"),
        (["compare", "{tmp}"], EXIT_NO_RECORDS, "No records in"),
        (["compare", "{root}"], EXIT_INCOMPARABLE, "several symmetries (c4, rotation); choose one with --symmetry"),
        (["compare", "{root}", "--symmetry", "so3"], EXIT_INCOMPARABLE, "did not check 'so3'"),
        (["compare", "{root}/none", "{old}", "--symmetry", "c4", "--out", "{tmp}/o"], EXIT_INCOMPARABLE, "--unpaired"),
        (["report", "{root}/none", "{root}/c4", "{old}"], EXIT_INCOMPARABLE, "at most 2 runs"),
        (["compare", "{root}", "--by", "hour"], EXIT_USAGE, "invalid choice: 'hour'"),
    ],
)
def test_bad_input_gets_a_message_and_an_exit_code(two_runs, tmp_path, args, code, message):
    root, _ = two_runs
    args = [a.format(tmp=tmp_path, root=root, old=OLD_RECORDS) for a in args]
    done = _run(*args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_torn_records_file_is_a_warning_and_unpaired_old_records_compare(two_runs, tmp_path):
    root, _ = two_runs
    torn = tmp_path / "torn"
    shutil.copytree(root / "none", torn)
    data = (torn / "records.jsonl").read_bytes()
    (torn / "records.jsonl").write_bytes(data[:-40])  # the last line cut off mid-write
    done = _run("compare", str(torn), str(root / "c4"), "--symmetry", "c4", "--out", str(tmp_path / "o"), "-q")
    assert done.returncode == EXIT_OK and done.stdout == ""
    assert "warning:" in done.stderr and "cut off mid-write" in done.stderr and "Traceback" not in done.stderr
    (torn / "records.jsonl").write_text("not json\n")
    done = _run("compare", str(torn), "--out", str(tmp_path / "o"))
    assert done.returncode == EXIT_NO_RECORDS and "holds no usable record" in done.stderr
    assert (
        main(
            [
                "compare",
                str(root / "c4"),
                str(OLD_RECORDS),
                "--symmetry",
                "c4",
                "--unpaired",
                "-q",
                "--out",
                str(tmp_path / "u"),
            ]
        )
        == EXIT_OK
    )
    assert "No paired statistics: records_0_1 were recorded without" in (tmp_path / "u" / "summary.md").read_text()


def test_help_and_console_script():
    done = _run("--help")
    assert done.returncode == 0 and "compare" in done.stdout and "report" in done.stdout and "exit codes" in done.stdout
    done = _run("compare", "--help")
    assert done.returncode == 0 and "--symmetry NAME" in done.stdout and "--unpaired" in done.stdout
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"eqmonitor": "eqmonitor.cli:main"}
