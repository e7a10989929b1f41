"""Benchmark: the cost of the monitor's NERO figures, one-shot against cached, and of the figure worker process.

Data: a ``SmallCNN(pool="avg")`` (8 probed layers) trained on the bundled digits with Adam, probed after every few
steps as the monitor would: ``orbit_errors`` of 64 validation digits over a 36-angle SO(2) grid with labels (so the
individual figure has its confidence panel), the last 6 checks overlaid, and ``layer_errors`` of 16 digits over 8
angles. Per figure kind, over every check (``--checks``, at least 10):

  (i)   one-shot: ``eqmonitor.plots.nero.<kind>(...)`` then ``figure_to_array`` (what the monitor did before);
  (ii)  cached: ``FigureCache`` updating one live figure per kind in place, then rendering it (first check: built);
  (iii) the worker process: ``FigureWorker.submit`` -> ``ready`` round trip of all four figures, the cost of
        ``submit`` in the training process, and the training process's CPU per job (``submit``, its pipe threads,
        ``ready``).

Render cost = draw + Agg render to RGB ``uint8`` at the figure's size, wall-clock and process CPU time (medians).
The machine may be shared: the load average is printed, CPU medians are the steadier numbers.
Run: ``python benchmarks/bench_figures.py`` (``--checks 12``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import eqmonitor as eqm
from eqmonitor.demos import load_digits
from eqmonitor.plots import nero
from eqmonitor.plots.figures import FigureCache
from eqmonitor.plots.payload import layer_data, orbit_data
from eqmonitor.plots.render import figure_to_array
from eqmonitor.plots.worker import FigureJob, FigureWorker

KINDS = ("nero_aggregate", "nero_individual", "nero_dr", "layers")
TARGET_MS = 50.0


def checks(n: int, steps_between: int = 4) -> list:
    """``n`` checks ``(step, OrbitErrors, LayerErrors)`` of a CNN being trained on the digits (deterministic)."""
    x, y = load_digits()
    val_x, val_y, train_x, train_y = x[:64], y[:64], x[64:], y[64:]
    torch.manual_seed(0)
    model = eqm.demos.SmallCNN(pool="avg")
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sym = eqm.Symmetry.from_spec(name="rotation", group="so2", input="image", output="invariant")
    grid = sym.group.grid(36)
    g = torch.Generator().manual_seed(0)
    out, step = [], 0
    for _ in range(n):
        model.eval()
        res = eqm.functional.orbit_errors(model, val_x, sym, grid, labels=val_y)
        lr = eqm.functional.layer_errors(model, val_x[:16], sym, sym.group.grid(8))
        out.append((step, res.cpu(), lr))
        model.train()
        for _ in range(steps_between):
            idx = torch.randint(0, len(train_x), (64,), generator=g)
            loss = torch.nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return out


def timed(fn) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def old_path(data: list) -> dict:
    times: dict = {k: [] for k in KINDS}
    for i, (_, res, lr) in enumerate(data):
        window = data[max(0, i - 5) : i + 1]
        results, labels = [r for _, r, _ in window], [f"step {s}" for s, _, _ in window]
        draws = {
            "nero_aggregate": lambda r=results, lab=labels: nero.aggregate(r, labels=lab),
            "nero_individual": lambda r=res: nero.individual(r, sample=r.worst()[0]),
            "nero_dr": lambda r=res: nero.dimension_reduction(r),
            "layers": lambda r=lr: nero.layer_table(r),
        }
        for kind, draw in draws.items():
            times[kind].append(timed(lambda d=draw: figure_to_array(d())))
    return times


def cached_path(data: list) -> dict:
    cache, times = FigureCache(), {k: [] for k in KINDS}
    converted = [(s, orbit_data(r), layer_data(lr)) for s, r, lr in data]  # done in the training process
    for i, (_, res, lr) in enumerate(converted):
        window = [(s, r) for s, r, _ in converted[max(0, i - 5) : i + 1]]
        draws = {
            "nero_aggregate": lambda w=window: cache.aggregate(w),
            "nero_individual": lambda r=res: cache.individual(r),
            "nero_dr": lambda r=res: cache.dimension_reduction(r),
            "layers": lambda r=lr: cache.layers(r),
        }
        for kind, draw in draws.items():
            times[kind].append(timed(draw))
    assert cache.built == len(KINDS), cache.built  # each figure built once, then updated in place
    return times


def worker_path(data: list) -> dict:
    out: dict = {"submit": [], "round trip": [], "parent cpu": [], "child": {k: [] for k in KINDS}}
    worker = FigureWorker()
    try:
        warm = data[0]
        worker.submit(FigureJob("warm-up", warm[0], [(warm[0], warm[1])], warm[2]))  # start-up and first builds
        started = time.perf_counter()
        worker.drain(300)
        out["start"] = time.perf_counter() - started
        for i, (step, _, lr) in enumerate(data):
            window = [(s, r) for s, r, _ in data[max(0, i - 5) : i + 1]]
            job = FigureJob("rotation", step, window, lr)
            cpu0 = time.process_time()
            out["submit"].append(timed(lambda j=job: worker.submit(j)))
            t0 = time.perf_counter()
            while not (got := worker.ready()):
                time.sleep(0.001)
            out["round trip"].append(time.perf_counter() - t0 + out["submit"][-1][0])
            out["parent cpu"].append(time.process_time() - cpu0)
            assert got[0].error is None, got[0].error
            for kind, seconds in got[0].seconds.items():
                out["child"][kind].append(seconds)
    finally:
        worker.close()
    return out


def ms(values) -> str:
    return f"{1e3 * statistics.median(values):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=12, help="checks to render (>= 10)")
    args = parser.parse_args()
    load0 = os.getloadavg()
    print(f"preparing {args.checks} checks (64 samples x 36 SO(2) elements, labels; layer table) ...", flush=True)
    data = checks(max(args.checks, 10))
    print(f"layers probed: {len(data[0][2].names)}; load average at start {load0[0]:.2f}", flush=True)
    old, new, work = old_path(data), cached_path(data), worker_path(data)

    print(f"\nmedian render cost per figure over {len(data)} checks, ms (wall | process CPU)")
    print(f"{'figure':<17}{'one-shot nero.*':>22}{'cached update':>22}{'in the worker':>16}{'speed-up (CPU)':>16}")
    for kind in KINDS:
        o_w, o_c = zip(*old[kind])
        n_w, n_c = zip(*new[kind])
        ratio = statistics.median(o_c) / statistics.median(n_c)
        print(f"{kind:<17}{ms(o_w)} | {ms(o_c)}   {ms(n_w)} | {ms(n_c)}   {ms(work['child'][kind]):>12}"
              f"{ratio:>14.1f}x")  # fmt: skip
    first = {k: 1e3 * new[k][0][0] for k in KINDS}
    print("first check (figure built), ms wall: " + ", ".join(f"{k} {v:.0f}" for k, v in first.items()))
    s_w, s_c = zip(*work["submit"])
    print(f"\nfigure worker: start-up + first figures {work['start']:.2f} s (once, at the first submit)")
    print(f"  submit -> ready round trip (4 figures): median {ms(work['round trip'])} ms")
    print(f"  submit() in the training process: median {ms(s_w)} ms wall, {ms(s_c)} ms CPU")
    print(f"  training-process CPU per job (submit + pipe threads + ready): median {ms(work['parent cpu'])} ms")
    worst = max(statistics.median([c for _, c in new[k]]) for k in KINDS)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; cached path, worst kind's median CPU: {1e3 * worst:.1f} ms "
          f"(target <= {TARGET_MS:.0f} ms): {'met' if 1e3 * worst <= TARGET_MS else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
