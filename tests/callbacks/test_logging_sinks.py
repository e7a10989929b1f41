"""What the monitor logs, read back from TensorBoard event files and from an offline W&B run."""

from __future__ import annotations

import pytest
from logreaders import read_tensorboard, read_wandb_offline
from monitor_specs import C4_SPEC

from eqmonitor.callbacks import EquivarianceMonitor

IMAGES = ("nero_aggregate", "nero_individual", "nero_dr", "layers")


def _monitor(**kw):
    return EquivarianceMonitor(
        C4_SPEC, n_samples=16, layerwise=True, drift_factor=1.01, drift_min=0.0, drift_warmup=0, alert_wait=0.0, **kw
    )


def test_tensorboard_scalars_and_images(fit, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    mon = _monitor()
    fit([mon], logger=logger)
    tb = read_tensorboard(logger.log_dir)
    steps = [s for s, _ in tb["scalars"]["equivariance/c4/error_mean"]]
    assert steps == [0, 4, 8]
    logged = [v for _, v in tb["scalars"]["equivariance/c4/error_mean"]]
    assert logged == pytest.approx([e["metrics"]["error_mean"] for e in mon.history["c4"]], rel=1e-6)
    for key in ("error_max", "error_p95", "flip_rate", "exact_error", "nonfinite", "layer/net.features.0"):
        assert f"equivariance/c4/{key}" in tb["scalars"], key
    for name in IMAGES:
        images = tb["images"][f"equivariance/c4/{name}"]
        assert [s for s, _, _ in images] == [0, 4, 8], name
        assert all(w > 100 and h > 100 for _, w, h in images)
    _assert_event_pngs_decode(logger.log_dir, {f"equivariance/c4/{name}" for name in IMAGES})


def _assert_event_pngs_decode(log_dir, tags, expected=None):
    """Every image summary of ``tags`` in the event files is a PNG that decodes to the RGB size it declares (and,
    with ``expected``: tag -> array, to exactly those pixels)."""
    import io

    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    acc.Reload()
    assert tags <= set(acc.Tags()["images"])
    for tag in tags:
        for event in acc.Images(tag):
            with Image.open(io.BytesIO(event.encoded_image_string)) as png:
                assert png.format == "PNG"
                rgb = np.asarray(png.convert("RGB"))
            assert rgb.shape == (event.height, event.width, 3), tag
            if expected is not None:
                np.testing.assert_array_equal(rgb, expected[tag], err_msg=tag)


def _images():
    """Two RGB images with structure, and their PNG encodings."""
    import numpy as np

    from eqmonitor.plots.png import encode_png

    rng = np.random.default_rng(0)
    arrays = {
        "a/encoded": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "a/array": np.zeros((20, 30, 3), np.uint8),
    }
    arrays["a/array"][5:9, 3:20] = (200, 10, 40)
    return arrays, {k: encode_png(v) for k, v in arrays.items()}


def test_log_images_writes_encoded_pngs_as_they_are_and_arrays_to_tensorboard(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from eqmonitor.sinks import log_images

    arrays, encoded = _images()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    log_images([logger], {"a/encoded": encoded["a/encoded"], "a/array": arrays["a/array"]}, step=3)
    logger.experiment.flush()
    _assert_event_pngs_decode(logger.log_dir, set(arrays), expected=arrays)
    from eqmonitor.plots.png import EncodedImage

    assert isinstance(encoded["a/encoded"], EncodedImage) and encoded["a/encoded"].shape == (37, 53, 3)


def test_records_written_next_to_the_logs(fit, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from eqmonitor.records import load_arrays, read_records

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    mon = _monitor()
    fit([mon], logger=logger)
    directory = f"{logger.log_dir}/eqmonitor_records"
    records = read_records(directory)
    assert [r["global_step"] for r in records] == [0, 4, 8]
    assert [r["metrics"]["error_mean"] for r in records] == pytest.approx(
        [e["metrics"]["error_mean"] for e in mon.history["c4"]]
    )
    assert "net.features.0" in records[-1]["layers"]
    arrays = load_arrays(records[-1], directory)
    assert arrays["errors"].shape == (16, 4)
    assert float(arrays["errors"].mean()) == pytest.approx(records[-1]["metrics"]["error_mean"], rel=1e-6)
    assert any(r["alerts"] for r in records)  # drift_factor 1.01: the rising error alerts


def test_wandb_offline_scalars_images_and_alerts(fit, wandb_env, tmp_path):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="eqmonitor-tests", save_dir=str(wandb_env), offline=True)
    mon = _monitor()
    with pytest.warns(UserWarning, match="drifted"):
        fit([mon], logger=logger)
    run_dir = logger.experiment.dir.rsplit("/files", 1)[0]
    wandb.finish()
    run = read_wandb_offline(run_dir)
    rows = [r for r in run["history"] if "equivariance/c4/error_mean" in r]
    assert [r["trainer/global_step"] for r in rows] == [0, 4, 8]
    assert [r["equivariance/c4/error_mean"] for r in rows] == pytest.approx(
        [e["metrics"]["error_mean"] for e in mon.history["c4"]], rel=1e-6
    )
    names = [p.rsplit("/", 1)[-1] for p in run["images"]]
    for name in IMAGES:
        assert sum(n.startswith(f"equivariance/c4/{name}".replace("/", "_")) or n.startswith(name) for n in names) >= 1
    _assert_media_pngs(run_dir, run["images"])
    titles = {a["title"] for a in run["alerts"]}
    assert "eqmonitor: c4 error_mean drifted" in titles
    assert all("equivariance/c4/error_mean" in a["text"] for a in run["alerts"])


def _assert_media_pngs(run_dir, paths, expected=None):
    """Every image file of the offline W&B run is a PNG that decodes (to ``expected``'s pixels, by key prefix)."""
    import os

    import numpy as np
    from PIL import Image

    from eqmonitor import sinks

    assert paths
    for path in paths:
        with Image.open(os.path.join(run_dir, "files", path)) as png:
            assert png.format == "PNG"
            rgb = np.asarray(png.convert("RGB"))
        assert rgb.ndim == 3 and rgb.shape[0] >= 20 and rgb.shape[1] >= 30, path
        for key, array in (expected or {}).items():
            if path.rsplit("/", 1)[-1].startswith(key.rsplit("/", 1)[-1] + "_"):
                np.testing.assert_array_equal(rgb, array, err_msg=path)
    if sinks._PNG_DIR is not None and os.path.isdir(sinks._PNG_DIR):
        assert os.listdir(sinks._PNG_DIR) == []  # every PNG file handed to W&B was moved into its run


def test_log_images_writes_encoded_pngs_to_wandb_without_reencoding(wandb_env, tmp_path):
    import os

    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from eqmonitor.sinks import log_images

    arrays, encoded = _images()
    logger = WandbLogger(project="eqmonitor-tests", save_dir=str(wandb_env), offline=True)
    log_images([logger], {"a/encoded": encoded["a/encoded"], "a/array": arrays["a/array"]}, step=3)
    run_dir = logger.experiment.dir.rsplit("/files", 1)[0]
    wandb.finish()
    run = read_wandb_offline(run_dir)
    names = {p.rsplit("/", 1)[-1].split("_", 1)[0] for p in run["images"]}
    assert names == {"encoded", "array"}, run["images"]
    _assert_media_pngs(run_dir, run["images"], expected=arrays)
    (media,) = [p for p in run["images"] if p.rsplit("/", 1)[-1].startswith("encoded")]
    with open(os.path.join(run_dir, "files", media), "rb") as fh:
        assert fh.read() == encoded["a/encoded"].png  # the worker's bytes, not a re-encoding
