"""Write a comparison to a folder: the summary table as Markdown, CSV and JSON, and the figures as PNG."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from eqmonitor.compare.figures import aggregate_figure, curves_figure, per_class_figure
from eqmonitor.compare.runs import CompareError, Run, pick_reference
from eqmonitor.compare.stats import SUMMARY_COLUMNS, paired, per_class, same_probe, summary

__all__ = ["compare_to_folder", "markdown_table"]

PAIRED_COLUMNS = ("reference", "run", "samples", "reference_better", "run_better", "ties", "mean_diff", "ci_low",
                  "ci_high")  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """``rows`` as a GitHub Markdown table (``–`` for what a run's records do not hold)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def compare_to_folder(
    runs: Sequence[Run],
    symmetry: str,
    out: Path,
    *,
    by: str = "epoch",
    check: int = -1,
    unpaired: bool = False,
    step: Optional[Callable[[str], None]] = None,
    reference: Optional[Any] = None,
) -> dict:
    """Write ``summary.md``, ``summary.csv``, ``summary.json`` and ``aggregate.png``, ``curves.png`` (and
    ``per_class.png`` with labels) for ``symmetry`` into ``out``; returns what ``summary.json`` holds. Paired
    differences are ``run − reference``, the reference being ``runs[0]`` unless ``reference`` names another
    (:func:`~eqmonitor.compare.runs.pick_reference`); ``summary.json`` and ``summary.md`` name it.

    Raises:
        CompareError: the runs probed different samples and ``unpaired`` is not set (paired statistics would pair
            unrelated samples).
    """
    step = step or (lambda what: None)
    ref = pick_reference(runs, reference)
    why = same_probe(runs, symmetry) if len(runs) > 1 else None
    if why is not None and not unpaired:
        raise CompareError(
            f"These runs cannot be compared sample by sample: {why}. Pass --unpaired to compare their curves and "
            "summaries without paired statistics."
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = summary(runs, symmetry, by)
    at = next(i for i, run in enumerate(runs) if run is ref)
    pairs = paired(runs, symmetry, check, reference=at) if len(runs) > 1 and why is None else []
    labelled = all(run.labels() is not None for run in runs)
    classes = {run.name: per_class(run, symmetry, check) for run in runs} if labelled else {}
    result = {"symmetry": symmetry, "by": by, "check": check, "reference": ref.name, "summary": rows, "paired": pairs,
              "paired_skipped": why, "per_class": classes, "runs": {r.name: str(r.path) for r in runs}}  # fmt: skip
    step("table")
    text = f"# {symmetry}: {len(runs)} run{'' if len(runs) == 1 else 's'}\n\n" + markdown_table(rows, SUMMARY_COLUMNS)
    if pairs:
        text += f"\n## Paired, per sample (mean error over the elements; diff = run − reference, {ref.name})\n\n"
        text += markdown_table(pairs, PAIRED_COLUMNS)
    elif why:
        text += f"\nNo paired statistics: {why}.\n"
    (out / "summary.md").write_text(text, encoding="utf-8")
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(_json_safe(result), indent=1) + "\n", encoding="utf-8")
    figures = [("aggregate", lambda: aggregate_figure(runs, symmetry, check)),
               ("curves", lambda: curves_figure(runs, symmetry, by))]  # fmt: skip
    if labelled:
        figures.append(("per_class", lambda: per_class_figure(runs, symmetry, check)))
    for name, make in figures:
        step(f"{name}.png")
        make().savefig(out / f"{name}.png")
    return result
