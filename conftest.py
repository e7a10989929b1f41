"""Collection settings for the whole repository (the tests and the package's doctests).

Doctests of optional extras: skip the examples whose module declares a package that is not installed.

A module declares what its examples need as pytest-doctestplus does, ``__doctest_requires__ = {("*",): ["escnn"]}``
(keys: tuples of names or ``fnmatch`` patterns relative to the module, ``"*"`` for all of them, the module's own
docstring included; values: importable names). Without the package, pytest reports those examples as skipped
(with the reason) instead of failing on their imports; with it, they run as usual.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from typing import Any

import pytest

# Deprecated shims (the demos moved to eqmonitor.demos): importing them warns on purpose and they hold no doctests.
collect_ignore = ["eqmonitor/models.py", "eqmonitor/data.py", "eqmonitor/lightning_digits.py"]
# The tests' conftest files hold fixtures, not doctests; collecting them as doctest modules imports several modules
# named `conftest` (one a folder, no packages) and pytest refuses the second ("import file mismatch").
collect_ignore_glob = ["tests/**/conftest.py", "tests/conftest.py"]


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return False


def missing_requirements(dtest: Any) -> list[str]:
    """The packages that the doctest ``dtest`` (a ``doctest.DocTest``) needs and that are not installed."""
    requires = dtest.globs.get("__doctest_requires__") or {}
    module = dtest.globs.get("__name__", "")
    name = dtest.name[len(module) + 1 :] if dtest.name.startswith(module + ".") else ""
    missing = []
    for patterns, packages in requires.items():
        patterns = (patterns,) if isinstance(patterns, str) else patterns
        if any(p == "*" or fnmatch.fnmatchcase(name, p) for p in patterns):
            missing += [pkg for pkg in packages if not _installed(pkg) and pkg not in missing]
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for item in items:
        dtest = getattr(item, "dtest", None)
        if dtest is None:
            continue
        missing = missing_requirements(dtest)
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"the example needs {', '.join(missing)} (not installed)"))
