"""Doctests of the optional integrations: without their library, pytest skips them (with the reason) and passes.

The project's root ``conftest.py`` honours ``__doctest_requires__`` (pytest-doctestplus's declaration). Here a child
pytest runs the integrations' doctests with escnn and e3nn hidden (``sys.modules[name] = None``: not importable,
``find_spec`` finds nothing), as on a machine without the extras.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HIDDEN = """
import sys
sys.modules["escnn"] = None
sys.modules["e3nn"] = None
import pytest
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "eqmonitor/integrations"]))
"""


def test_doctests_of_missing_extras_are_skipped_not_failed():
    run = subprocess.run([sys.executable, "-c", HIDDEN], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "failed" not in out and "error" not in out.lower().replace("errors.py", "")
    for module in ("escnn/__init__.py", "escnn/action.py", "e3nn/__init__.py", "e3nn/layers.py"):
        assert f"eqmonitor/integrations/{module}: the example needs" in out, out
    assert "the example needs escnn (not installed)" in out and "the example needs e3nn (not installed)" in out


def test_the_declaration_selects_names():
    """``__doctest_requires__`` keys are names (or patterns) relative to the module; ``"*"`` is every example."""
    import doctest
    import importlib.util

    spec = importlib.util.spec_from_file_location("eqmonitor_root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    missing_requirements = root_conftest.missing_requirements
    globs = {"__name__": "pkg.mod", "__doctest_requires__": {("Thing.plot",): ["no_such_pkg_xyz"], ("*",): ["sys"]}}
    parse = doctest.DocTestParser().get_doctest
    assert missing_requirements(parse(">>> 1\n1\n", globs, "pkg.mod.Thing.plot", None, 0)) == ["no_such_pkg_xyz"]
    assert missing_requirements(parse(">>> 1\n1\n", globs, "pkg.mod.Thing", None, 0)) == []
    assert missing_requirements(parse(">>> 1\n1\n", {"__name__": "m"}, "m.f", None, 0)) == []
