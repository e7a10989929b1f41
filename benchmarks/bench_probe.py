"""Benchmark: batched ``orbit_errors`` against the per-element audit loop and against the model's forward alone.

Setup: digits (28x28), a plain ``SmallCNN`` (seed 0, eval), SO(2) on a grid of K angles, N samples, rotation
invariance. Measured (median of ``--repeats`` runs after warm-up, one process, default torch threads):

  (a)  ``eqm.functional.orbit_errors(model, x, sym, elements)`` with its defaults (``max_batch="auto"``);
  (b1) the per-element loop of the classic audit template and of e3nn's ``equivariance_error``: transform the batch
       for each element, forward it AND recompute f(x0), compare in float64;
  (b2) the same loop with f(x0) computed once;
  (c)  the limit: the forward alone over the K*N pre-transformed inputs, at the best chunk size of a sweep.

Then peak additional memory of ``orbit_errors`` against ``max_batch``. Run: ``python benchmarks/bench_probe.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch

import eqmonitor as eqm
import eqmonitor.demos
from eqmonitor.functional import _chunking

SWEEP = [32, 64, 128, 256, 512, 1024, 2304]  # chunk sizes for the forward-only limit (c)
MEM_BATCHES = [32, 128, 512, 2304]  # max_batch settings for the memory table
TARGETS = {"a/c": ("<=", 1.2), "b1/a": (">=", 1.8), "b2/a": (">=", 1.0)}


def setup(device: str, n: int, k: int):
    """Model, samples, symmetry and elements, all on ``device``; deterministic."""
    torch.manual_seed(0)
    model = eqm.demos.SmallCNN().eval().to(device)
    x = eqmonitor.demos.load_digits()[0][:n].to(device)
    sym = eqm.Symmetry.from_spec(name="rotation", group="so2", input="image", output="invariant")
    elements = eqm.groups.SO2().grid(k, device=device)
    return model, x, sym, elements


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def once(fn, device: str) -> float:
    """Seconds of one call of ``fn``, synchronised on a GPU."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict, device: str, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each ``fns[name]()``, timed in round-robin so that a load change on a shared machine
    biases every method alike (the ratios stay meaningful); also the minimum, for reference."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(once(fn, device))
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Relative error per sample, in float64 (as ``orbit_errors``' default distance)."""
    a, b = actual.double().flatten(1), expected.double().flatten(1)
    return (a - b).norm(dim=1) / (b.norm(dim=1) + 1e-12)


def element_loop(model, x0, sym, elements, recompute: bool) -> torch.Tensor:
    """(b1)/(b2): the per-element audit loop; ``recompute`` evaluates f(x0) again for every element (b1)."""
    n = x0.shape[0]
    with torch.no_grad():
        y0 = None if recompute else model(x0)
        errors = []
        for k in range(elements.shape[0]):
            xt = sym.input_action(sym.group, elements[k].expand(n, -1), x0)
            errors.append(rel_err(model(xt), model(x0) if recompute else y0))
    return torch.stack(errors, 1)  # [N, K]


def forward_chunks(model, xs: torch.Tensor, chunk: int) -> None:
    """(c): the model's forward alone over pre-transformed inputs, ``chunk`` at a time."""
    with torch.no_grad():
        for i in range(0, xs.shape[0], chunk):
            model(xs[i : i + chunk])


def verdict(name: str, value: float) -> str:
    op, target = TARGETS[name]
    ok = value <= target if op == "<=" else value >= target
    return f"{name:5s} = {value:5.2f}   target {op} {target:<4}  {'PASS' if ok else 'MISS'}"


def bench_speed(device: str, args) -> None:
    model, x, sym, elements = setup(device, args.n_samples, args.n_elements)
    n, k = x.shape[0], elements.shape[0]
    x0 = sym.input_action.prepare(sym.group, x)
    if device.startswith("cuda"):  # orbit_errors runs with TF32 off (isolated); give the baselines the same precision
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    print(
        f"\n=== {device}: N={n}, K={k} ({n * k} pairs), torch threads={torch.get_num_threads()}, "
        f"median of {args.repeats} ==="
    )

    def probe() -> None:  # (a) with its defaults
        eqm.functional.orbit_errors(model, x, sym, elements)

    # first call ever in this process: auto-tune of the chunk size + lazy initialisation (kernels, masks)
    _chunking.clear_cache()
    cold = once(probe, device)
    chosen = next(iter(_chunking._cache[model].values()))[0]
    _chunking.clear_cache()  # first call again in a warm process: the tuning cost alone
    retune = once(probe, device)

    # (c) pre-transform all K*N inputs once (element-major, like orbit_errors), then sweep the chunk size
    with torch.no_grad():
        xs = sym.input_action(sym.group, elements.repeat_interleave(n, 0), x0.repeat(k, 1, 1, 1))
    sweep = interleaved({c: (lambda c=c: forward_chunks(model, xs, c)) for c in SWEEP}, device, args.repeats)
    best = min(sweep, key=lambda c: sweep[c][0])

    t = interleaved(
        {
            "a": probe,
            "b1": lambda: element_loop(model, x0, sym, elements, recompute=True),
            "b2": lambda: element_loop(model, x0, sym, elements, recompute=False),
            "c": lambda: forward_chunks(model, xs, best),
            # diagnostic: orbit_errors at the forward's best chunk size, i.e. without the auto-tuner's choice
            "a_best": lambda: eqm.functional.orbit_errors(model, x, sym, elements, max_batch=best),
        },
        device,
        args.repeats,
    )
    (t_a, m_a), (t_b1, m_b1), (t_b2, m_b2), (t_c, m_c) = t["a"], t["b1"], t["b2"], t["c"]
    t_ab, m_ab = t["a_best"]

    # sanity: the batched and looped errors agree
    res = eqm.functional.orbit_errors(model, x, sym, elements)
    diff = (res.errors - element_loop(model, x0, sym, elements, False)).abs().max().item()

    print("forward-only sweep (c), median ms:  " + "  ".join(f"{c}: {1e3 * v[0]:.1f}" for c, v in sweep.items()))
    print(
        f"(a)  orbit_errors (auto)        {1e3 * t_a:8.1f} ms  (min {1e3 * m_a:6.1f})  "
        f"auto chunk = {chosen}; max |a - b2| = {diff:.1e}"
    )
    print(
        f"     max_batch={best:<5d}           {1e3 * t_ab:8.1f} ms  (min {1e3 * m_ab:6.1f})  "
        f"a/c at that size = {t_ab / t_c:.2f}"
    )
    print(f"     first call in process      {1e3 * cold:8.1f} ms  (auto-tune + lazy init)")
    print(f"     first call after clear     {1e3 * retune:8.1f} ms  (auto-tune ~ {1e3 * (retune - t_a):.0f} ms)")
    print(f"(b1) loop, f(x0) per element    {1e3 * t_b1:8.1f} ms  (min {1e3 * m_b1:6.1f})")
    print(f"(b2) loop, f(x0) once           {1e3 * t_b2:8.1f} ms  (min {1e3 * m_b2:6.1f})")
    print(f"(c)  forward only, chunk {best:<5d}  {1e3 * t_c:8.1f} ms  (min {1e3 * m_c:6.1f})")
    for name, value in (("a/c", t_a / t_c), ("b1/a", t_b1 / t_a), ("b2/a", t_b2 / t_a)):
        print("  " + verdict(name, value))
    print(
        f"  (on minima: a/c = {m_a / m_c:.2f}, b1/a = {m_b1 / m_a:.2f}, b2/a = {m_b2 / m_a:.2f}; "
        f"load average now {os.getloadavg()[0]:.2f})"
    )


def _proc_status() -> dict:
    text = open("/proc/self/status").read()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}


