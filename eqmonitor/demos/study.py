"""The augmentation study on the bundled digits: one classifier trained four ways, watched, then compared.

The runs differ only in how they get rotation symmetry; everything else (seed, data split, initial weights, the
monitor and its probe set) is the same, so the comparison's paired statistics apply:

- ``none``: no augmentation;
- ``c4``: a random quarter turn per training image;
- ``so2``: a random rotation per training image (bilinear);
- ``equivariant``: no augmentation, the same CNN inside a C4 group average (invariant to quarter turns by
  construction).

Each run trains with :class:`~eqmonitor.EquivarianceMonitor` at its defaults on a ``TensorBoardLogger``, all in
one logdir with the strategy as the run's name, checking quarter turns (``c4``) and continuous rotations
(``rotation``, 36 angles of which the 4 quarter turns are exact and 32 interpolated). Then the study writes the
comparison of each symmetry (:func:`eqmonitor.compare.compare_to_folder`, what ``eqmonitor compare`` runs) and the
NERO explorer page (:func:`eqmonitor.explorer.write_explorer`, what ``eqmonitor report`` runs), and
:func:`summary_lines` says in ten lines what came out. ``examples/study_digits.py`` is its command line.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

__all__ = ["STRATEGIES", "SYMMETRIES", "StudyResult", "StudyRun", "run_study", "summary_lines", "train_strategy"]

#: strategy name -> ``DigitsClassifier`` arguments
STRATEGIES: dict[str, dict[str, str]] = {
    "none": {"augment": "none"},
    "c4": {"augment": "c4"},
    "so2": {"augment": "so2"},
    "equivariant": {"architecture": "c4_averaged"},
}
#: the symmetries every run's monitor checks
SYMMETRIES = [
    {"name": "c4", "group": "c4", "input": "image", "output": "invariant"},
    {"name": "rotation", "group": "so2", "input": "image", "output": "invariant"},
]
_FLAT_MARGIN = 0.02  # a confidence range this much smaller than the first run's counts as flatter
_MARKER = ".eqmonitor-study"  # marks a folder this study wrote, so a re-run may replace its runs


@dataclass
class StudyRun:
    """One trained run: its ``name`` (the strategy), TensorBoard ``log_dir``, final validation accuracy (upright
    digits), epochs trained and wall seconds of its fit."""

    name: str
    log_dir: Path
    val_acc: float
    epochs: int
    seconds: float


@dataclass
class StudyResult:
    """What :func:`run_study` wrote: the ``runs``, the TensorBoard ``logdir`` above them, per symmetry the
    comparison folder and what its ``summary.json`` holds, the explorer ``page`` and the runs it shows."""

    out: Path
    logdir: Path
    runs: list[StudyRun]
    folders: dict[str, Path]
    comparisons: dict[str, dict]
    page: Path
    explored: tuple[str, str]
    flatness: dict[str, dict[str, float]] = field(default_factory=dict)


def _prepare(out: Path) -> None:
    """Create ``out``, or clear the runs of an earlier study there; refuse a folder the study did not write."""
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise FileExistsError(
            f"{str(out)!r} exists and was not written by the study; pass another output folder or remove it."
        )
    if (out / "runs").is_dir():
        shutil.rmtree(out / "runs")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("written by eqmonitor.demos.study; a re-run replaces its contents\n")


def train_strategy(
    name: str,
    logdir: Path,
    *,
    epochs: int = 8,
    n_train: int = 1400,
    seed: int = 0,
    monitor_options: Optional[dict] = None,
) -> StudyRun:
    """Train the digits classifier with strategy ``name`` (a key of :data:`STRATEGIES`) for ``epochs``, with the
    monitor (its defaults, updated by ``monitor_options``) and a ``TensorBoardLogger`` writing to
    ``logdir/<name>``; the monitor's ``tag`` is ``name``."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from eqmonitor.callbacks.monitor import EquivarianceMonitor
    from eqmonitor.demos.lightning_digits import DigitsClassifier, DigitsDataModule

    if name not in STRATEGIES:
        raise ValueError(f"Expected a strategy among {sorted(STRATEGIES)}, but got {name!r}.")
    L.seed_everything(seed, verbose=False)  # the same initial weights and batch order for every strategy
    model = DigitsClassifier(**STRATEGIES[name])
    monitor = EquivarianceMonitor(SYMMETRIES, tag=name, **(monitor_options or {}))
    logger = TensorBoardLogger(save_dir=str(logdir.parent), name=logdir.name, version=name, default_hp_metric=False)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=logger, callbacks=[monitor],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=DigitsDataModule(n_train=n_train, seed=seed))
    seconds = time.perf_counter() - start
    acc = trainer.callback_metrics.get("val_acc")
    return StudyRun(name, Path(logger.log_dir), math.nan if acc is None else float(acc), epochs, seconds)


