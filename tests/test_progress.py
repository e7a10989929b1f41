"""Progress bars: audits show one once the work has run a couple of seconds; quick calls and probes inside
training print nothing."""

from __future__ import annotations

import torch

import eqmonitor as eqm
import eqmonitor.progress as progress


class _Slow(torch.nn.Module):
    """A model slow enough that a bar with a short delay shows."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        import time

        time.sleep(0.02)
        return self.inner(x)


def test_audit_shows_a_bar_after_the_delay(capsys, monkeypatch, digits, rotation):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    x, _ = digits
    eqm.audit(_Slow(eqm.demos.SmallCNN()), x[:16], rotation, n_elements=36, max_batch=32)
    err = capsys.readouterr().err
    assert "eqmonitor: rotation orbit" in err and "pair" in err


def test_quick_audits_and_plain_probes_print_nothing(capsys, digits, rotation):
    x, _ = digits
    eqm.audit(eqm.demos.SmallCNN(), x[:4], rotation, n_elements=4)  # far under the 2 s delay
    eqm.functional.orbit_errors(_Slow(eqm.demos.SmallCNN()), x[:4], rotation, rotation.group.grid(8), max_batch=4)
    assert capsys.readouterr().err == ""
