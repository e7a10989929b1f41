"""Figure worker process: the same images as in-process rendering, a training script without a main guard is not
re-run, a dead or stuck child never hangs the caller, errors come back as text, and no process is left behind."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from eqmonitor.plots.payload import orbit_data
from eqmonitor.plots.png import EncodedImage, encode_png
from eqmonitor.plots.worker import FigureJob, FigureWorker, render_job

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="process checks read /proc")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _job(probe, step: int = 10, layers=None, spec: str = "so2") -> FigureJob:
    return FigureJob(f"sym-{spec}", step, [(step - 10, probe(spec, seed=0)), (step, probe(spec, seed=step))], layers)


def _state(pid: int) -> str:
    """The process state letter (``R``, ``S``, ``Z``, ...) or ``""`` if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _ends(pid: int, timeout: float = 15.0, zombie_ok: bool = False) -> bool:
    """Whether ``pid`` is gone (reaped) within ``timeout``; ``zombie_ok``: or exited, its reaping up to init."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(pid)
        if not state or (zombie_ok and state in "ZX"):
            return True
        time.sleep(0.05)
    return False


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def _run(path: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=180, env=env, **kw)


def _shell(tmp_path, body: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def worker():
    w = FigureWorker()
    yield w
    w.close()


def test_the_worker_renders_what_render_job_renders_in_process(worker, probe, layers):
    assert worker.pid is None  # started lazily
    job = _job(probe, layers=layers())
    worker.submit(job)
    assert worker.pid is not None and worker.pending == 1
    (out,) = worker.drain(120)
    assert out.error is None and (out.symmetry, out.step) == ("sym-so2", 10)
    expected = render_job(job)
    kinds = ["layers", "nero_aggregate", "nero_dr", "nero_individual"]
    assert sorted(out.images) == [f"equivariance/sym-so2/{k}" for k in kinds] == sorted(expected.images)
    for key, img in out.images.items():
        assert isinstance(img, EncodedImage) and img.png[:8] == b"\x89PNG\r\n\x1a\n"  # encoded in the child
        rgb = np.asarray(img)
        assert rgb.dtype == np.uint8 and rgb.shape == img.shape and rgb.shape[-1] == 3 and min(rgb.shape[:2]) > 100
        np.testing.assert_array_equal(rgb, np.asarray(expected.images[key]), err_msg=key)
    assert set(out.seconds) == set(kinds) and all(s > 0 for s in out.seconds.values())
    assert set(out.encode_seconds) == set(kinds) and all(s > 0 for s in out.encode_seconds.values())
    assert worker.child_info == {"pid": worker.pid, "torch": False}  # the child never imports torch
    assert worker.pending == 0


def test_results_come_back_in_submission_order(worker, probe):
    for step in (20, 30, 40):
        worker.submit(_job(probe, step))
    assert [r.step for r in worker.drain(120)] == [20, 30, 40]
    assert worker.ready() == [] and worker.pending == 0


def test_a_rendering_error_comes_back_as_text_and_the_worker_lives_on(worker, probe):
    good = orbit_data(probe("so2"))
    bad = dataclasses.replace(good, values=np.zeros((6, 5)))  # 5 values for 12 elements
    job = FigureJob("sym-so2", 50, [(50, bad)])
    pid = worker.pid
    worker.submit(job)
    (out,) = worker.drain(120)
    assert out.error is not None and "nero_aggregate" in out.error and "Traceback" in out.error
    assert out.error.splitlines()[-1] == render_job(job).error.splitlines()[-1]  # the same failure in-process
    assert list(out.images) == ["equivariance/sym-so2/nero_dr"]  # the figures that could be drawn still are
    worker.submit(FigureJob("sym-so2", 60, [(60, good)]))
    (after,) = worker.drain(120)
    assert after.error is None and len(after.images) == 3 and worker.pid == pid
    empty = FigureJob("sym-so2", 70, [])
    worker.submit(empty)  # a job that cannot even be converted fails here, in order, without reaching the child
    (failed,) = worker.drain(10)
    assert "at least this check" in failed.error


def test_a_training_script_without_a_main_guard_is_not_run_again(tmp_path):
    log = tmp_path / "imports.log"
    path = _script(
        tmp_path,
        f"""
        import os
        with open({str(log)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        import numpy as np
        from eqmonitor.plots.payload import Layout, OrbitData
        from eqmonitor.plots.worker import FigureJob, FigureWorker

        theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        layout = Layout("circle", theta, None, np.zeros(12, dtype=np.int64), ("",), (("-", "o", 3),), "angle",
                        "linear", None, "so2", "SO2()")
        data = OrbitData("rot", "relative error", np.random.default_rng(0).random((8, 12)), None, None, 0, layout)
        worker = FigureWorker()
        worker.submit(FigureJob("rot", 1, [(1, data)]))
        out = worker.drain(120)
        print(len(out), out[0].error, sorted(out[0].images))
        worker.close()
        """,
    )
    done = _run(path)
    assert done.returncode == 0, done.stderr
    assert "1 None ['equivariance/rot/nero_aggregate', 'equivariance/rot/nero_dr'" in done.stdout
    assert len(log.read_text().splitlines()) == 1  # the script ran once: the worker did not import it


def test_a_killed_worker_never_hangs_warns_once_restarts_once_then_drops(probe):
    w = FigureWorker(restarts=1)
    try:
        w.submit(_job(probe))
        deadline = time.monotonic() + 60
        while not w.child_info and time.monotonic() < deadline:  # started, now drawing its first figures
            time.sleep(0.01)
        first = w.pid
        os.kill(first, signal.SIGKILL)
        started = time.monotonic()
        with pytest.warns(RuntimeWarning, match=r"figure worker process died \(killed by signal SIGKILL\).*restarted"):
            out = w.drain(timeout=20)
        assert time.monotonic() - started < 20 and out == [] and w.pending == 0
        assert _ends(first)

        w.submit(_job(probe, 20))  # restarted once
        (again,) = w.drain(120)
        assert again.error is None and w.pid not in (None, first)
        os.kill(w.pid, signal.SIGKILL)  # idle this time: the next call after the death is noticed warns
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            deadline = time.monotonic() + 20
            while not caught and time.monotonic() < deadline:
                assert w.ready() == []
                time.sleep(0.01)
        assert len(caught) == 1 and "later figures are dropped" in str(caught[0].message)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one warning said it all: later submits are dropped silently
            w.submit(_job(probe, 30))
            assert w.ready() == [] and w.drain(1) == [] and w.pending == 0 and w.pid is None
    finally:
        w.close()


def test_drain_honours_its_timeout_when_the_child_is_stuck(tmp_path, probe):
    w = FigureWorker(executable=_shell(tmp_path, "exec sleep 60"))
    w.submit(_job(probe))
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="still rendering"):
        assert w.drain(timeout=1.0) == []
    assert time.monotonic() - started < 5 and w.pending == 1
    pid = w.pid
    w.close(timeout=0.5)
    assert _ends(pid) and w.pending == 0


def test_a_child_that_cannot_start_is_reported_with_its_reason(tmp_path, probe):
    fake = _shell(tmp_path, "echo 'ModuleNotFoundError: No module named matplotlib' >&2; exit 3")
    w = FigureWorker(restarts=0, executable=fake)
    w.submit(_job(probe))
    with pytest.warns(RuntimeWarning, match=r"(?s)exit code 3.*No module named matplotlib.*dropped"):
        assert w.drain(timeout=20) == []
    w.close()
    missing = FigureWorker(restarts=0, executable=str(tmp_path / "no-such-python"))
    missing.submit(_job(probe))  # does not raise in the training process
    with pytest.warns(RuntimeWarning, match="could not be started"):
        assert missing.drain(timeout=5) == [] and missing.pending == 0


def test_close_reaps_the_child(probe):
    w = FigureWorker()
    w.submit(_job(probe))
    w.drain(120)
    pid = w.pid
    assert _state(pid) in ("R", "S")
    w.close()
    assert not _state(pid) and w.pid is None


def test_interpreter_exit_and_a_killed_parent_leave_no_process(tmp_path):
    body = """
        import sys, time
        import numpy as np
        from eqmonitor.plots.payload import Layout, OrbitData
        from eqmonitor.plots.worker import FigureJob, FigureWorker

        theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        layout = Layout("circle", theta, None, np.zeros(12, dtype=np.int64), ("",), (("-", "o", 3),), "angle",
                        "linear", None, "so2", "SO2()")
        data = OrbitData("rot", "relative error", np.random.default_rng(0).random((8, 12)), None, None, 0, layout)
        worker = FigureWorker()
        worker.submit(FigureJob("rot", 1, [(1, data)]))
        worker.drain(120)
        worker.submit(FigureJob("rot", 2, [(2, data)]))  # still rendering at exit
        print(worker.pid, flush=True)
        if sys.argv[-1] == "hang":
            time.sleep(120)
        """
    path = _script(tmp_path, body)
    done = _run(path)  # exits without close(): the finalizer stops and reaps the child
    assert done.returncode == 0, done.stderr
    assert _ends(int(done.stdout.split()[0]), zombie_ok=True)

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parent = subprocess.Popen([sys.executable, path, "hang"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(parent.stdout.readline())
        parent.kill()  # no atexit, no finalizer: the child sees its stdin close and exits
        parent.wait()
        assert _ends(pid, zombie_ok=True)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_png_encoding_is_lossless_and_refuses_what_is_not_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (31, 47, 3), dtype=np.uint8)
    img = encode_png(rgb)
    assert (img.height, img.width, img.shape, img.dtype) == (31, 47, (31, 47, 3), np.uint8)
    np.testing.assert_array_equal(np.asarray(img), rgb)
    np.testing.assert_array_equal(img.to_array(), rgb)
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_png(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_png(rgb[..., 0])


def test_close_without_waiting_returns_at_once_and_the_child_is_still_reaped(probe):
    w = FigureWorker()
    w.submit(_job(probe))
    (out,) = w.drain(120)
    assert out.error is None
    pid = w.pid
    started = time.perf_counter()
    w.close(wait=False)
    assert time.perf_counter() - started < 0.1  # the child's interpreter teardown is not waited for
    assert w.pid is None and _ends(pid)  # exits on its own and is reaped, not left a zombie
