"""The monitor with ``reference="consensus"`` inside a real ``Trainer.fit``, at its defaults otherwise: the errors
against the consensus are logged and recorded under their own names beside the unchanged default keys."""

from __future__ import annotations

import pytest
import torch
from monitor_specs import C4_SPEC

import eqmonitor as eqm
import eqmonitor.compare as cmp
from eqmonitor.callbacks import EquivarianceMonitor
from eqmonitor.callbacks.breach import EquivarianceConfigError
from eqmonitor.check import CONSENSUS_PREFIX
from eqmonitor.explorer.data import run_view
from eqmonitor.records import load_arrays, read_records
from eqmonitor.summary import LOGGED


def test_a_fit_logs_and_records_the_errors_against_the_consensus(fit):
    mon = EquivarianceMonitor(C4_SPEC, reference="consensus")
    trainer, model, _ = fit([mon])
    metrics = trainer.callback_metrics
    for name in ("error_mean", "error_max", "error_p95", "nonfinite", "exact_error", "flip_rate"):
        assert f"equivariance/c4/{name}" in metrics and f"equivariance/c4/{CONSENSUS_PREFIX}{name}" in metrics
    latest = mon.latest["c4"]
    assert latest.consensus.reference == "consensus" and latest.orbit.reference == "identity"
    # the monitor's numbers are those of the final model, measured again on its probe by the functional core
    sym, elements, x = mon.symmetries[0], mon._elements["c4"], mon.probe.x
    model.eval()
    expected = eqm.functional.consensus_errors(model, x, sym, elements)
    torch.testing.assert_close(latest.consensus.errors, expected, rtol=1e-5, atol=1e-7)
    own = eqm.functional.orbit_errors(model, x, sym, elements)
    torch.testing.assert_close(latest.orbit.errors, own.errors, rtol=1e-5, atol=1e-7)
    assert float(metrics["equivariance/c4/consensus_error_mean"]) == pytest.approx(float(expected.mean()), rel=1e-5)
    assert float(metrics["equivariance/c4/error_mean"]) == pytest.approx(float(own.errors.mean()), rel=1e-5)
    # the records keep both, and the explorer reads the consensus errors back
    records = read_records(mon._folder)
    assert [r["epochs_done"] for r in records] == [0, 1, 2] and all(r["reference"] == "consensus" for r in records)
    assert set(LOGGED) - {"interp_error"} <= {k.removeprefix(CONSENSUS_PREFIX) for k in records[-1]["metrics"]}
    arrays = load_arrays(records[-1], mon._folder)
    torch.testing.assert_close(torch.from_numpy(arrays["consensus_errors"]), latest.consensus.errors.cpu())
    view = run_view(cmp.load_run(mon._folder), "c4")
    assert view.consensus_errors.shape == view.errors.shape == (3, 64, 4)
    assert view.epochs == [0, 1, 2]  # the explorer's epochs are the comparison's: epochs trained
    x_axis, values = cmp.curve(cmp.load_run(mon._folder), "c4", "consensus_error_mean")
    assert x_axis.tolist() == [0, 1, 2] and values[-1] == pytest.approx(float(expected.mean()), rel=1e-5)


def test_bad_references_fail_at_construction():
    with pytest.raises(EquivarianceConfigError, match="`reference` must be one of"):
        EquivarianceMonitor(C4_SPEC, reference="labels")
    confidence = {**C4_SPEC, "error": "confidence"}
    with pytest.raises(EquivarianceConfigError, match="'c4' measure the `confidence` error"):
        EquivarianceMonitor(confidence, reference="consensus")
    EquivarianceMonitor(confidence)  # with the default reference the labels are used
