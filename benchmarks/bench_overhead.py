"""Benchmark: what ``EquivarianceMonitor`` at its defaults costs a Lightning fit, as ratios measured in one run.

Every fit: CPU, ``torch.set_num_threads(--threads)``, a ``TensorBoardLogger`` into a temporary folder (images are
really written), no progress bar, no checkpointing, ``seed_everything(0)``; runs alternate without / with the monitor,
``--repeats`` times each, after one warm-up fit; medians are reported. The monitor is ``EquivarianceMonitor(SPECS)``
with nothing else set (a check at start and after every epoch, 64 probe samples × 36 elements, figures and records
on), for the README's C4 and SO(2) image-invariance specs. It is subclassed here only to time its Lightning hooks
(every ``on_*`` / ``setup`` / ``teardown`` hook it overrides, outermost call only, with the trainer's
``global_step`` when it was called).

1. Realistic epoch: ``DigitsClassifier`` (SmallCNN) trained on ``--epoch-size`` random rotations/shifts of the
   1,400 training digits per epoch (``benchmarks/_realistic_data.py``: sample ``i`` is a seeded transform of digit
   ``i % 1400``), batch ``--batch-size``, validation on the 397 plain held-out digits, ``--epochs`` epochs.
   *Monitor share* = (fit with − fit without) / fit with: the wall time a user loses (target ≤ 3%); the share of
   it spent inside the monitor's hooks in the training process is printed beside it. *Checks* = entries in
   ``monitor.history`` per symmetry, expected ``epochs + 1`` (the check at start) in every run.
2. One check vs its limit: *check* = seconds inside the monitor's hooks at the global steps where an epoch check ran
   (median over the epoch checks of all runs of 1.; the end-of-fit hooks ``on_train_end`` / ``on_fit_end`` /
   ``teardown``, where figures are waited for, are left out); *limit* = the bare forwards of the same pairs
   (per symmetry: the 64 probe inputs transformed once by the input action for each of its elements, then
   ``model(chunk)`` under ``no_grad`` over them, at the fastest of the tuner's chunk sizes), summed over the
   symmetries, on the trained model. Target: check / limit ≤ 1.5×.
3. Digits demo: ``DigitsClassifier`` on ``DigitsDataModule`` (1,400 samples, batch 64), ``--demo-epochs`` epochs,
   fit with the monitor / fit without (target ≤ 2.0×); every figure must be in the TensorBoard event files when
   ``fit`` returns (counted: a check's ``nero_aggregate`` and ``nero_individual`` images for every symmetry).
4. Figures: median seconds per render of each figure kind, from ``monitor.figure_seconds`` (kind → seconds, reported
   by the render worker) over all monitored fits, target ≤ 50 ms each; "n/a" if the monitor does not expose it.

Run: ``python benchmarks/bench_overhead.py`` (about 10 min on 2 idle cores); ``--quick`` is a ~1 min smoke test whose
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

import eqmonitor as eqm
from eqmonitor.audit import default_elements
from eqmonitor.demos import DigitsClassifier, DigitsDataModule
from eqmonitor.functional import _chunking

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _realistic_data import RealisticDigitsDataModule  # noqa: E402
from bench_probe import forward_chunks, interleaved  # noqa: E402

SPECS = [
    {"name": "c4", "group": "c4", "input": "image", "output": "invariant"},
    {"name": "rotation", "group": "so2", "input": "image", "output": "invariant"},
]
TARGETS = {"share": 0.03, "check": 1.5, "demo": 2.0, "figure": 0.050}
END_HOOKS = ("on_train_end", "on_fit_end", "teardown", "on_exception")  # not part of any one check
QUICK = {"epochs": 1, "epoch_size": 2048, "repeats": 1, "demo_epochs": 2, "limit_repeats": 3}
FULL = {"epochs": 3, "epoch_size": 20_480, "repeats": 3, "demo_epochs": 10, "limit_repeats": 7}


def _hook_names() -> list[str]:
    """The Lightning callback hooks (``on_*``, ``setup``, ``teardown``) that ``EquivarianceMonitor`` overrides."""
    base = L.Callback
    names = [n for n in dir(base) if n.startswith("on_") or n in ("setup", "teardown")]
    return [
        n for n in names if callable(getattr(base, n)) and getattr(eqm.EquivarianceMonitor, n) is not getattr(base, n)
    ]


def _timed(name: str, hook: Any) -> Any:
    @functools.wraps(hook)
    def wrapper(self: "TimedMonitor", *args: Any, **kwargs: Any) -> Any:
        if self._bench_depth:  # a hook called from another hook: counted once, by the outer one
            return hook(self, *args, **kwargs)
        trainer = args[0] if args else kwargs.get("trainer")
        step = getattr(trainer, "global_step", None)
        self._bench_depth += 1
        start = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self._bench_depth -= 1
            self.hook_calls.append((name, step, time.perf_counter() - start))

    return wrapper


class TimedMonitor(eqm.EquivarianceMonitor):
    """``EquivarianceMonitor`` whose Lightning hooks record ``(hook, global_step, seconds)`` in ``hook_calls``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_calls: list[tuple[str, Optional[int], float]] = []
        self._bench_depth = 0


