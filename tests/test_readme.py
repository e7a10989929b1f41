"""The README is for users: every ``python`` block in it runs as written (each alone, in a fresh process in an empty
folder, with nothing defined beforehand), and it names no file outside this repository.

A block that cannot run on its own is marked by a first line starting with :data:`ILLUSTRATIVE`; keep those few.
A block that imports an optional package (e3nn, escnn) is skipped when it is not installed, as their tests are.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ILLUSTRATIVE = "# illustrative only"
OPTIONAL = ("e3nn", "escnn")
TIMEOUT = 600  # seconds a block may take (each fits at most a few epochs on the bundled digits)
#: text a block must print, for blocks whose point is an outcome (a breach caught) rather than running at all
MUST_PRINT = {"except eqm.EquivarianceBreachError": "caught: "}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of each fenced ``python`` block (``line``: the fence's line number, 1-based)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((start, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def _block_id(line: int) -> str:
    """``<section>-<n>``: the block's section heading as a slug and its number there, e.g. ``what-it-does-1``."""
    heading, fenced = "top", False
    for s in README.read_text(encoding="utf-8").splitlines()[:line]:
        fenced = fenced != s.startswith("```")
        if not fenced and s.startswith("#"):
            heading = s
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lstrip("#").lower()).strip("-")[:40]
    return slug


def _ids() -> list[str]:
    ids, seen = [], {}
    for line, _ in BLOCKS:
        slug = _block_id(line)
        seen[slug] = seen.get(slug, 0) + 1
        ids.append(f"{slug}-{seen[slug]}")
    return ids


def test_the_readme_has_python_blocks_and_few_are_illustrative():
    assert len(BLOCKS) >= 8
    assert sum(code.startswith(ILLUSTRATIVE) for _, code in BLOCKS) <= 2


@pytest.mark.parametrize("line, code", BLOCKS, ids=_ids())
def test_readme_block_runs_as_written(line, code, tmp_path):
    if code.startswith(ILLUSTRATIVE):
        pytest.skip(f"README line {line}: {code.splitlines()[0]}")
    for package in OPTIONAL:
        if re.search(rf"^\s*(from|import) {package}\b", code, re.M) and importlib.util.find_spec(package) is None:
            pytest.skip(f"README line {line} needs {package} (not installed)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "MPLBACKEND": "Agg",
        "WANDB_SILENT": "true",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, f"README block at line {line} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    for marker, printed in MUST_PRINT.items():
        if marker in code:
            assert printed in proc.stdout, f"README block at line {line} did not print {printed!r}:\n{proc.stdout}"


# a path in the README that starts with one of the repository's folders and names a file
REPO_PATH = re.compile(r"(?<![\w./<-])((?:examples|configs|benchmarks|scripts|docs|tests|eqmonitor)/[\w./-]*\.\w+)")


def test_the_readme_names_no_file_outside_the_repository_and_its_files_exist():
    text = README.read_text(encoding="utf-8")
    for outside in ("../", "/work/", "/home/", "DESIGN.md", "STYLE.md", "shared/"):
        assert outside not in text, f"the README names {outside!r}, which is not part of this repository"
    named = set(REPO_PATH.findall(text))
    assert {"examples/escnn_digits.py", "configs/escnn_digits.yaml"} <= named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"the README names files this repository does not have: {missing}"