def _flatness(runs: Sequence[Any], symmetry: str) -> dict[str, dict[str, float]]:
    """Per run, the aggregate curve of the true-class confidence over ``symmetry``'s elements at the last check:
    its lowest and highest value and their difference (the smaller, the flatter)."""
    from eqmonitor.compare import CompareError, aggregate_curve

    out = {}
    for run in runs:
        try:
            mean = aggregate_curve(run, symmetry, which="confidence")["mean"]
        except CompareError:
            continue
        lo, hi = float(np.nanmin(mean)), float(np.nanmax(mean))
        out[run.name] = {"low": lo, "high": hi, "range": hi - lo}
    return out


def run_study(
    out: Union[str, Path] = "study",
    *,
    epochs: int = 8,
    n_train: int = 1400,
    seed: int = 0,
    strategies: Sequence[str] = tuple(STRATEGIES),
    explore: Optional[tuple[str, str]] = None,
    monitor_options: Optional[dict] = None,
    say: Callable[[str], None] = lambda line: None,
) -> StudyResult:
    """Train every strategy (:func:`train_strategy`), then write into ``out``: the TensorBoard logdir ``runs/``
    (one run per strategy), the comparison of each symmetry (``c4/``, ``rotation/``: ``summary.md|csv|json``,
    ``aggregate.png``, ``curves.png``, ``per_class.png``) and the explorer of the two ``explore`` runs on
    ``rotation`` (``nero.html``; default: ``none`` against ``so2``, else the first two). ``say`` gets one line per
    finished step.

    Raises:
        ValueError: an unknown strategy, fewer than two, or ``explore`` naming runs that are not trained.
        FileExistsError: ``out`` holds files the study did not write.
    """
    from eqmonitor.compare import compare_to_folder, load_runs
    from eqmonitor.explorer import write_explorer

    strategies = list(strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or len(strategies) < 2 or len(set(strategies)) != len(strategies):
        raise ValueError(f"Expected two or more distinct strategies among {sorted(STRATEGIES)}, but got {strategies}.")
    if explore is None:
        explore = ("none", "so2") if {"none", "so2"} <= set(strategies) else (strategies[0], strategies[1])
    if len(explore) != 2 or any(e not in strategies for e in explore):
        raise ValueError(f"Expected `explore` to name two of the trained strategies {strategies}, but got {explore}.")
    out = Path(out)
    _prepare(out)
    logdir = out / "runs"
    trained = []
    for i, name in enumerate(strategies, 1):
        run = train_strategy(name, logdir, epochs=epochs, n_train=n_train, seed=seed, monitor_options=monitor_options)
        trained.append(run)
        say(f"[{i}/{len(strategies)}] {name}: {epochs} epoch(s) in {run.seconds:.1f} s, val accuracy {run.val_acc:.1%}")
    runs = load_runs([r.log_dir for r in trained])
    folders, comparisons = {}, {}
    for sym in (s["name"] for s in SYMMETRIES):
        folders[sym] = out / sym
        comparisons[sym] = compare_to_folder(runs, sym, folders[sym])
        say(f"compared {sym}: {folders[sym]}/summary.md and figures")
    by_name = {run.name: run for run in runs}
    page = write_explorer([by_name[e] for e in explore], "rotation", out / "nero.html")
    say(f"wrote the explorer: {page}")
    return StudyResult(out, logdir, trained, folders, comparisons, page, tuple(explore), _flatness(runs, "rotation"))


def _row(comparison: dict, name: str) -> dict:
    return next(r for r in comparison["summary"] if r["run"] == name)


def _pair(comparison: dict, name: str) -> Optional[dict]:
    return next((p for p in comparison["paired"] if p["run"] == name), None)


def _g(value: Optional[float]) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _pc(value: Optional[float]) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _best(result: StudyResult, sym: str, label: str) -> str:
    """Which run is most equivariant on ``sym`` and by how much against the first run (paired, per sample)."""
    comparison = result.comparisons[sym]
    rows = comparison["summary"]
    best = min(rows, key=lambda r: r["final_error"])
    ref = rows[0]
    line = f"most {label}-equivariant: {best['run']}, error {_g(best['final_error'])}"
    if best["run"] == ref["run"]:
        return line + " (the reference run itself)"
    ratio = ref["final_error"] / best["final_error"] if best["final_error"] > 0 else math.inf
    line += f" against {_g(ref['final_error'])} for {ref['run']} ({_g(ratio)}× lower"
    pair = _pair(comparison, best["run"])
    if pair is not None:
        line += (f"; lower on {pair['run_better']} of {pair['samples']} probe samples, mean difference "
                 f"{_g(pair['mean_diff'])}, 95% CI [{_g(pair['ci_low'])}, {_g(pair['ci_high'])}]")  # fmt: skip
    return line + ")"


def _flat_line(result: StudyResult) -> str:
    """The flatness of each run's aggregate confidence curve against the first run's."""
    flat, first = result.flatness, result.runs[0].name
    if first not in flat or len(flat) < 2:
        return "NERO aggregate curve: the records hold no true-class confidence to compare."
    ref = flat[first]
    others = sorted((name for name in flat if name != first), key=lambda n: flat[n]["range"])
    parts = ", ".join(f"{n} {flat[n]['low']:.2f}–{flat[n]['high']:.2f}" for n in others)
    flatter = [n for n in others if flat[n]["range"] < ref["range"] - _FLAT_MARGIN]
    verdict = (
        f"flatter than {first} for {', '.join(flatter)}" if flatter else f"no run flatter than {first} by 0.02 or more"
    )
    return (f"NERO aggregate curve (mean true-class confidence at each angle, lowest–highest): {first} "
            f"{ref['low']:.2f}–{ref['high']:.2f}, {parts}: {verdict}")  # fmt: skip


def summary_lines(result: StudyResult) -> list[str]:
    """About ten lines: the runs' accuracy and errors, which is most equivariant under C4 and under continuous
    rotations and by how much, exact against interpolated elements, the NERO curves' flatness, where to look."""
    c4, rot = result.comparisons["c4"], result.comparisons["rotation"]
    first = rot["summary"][0]
    n_exact, n_interp = first.get("exact_elements"), first.get("interp_elements")
    runs = result.runs
    probe = first.get("probe") or "unknown"
    lines = [
        f"Augmentation study on the bundled digits: {len(runs)} runs × {runs[0].epochs} epoch(s), the same probe "
        f"(fingerprint {probe}), rotations at {_g((n_exact or 0) + (n_interp or 0))} angles: {n_exact} exact "
        f"(quarter turns), {n_interp} interpolated",
        f"{'run':<12} {'val acc':>8} {'rotated acc':>12} {'C4 error':>9} {'SO(2) error':>12} {'SO(2) exact':>12} "
        f"{'SO(2) interp':>13}",
    ]
    for run in runs:
        a, b = _row(c4, run.name), _row(rot, run.name)
        lines.append(
            f"{run.name:<12} {_pc(run.val_acc):>8} {_pc(b.get('orbit_accuracy')):>12} {_g(a['final_error']):>9} "
            f"{_g(b['final_error']):>12} {_g(b.get('exact_error')):>12} {_g(b.get('interp_error')):>13}"
        )
    lines.append(_best(result, "c4", "C4"))
    lines.append(_best(result, "rotation", "SO(2)"))
    lines.append(_flat_line(result))
    lines.append(
        f"look: tensorboard --logdir {result.logdir} | explorer ({' vs '.join(result.explored)}): {result.page} | "
        f"tables: {result.folders['c4']}/summary.md, {result.folders['rotation']}/summary.md"
    )
    return lines
