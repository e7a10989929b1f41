"""The augmentation study (``make demo``) end to end at tiny sizes: four real fits with the monitor at its defaults
(but for the probe size), then the tables, the figures, the explorer page and the summary; and its bad input."""

from __future__ import annotations

import json

import pytest

study_digits = pytest.importorskip("study_digits")
pytest.importorskip("bokeh")
pytest.importorskip("sklearn")

from eqmonitor.demos.study import STRATEGIES, run_study  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def one_thread():
    """torch on one thread, as the study's script runs on 2 cores (beside the monitor's figure process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_study_writes_tables_figures_page_and_a_summary_naming_the_runs(tmp_path, capsys, one_thread):
    out = tmp_path / "study"
    lines = study_digits.main(["--out", str(out), "--epochs", "1", "--n-train", "64", "--n-samples", "8"])

    for name in STRATEGIES:  # one TensorBoard run per strategy, side by side in one logdir
        assert list((out / "runs" / name).glob("events.out.tfevents.*")), name
        assert (out / "runs" / name / "eqmonitor_records" / "records.jsonl").is_file()
    for sym in ("c4", "rotation"):
        for table in ("summary.md", "summary.csv", "summary.json"):
            assert (out / sym / table).stat().st_size > 0
        for figure in ("aggregate.png", "curves.png", "per_class.png"):
            assert (out / sym / figure).read_bytes()[:8] == PNG, figure
        result = json.loads((out / sym / "summary.json").read_text())
        assert [row["run"] for row in result["summary"]] == list(STRATEGIES)
        assert result["paired_skipped"] is None and len(result["paired"]) == 3  # same probe: paired statistics
        assert len({row["probe"] for row in result["summary"]}) == 1
    c4 = {row["run"]: row for row in json.loads((out / "c4" / "summary.json").read_text())["summary"]}
    assert c4["equivariant"]["final_error"] < 1e-5 < c4["none"]["final_error"]  # C4-averaged: float rounding only
    page = (out / "nero.html").read_text(encoding="utf-8")
    assert "Bokeh" in page and "none" in page and "so2" in page

    assert 8 <= len(lines) <= 12
    table = [line.split()[0] for line in lines[2:6]]
    assert table == list(STRATEGIES)
    text = "\n".join(lines)
    assert "most C4-equivariant: equivariant" in text
    assert f"tensorboard --logdir {out / 'runs'}" in text and str(out / "nero.html") in text
    assert (out / "summary.txt").read_text(encoding="utf-8").strip() == text
    assert text in capsys.readouterr().out


def test_bad_strategies_and_a_foreign_folder_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="strategies among"):
        run_study(tmp_path / "a", strategies=["none", "mixup"])
    with pytest.raises(ValueError, match="two or more"):
        run_study(tmp_path / "a", strategies=["none"])
    with pytest.raises(ValueError, match="`explore`"):
        run_study(tmp_path / "a", strategies=["none", "c4"], explore=("none", "so2"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by the study"):
        run_study(tmp_path / "mine", strategies=["none", "c4"])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_digits_classifier_refuses_an_unknown_architecture():
    from eqmonitor.demos import DigitsClassifier

    with pytest.raises(ValueError, match="`architecture`"):
        DigitsClassifier(architecture="steerable")
