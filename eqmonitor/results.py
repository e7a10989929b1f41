"""Results of probes: plain dataclasses of tensors (on the model's device until the caller moves them)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch
from torch import Tensor

from eqmonitor.groups import Group
from eqmonitor.summary import OrbitSummary, summarize

__all__ = ["GradientErrors", "LayerErrors", "OrbitErrors"]


_F64 = torch.float64


def _nan_where(values: Tensor, mask: Tensor) -> Tensor:
    return values.masked_fill(mask, float("nan"))


def _or_nan(value: Optional[Tensor], device: torch.device) -> Tensor:
    return torch.tensor(float("nan"), dtype=_F64, device=device) if value is None else value


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
        top1: ``int64 [N, K]`` top-1 class at each element (class-score outputs), ``-1`` at non-finite pairs, else
            ``None``.
        probs: ``float32 [N, K, C]`` class probabilities at each element (NaN at non-finite pairs) when asked for
            (``orbit_errors(..., keep_probs=True)``), else ``None``.
        group: the group; ``distance``: the distance's name; ``symmetry``: the symmetry's name.
        dtype: the model's dtype (sets the verdict bands).
        reference: what each output ``h(g_k·x_n)`` was compared with: ``"identity"`` (the model's own output at the
            identity moved forward, ``g_k·h(x_n)``: the equivariance error) or ``"consensus"`` (the consensus moved
            forward, ``g_k·c(x_n)``; see :func:`~eqmonitor.functional.orbit_errors_with_consensus`).

    Statistics: :meth:`summary` gives every logged number at once (an :class:`~eqmonitor.summary.OrbitSummary`,
    computed by :func:`eqmonitor.summary.summarize`, as the monitor and :class:`~eqmonitor.metric.EquivarianceError`
    compute them); :meth:`mean`, :meth:`max`, :meth:`quantile`, :meth:`exact_mean`, :meth:`interp_mean`,
    :meth:`nonfinite_fraction` and :meth:`flip_rate` read single ones. All are 0-d float64 tensors on the results'
    device, over the *finite* pairs (:meth:`finite`), NaN when there is none.
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
    top1: Optional[Tensor] = None
    probs: Optional[Tensor] = None
    reference: str = "identity"

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

    def summary(self, which: str = "errors") -> OrbitSummary:
        """Every logged statistic of the ``which`` table at once: :func:`eqmonitor.summary.summarize`."""
        return summarize(self, which)

    def mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite pairs (NaN if there are none): ``summary(which).error_mean``."""
        return self.summary(which).error_mean

    def max(self, which: str = "errors") -> Tensor:
        """Largest finite value (NaN if there are none): ``summary(which).error_max``."""
        return self.summary(which).error_max

    def quantile(self, q: float, which: str = "errors") -> Tensor:
        """The ``q``-quantile (linear interpolation, as ``torch.quantile``) of the finite values (NaN if none)."""
        return torch.nanquantile(self.values(which).to(_F64).flatten(), q)

    def exact_mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite pairs at exact elements (NaN if none): ``summary(which).exact_error``."""
        return _or_nan(self.summary(which).exact_error, self.nonfinite.device)

    def interp_mean(self, which: str = "errors") -> Tensor:
        """Mean over the finite pairs at interpolated elements (NaN if none): ``summary(which).interp_error``."""
        return _or_nan(self.summary(which).interp_error, self.nonfinite.device)

    def nonfinite_count(self, which: str = "errors") -> Tensor:
        """Number of pairs left out (not :meth:`finite`), as 0-d float64: ``summary(which).nonfinite_count``."""
        return self.summary(which).nonfinite_count.to(_F64)

    def nonfinite_fraction(self, which: str = "errors") -> Tensor:
        """Fraction of pairs left out (not :meth:`finite`), 0-d float64: ``summary(which).nonfinite``."""
        return self.summary(which).nonfinite

    def flip_rate(self) -> Optional[Tensor]:
        """Fraction of the pairs with finite outputs whose top-1 class changed (0-d float64, NaN if there are none);
        ``None`` if the outputs are not class scores: ``summary().flip_rate``."""
        return None if self.flips is None else self.summary().flip_rate

    def statistics(self, which: str = "errors") -> dict[str, Tensor]:
        """Deprecated: use :meth:`summary` (the same numbers under their logged names).

        ``{"mean", "max", "p95", "nonfinite", "exact_mean", "interp_mean"[, "flip_rate"]}``, as before.
        """
        warnings.warn(
            "`OrbitErrors.statistics()` is deprecated and will be removed in the next release; use "
            "`OrbitErrors.summary()`, whose fields carry the logged names (`error_mean`, `error_max`, `error_p95`, "
            "`nonfinite`, `exact_error`, `interp_error`, `flip_rate`).",
            DeprecationWarning,
            stacklevel=2,
        )
        s = self.summary(which)
        dev = self.nonfinite.device
        out = {
            "mean": s.error_mean,
            "max": s.error_max,
            "p95": s.error_p95,
            "nonfinite": s.nonfinite,
            "exact_mean": _or_nan(s.exact_error, dev),
            "interp_mean": _or_nan(s.interp_error, dev),
        }
        if s.flip_rate is not None:
            out["flip_rate"] = s.flip_rate
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
        cols = {"errors", "abs_errors", "rel_errors", "nonfinite", "flips", "confidence", "top1", "probs"}
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
        tolerance: the isolated error above which a layer fails; ``first_failing``: the first measured such layer,
            or None (judged on the layers whose isolated error was measured: see ``not_measured``).
        mode: ``"eval"`` or ``"train"``, the mode the model was probed in.
        not_measured: ``{layer: reason}`` for every layer whose isolated error could not be measured (its row is
            NaN there; its cumulative error may still be measured): ``"unknown feature action"`` (a flat feature
            whose origin does not tell how it transforms), ``"unknown input action"``, ``"feature map too small for
            the disc mask"``, ``"several inputs"`` (not one tensor argument), ``"not per-sample"`` (its batch is
            not the model's), ``"skipped"`` (an override) or ``"capture unreliable"`` (the identity self-check
            failed: both rows NaN).
        self_check: ``[L, 2]`` the largest cumulative and isolated error at the identity element on the reference
            batch (NaN where not measured); above float precision, the layer is ``"capture unreliable"``.
        kept_bytes: memory the reference captures held (copies of the layers' inputs and outputs).
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
    not_measured: dict = field(default_factory=dict)
    self_check: Optional[Tensor] = None
    kept_bytes: int = 0

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

    @property
    def measured(self) -> list:
        """The layers whose isolated error was measured (``first_failing`` is judged among them)."""
        return [nm for nm in self.names if nm not in self.not_measured]


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
