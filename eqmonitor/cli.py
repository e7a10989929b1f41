"""The ``eqmonitor`` command line: compare runs from their records, and write the NERO explorer page.

::

    eqmonitor compare RUN... [--symmetry NAME] [--out DIR] [--by epoch|step] [--check N] [--unpaired]
    eqmonitor report RUN [RUN2] [--symmetry NAME] --out nero.html

A ``RUN`` is a records folder, a TensorBoard/CSV version folder (``lightning_logs/version_0``), a W&B run folder
(``wandb/run-…-<id>``) or a folder above several runs (given in the order they started). Paired statistics are
``run − reference``, the reference being the first run (``--reference`` chooses another). Exit codes: 0 done, 2 a
bad command line (also: ``--names`` of the wrong count, a ``--check`` past the runs' end, a ``--reference`` that is
none of the runs, more runs than ``report`` takes), 3 no usable records at a path, 4 runs that cannot be compared as
asked (different symmetries or probes), 1 anything else (an unexpected error, shown with its traceback). Problems in
the records that do not stop the work (a torn last line after a crash) are printed as warnings.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["EXIT_INCOMPARABLE", "EXIT_NO_RECORDS", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_RECORDS, EXIT_INCOMPARABLE = 0, 1, 2, 3, 4

_RUNS_HELP = (
    "a records folder, a TensorBoard/CSV version folder (holding eqmonitor_records/), a W&B run folder, or a "
    "folder above several runs (taken in the order they started)"
)
_EPILOG = """exit codes: 0 done, 2 bad command line (or arguments that do not fit the runs: --names, --check,
--reference, too many runs), 3 no usable records at a path, 4 runs that cannot be compared as asked (different
symmetries or probes), 1 an unexpected error.

examples:
  eqmonitor compare lightning_logs/version_0 lightning_logs/version_1 --symmetry c4 --out compare/
  eqmonitor compare lightning_logs --out compare/          every run under lightning_logs
  eqmonitor report runs/plain runs/c4 --symmetry rotation --out nero.html
