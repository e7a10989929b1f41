"""Results of probes: plain dataclasses of tensors (on the model's device until the caller moves them)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups import Group

__all__ = ["GradientErrors", "LayerErrors", "OrbitErrors"]


def _nan_where(values: Tensor, mask: Tensor) -> Tensor:
    return values.masked_fill(mask, float("nan"))


@dataclass(frozen=True)
class OrbitErrors:
    """Errors ``e(x_n, g_k) = d(h(g_k·x_n), g_k·h(x_n))`` of ``N`` samples over ``K`` elements.

    Attributes:
        errors: ``[N, K]`` the symmetry's chosen distance.
        abs_errors: ``[N, K]`` max-abs error ``max |a − b|`` (e3nn's measure).
        rel_errors: ``[N, K]`` relative error ``‖a − b‖ / ‖b‖`` (what verdicts use).
        nonfinite: ``bool [N, K]``: the output (or the expected output) had NaN/Inf; those entries are NaN above and
            are left out of every statistic, and counted in ``n_nonfinite``.
        elements: ``[K, p]`` the group elements.
        exact: ``bool [K]`` elements applied without interpolation (input and output actions).
        input_floor: ``[K]`` the input action's noise floor ``‖φ(g⁻¹, φ(g, x)) − x‖ / ‖x‖`` (mean over samples).
        output_floor: ``[K]`` the same for the output action, ``None`` for an invariant output.
        flips: ``bool [N, K]`` top-1 class changed (class-score outputs of invariant symmetries), else ``None``.
        confidence: ``[N, K]`` softmax confidence of the true class at each element (with labels), else ``None``.
        confidence_ref: ``[N]`` the same at the untransformed input, else ``None``.
        group: the group; ``distance``: the distance's name; ``symmetry``: the symmetry's name.
        dtype: the model's dtype (sets the verdict bands).
    """

    errors: Tensor
    abs_errors: Tensor
    rel_errors: Tensor
    nonfinite: Tensor
    elements: Tensor
    exact: Tensor
    input_floor: Tensor
    output_floor: Optional[Tensor]
    flips: Optional[Tensor]
    confidence: Optional[Tensor]
    confidence_ref: Optional[Tensor]
    group: Group
    distance: str
    symmetry: str
    dtype: torch.dtype

    @property
    def n_samples(self) -> int:
        return self.errors.shape[0]

    @property
    def n_elements(self) -> int:
        return self.errors.shape[1]

    @property
    def n_nonfinite(self) -> int:
        return int(self.nonfinite.sum())

    def cpu(self) -> "OrbitErrors":
        """A copy with every tensor on the CPU (one transfer each)."""
        return self.to("cpu")

    def to(self, device: torch.device | str) -> "OrbitErrors":
        moved = {
            f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)

    def values(self, which: str = "errors") -> Tensor:
        """``[N, K]`` errors of one kind (``"errors"``, ``"abs_errors"``, ``"rel_errors"``) with non-finite as NaN."""
        return _nan_where(getattr(self, which), self.nonfinite)

    def mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite entries (NaN if there are none)."""
        return self.values(which).nanmean()

    def max(self, which: str = "errors") -> Tensor:
        v = self.values(which)
        finite = v[~v.isnan()]
        return finite.max() if finite.numel() else torch.tensor(float("nan"), dtype=v.dtype, device=v.device)

    def quantile(self, q: float, which: str = "errors") -> Tensor:
        return torch.nanquantile(self.values(which).flatten(), q)

    def per_element(self, which: str = "errors") -> Tensor:
        """``[K]`` mean over samples at each element (the aggregate NERO curve)."""
        return self.values(which).nanmean(0)

    def per_sample(self, which: str = "errors") -> Tensor:
        """``[N]`` mean over elements for each sample."""
        return self.values(which).nanmean(1)

    def flip_rate(self) -> Optional[Tensor]:
        """Fraction of (sample, element) pairs whose top-1 class changed, ``None`` if not a classifier."""
        return None if self.flips is None else self.flips.double().mean()

    def worst(self, which: str = "errors") -> tuple[int, int, float]:
        """``(sample index, element index, value)`` of the largest finite error."""
        v = self.values(which).nan_to_num(nan=-float("inf"))
        flat = int(v.argmax())
        n, k = divmod(flat, self.n_elements)
        return n, k, float(v[n, k])

    def subset(self, mask: Tensor) -> "OrbitErrors":
        """The same result restricted to the elements selected by ``mask [K]`` (bool) or indices."""
        idx = mask.nonzero()[:, 0] if mask.dtype == torch.bool else mask
        cols = {"errors", "abs_errors", "rel_errors", "nonfinite", "flips", "confidence"}
        rows = {"elements", "exact", "input_floor", "output_floor"}
        out = {}
        for name in cols | rows:
            t = getattr(self, name)
            if t is not None:
                out[name] = t.index_select(1 if name in cols else 0, idx.to(t.device))
        return replace(self, **out)


@dataclass(frozen=True)
class LayerErrors:
    """Layer-wise errors of ``L`` layers (forward order) over ``N`` samples and ``K`` elements.

    Attributes:
        names, types: layer names (as in ``named_modules``) and module class names.
        cumulative: ``[L, N, K]`` relative error of each layer's output at ``g·x`` against ``ρ(g)`` of it at ``x``.
        isolated: ``[L, N, K]`` relative error of the layer alone on its transformed input (NaN where it has no
            single tensor input or no derivable action).
        elements, exact: the elements ``[K, p]`` and which are exact ``bool [K]``.
        tolerance: the isolated error above which a layer fails; ``first_failing``: the first such layer, or None.
        mode: ``"eval"`` or ``"train"``, the mode the model was probed in.
    """

    names: list
    types: list
    cumulative: Tensor
    isolated: Tensor
    elements: Tensor
    exact: Tensor
    tolerance: float
    first_failing: Optional[str]
    symmetry: str
    dtype: torch.dtype
    mode: str = "eval"

    @classmethod
    def build(cls, **kw) -> "LayerErrors":
        iso, exact = kw["isolated"], kw["exact"]
        judged = iso[:, :, exact] if bool(exact.any()) else iso
        worst = judged.nan_to_num(nan=-1.0).flatten(1).amax(1) if judged.numel() else judged.new_zeros(len(kw["names"]))
        failing = [nm for nm, w in zip(kw["names"], worst.tolist()) if w > kw["tolerance"]]
        return cls(first_failing=failing[0] if failing else None, **kw)

    def per_layer(self, which: str = "isolated") -> Tensor:
        """``[L]`` mean error of each layer over samples and elements (NaN where not measured)."""
        return getattr(self, which).flatten(1).nanmean(1)


@dataclass(frozen=True)
class GradientErrors:
    """Gradient errors over ``K`` elements.

    Attributes:
        input: ``[N, K]`` relative error of each sample's input gradient at ``g·x`` against ``g`` of it at ``x``.
        params: ``{parameter name: [K]}`` relative error of the loss gradient at ``g·x`` against that at ``x``.
        elements, exact: the elements and which are exact; ``tolerance``: the broken threshold.
    """

    input: Tensor
    params: dict
    elements: Tensor
    exact: Tensor
    tolerance: float
    symmetry: str
    dtype: torch.dtype

    def per_layer(self) -> dict:
        """``{module name: [K]}``: the worst parameter error of each module (names up to the last dot)."""
        out: dict = {}
        for name, err in self.params.items():
            layer = name.rsplit(".", 1)[0] if "." in name else name
            out[layer] = err if layer not in out else torch.maximum(out[layer], err)
        return out

    def broken_params(self, exact_only: bool = True) -> list:
        """Parameter names whose error exceeds ``tolerance`` (on exact elements, if any and ``exact_only``)."""
        cols = self.exact if exact_only and bool(self.exact.any()) else torch.ones_like(self.exact)
        return [n for n, e in self.params.items() if float(e[cols].max()) > self.tolerance]
