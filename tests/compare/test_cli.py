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
        (["report", "{root}/none", "{root}/c4", "{old}"], EXIT_USAGE, "report takes at most 2 runs, but 3"),
        (["compare", "{root}", "--by", "hour"], EXIT_USAGE, "invalid choice: 'hour'"),
        (["compare", "{root}", "--symmetry", "c4", "--names", "a"], EXIT_USAGE, "Got 1 names for 2 runs"),
        (["compare", "{root}", "--symmetry", "c4", "--check", "99"], EXIT_USAGE, "choose one from -4 to 3"),
        (["compare", "{root}", "--symmetry", "c4", "--reference", "nobody"], EXIT_USAGE, "'nobody' is none of"),
    ],
)
def test_bad_input_gets_a_message_and_an_exit_code(two_runs, tmp_path, args, code, message):
    root, _ = two_runs
    args = [a.format(tmp=tmp_path, root=root, old=OLD_RECORDS) for a in args]
    done = _run(*args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    if code == EXIT_USAGE:
        assert not (tmp_path / "o").exists() and "eqmonitor-compare" not in {p.name for p in ROOT.iterdir()}


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


def test_the_reference_is_the_first_run_named_or_the_first_started(two_runs, tmp_path, capsys):
    """diff = run − reference, whatever the folders are called: a parent folder gives its runs in the order they
    started (the plain run first here, though "c4" sorts first by name); --reference picks another."""
    root, _ = two_runs
    parent = tmp_path / "study"
    shutil.copytree(root / "c4", parent / "a-first-by-name")
    shutil.copytree(root / "none", parent / "z-last-by-name")
    out = {}
    for label, args in {
        "folder": [str(parent)],
        "named": [str(root / "none"), str(root / "c4")],
        "reversed": [str(root / "c4"), str(root / "none")],
        "explicit": [str(root / "c4"), str(root / "none"), "--reference", "none"],
    }.items():
        assert main(["compare", *args, "--symmetry", "c4", "--out", str(tmp_path / label), "-q"]) == EXIT_OK
        out[label] = json.loads((tmp_path / label / "summary.json").read_text())
    for label in ("folder", "named", "explicit"):
        (pair,) = out[label]["paired"]
        assert (out[label]["reference"], pair["reference"], pair["run"]) == ("none", "none", "c4"), label
        assert pair["mean_diff"] == pytest.approx(out["named"]["paired"][0]["mean_diff"])
    assert [row["run"] for row in out["folder"]["summary"]] == ["none", "c4"]
    (flipped,) = out["reversed"]["paired"]  # the first run named is the reference: the sign says so
    assert (flipped["reference"], flipped["run"]) == ("c4", "none")
    assert flipped["mean_diff"] == pytest.approx(-out["named"]["paired"][0]["mean_diff"])
    assert "diff = run − reference, none" in (tmp_path / "explicit" / "summary.md").read_text()
    assert main(["compare", str(parent), "--symmetry", "c4", "--out", str(tmp_path / "said")]) == EXIT_OK
    assert "reference none" in capsys.readouterr().out


def test_report_refuses_two_runs_on_different_probes(two_runs, other_probe_run, tmp_path):
    """The explorer links sample i of one run to sample i of the other: on different probes that link is false, so
    ``report`` refuses them (exit 4, as ``compare`` does for paired statistics) and writes no page."""
    root, _ = two_runs
    page = tmp_path / "p.html"
    done = _run("report", str(root / "none"), str(other_probe_run), "--symmetry", "c4", "--out", str(page))
    assert done.returncode == EXIT_INCOMPARABLE, done.stderr
    assert "probed different samples" in done.stderr and "links sample i" in done.stderr
    assert "Traceback" not in done.stderr and not page.exists()
