"""Progress bars for one-shot work that can take a while (audits, command-line runs), quiet inside training.

A bar is a ``tqdm`` bar (the convention people know; ``tqdm.auto`` picks the notebook widget where there is one)
that appears only once the work has run for ``delay`` seconds, so quick calls print nothing. Probes take
``progress=False`` by default, which is what the training monitor uses: a callback never draws bars of its own.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

__all__ = ["DELAY", "progress_bar"]

DELAY = 2.0  # seconds of work before a bar shows


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress_bar(
    total: int, desc: str, enabled: bool = False, unit: str = "pair", delay: Optional[float] = None
) -> Iterator[Any]:
    """A bar over ``total`` units (``update(n)`` as work is done), or a silent stand-in when not ``enabled``."""
    if not enabled:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    delay = DELAY if delay is None else delay
    with tqdm(total=total, desc=desc, unit=unit, delay=delay, leave=False, dynamic_ncols=True) as bar:
        yield bar