HOOKS = _hook_names()
for _name in HOOKS:
    setattr(TimedMonitor, _name, _timed(_name, getattr(eqm.EquivarianceMonitor, _name)))


# ---------------------------------------------------------------------------------------------------------- fits
def fit_once(make_dm, epochs: int, monitored: bool, root: str) -> dict:
    """One ``Trainer.fit``; returns its wall seconds and, when monitored, the monitor, logger dir and model."""
    L.seed_everything(0, verbose=False)
    monitor = TimedMonitor(SPECS) if monitored else None
    logger = TensorBoardLogger(root, name="with" if monitored else "without")
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor] if monitored else [],
    )
    model = DigitsClassifier()
    start = time.perf_counter()
    trainer.fit(model, datamodule=make_dm())
    wall = time.perf_counter() - start
    return {"wall": wall, "monitor": monitor, "log_dir": logger.log_dir, "model": model, "epochs": epochs}


def alternate(make_dm, epochs: int, repeats: int, root: str, label: str) -> tuple[list[dict], list[dict]]:
    without, with_ = [], []
    for r in range(repeats):
        without.append(fit_once(make_dm, epochs, False, root))
        with_.append(fit_once(make_dm, epochs, True, root))
        print(
            f"  [{label} {r + 1}/{repeats}] without {without[-1]['wall']:6.2f} s   with {with_[-1]['wall']:6.2f} s",
            flush=True,
        )
    return without, with_


def checks_ran(run: dict) -> tuple[int, int]:
    """(fewest checks in ``monitor.history`` over the symmetries, expected ``epochs + 1``)."""
    history = run["monitor"].history
    return min(len(history.get(spec["name"], [])) for spec in SPECS), run["epochs"] + 1


def check_seconds(run: dict) -> tuple[float, list[float]]:
    """Hook seconds at the check at start (step 0, with the set-up) and at each epoch check's step."""
    mon = run["monitor"]
    steps = sorted({entry["global_step"] for spec in SPECS for entry in mon.history.get(spec["name"], [])})
    per_step: dict = defaultdict(float)
    for name, step, seconds in mon.hook_calls:
        if name not in END_HOOKS:
            per_step[step] += seconds
    return per_step[0], [per_step[s] for s in steps if s != 0]


def hook_total(run: dict) -> float:
    return sum(seconds for _, _, seconds in run["monitor"].hook_calls)


