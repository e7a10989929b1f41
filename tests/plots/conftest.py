"""Results to plot: small real probes (orbit and layer-wise) of tiny CNNs, cheap enough for every test."""

from __future__ import annotations

import pytest
import torch

import eqmonitor as eqm


def _probe(spec: str, seed: int = 0, labels: bool = True, n: int = 6, bright: tuple = ()) -> eqm.OrbitErrors:
    """Orbit errors of a 12×12 CNN (seeded) on ``n`` seeded images; ``bright`` samples give NaN outputs."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 12, 12, generator=g), torch.randint(0, 3, (n,), generator=g)
    x[list(bright)] = 100.0
    sym = eqm.Symmetry.from_spec(name=f"sym-{spec}", group=spec, input="image", output="invariant")
    grids = {"so2": lambda gr: gr.grid(12), "translation": lambda gr: gr.grid(5), "scale": lambda gr: gr.grid(5)}
    elements = grids.get(spec, lambda gr: gr.all_elements())(sym.group)
    torch.manual_seed(seed)
    cnn = eqm.demos.SmallCNN(size=12, width=4).eval()

    def model(inp: torch.Tensor) -> torch.Tensor:
        out = cnn(inp)
        return out.masked_fill((inp.flatten(1).amax(1) > 50)[:, None], float("nan"))

    return eqm.functional.orbit_errors(model, x, sym, elements, labels=y if labels else None, max_batch=128)


@pytest.fixture(scope="session")
def probe():
    """``probe(spec, seed=0, labels=True, n=6, bright=()) -> OrbitErrors`` (memoised)."""
    memo: dict = {}

    def get(spec: str, seed: int = 0, labels: bool = True, n: int = 6, bright: tuple = ()) -> eqm.OrbitErrors:
        key = (spec, seed, labels, n, tuple(bright))
        if key not in memo:
            memo[key] = _probe(spec, seed, labels, n, tuple(bright))
        return memo[key]

    return get


@pytest.fixture(scope="session")
def layers():
    """``layers(seed) -> LayerErrors`` of a C4-equivariant CNN with one plain convolution (the culprit)."""
    memo: dict = {}

    def get(seed: int = 0, broken: str = "conv2") -> eqm.LayerErrors:
        if (seed, broken) not in memo:
            torch.manual_seed(seed)
            model = eqm.demos.C4EquivariantCNN(width=4).eval()
            setattr(model, broken, torch.nn.Conv2d(4, 4, 3, padding=1))
            sym = eqm.Symmetry.from_spec(name="sym-c4", group="c4")
            x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
            memo[seed, broken] = eqm.functional.layer_errors(model, x, sym, sym.group.all_elements())
        return memo[seed, broken]

    return get