def memory_child(device: str, max_batch: int, args) -> dict:
    """Peak additional memory of one ``orbit_errors`` call (run in a fresh process for the CPU)."""
    model, x, sym, elements = setup(device, args.n_samples, args.n_elements)
    eqm.functional.orbit_errors(model, x[:1], sym, elements[:1], max_batch=1)  # load kernels, masks, libraries
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        eqm.functional.orbit_errors(model, x, sym, elements, max_batch=max_batch)
        sync(device)
        return {"peak": torch.cuda.max_memory_allocated() - base, "method": "cuda.max_memory_allocated - allocated"}
    base = _proc_status()["VmRSS"]
    try:  # Linux >= 4.0: writing 5 resets the RSS high-water mark VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM (reset via clear_refs) - VmRSS before, fresh process"
    except OSError:
        method = "VmHWM (not resettable: includes setup peak) - VmRSS before, fresh process"
    eqm.functional.orbit_errors(model, x, sym, elements, max_batch=max_batch)
    return {"peak": _proc_status()["VmHWM"] - base, "method": method}


def bench_memory(device: str, args) -> None:
    rows, method = [], ""
    for mb in MEM_BATCHES:
        if device.startswith("cuda"):
            out = memory_child(device, mb, args)
        else:  # a fresh interpreter per setting, so no earlier allocation is reused or counted
            cmd = [
                sys.executable,
                __file__,
                "--memory-child",
                str(mb),
                "--device",
                device,
                "--n-samples",
                str(args.n_samples),
                "--n-elements",
                str(args.n_elements),
            ]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows.append((mb, out["peak"]))
        method = out["method"]
    print(f"peak additional memory of orbit_errors vs max_batch ({device}; {method}):")
    for mb, peak in rows:
        print(f"  max_batch {mb:5d}: {peak / 2**20:8.1f} MiB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="all", help="'cpu', 'cuda' or 'all' (cpu, then cuda if available)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--n-elements", type=int, default=36)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child is not None:  # internal: one memory measurement, printed as JSON
        print(json.dumps(memory_child(args.device, args.memory_child, args)))
        return
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if not torch.cuda.is_available() and any(d.startswith("cuda") for d in devices):
        print("CUDA is not available: skipping the GPU runs.")
        devices = [d for d in devices if not d.startswith("cuda")]
    print(
        f"torch {torch.__version__}, eqmonitor {eqm.__version__}, CUDA available: {torch.cuda.is_available()}, "
        f"CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (timings assume an otherwise idle machine)"
    )
    for device in devices:
        bench_speed(device, args)
        bench_memory(device, args)


if __name__ == "__main__":
    main()
