"""Verdicts and the audit report: what the numbers mean, as text, Markdown and JSON.

Verdict bands apply to the relative error, by the model's dtype::

    dtype       exact      excellent   approximate   broken
    float64     < 1e-12    < 1e-9      < 1e-2        >= 1e-2
    float32     < 1e-6     < 1e-4      < 1e-2        >= 1e-2
    float16     < 1e-3     < 1e-2      < 5e-2        >= 5e-2
    bfloat16    < 1e-2     < 3e-2      < 1e-1        >= 1e-1

A result with NaN/Inf outputs is ``"non-finite"``, whatever its finite errors are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from eqmonitor._verdicts import VERDICT_BANDS, default_tolerance, verdict
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors

__all__ = ["VERDICT_BANDS", "AuditReport", "default_tolerance", "verdict"]

_CAUSES = (
    (("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm"), "normalisation (train-mode batch statistics, or "
     "statistics/affine parameters that differ across positions or field components)"),
    (("Conv",), "convolution: unconstrained or asymmetric kernel, zero padding at the boundary, or a stride that does "
     "not align the sampling grid with the image centre"),
    (("Pool",), "pooling: window/stride misaligned with the image size (odd/even) or the group's centre"),
    (("ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "ELU", "Softmax"), "non-equivariant nonlinearity (acts on field "
     "components that the group mixes)"),
    (("Linear",), "dense layer mixing positions or field components"),
)  # fmt: skip


def likely_cause(module_type: str) -> str:
    """The usual way a layer of ``module_type`` breaks a symmetry (the failure modes seen in equivariant networks)."""
    for keys, cause in _CAUSES:
        if any(k in module_type for k in keys):
            return cause
    return "custom layer: check its own equivariance (e.g. with `assert_equivariant` on the layer alone)"


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else ("nan" if not math.isfinite(v) else f"{v:.3e}")


@dataclass
class AuditReport:
    """One symmetry's audit: statistics, per-element table, exact vs interpolated, noise floors and a verdict.

    Attributes:
        symmetry: the symmetry's name; ``group``, ``kind``, ``distance``: how it was measured.
        dtype: the model's dtype (sets the bands); ``n_samples``, ``n_elements``: the probe size.
        stats: ``{"relative"|"absolute"|<distance>: {"mean", "max", "p95"}}``.
        elements: one row per element: ``element``, ``exact``, ``mean``, ``max`` (relative), ``error`` (the chosen
            distance, mean), ``input_floor``, ``output_floor``.
        exact_mean / interpolated_mean: mean relative error over the exact / interpolated elements (``None`` if none).
        worst: ``{"sample", "element", "value"}`` of the largest relative error.
        verdict: overall band of the worst per-element mean relative error; ``verdict_exact`` /
            ``verdict_interpolated`` the same within each kind of element.
        flip_rate: fraction of top-1 changes for classifiers; ``n_nonfinite``: pairs with NaN/Inf outputs.
        orbit: the raw :class:`OrbitErrors` (on the CPU), not serialised.
    """

    symmetry: str
    group: str
    kind: str
    distance: str
    dtype: str
    n_samples: int
    n_elements: int
    stats: dict[str, dict[str, float]]
    elements: list[dict[str, Any]]
    exact_mean: Optional[float]
    interpolated_mean: Optional[float]
    worst: dict[str, Any]
    verdict: str
    verdict_exact: Optional[str]
    verdict_interpolated: Optional[str]
    flip_rate: Optional[float]
    n_nonfinite: int
    orbit: Optional[OrbitErrors] = field(default=None, repr=False, compare=False)
    layers: Optional[dict[str, Any]] = None
    gradients: Optional[dict[str, Any]] = None

    def add_layers(self, layer_errors: LayerErrors) -> None:
        """Add the layer-wise section: per-layer cumulative/isolated means, the first failing layer, a likely cause."""
        le = layer_errors
        cum, iso = le.per_layer("cumulative").cpu().tolist(), le.per_layer("isolated").cpu().tolist()
        rows = [
            {"layer": n, "type": t, "cumulative": c, "isolated": i, "failing": n == le.first_failing}
            for n, t, c, i in zip(le.names, le.types, cum, iso)
        ]
        culprit = next((r for r in rows if r["failing"]), None)
        self.layers = {
            "rows": rows,
            "first_failing": le.first_failing,
            "likely_cause": None if culprit is None else likely_cause(culprit["type"]),
            "tolerance": le.tolerance,
            "verdict": "broken" if culprit else "ok",
        }

    def add_gradients(self, gradient_errors: GradientErrors) -> None:
        """Add the gradient section: input-gradient statistics and the parameters whose gradients break symmetry."""
        ge = gradient_errors
        cols = ge.exact if bool(ge.exact.any()) else torch.ones_like(ge.exact)
        inp = ge.input[:, cols.to(ge.input.device)]
        worst = sorted(((float(e[cols].max()), n) for n, e in ge.params.items()), reverse=True)[:5]
        broken = ge.broken_params()
        self.gradients = {
            "input_mean": float(inp.mean()),
            "input_max": float(inp.max()),
            "worst_params": [{"param": n, "max": v} for v, n in worst],
            "broken_params": broken,
            "verdict": verdict(max(float(inp.max()), worst[0][0] if worst else 0.0), ge.dtype),
            "judged_on": "exact elements" if bool(ge.exact.any()) else "all elements",
        }

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_orbit(cls, orbit: OrbitErrors, kind: str = "") -> "AuditReport":
        """Summarise an :class:`OrbitErrors` (one device-to-host transfer)."""
        o = orbit.cpu()
        group = o.group

        def summary(which: str) -> dict[str, float]:
            return {"mean": float(o.mean(which)), "max": float(o.max(which)), "p95": float(o.quantile(0.95, which))}

        stats = {"relative": summary("rel_errors"), "absolute": summary("abs_errors")}
        if o.distance not in ("relative", "max_abs"):
            stats[o.distance] = summary("errors")
        per_mean, per_err = o.per_element("rel_errors"), o.per_element("errors")
        per_max = o.values("rel_errors").nan_to_num(nan=-float("inf")).amax(0)
        rows = [
            {
                "element": group.describe(o.elements[k]),
                "exact": bool(o.exact[k]),
                "mean": float(per_mean[k]),
                "max": float(per_max[k]),
                "error": float(per_err[k]),
                "input_floor": float(o.input_floor[k]),
                "output_floor": None if o.output_floor is None else float(o.output_floor[k]),
            }
            for k in range(o.n_elements)
        ]
        dtype = o.dtype

        def band(mask: torch.Tensor) -> tuple[Optional[float], Optional[str]]:
            if not bool(mask.any()):
                return None, None
            mean = float(o.values("rel_errors")[:, mask].nanmean())
            worst_element = float(per_mean[mask].nan_to_num(nan=float("inf")).max())
            return mean, verdict(worst_element, dtype)

        exact_mean, v_exact = band(o.exact)
        interp_mean, v_interp = band(~o.exact)
        n_bad = o.n_nonfinite
        overall = "non-finite" if n_bad else verdict(float(per_mean.nan_to_num(nan=float("inf")).max()), dtype)
        n, k, value = o.worst("rel_errors")
        flip = o.flip_rate()
        return cls(
            symmetry=o.symmetry,
            group=repr(group),
            kind=kind,
            distance=o.distance,
            dtype=str(dtype).replace("torch.", ""),
            n_samples=o.n_samples,
            n_elements=o.n_elements,
            stats=stats,
            elements=rows,
            exact_mean=exact_mean,
            interpolated_mean=interp_mean,
            worst={"sample": n, "element": group.describe(o.elements[k]), "value": value},
            verdict=overall,
            verdict_exact=v_exact,
            verdict_interpolated=v_interp,
            flip_rate=None if flip is None else float(flip),
            n_nonfinite=n_bad,
            orbit=o,
        )

    # ------------------------------------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw orbit tensors, as plain Python values."""
        return {k: v for k, v in self.__dict__.items() if k != "orbit"}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    def _headline(self) -> list[tuple[str, str]]:
        rel, ab = self.stats["relative"], self.stats["absolute"]
        lines = [
            ("verdict", self.verdict.upper()),
            ("symmetry", f"{self.symmetry} ({self.kind}) under {self.group}"),
            ("probe", f"{self.n_samples} samples × {self.n_elements} elements, model dtype {self.dtype}"),
            ("relative error", f"mean {_fmt(rel['mean'])}  p95 {_fmt(rel['p95'])}  max {_fmt(rel['max'])}"),
            ("absolute error", f"mean {_fmt(ab['mean'])}  p95 {_fmt(ab['p95'])}  max {_fmt(ab['max'])}"),
        ]
        if self.distance not in ("relative", "max_abs"):
            s = self.stats[self.distance]
            summary = f"mean {_fmt(s['mean'])}  p95 {_fmt(s['p95'])}  max {_fmt(s['max'])}"
            lines.append((f"{self.distance} error", summary))
        if self.exact_mean is not None:
            lines.append(("exact elements", f"mean {_fmt(self.exact_mean)} ({self.verdict_exact})"))
        if self.interpolated_mean is not None:
            floor = [r["input_floor"] for r in self.elements if not r["exact"]]
            lines.append(
                (
                    "interpolated",
                    f"mean {_fmt(self.interpolated_mean)} ({self.verdict_interpolated}); "
                    f"input noise floor mean {_fmt(sum(floor) / len(floor))}",
                )
            )
        if self.flip_rate is not None:
            lines.append(("top-1 flips", f"{100 * self.flip_rate:.1f}% of pairs"))
        if self.n_nonfinite:
            lines.append(("NON-FINITE", f"{self.n_nonfinite} (sample, element) pairs gave NaN/Inf outputs"))
        w = self.worst
        lines.append(("worst", f"{_fmt(w['value'])} at sample {w['sample']}, {w['element']}"))
        return lines

    def _table(self, max_rows: int) -> tuple[list[str], list[list[str]]]:
        extra = self.distance not in ("relative", "max_abs")
        header = ["element", "exact", "rel. mean", "rel. max"] + [f"{self.distance} mean"] * extra
        header += ["input floor", "output floor"]
        rows = self.elements
        if len(rows) > max_rows:  # keep the worst ones
            rows = sorted(rows, key=lambda r: -r["mean"] if math.isfinite(r["mean"]) else -math.inf)[:max_rows]
        body = [
            [r["element"], "yes" if r["exact"] else "no", _fmt(r["mean"]), _fmt(r["max"])] + [_fmt(r["error"])] * extra
            + [_fmt(r["input_floor"]), _fmt(r["output_floor"])]
            for r in rows
        ]  # fmt: skip
        return header, body

    def _sections(self) -> list[str]:
        out = []
        if self.layers is not None:
            lw = self.layers
            out += ["", f"  layer-wise ({lw['verdict']}; isolated tolerance {lw['tolerance']:.1e})"]
            if lw["first_failing"]:
                out.append(f"  first failing layer: {lw['first_failing']} — likely cause: {lw['likely_cause']}")
            out.append(f"  {'layer':<24}{'type':<22}{'cumulative':<14}isolated")
            for r in lw["rows"]:
                mark = "  <-- first failing" if r["failing"] else ""
                out.append(f"  {r['layer']:<24}{r['type']:<22}{_fmt(r['cumulative']):<14}{_fmt(r['isolated'])}{mark}")
        if self.gradients is not None:
            gr = self.gradients
            out += ["", f"  gradients ({gr['verdict']}, on {gr['judged_on']})"]
            out.append(f"  input gradient error  mean {_fmt(gr['input_mean'])}  max {_fmt(gr['input_max'])}")
            out += [f"  param {p['param']:<32} max {_fmt(p['max'])}" for p in gr["worst_params"]]
        return out

    def to_text(self, max_rows: int = 16) -> str:
        """A plain-text report: headline lines, then the per-element table (the worst ``max_rows`` elements)."""
        head = self._headline()
        width = max(len(k) for k, _ in head)
        out = [f"eqmonitor audit: {self.symmetry}"] + [f"  {k:<{width}}  {v}" for k, v in head]
        header, body = self._table(max_rows)
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        out.append("")
        out.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
        out.extend("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body)
        if len(self.elements) > max_rows:
            out.append(f"  ({len(self.elements) - max_rows} more elements not shown; the worst are listed)")
        return "\n".join(out + self._sections())

    def to_markdown(self, max_rows: int = 16) -> str:
        """The same report as Markdown (a headline list and a table)."""
        out = [f"### eqmonitor audit: `{self.symmetry}`", ""]
        out += [f"- **{k}**: {v}" for k, v in self._headline()]
        header, body = self._table(max_rows)
        out += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in body]
        extra = self._sections()
        return "\n".join(out + (["", "```", *extra[1:], "```"] if extra else []))

    def __str__(self) -> str:
        return self.to_text()
