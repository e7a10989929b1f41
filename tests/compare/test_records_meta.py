"""What the records hold for comparisons: the probe, its fingerprint, run metadata, per-pair tables, bounded."""

from __future__ import annotations

import numpy as np
import torch
from compare_specs import OLD_RECORDS

from eqmonitor.callbacks.run_records import MAX_PROB_VALUES, bounded_probs
from eqmonitor.records import load_arrays, read_records
from eqmonitor.records_meta import fingerprint, read_meta, read_probe


def test_a_run_records_its_probe_metadata_and_per_pair_tables(two_runs):
    root, monitors = two_runs
    mon = monitors["c4"]
    meta, probe = read_meta(root / "c4"), read_probe(root / "c4")
    assert meta["tag"] == "c4" and meta["model_class"] == "eqmonitor.demos.lightning_digits.DigitsClassifier"
    assert meta["seed"] == 0 and meta["probe_seed"] == 0 and meta["hparams"]["augment"] == "c4"
    assert (
        torch.equal(torch.from_numpy(probe["x"]), mon.probe.x) and probe["labels"].tolist() == mon.probe.labels.tolist()
    )
    assert probe["indices"].tolist() == mon.probe.indices
    assert meta["probe"]["fingerprint"] == fingerprint(mon.probe.x, mon.probe.labels)
    assert meta["probe"] == {**meta["probe"], "n_samples": 32, "stored_samples": 32, "input_shape": [1, 28, 28]}
    assert meta["symmetries"]["rotation"]["group"] == "so2" and meta["symmetries"]["c4"]["n_elements"] == 4
    np.testing.assert_array_equal(probe["elements.rotation"], mon._elements["rotation"].numpy())
    # the plain run probed the very same samples: same fingerprint
    assert read_meta(root / "none")["probe"]["fingerprint"] == meta["probe"]["fingerprint"]

    record = read_records(root / "c4", symmetry="rotation")[-1]
    arrays = load_arrays(record, root / "c4")
    orbit = mon.latest["rotation"].orbit
    np.testing.assert_array_equal(arrays["errors"], orbit.errors.numpy())
    assert arrays["probs"].shape == (32, 12, 10) and arrays["probs"].dtype == np.float16
    np.testing.assert_allclose(arrays["probs"].astype(np.float64).sum(-1), 1.0, atol=5e-3)
    np.testing.assert_array_equal(arrays["top1"], orbit.top1.numpy())
    assert (arrays["probs"].argmax(-1) == arrays["top1"]).mean() > 0.99  # float16 ties aside
    at_label = np.take_along_axis(arrays["probs"], probe["labels"][:, None, None].repeat(12, 1), -1)[..., 0]
    np.testing.assert_allclose(at_label, arrays["confidence"], atol=2e-3)
    assert set(arrays) >= {"flips", "confidence", "confidence_ref", "nonfinite", "elements", "exact"}


def test_orbit_errors_keep_probabilities_only_when_asked(trained_cnn, digits, c4):
    import eqmonitor as eqm

    x, y = digits
    plain = eqm.functional.orbit_errors(trained_cnn, x[:8], c4, c4.group.all_elements(), labels=y[:8])
    kept = eqm.functional.orbit_errors(trained_cnn, x[:8], c4, c4.group.all_elements(), keep_probs=True)
    assert plain.probs is None and plain.top1.shape == (8, 4) and kept.probs.shape == (8, 4, 10)
    with torch.no_grad():
        expected = trained_cnn(torch.rot90(x[:8], -1, (-2, -1))).softmax(1)
    torch.testing.assert_close(kept.probs[:, 1], expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(kept.top1[:, 1], expected.argmax(1)) and torch.equal(plain.top1, kept.top1)


def test_probabilities_are_bounded_per_check():
    probs = torch.rand(50, 40, 1000).softmax(-1)
    full = bounded_probs(probs[:, :, :10].softmax(-1))
    assert set(full) == {"probs"} and full["probs"].shape == (50, 40, 10)
    kept = bounded_probs(probs)
    k = MAX_PROB_VALUES // (50 * 40)
    assert (
        kept["probs"].shape == kept["probs_classes"].shape == (50, 40, k) and kept["probs"].numel() <= MAX_PROB_VALUES
    )
    top = probs.topk(k, -1)
    assert torch.equal(kept["probs_classes"].long(), top.indices)
    torch.testing.assert_close(kept["probs"].float(), top.values, atol=1e-3, rtol=1e-2)


def test_records_of_eqmonitor_0_1_still_read():
    records = read_records(OLD_RECORDS)
    assert [r["global_step"] for r in records] == [0, 2, 4]
    assert set(load_arrays(records[-1], OLD_RECORDS)) == {"errors", "nonfinite", "elements", "exact"}
    assert read_meta(OLD_RECORDS) is None and read_probe(OLD_RECORDS) is None
