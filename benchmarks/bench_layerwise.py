"""Benchmark: what in-place-safe layer captures cost in ``layer_errors``: time and peak memory.

Setup: a torchvision-style ResNet-18 (``BasicBlock``, blocks (2, 2, 2, 2), ``ReLU(inplace=True)``, ``out +=
identity``; built from ``tests/functional/layerwise_models.py``, torchvision not needed), ``--width`` channels in
the first stage, ``--n-samples`` RGB images of ``--size``², C4 (4 elements), eval mode, ``max_batch`` pairs per
forward. Each measurement runs in a fresh process: wall time of one ``layer_errors`` call (median of ``--repeats``
after a warm-up call) and its peak additional memory (CPU: the RSS high-water mark, reset just before the call,
minus the RSS before; CUDA: ``max_memory_allocated`` minus ``memory_allocated``). ``--code DIR`` measures the
``eqmonitor`` found in ``DIR`` (e.g. an older checkout) for comparison.

Run: ``python benchmarks/bench_layerwise.py [--code OLD_CHECKOUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "tests", "functional")


def _status() -> dict:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f) if v.strip().endswith("kB")}


def child(args) -> dict:
    sys.path.insert(0, MODELS)
    from layerwise_models import c4_resnet

    import eqmonitor as eqm

    model = c4_resnet(in_channels=3, width=args.width, blocks=(2, 2, 2, 2)).to(args.device)
    sym = eqm.Symmetry.from_spec(name="c4", group="c4")
    x = torch.randn(args.n_samples, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x, elements = x.to(args.device), sym.group.all_elements(args.device)

    def call():
        return eqm.functional.layer_errors(model, x, sym, elements, max_batch=args.max_batch)

    res = call()  # warm-up: kernels, masks, libraries
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        call()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _status()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        call()
        peak = _status()["VmHWM"] - base
    return {
        "seconds": statistics.median(times),
        "peak_bytes": peak,
        "kept_bytes": getattr(res, "kept_bytes", None),
        "first_failing": res.first_failing,
        "max_isolated_at_identity": float(res.isolated[:, :, 0].nan_to_num().max()),
        "layers": len(res.names),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--size", type=int, default=65)
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--code", default=os.path.join(HERE, ".."), help="checkout whose eqmonitor to measure")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    cmd = [sys.executable, __file__, "--child", "--device", args.device, "--width", str(args.width), "--size",
           str(args.size), "--n-samples", str(args.n_samples), "--max-batch", str(args.max_batch), "--repeats",
           str(args.repeats)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.path.abspath(args.code), PYTHONDONTWRITEBYTECODE="1")
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])
    print(json.dumps({"code": os.path.abspath(args.code), **vars(args), **out}, default=str))


if __name__ == "__main__":
    main()
