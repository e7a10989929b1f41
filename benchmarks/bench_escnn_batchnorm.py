"""Why a trained escnn steerable CNN measures above the noise floor at 45°: BatchNorm's running statistics.

The C8 model of ``examples/escnn_digits.py`` (its test's sizes: fields 2, 3, 3, 4, 4, 3; one epoch on 128 rotated
digits) is audited under C8 on 64 validation digits in five states: at initialisation; with only its BatchNorm
statistics warmed on the training data (no weight update); trained; trained with its BatchNorm statistics reset to
their initial values (all of them, then only the head's, then only escnn's ``InnerBatchNorm``). Each row: the worst
exact (quarter-turn) error, the mean 45° error against its noise floor, the top-1 flip rate, the verdict, and how
much the outputs differ from digit to digit (mean distance to the mean output over the mean output norm).

python benchmarks/bench_escnn_batchnorm.py          # needs escnn; about 80 CPU seconds
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import escnn_digits  # noqa: E402

import eqmonitor as eqm  # noqa: E402

FIELDS = (2, 3, 3, 4, 4, 3)


def _batch_norms(net: nn.Module, head: bool | None = None) -> list[nn.Module]:
    """BatchNorm layers (escnn's InnerBatchNorm holds torch ones): all, the head's only, or escnn's only."""
    return [
        m
        for name, m in net.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (head is None or name.startswith("fully_net") == head)
    ]


def reset(net: nn.Module, head: bool | None = None) -> nn.Module:
    net = copy.deepcopy(net)
    for m in _batch_norms(net, head):
        m.reset_running_stats()
    return net


def row(label: str, net: nn.Module, x: torch.Tensor) -> None:
    net = copy.deepcopy(net).eval()
    sym = eqmonitor_symmetry(net)
    report = eqm.audit(net, x, sym, progress=False)
    exact = max(r["error_mean"] for r in report.elements if r["exact"])
    interp = [r for r in report.elements if not r["exact"]]
    err = sum(r["error_mean"] for r in interp) / len(interp)
    floor = sum(r["noise_floor"] for r in interp) / len(interp)
    with torch.no_grad():
        out = net(x).double()
    spread = float((out - out.mean(0)).norm(dim=1).mean() / out.norm(dim=1).mean())
    print(
        f"{label:44s} exact {exact:.1e}  45° {err:.3f} (floor {floor:.3f})  flips {report.flip_rate:.3f}  "
        f"{report.verdict:24s} outputs differ by {spread:.1%}"
    )


def eqmonitor_symmetry(net: nn.Module) -> eqm.Symmetry:
    from eqmonitor.integrations.escnn import symmetry_for_escnn

    return symmetry_for_escnn(net, name="c8", output="invariant")


def main() -> None:
    L.seed_everything(0)
    dm = escnn_digits.RotatedDigitsDataModule(n_train=128, n_val=64, batch_size=32)
    dm.setup()
    x = dm.val_set.tensors[0]
    model = escnn_digits.EscnnDigitsClassifier(fields=FIELDS, monitor={"records": False, "plots": False})
    fresh = copy.deepcopy(model.net)
    row("initialisation", fresh, x)
    warm = copy.deepcopy(fresh).train()
    with torch.no_grad():
        for batch, _ in dm.train_dataloader():
            warm(batch)
    row("initial weights, BatchNorm warmed on the data", warm, x)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    row("trained one epoch", model.net, x)
    row("trained, every BatchNorm reset", reset(model.net), x)
    row("trained, the head's BatchNorm1d reset", reset(model.net, head=True), x)
    row("trained, the InnerBatchNorms reset", reset(model.net, head=False), x)


if __name__ == "__main__":
    main()
