"""Results of probes: plain dataclasses of tensors (on the model's device until the caller moves them)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups import Group

__all__ = ["GradientErrors", "LayerErrors", "OrbitErrors"]


_F64 = torch.float64


def _nan_where(values: Tensor, mask: Tensor) -> Tensor:
    return values.masked_fill(mask, float("nan"))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """0-d float64 mean of ``values [N, K]`` where ``mask`` (NaN where it selects nothing), without a host sync;
    summed per element first, in the order ``EquivarianceError`` sums, so that one update gives the same bits."""
    return values.to(_F64).masked_fill(~mask, 0.0).sum(0).sum() / mask.sum().to(_F64)


@dataclass(frozen=True)
class OrbitErrors:
    """Errors ``e(x_n, g_k) = d(h(g_k·x_n), g_k·h(x_n))`` of ``N`` samples over ``K`` elements.

    Attributes:
        errors: ``[N, K]`` the symmetry's chosen distance.
        abs_errors: ``[N, K]`` max-abs error ``max |a − b|`` (e3nn's measure).
        rel_errors: ``[N, K]`` relative error ``‖a − b‖ / ‖b‖`` (what verdicts use).
        nonfinite: ``bool [N, K]``: the output (or the expected output) had NaN/Inf; every per-pair table is NaN
            there, and those pairs are left out of every statistic and counted in ``n_nonfinite``.
        elements: ``[K, p]`` the group elements.
        exact: ``bool [K]`` elements applied without interpolation (input and output actions).
        input_floor: ``[K]`` the input action's noise floor ``‖φ(g⁻¹, φ(g, x)) − x‖ / ‖x‖`` (mean over samples).
        output_floor: ``[K]`` the same for the output action, ``None`` for an invariant output.
        flips: ``float64 [N, K]``: 1 where the top-1 class changed, 0 where not, NaN at non-finite pairs (undefined
            there: a NaN output has no top class); class-score outputs of invariant symmetries, else ``None``.
        confidence: ``[N, K]`` softmax confidence of the true class at each element (with labels), else ``None``.
        confidence_ref: ``[N]`` the same at the untransformed input, else ``None``.
        group: the group; ``distance``: the distance's name; ``symmetry``: the symmetry's name.
        dtype: the model's dtype (sets the verdict bands).

    Statistics (:meth:`mean`, :meth:`max`, :meth:`quantile`, :meth:`exact_mean`, :meth:`interp_mean`,
    :meth:`nonfinite_fraction`, :meth:`flip_rate`, all of them at once with :meth:`statistics`) are 0-d float64
    tensors on the results' device, over the *finite* pairs (:meth:`finite`), NaN when there is none; they agree
    with :class:`~eqmonitor.metric.EquivarianceError` on the same data, and stack into one host transfer.
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

    def finite(self, which: str = "errors") -> Tensor:
        """``bool [N, K]``: the pairs every statistic is over: finite outputs (not ``nonfinite``) and a finite value
        in the ``which`` table (the distance can still overflow, e.g. a custom one)."""
        return ~self.nonfinite & torch.isfinite(getattr(self, which))

    def values(self, which: str = "errors") -> Tensor:
        """``[N, K]`` errors of one kind (``"errors"``, ``"abs_errors"``, ``"rel_errors"``), NaN where not
        :meth:`finite`."""
        return _nan_where(getattr(self, which), ~self.finite(which))

    def mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite pairs (NaN if there are none)."""
        return _masked_mean(getattr(self, which), self.finite(which))

    def max(self, which: str = "errors") -> Tensor:
        """Largest finite value (NaN if there are none)."""
        ok = self.finite(which)
        top = getattr(self, which).to(_F64).masked_fill(~ok, -float("inf")).amax()
        return torch.where(ok.any(), top, torch.full_like(top, float("nan")))

    def quantile(self, q: float, which: str = "errors") -> Tensor:
        """The ``q``-quantile (linear interpolation, as ``torch.quantile``) of the finite values (NaN if none)."""
        return torch.nanquantile(self.values(which).to(_F64).flatten(), q)

    def exact_mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite pairs at exact elements (NaN if none: no exact element, or none finite)."""
        return _masked_mean(getattr(self, which), self.finite(which) & self.exact.to(self.nonfinite.device)[None])

    def interp_mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite pairs at interpolated elements (NaN if none)."""
        return _masked_mean(getattr(self, which), self.finite(which) & ~self.exact.to(self.nonfinite.device)[None])

    def nonfinite_count(self, which: str = "errors") -> Tensor:
        """Number of pairs left out (not :meth:`finite`), as 0-d float64: ``EquivarianceError``'s ``nonfinite``."""
        return (~self.finite(which)).sum().to(_F64)

    def nonfinite_fraction(self, which: str = "errors") -> Tensor:
        """Fraction of pairs left out (not :meth:`finite`), 0-d float64."""
        return self.nonfinite_count(which) / self.nonfinite.numel()

    def flip_rate(self) -> Optional[Tensor]:
        """Fraction of the pairs with finite outputs whose top-1 class changed (0-d float64, NaN if there are none);
        ``None`` if the outputs are not class scores."""
        if self.flips is None:
            return None
        return _masked_mean(self.flips, ~self.nonfinite & ~self.flips.isnan())

    def statistics(self, which: str = "errors") -> dict[str, Tensor]:
        """``{"mean", "max", "p95", "nonfinite", "exact_mean", "interp_mean"[, "flip_rate"]}``, 0-d float64 tensors
        on the results' device (``nonfinite``: the fraction; ``flip_rate`` for class-score outputs only), e.g.
        ``torch.stack(list(stats.values())).tolist()`` for one host transfer. ``exact_mean`` / ``interp_mean`` are
        NaN when there is no element of that kind (``self.exact`` tells).

        Example:
            >>> import torch, eqmonitor as eqm
            >>> sym = eqm.Symmetry.from_spec(group="c4", error="max_abs")
            >>> res = eqm.functional.orbit_errors(lambda x: x[:, :, 0, 0], torch.eye(2)[None, None], sym, [0, 1])
            >>> {k: v.item() for k, v in res.statistics().items()}
            {'mean': 0.5, 'max': 1.0, 'p95': 0.95, 'nonfinite': 0.0, 'exact_mean': 0.5, 'interp_mean': nan}
        """
        out = {
            "mean": self.mean(which),
            "max": self.max(which),
            "p95": self.quantile(0.95, which),
            "nonfinite": self.nonfinite_fraction(which),
            "exact_mean": self.exact_mean(which),
            "interp_mean": self.interp_mean(which),
        }
        if self.flips is not None:
            out["flip_rate"] = self.flip_rate()
        return out

    def per_element(self, which: str = "errors") -> Tensor:
        """``[K]`` mean over samples at each element (the aggregate NERO curve)."""
        return self.values(which).nanmean(0)

    def per_sample(self, which: str = "errors") -> Tensor:
        """``[N]`` mean over elements for each sample."""
        return self.values(which).nanmean(1)

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
        input: ``[N, K]`` error of each sample's input gradient at ``g·x`` against ``g`` of it at ``x``, divided by
            the probe's RMS input-gradient norm at that element (``input_abs / input_scale``; see
            :func:`~eqmonitor.functional.gradient_errors`): float rounding when the gradients respect the symmetry,
            √2 when they are unrelated.
        params: ``{parameter name: [K]}`` error of the loss gradient at ``g·x`` against that at ``x``, over the RMS
            of their two norms (at most 2).
        elements, exact: the elements and which are exact; ``tolerance``: the broken threshold.
        input_abs: ``[N, K]`` the raw ``‖∇_z ℓ(g·x_n) − g·∇_x ℓ(x_n)‖``; ``input_scale``: ``[K]`` the probe's RMS
            gradient norm at each element (``None`` in results built before they existed).
    """

    input: Tensor
    params: dict
    elements: Tensor
    exact: Tensor
    tolerance: float
    symmetry: str
    dtype: torch.dtype
    input_abs: Optional[Tensor] = None
    input_scale: Optional[Tensor] = None

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
