"""Figure worker: a check's results go in, PNG images of its NERO figures come out, drawn in another process.

matplotlib holds the GIL while it draws, so drawing on a thread of the training process slows training as much as
drawing inline. :class:`FigureWorker` draws in a child process instead and the training process only converts the
results to small numpy data (:mod:`eqmonitor.plots.payload`) and pickles them; the child draws and PNG-encodes
(:mod:`eqmonitor.plots.png`), and the training process writes the encoded bytes as they are when
:meth:`FigureWorker.ready` hands them back.

How the child is started, and why:

- ``subprocess.Popen([sys.executable, "-c", bootstrap])``, not :mod:`multiprocessing`: its "spawn" and
  "forkserver" start methods re-import the parent's ``__main__`` in the child (a training script without an
  ``if __name__ == "__main__":`` guard would run again), and "fork" would copy CUDA and thread state.
- The bootstrap registers ``eqmonitor`` and ``eqmonitor.plots`` as bare packages (their ``__init__`` is not run), so
  the child imports the torch-free plotting modules only: numpy and matplotlib, never torch.
- Jobs and results are length-prefixed pickles on the child's stdin and stdout; the child moves its own stdout to
  stderr (stray prints cannot corrupt the stream), and stderr goes to a temporary file whose tail is reported if the
  child dies. The child runs at ``nice`` 10 with one BLAS/OpenMP thread, and exits when its stdin closes (also when
  the training process dies); :meth:`FigureWorker.close` and interpreter exit reap it.
- A dead child never hangs the fit: jobs in flight are dropped, one warning gives the reason, and the child is
  restarted once at the next submit (``restarts=1``); after that, figures are dropped (one more warning).
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
import traceback
import warnings
import weakref
from typing import Any, Optional

from eqmonitor.plots.jobs import FigureJob, RenderedFigures, _payload, render_job
from eqmonitor.plots.pipe import _Child

__all__ = ["FigureJob", "FigureWorker", "RenderedFigures", "render_job"]


class FigureWorker:
    """Renders :class:`FigureJob` s in a child process (started at the first :meth:`submit`), keeping one live
    figure per (symmetry, kind) there, and hands :class:`RenderedFigures` back in submission order.

    Args:
        restarts: how many times a child that died is replaced (at the next submit); then figures are dropped.
        nice: niceness increment of the child (``0``: none).
        executable: the Python interpreter to run the child with (default: this one).
    """

    def __init__(self, restarts: int = 1, nice: int = 10, executable: Optional[str] = None) -> None:
        self.restarts, self.nice = restarts, nice
        self.executable = executable or sys.executable
        self._lock = threading.Condition()
        self._child: Optional[_Child] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._seq = 0
        self._order: list[int] = []  # submitted, not yet handed out
        self._meta: dict[int, tuple[str, int]] = {}
        self._done: dict[int, RenderedFigures] = {}
        self._lost: set[int] = set()
        self._dead: Optional[str] = None  # why the current child died (not yet warned about)
        self._given_up = False

    # ------------------------------------------------------------------ state
    @property
    def pending(self) -> int:
        """Jobs submitted whose results :meth:`ready` / :meth:`drain` have not handed out yet."""
        with self._lock:
            return len(self._order)

    @property
    def pid(self) -> Optional[int]:
        """The child's process id, or ``None`` when none is running."""
        child = self._child
        return None if child is None else child.pid

    @property
    def child_info(self) -> dict:
        """What the child reported at start (``pid``, whether ``torch`` is imported); empty until it has."""
        child = self._child
        return {} if child is None else dict(child.info)

    # ------------------------------------------------------------------ api
    def start(self) -> None:
        """Start the child now rather than at the first submit (its imports then overlap the caller's work)."""
        if self._child is None and not self._given_up and not self._dead:
            try:
                self._start()
            except OSError as err:
                with self._lock:
                    self._dead = f"it could not be started: {err}"

    def submit(self, job: FigureJob) -> None:
        """Queue ``job``; returns at once (the conversion to numpy and the pickling are all it costs here)."""
        self._check_dead()
        with self._lock:
            seq = self._seq
            self._seq += 1
            self._order.append(seq)
            self._meta[seq] = (job.symmetry, int(job.step))
        try:
            body = pickle.dumps(_payload(job), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            self._finish(None, seq, traceback.format_exc())
            return
        if self._given_up:
            self._finish(None, seq, None)
            return
        if self._child is None:
            try:
                self._start()
            except OSError as err:  # no such interpreter, no more processes, ...
                with self._lock:
                    self._dead = f"it could not be started: {err}"
                self._finish(None, seq, None)
                return
        self._child.outbox.put((seq, body))

    def ready(self) -> list[RenderedFigures]:
        """Finished jobs, in submission order, without waiting (jobs lost with a dead child are skipped)."""
        self._check_dead()
        out = []
        with self._lock:
            while self._order and (self._order[0] in self._done or self._order[0] in self._lost):
                seq = self._order.pop(0)
                self._lost.discard(seq)
                item = self._done.pop(seq, None)
                if item is not None:
                    out.append(item)
        return out

    def drain(self, timeout: float = 120.0) -> list[RenderedFigures]:
        """Wait (at most ``timeout`` seconds) for every submitted job; returns what came back, in order."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._dead is None and any(s not in self._done and s not in self._lost for s in self._order):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(min(left, 0.5))
            died = self._dead is not None
            missing = sum(1 for s in self._order if s not in self._done and s not in self._lost)
        out = self.ready()
        if missing and not died:
            warnings.warn(f"eqmonitor: {missing} figure job(s) still rendering after {timeout:g} s; left pending.",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
        return out

    def close(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Stop the child (waiting at most ``timeout`` seconds for it to exit, then terminating it) and reap it;
        results not yet handed out are dropped. A later :meth:`submit` starts a fresh child.

        ``wait=False`` returns at once: the child's stdin is closed now (it exits when it reads the end, its
        interpreter teardown taking a few hundred ms) and a background thread reaps it.
        """
        child, self._child = self._child, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if child is not None and wait:
            child.stop(timeout)
        elif child is not None:
            child.outbox.put(None)  # the sender closes the child's stdin: no job after this one reaches it
            threading.Thread(target=child.stop, args=(timeout,), name="eqmonitor-figures-reap", daemon=True).start()
        with self._lock:
            self._order.clear()
            self._done.clear()
            self._lost.clear()
            self._meta.clear()

    def __enter__(self) -> "FigureWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _start(self) -> None:
        self._child = _Child(self.executable, self.nice, self._finish, self._exited)
        self._finalizer = weakref.finalize(self, self._child.stop)
        self._child.start_threads()

    def _finish(self, child: Optional[_Child], seq: int, result: Any) -> None:
        with self._lock:
            if seq not in self._meta:
                return  # closed meanwhile
            symmetry, step = self._meta.pop(seq)
            if result is None:
                self._lost.add(seq)
            elif isinstance(result, RenderedFigures):
                self._done[seq] = result
            else:  # the child could not even unpickle the job: its traceback
                self._done[seq] = RenderedFigures(symmetry, step, error=str(result))
            self._lock.notify_all()

    def _exited(self, child: _Child, reason: str) -> None:
        with self._lock:
            if child is not self._child:
                return  # closed on purpose
            for seq in [s for s in self._order if s not in self._done]:
                self._meta.pop(seq, None)
                self._lost.add(seq)
            self._dead = reason
            self._lock.notify_all()

    def _check_dead(self) -> None:
        """Warn once per death, reap the dead child, and decide: restart at the next submit, or give up."""
        with self._lock:
            reason, self._dead = self._dead, None
        if reason is None:
            return
        child, self._child = self._child, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if child is not None:
            child.stop(timeout=1)
        with self._lock:  # jobs queued while it was dying never reach anyone
            for seq in [s for s in self._order if s not in self._done]:
                self._meta.pop(seq, None)
                self._lost.add(seq)
        if self.restarts > 0:
            self.restarts -= 1
            then = "it is restarted at the next submit"
        else:
            self._given_up = True
            then = "later figures are dropped"
        warnings.warn(f"eqmonitor: the figure worker process died ({reason}); {then}.", RuntimeWarning, stacklevel=3)