def logged_figures(log_dir: str, run: dict) -> Optional[tuple[int, int, int]]:
    """(check × symmetry figure sets complete in the event files, expected, images in all), or None without a reader."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    acc = EventAccumulator(log_dir, size_guidance={"images": 0}, purge_orphaned_data=False)
    acc.Reload()
    steps = defaultdict(set)
    total = 0
    for tag in acc.Tags()["images"]:
        events = acc.Images(tag)
        total += len(events)
        steps[tag] = {e.step for e in events}
    done = expected = 0
    for spec in SPECS:
        ns = f"equivariance/{spec['name']}"
        for entry in run["monitor"].history.get(spec["name"], []):
            expected += 1
            s = entry["global_step"]
            done += s in steps[f"{ns}/nero_aggregate"] and s in steps[f"{ns}/nero_individual"]
    return done, expected, total


# ---------------------------------------------------------------------------------------------------------- limit
def forward_limit(model: torch.nn.Module, x: torch.Tensor, n_elements: int, repeats: int) -> list[tuple]:
    """Per symmetry: (name, pairs, best chunk, median seconds of the bare forwards over its pre-transformed pairs)."""
    model = model.eval()
    out = []
    for spec in SPECS:
        sym = eqm.Symmetry.from_spec(**spec)
        elements = default_elements(sym.group, n_elements, torch.Generator().manual_seed(0))
        n, k = x.shape[0], elements.shape[0]
        prepare = getattr(sym.input_action, "prepare", None)
        with torch.no_grad():
            x0 = prepare(sym.group, x) if prepare is not None else x
            xs = sym.input_action(sym.group, elements.repeat_interleave(n, 0), x0.repeat(k, *[1] * (x.ndim - 1)))
        total = xs.shape[0]
        sizes = sorted({c for c in getattr(_chunking, "_CANDIDATES", (32, 64, 128, 256, 512)) if c < total} | {total})
        times = interleaved({c: functools.partial(forward_chunks, model, xs, c) for c in sizes}, "cpu", repeats)
        best = min(times, key=lambda c: times[c][0])
        out.append((spec["name"], total, best, times[best][0]))
    return out


# ---------------------------------------------------------------------------------------------------------- output
def summary_line(label: str, value: str, target: str, ok: Optional[bool]) -> None:
    """One judged number: label, value, target, PASS / MISS (n/a when it could not be measured)."""
    print(f"{label:36s} {value:>9s}   target {target:10s} {'n/a' if ok is None else 'PASS' if ok else 'MISS'}")


def runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (~1 min): tiny epochs, one repeat")
    parser.add_argument("--epochs", type=int, default=None, help=f"realistic fit epochs ({FULL['epochs']})")
    parser.add_argument("--epoch-size", type=int, default=None, help=f"samples per epoch ({FULL['epoch_size']})")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the realistic fit")
    parser.add_argument("--repeats", type=int, default=None, help=f"runs without/with, alternating ({FULL['repeats']})")
    parser.add_argument("--demo-epochs", type=int, default=None, help=f"digits demo epochs ({FULL['demo_epochs']})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: min(4, CPUs))")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("epochs", "epoch_size", "repeats", "demo_epochs"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = args.threads or min(4, cpus)
    torch.set_num_threads(threads)

    warnings.filterwarnings("ignore")  # Lightning's "few workers" / "log_every_n_steps" advice, on every fit
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # an untrained model's errors drift by design: keep the monitor's other warnings (e.g. a failed figure) visible
    logging.getLogger("eqmonitor").addFilter(lambda record: "drifted from" not in record.getMessage())

    defaults = inspect.signature(eqm.EquivarianceMonitor).parameters
    max_overhead = defaults["max_overhead"].default if "max_overhead" in defaults else "(no such argument)"
    n_elements = defaults["n_elements"].default if "n_elements" in defaults else 36
    n_samples = defaults["n_samples"].default if "n_samples" in defaults else 64
    steps = -(-args.epoch_size // args.batch_size)
    print(
        f"torch {torch.__version__}, eqmonitor {getattr(eqm, '__version__', '?')}, lightning {L.__version__}; "
        f"torch threads {torch.get_num_threads()} (set), CPUs {cpus}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"realistic fit: {args.epochs} epochs of {args.epoch_size} generated samples ({steps} steps of "
        f"{args.batch_size}, {args.workers} loader workers); digits demo: {args.demo_epochs} epochs of 1,400; "
        f"repeats {args.repeats}{' (--quick: smoke test, numbers are not meaningful)' if args.quick else ''}"
    )
    print(
        f"monitor: EquivarianceMonitor({[s['name'] for s in SPECS]}) at its defaults "
        f"(max_overhead default {max_overhead}); hooks timed: {', '.join(HOOKS)}"
    )

    def realistic_dm() -> RealisticDigitsDataModule:
        return RealisticDigitsDataModule(args.epoch_size, args.batch_size, num_workers=args.workers)

    with tempfile.TemporaryDirectory() as root:
        print("warm-up (imports, allocator, first render), not counted ...", flush=True)
        fit_once(DigitsDataModule, 1, True, root)
        fit_once(DigitsDataModule, 1, False, root)

        print("1./2. realistic epoch", flush=True)
        r_without, r_with = alternate(realistic_dm, args.epochs, args.repeats, root, "realistic")
        print("3. digits demo", flush=True)
        d_without, d_with = alternate(DigitsDataModule, args.demo_epochs, args.repeats, root, "demo")
        figures_logged = [logged_figures(run["log_dir"], run) for run in d_with]

        print("limit: bare forwards of the check's pairs ...", flush=True)
        dm = realistic_dm()
        dm.setup()
        x = dm.val_set.tensors[0][:n_samples]  # the probe's inputs: plain validation digits (content: no matter)
        limit_parts = forward_limit(r_with[-1]["model"], x, n_elements, preset["limit_repeats"])

    # ---------------------------------------------------------------- 1. realistic epoch
    a = statistics.median(r["wall"] for r in r_without)
    b = statistics.median(r["wall"] for r in r_with)
    share = (b - a) / b
    hook_share = statistics.median(hook_total(r) / r["wall"] for r in r_with)
    counts = [checks_ran(r) for r in r_with]
    demo_counts = [checks_ran(r) for r in d_with]
    all_ran = all(got == want for got, want in counts + demo_counts)
    print("\n=== 1. realistic epoch: monitor share of fit wall time ===")
    print(f"fit without monitor   {a:7.2f} s   (runs: {runs([r['wall'] for r in r_without])})")
    print(f"fit with monitor      {b:7.2f} s   (runs: {runs([r['wall'] for r in r_with])})")
    print(f"monitor hooks         {hook_share:7.1%} of fit with (training process; median over runs)")
    by_hook: dict = defaultdict(float)
    for name, _, seconds in r_with[-1]["monitor"].hook_calls:
        by_hook[name] += seconds
    print("hook seconds, last run  " + ", ".join(f"{n} {s:.2f}" for n, s in sorted(by_hook.items())))
    deferred = [getattr(r["monitor"], "deferred", None) for r in r_with]
    print(
        f"checks in history     {', '.join(f'{g}/{w}' for g, w in counts)} (per run: fewest over symmetries / "
        f"epochs + 1){'' if all_ran else f'; deferred by the budget: {deferred}'}"
    )

    # ---------------------------------------------------------------- 2. one check vs its limit
    starts, epoch_checks = [], []
    for r in r_with:
        start, per_check = check_seconds(r)
        starts.append(start)
        epoch_checks.extend(per_check)
    check = statistics.median(epoch_checks) if epoch_checks else None
    limit = sum(part[3] for part in limit_parts)
    print("\n=== 2. one check (training-process hook time at its step) vs the bare forwards of its pairs ===")
    print(
        f"epoch check           {1e3 * check:7.1f} ms   (median of {len(epoch_checks)}: "
        f"{', '.join(f'{1e3 * c:.0f}' for c in epoch_checks)} ms)"
        if check is not None
        else "epoch check               n/a   (no epoch check ran)"
    )
    print(
        f"check at start        {1e3 * statistics.median(starts):7.1f} ms   (with set-up and chunk tuning; not judged)"
    )
    for name, pairs, chunk, seconds in limit_parts:
        print(f"limit {name:15s} {1e3 * seconds:7.1f} ms   ({pairs} pairs, chunks of {chunk})")
    print(f"limit                 {1e3 * limit:7.1f} ms")

    # ---------------------------------------------------------------- 3. digits demo
    da = statistics.median(r["wall"] for r in d_without)
    db = statistics.median(r["wall"] for r in d_with)
    print(f"\n=== 3. digits demo: {args.demo_epochs} epochs of 1,400 digits, fit with monitor / without ===")
    print(f"fit without monitor   {da:7.2f} s   (runs: {runs([r['wall'] for r in d_without])})")
    print(f"fit with monitor      {db:7.2f} s   (runs: {runs([r['wall'] for r in d_with])})")
    print(
        f"checks in history     {', '.join(f'{g}/{w}' for g, w in demo_counts)} "
        f"(per run: fewest over symmetries / epochs + 1)"
    )
    if all(f is None for f in figures_logged):
        figures_done = None
        print("figures logged        n/a (tensorboard's event reader is not installed)")
    else:
        figures_done = all(f is not None and f[0] == f[1] for f in figures_logged)
        print(
            f"figures logged        {', '.join(f'{f[0]}/{f[1]} ({f[2]} images)' for f in figures_logged if f)} "
            f"(per run: check × symmetry sets in the event files when fit returned / expected)"
        )

    # ---------------------------------------------------------------- 4. figures
    seconds_by_kind: dict = defaultdict(list)
    exposed = False
    for r in r_with + d_with:
        per_kind = getattr(r["monitor"], "figure_seconds", None)
        if per_kind is None:
            continue
        exposed = True
        for kind, values in dict(per_kind).items():
            seconds_by_kind[kind].extend(float(v) for v in values)
    print("\n=== 4. figures: median seconds per render (render worker), per kind ===")
    figure_medians = {k: statistics.median(v) for k, v in sorted(seconds_by_kind.items()) if v}
    if not exposed:
        print("n/a (the monitor exposes no `figure_seconds`)")
    elif not figure_medians:
        print("n/a (no figure was rendered)")
    for kind, med in figure_medians.items():
        print(f"{kind:22s}{1e3 * med:7.1f} ms   ({len(seconds_by_kind[kind])} renders)")

    # ---------------------------------------------------------------- summary
    ratio_check = None if check is None else check / limit
    demo = db / da
    print(f"\n=== summary{' (--quick: smoke test only)' if args.quick else ''} ===")
    summary_line(
        "1. monitor share of realistic fit", f"{share:.1%}", f"<= {TARGETS['share']:.0%}", share <= TARGETS["share"]
    )
    summary_line("   every scheduled check ran (1., 3.)", "yes" if all_ran else "no", "yes", all_ran)
    summary_line(
        "2. one check / limit",
        "n/a" if ratio_check is None else f"{ratio_check:.2f}x",
        f"<= {TARGETS['check']}x",
        None if ratio_check is None else ratio_check <= TARGETS["check"],
    )
    summary_line("3. digits demo with / without", f"{demo:.2f}x", f"<= {TARGETS['demo']}x", demo <= TARGETS["demo"])
    summary_line(
        "   every figure logged by fit end",
        "n/a" if figures_done is None else "yes" if figures_done else "no",
        "yes",
        figures_done,
    )
    figure_target = f"<= {1e3 * TARGETS['figure']:.0f} ms"
    for kind, med in figure_medians.items():
        summary_line(f"4. figure {kind}", f"{1e3 * med:.1f} ms", figure_target, med <= TARGETS["figure"])
    if not figure_medians:
        summary_line("4. figure render (median per kind)", "n/a", figure_target, None)


if __name__ == "__main__":
    main()
