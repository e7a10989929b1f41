"""The figure worker's process plumbing: the child's bootstrap and main loop, the framing of the pipes, and the
parent's handle on one child (two pipe threads and its reaping). See :mod:`eqmonitor.plots.worker` for why the child
is started this way.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from typing import Any, Optional

__all__: list = []

_HEADER = struct.Struct("!qQ")  # sequence number, body length
_PLOTS_DIR = os.path.dirname(os.path.abspath(__file__))
_BOOTSTRAP = """import os, sys, types
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
for name, path in (("eqmonitor", sys.argv[1]), ("eqmonitor.plots", sys.argv[2])):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from eqmonitor.plots.pipe import _child_main
_child_main(int(sys.argv[3]))
"""


# ==================================================================================================== framing
def _read_exact(stream: Any, n: int) -> Optional[bytes]:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: Any) -> Optional[tuple[int, bytes]]:
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    seq, length = _HEADER.unpack(header)
    body = _read_exact(stream, length)
    return None if body is None else (seq, body)


def _write_frame(stream: Any, seq: int, body: bytes) -> None:
    stream.write(_HEADER.pack(seq, len(body)))
    stream.write(body)
    stream.flush()


def _child_main(nice: int) -> None:
    """The worker process: read jobs from stdin, write results to stdout, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle; it closes our stdin
    inp, out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # stray prints go to stderr, never into the result stream
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    _write_frame(out, -1, pickle.dumps({"pid": os.getpid(), "torch": "torch" in sys.modules}))
    from eqmonitor.plots.figures import FigureCache
    from eqmonitor.plots.jobs import _render

    cache = FigureCache()
    while (frame := _read_frame(inp)) is not None:
        seq, body = frame
        try:
            result: Any = _render(pickle.loads(body), cache)
        except BaseException:
            result = traceback.format_exc()
        try:
            _write_frame(out, seq, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            return


class _Child:
    """One worker process with its two pipe threads (the finalizer holds this, never the FigureWorker)."""

    def __init__(self, executable: str, nice: int, on_result: Any, on_exit: Any) -> None:
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPLBACKEND="agg")
        args = [executable, "-c", _BOOTSTRAP, os.path.dirname(_PLOTS_DIR), _PLOTS_DIR, str(nice)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=env, close_fds=True)  # fmt: skip
        self.pid = self.proc.pid
        self.outbox: queue.Queue = queue.Queue()
        self.info: dict = {}
        self._on_result, self._on_exit = on_result, on_exit
        self.sender = threading.Thread(target=self._send, name="eqmonitor-figures-send", daemon=True)
        self.receiver = threading.Thread(target=self._receive, name="eqmonitor-figures-receive", daemon=True)

    def start_threads(self) -> None:
        """Start the pipe threads; the owner calls it once it holds this child (a child that dies at once is then
        reported as its current one, not mistaken for one closed on purpose)."""
        self.sender.start()
        self.receiver.start()

    def _send(self) -> None:
        stdin = self.proc.stdin
        try:
            while (item := self.outbox.get()) is not None:
                _write_frame(stdin, *item)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child is gone; the receiver reports why
        finally:
            try:
                stdin.close()
            except (BrokenPipeError, OSError):
                pass

    def _receive(self) -> None:
        try:
            while (frame := _read_frame(self.proc.stdout)) is not None:
                seq, body = frame
                if seq < 0:
                    self.info = pickle.loads(body)
                else:
                    self._on_result(self, seq, pickle.loads(body))
        except Exception:  # a torn frame: treat as death
            pass
        self._on_exit(self, self.reason())

    def reason(self) -> str:
        """Why the child ended: its exit status and the tail of its stderr."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "its result stream closed"
        if code < 0:
            text = f"killed by signal {signal.Signals(-code).name}"
        else:
            text = f"exit code {code}"
        try:
            self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, self.stderr.tell() - 2000))
            tail = self.stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            tail = ""
        return f"{text}; its stderr ends with:\n{tail}" if tail else text

    def stop(self, timeout: float = 5.0) -> None:
        """Close its stdin, wait for it to exit (terminate, then kill, if it does not), reap it."""
        self.outbox.put(None)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for thread in (self.sender, self.receiver):
            if thread is not threading.current_thread() and thread.ident is not None:  # started
                thread.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()
