"""Compare training runs (augmentation strategies, architectures) from the records their monitors wrote.

>>> import eqmonitor.compare as cmp  # doctest: +SKIP
>>> runs = cmp.load_runs(["lightning_logs/version_0", "lightning_logs/version_1"])  # doctest: +SKIP
>>> cmp.summary(runs, "c4")  # doctest: +SKIP

The command line ``eqmonitor compare RUN... --out DIR`` writes the same table and figures.
"""

from eqmonitor.compare.figures import aggregate_figure, curves_figure, per_class_figure, run_colors
from eqmonitor.compare.output import compare_to_folder, markdown_table
from eqmonitor.compare.runs import (
    CompareError,
    NoRecordsError,
    Run,
    UsageError,
    epochs_done,
    find_records,
    load_run,
    load_runs,
    pick_reference,
)
from eqmonitor.compare.stats import (
    SUMMARY_COLUMNS,
    aggregate_curve,
    check_at,
    common_symmetry,
    curve,
    paired,
    per_class,
    same_probe,
    summary,
)

__all__ = [
    "SUMMARY_COLUMNS",
    "CompareError",
    "NoRecordsError",
    "Run",
    "UsageError",
    "aggregate_curve",
    "aggregate_figure",
    "check_at",
    "common_symmetry",
    "compare_to_folder",
    "curve",
    "curves_figure",
    "epochs_done",
    "find_records",
    "load_run",
    "load_runs",
    "markdown_table",
    "paired",
    "per_class",
    "per_class_figure",
    "pick_reference",
    "run_colors",
    "same_probe",
    "summary",
]
