"""The demo code lives in ``eqmonitor.demos``; the old top-level paths still work for one release, with a warning;
the lazy exports of the package and of the demos show in ``dir()``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import eqmonitor as eqm
from eqmonitor import demos

OLD_PATHS = {
    "eqmonitor.models": ("SmallCNN", "GroupAveraged", "DeepSets", "RadialProfile", "C4EquivariantCNN"),
    "eqmonitor.data": ("load_digits",),
    "eqmonitor.lightning_digits": ("DigitsClassifier", "DigitsDataModule"),
}


@pytest.mark.parametrize("path", sorted(OLD_PATHS))
def test_old_module_paths_warn_and_give_the_same_objects(path):
    sys.modules.pop(path, None)
    with pytest.warns(DeprecationWarning, match=r"moved to `eqmonitor\.demos"):
        module = importlib.import_module(path)
    for name in OLD_PATHS[path]:
        assert getattr(module, name) is getattr(demos, name)


def test_old_attribute_path_warns():
    if "models" in vars(eqm):  # an earlier `import eqmonitor.models` bound the shim on the package
        del eqm.models
    with pytest.warns(DeprecationWarning, match=r"`eqmonitor\.models` moved to `eqmonitor\.demos`"):
        models = eqm.models
    assert models.SmallCNN is eqm.demos.SmallCNN


def test_lazy_exports_are_listed_and_resolve():
    for name in ("EquivarianceMonitor", "EquivarianceGuard", "EquivarianceBreachError", "EquivarianceError", "demos"):
        assert name in dir(eqm) and name in eqm.__all__
        assert getattr(eqm, name) is not None
    assert "models" not in dir(eqm)  # deprecated: reachable, not advertised
    assert {"DigitsClassifier", "DigitsDataModule", "SmallCNN", "load_digits"} <= set(dir(demos))
    assert demos.DigitsClassifier.__module__ == "eqmonitor.demos.lightning_digits"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        demos.nope  # noqa: B018


def test_import_eqmonitor_stays_light():
    """``import eqmonitor`` loads neither Lightning, torchmetrics nor the demos; they load on first use."""
    code = (
        "import sys, eqmonitor as eqm\n"
        "print(sorted(m for m in ('lightning', 'torchmetrics', 'eqmonitor.demos', 'eqmonitor.callbacks') "
        "if m in sys.modules))\n"
        "print(eqm.demos.SmallCNN.__name__, eqm.EquivarianceMonitor.__name__, eqm.EquivarianceError.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "SmallCNN EquivarianceMonitor EquivarianceError"]