"""


def _parser() -> argparse.ArgumentParser:
    from eqmonitor import __version__

    parser = argparse.ArgumentParser(
        prog="eqmonitor",
        description="Compare training runs from the records EquivarianceMonitor wrote, and explore them (NERO).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"eqmonitor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    compare = commands.add_parser(
        "compare",
        help="summary table (Markdown, CSV, JSON) and figures (PNG) of several runs",
        description="Compare runs on one symmetry: a summary table per run (final and best error, orbit accuracy, "
        "flip rate, area under the error curve, exact against interpolated elements), overlaid aggregate NERO "
        "curves, per-class errors, curves over training and, when the runs probed the same samples, paired "
        "per-sample statistics with a bootstrap interval.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help=_RUNS_HELP)
    compare.add_argument("--symmetry", metavar="NAME", help="the symmetry to compare (default: the one all share)")
    compare.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("eqmonitor-compare"),
        help="output folder (default: ./eqmonitor-compare)",
    )
    compare.add_argument("--by", choices=("epoch", "step"), default="epoch", help="align checks by (default: epoch)")
    compare.add_argument(
        "--check",
        type=int,
        default=-1,
        metavar="N",
        help="which check the aggregate and paired statistics use (default: -1, the last)",
    )
    compare.add_argument(
        "--unpaired", action="store_true", help="compare runs that probed different samples (no paired statistics)"
    )
    compare.add_argument("--names", metavar="A,B,...", help="names for the runs, comma-separated, in order")
    compare.add_argument(
        "--reference",
        metavar="RUN",
        help="the run the others are paired against (diff = run − reference): a name, tag or path (default: the "
        "first run)",
    )
    compare.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    report = commands.add_parser(
        "report",
        help="the NERO explorer: one offline HTML page of one run, or two side by side",
        description="Write NERO's linked views (aggregate per class over the checks, PCA scatter, individual orbit, "
        "transformed input, class probabilities) of one run, or two side by side, to one self-contained HTML file "
        "that opens offline in any browser.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("runs", nargs="+", metavar="RUN", help=_RUNS_HELP + " (one or two runs)")
    report.add_argument("--symmetry", metavar="NAME", help="the symmetry to explore (default: the one all share)")
    report.add_argument(
        "--out", metavar="FILE", type=Path, default=Path("nero.html"), help="the page to write (default: ./nero.html)"
    )
    report.add_argument("--names", metavar="A,B", help="names for the runs, comma-separated, in order")
    report.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _load(args: argparse.Namespace, most: Optional[int] = None) -> list:
    from eqmonitor.compare import UsageError, load_runs

    names = None if args.names is None else [n.strip() for n in args.names.split(",")]
    runs = load_runs(args.runs, names)
    if most is not None and len(runs) > most:
        raise UsageError(
            f"{args.command} takes at most {most} runs, but {len(runs)} were found: "
            + ", ".join(f"{r.name} ({r.path})" for r in runs)
        )
    return runs


def _compare(args: argparse.Namespace) -> int:
    from eqmonitor.compare import check_at, common_symmetry, compare_to_folder, pick_reference
    from eqmonitor.progress import progress_bar

    runs = _load(args)
    symmetry = common_symmetry(runs, args.symmetry)
    reference = pick_reference(runs, args.reference)
    for run in runs:  # a --check past any run's end is a bad command line, before anything is written
        check_at(run, symmetry, args.check)
    with progress_bar(4, f"eqmonitor compare {symmetry}", enabled=not args.quiet, unit="file") as bar:
        result = compare_to_folder(
            runs,
            symmetry,
            args.out,
            by=args.by,
            check=args.check,
            unpaired=args.unpaired,
            step=lambda what: bar.update(1),
            reference=next(i for i, run in enumerate(runs) if run is reference),
        )
    _say(args, (args.out / "summary.md").read_text(encoding="utf-8"))
    if result["paired"]:
        _say(args, f"paired statistics: diff = run − reference, reference {reference.name} ({reference.path})")
    if result["paired_skipped"]:
        _say(args, f"note: no paired statistics: {result['paired_skipped']}.")
    _say(args, f"wrote {args.out}/summary.md, summary.csv, summary.json and the figures (*.png)")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from eqmonitor.compare import common_symmetry

    runs = _load(args, most=2)
    symmetry = common_symmetry(runs, args.symmetry)
    from eqmonitor.explorer import write_explorer

    path = write_explorer(runs, symmetry, args.out, progress=not args.quiet)
    _say(args, f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB): open it in a browser, no server needed")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line on ``argv`` (``sys.argv[1:]`` by default); returns the exit code."""
    args = _parser().parse_args(argv)
    from eqmonitor.compare import CompareError, NoRecordsError, UsageError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            code = {"compare": _compare, "report": _report}[args.command](args)
        except UsageError as error:
            code = _fail(f"{error} (see: eqmonitor {args.command} --help)", EXIT_USAGE)
        except NoRecordsError as error:
            code = _fail(f"no records: {error}", EXIT_NO_RECORDS)
        except CompareError as error:
            code = _fail(f"cannot compare: {error}", EXIT_INCOMPARABLE)
        except ImportError as error:
            hint = " (pip install 'eqmonitor[explorer]')" if "bokeh" in str(error) else ""
            code = _fail(f"{error}{hint}", EXIT_ERROR)
        except OSError as error:
            code = _fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), EXIT_ERROR)
    for warning in caught:
        if not issubclass(warning.category, DeprecationWarning):
            print(f"eqmonitor: warning: {warning.message}", file=sys.stderr)
    return code


def _fail(message: str, code: int) -> int:
    print(f"eqmonitor: error: {message}", file=sys.stderr)
    return code
