"""Verdicts and the audit report: what the numbers mean, as text, Markdown and JSON.

Verdict bands apply to the relative error, by the model's dtype::

    dtype       exact      excellent   approximate   broken
    float64     < 1e-12    < 1e-9      < 1e-2        >= 1e-2
    float32     < 1e-6     < 1e-4      < 1e-2        >= 1e-2
    float16     < 1e-3     < 1e-2      < 5e-2        >= 5e-2
    bfloat16    < 1e-2     < 3e-2      < 1e-1        >= 1e-1

A result with NaN/Inf outputs is ``"non-finite"``, whatever its finite errors are.

Model error and transform error are kept apart: an interpolated element (a rotation off the pixel grid, or a quarter
turn of a non-square image) whose mean relative error is ``approximate`` or ``broken`` but no larger than its noise
floor (the round-trip error of the input action, plus the output action's) is ``"within the noise floor"``: at that
element the transform loses as much as the model is off, so the measurement cannot call it broken. The headline
verdict is the worst element's, in the order ``exact`` < ``excellent`` < ``within the noise floor`` <
``approximate`` < ``broken``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from eqmonitor._verdicts import VERDICT_BANDS, default_tolerance, verdict
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors
from eqmonitor.summary import summarize

__all__ = ["VERDICT_BANDS", "WITHIN_FLOOR", "AuditReport", "default_tolerance", "element_verdict", "verdict"]

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


def _layer_section(lw: dict[str, Any]) -> list[str]:
    """The layer-wise lines of the text report: a row per layer, "not measured (why)" where there is no number."""
    skipped = lw.get("not_measured", {})
    state = lw["verdict"]
    if skipped:
        state += f": {len(skipped)} of {len(lw['rows'])} layers not measured"
    out = ["", f"  layer-wise ({state}; isolated tolerance {lw['tolerance']:.1e})"]
    if lw["first_failing"]:
        out.append(f"  first failing layer: {lw['first_failing']} — likely cause: {lw['likely_cause']}")
    if skipped:
        out.append("  not measured: " + ", ".join(f"{n} ({why})" for n, why in skipped.items()))
    out.append(f"  {'layer':<24}{'type':<22}{'cumulative':<14}isolated")
    for r in lw["rows"]:
        mark = "  <-- first failing" if r["failing"] else ""
        why = r.get("not_measured")
        iso = f"not measured ({why})" if why else _fmt(r["isolated"])
        out.append(f"  {r['layer']:<24}{r['type']:<22}{_fmt(r['cumulative']):<14}{iso}{mark}")
    return out


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else ("nan" if not math.isfinite(v) else f"{v:.3e}")


WITHIN_FLOOR = "within the noise floor"
_ORDER = ("exact", "excellent", WITHIN_FLOOR, "approximate", "broken", "non-finite")


def element_verdict(error: float, exact: bool, floor: float, dtype: torch.dtype = torch.float32) -> str:
    """The verdict of one element's mean relative error: its band, except that an interpolated element whose
    error is ``approximate`` or ``broken`` but at most ``floor`` (its noise floor) is ``"within the noise floor"``.

    Example:
        >>> element_verdict(5.0e-2, False, 9.7e-2), element_verdict(5.0e-2, True, 9.7e-2)
        ('within the noise floor', 'broken')
        >>> element_verdict(0.2, False, 9.7e-2), element_verdict(3e-7, False, 9.7e-2)
        ('broken', 'exact')
    """
    band = verdict(error, dtype)
    if not exact and band in ("approximate", "broken") and error <= floor:
        return WITHIN_FLOOR
    return band


def _worst(verdicts: list[str]) -> Optional[str]:
    """The worst of some element verdicts (``None`` for none)."""
    return max(verdicts, key=_ORDER.index) if verdicts else None


#: the keys of the summaries and rows of earlier releases -> today's
_OLD_KEYS = {"mean": "error_mean", "max": "error_max", "p95": "error_p95", "error": "distance_mean"}


class _Stats(dict):
    """A summary or row dict that still answers the keys of earlier releases (``"mean"``, ``"max"``, ``"p95"``,
    ``"error"``), with a :class:`DeprecationWarning`; JSON holds today's keys only."""

    def __missing__(self, key: str) -> Any:
        if key in _OLD_KEYS and _OLD_KEYS[key] in self:
            warnings.warn(
                f"The report key {key!r} is deprecated and will be removed in the next release; use "
                f"{_OLD_KEYS[key]!r} (the logged name).",
                DeprecationWarning,
                stacklevel=2,
            )
            return self[_OLD_KEYS[key]]
        raise KeyError(key)


def _renamed(old: str, new: str) -> None:
    warnings.warn(
        f"`AuditReport.{old}` is deprecated and will be removed in the next release; use `AuditReport.{new}`.",
        DeprecationWarning,
        stacklevel=3,
    )


@dataclass
class AuditReport:
    """One symmetry's audit: statistics, per-element table, exact vs interpolated, noise floors and a verdict.

    Attributes:
        symmetry: the symmetry's name; ``group``, ``kind``, ``distance``: how it was measured.
        dtype: the model's dtype (sets the bands); ``n_samples``, ``n_elements``: the probe size.
        stats: ``{"relative"|"absolute"|<distance>: summary}``, each the logged scalars of
            :func:`eqmonitor.summary.summarize` of that table (``error_mean``, ``error_max``, ``error_p95``,
            ``nonfinite``, ``exact_error``, ``interp_error``, ``flip_rate``).
        elements: one row per element: ``element``, ``exact``, ``error_mean``, ``error_max`` (relative),
            ``distance_mean`` (the chosen distance, mean), ``input_floor``, ``output_floor``, ``noise_floor``
            (their sum) and ``verdict`` (:func:`element_verdict`).
        exact_error / interp_error: mean relative error over the exact / interpolated elements (``None`` if none).
        worst: ``{"sample", "element", "value"}`` of the largest relative error.
        verdict: the worst element verdict (``"within the noise floor"`` when interpolation, not the model, may
            explain every error that is not exact or excellent); ``verdict_exact`` / ``verdict_interpolated`` the
            same within each kind of element.
        flip_rate: fraction of top-1 changes for classifiers; ``nonfinite_count``: pairs with NaN/Inf outputs.
        not_exact: elements that map a pixel grid onto itself but interpolate on this input (quarter turns of a
            non-square image): judged against their noise floor, as every interpolated element is.
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
    exact_error: Optional[float]
    interp_error: Optional[float]
    worst: dict[str, Any]
    verdict: str
    verdict_exact: Optional[str]
    verdict_interpolated: Optional[str]
    flip_rate: Optional[float]
    nonfinite_count: int
    not_exact: list[str] = field(default_factory=list)
    orbit: Optional[OrbitErrors] = field(default=None, repr=False, compare=False)
    layers: Optional[dict[str, Any]] = None
    gradients: Optional[dict[str, Any]] = None

    @property
    def exact_mean(self) -> Optional[float]:
        """Deprecated: :attr:`exact_error`."""
        _renamed("exact_mean", "exact_error")
        return self.exact_error

    @property
    def interpolated_mean(self) -> Optional[float]:
        """Deprecated: :attr:`interp_error`."""
        _renamed("interpolated_mean", "interp_error")
        return self.interp_error

    @property
    def n_nonfinite(self) -> int:
        """Deprecated: :attr:`nonfinite_count`."""
        _renamed("n_nonfinite", "nonfinite_count")
        return self.nonfinite_count

    def add_layers(self, layer_errors: LayerErrors) -> None:
        """Add the layer-wise section: per-layer cumulative/isolated means, the first failing layer, a likely cause,
        and the layers that could not be measured (never called ok: the verdict is then ``"incomplete"``)."""
        le = layer_errors
        cum, iso = le.per_layer("cumulative").cpu().tolist(), le.per_layer("isolated").cpu().tolist()
        skipped = dict(le.not_measured)
        rows = [
            {
                "layer": n,
                "type": t,
                "cumulative": c if math.isfinite(c) else None,
                "isolated": None if n in skipped or not math.isfinite(i) else i,
                "failing": n == le.first_failing,
                "not_measured": skipped.get(n),
            }
            for n, t, c, i in zip(le.names, le.types, cum, iso)
        ]
        culprit = next((r for r in rows if r["failing"]), None)
        self.layers = {
            "rows": rows,
            "first_failing": le.first_failing,
            "likely_cause": None if culprit is None else likely_cause(culprit["type"]),
            "tolerance": le.tolerance,
            "not_measured": skipped,
            "verdict": "broken" if culprit else ("incomplete" if skipped else "ok"),
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
        """Summarise an :class:`OrbitErrors` with :func:`eqmonitor.summary.summarize` (relative, absolute and the
        symmetry's distance) and judge every element against its noise floor."""
        o = orbit.cpu()
        group, dtype = o.group, o.dtype
        rel = summarize(o, "rel_errors")
        stats = {"relative": _Stats(rel.to_floats()), "absolute": _Stats(summarize(o, "abs_errors").to_floats())}
        dist = summarize(o, "errors") if o.distance not in ("relative", "max_abs") else None
        if dist is not None:
            stats[o.distance] = _Stats(dist.to_floats())
        floor = o.input_floor.double().nan_to_num(0.0)
        if o.output_floor is not None:
            floor = floor + o.output_floor.double().nan_to_num(0.0)
        per_mean, per_max = rel.per_element_mean.tolist(), rel.per_element_max.tolist()
        per_dist = (dist or rel).per_element_mean.tolist()
        exact = o.exact.tolist()
        judged = [element_verdict(m, bool(e), f, dtype) for m, e, f in zip(per_mean, exact, floor.tolist())]
        rows = [
            _Stats(
                element=group.describe(o.elements[k]),
                exact=exact[k],
                error_mean=per_mean[k],
                error_max=per_max[k],
                distance_mean=per_dist[k],
                input_floor=float(o.input_floor[k]),
                output_floor=None if o.output_floor is None else float(o.output_floor[k]),
                noise_floor=float(floor[k]),
                verdict=judged[k],
            )
            for k in range(o.n_elements)
        ]
        v_exact = _worst([v for v, e in zip(judged, exact) if e])
        v_interp = _worst([v for v, e in zip(judged, exact) if not e])
        n_bad = o.n_nonfinite
        n, k, value = o.worst("rel_errors")
        grid = group.exact_on_grid(o.elements).cpu() & ~o.exact.cpu()
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
            exact_error=None if rel.exact_error is None else float(rel.exact_error),
            interp_error=None if rel.interp_error is None else float(rel.interp_error),
            worst={"sample": n, "element": group.describe(o.elements[k]), "value": value},
            verdict="non-finite" if n_bad else _worst(judged),
            verdict_exact=v_exact,
            verdict_interpolated=v_interp,
            flip_rate=None if rel.flip_rate is None else float(rel.flip_rate),
            nonfinite_count=n_bad,
            not_exact=[group.describe(o.elements[i]) for i in grid.nonzero()[:, 0].tolist()],
            orbit=o,
        )

    # ------------------------------------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw orbit tensors, as plain Python values."""
        return {k: v for k, v in self.__dict__.items() if k != "orbit"}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    def _headline(self) -> list[tuple[str, str]]:
        def line(st: dict) -> str:
            return f"mean {_fmt(st['error_mean'])}  p95 {_fmt(st['error_p95'])}  max {_fmt(st['error_max'])}"

        lines = [
            ("verdict", self.verdict.upper()),
            ("symmetry", f"{self.symmetry} ({self.kind}) under {self.group}"),
            ("probe", f"{self.n_samples} samples × {self.n_elements} elements, model dtype {self.dtype}"),
            ("relative error", line(self.stats["relative"])),
            ("absolute error", line(self.stats["absolute"])),
        ]
        if self.distance not in ("relative", "max_abs"):
            lines.append((f"{self.distance} error", line(self.stats[self.distance])))
        if self.exact_error is not None:
            lines.append(("exact, relative", f"mean {_fmt(self.exact_error)} ({self.verdict_exact}): model error only"))
        if self.interp_error is not None:
            interp = [r for r in self.elements if not r["exact"]]
            floor = sum(r["noise_floor"] for r in interp) / len(interp)
            within = sum(r["verdict"] == WITHIN_FLOOR for r in interp)
            note = f"; {within} of {len(interp)} within their noise floor" if 0 < within < len(interp) else ""
            lines.append(
                (
                    "interp, relative",
                    f"mean {_fmt(self.interp_error)} ({self.verdict_interpolated}{note}); model + transform error, "
                    f"noise floor mean {_fmt(floor)}",
                )
            )
        if self.not_exact:
            shown = ", ".join(self.not_exact[:4]) + (", ..." if len(self.not_exact) > 4 else "")
            lines.append(
                ("not exact", f"{shown}: exact on a square pixel grid, interpolated on this input (non-square image)")
            )
        if self.flip_rate is not None:
            lines.append(("top-1 flips", f"{100 * self.flip_rate:.1f}% of pairs"))
        if self.nonfinite_count:
            lines.append(("NON-FINITE", f"{self.nonfinite_count} (sample, element) pairs gave NaN/Inf outputs"))
        w = self.worst
        lines.append(("worst", f"{_fmt(w['value'])} at sample {w['sample']}, {w['element']}"))
        return lines

    def _table(self, max_rows: int) -> tuple[list[str], list[list[str]]]:
        extra = self.distance not in ("relative", "max_abs")
        header = ["element", "exact", "rel. mean", "rel. max"] + [f"{self.distance} mean"] * extra
        header += ["input floor", "output floor", "verdict"]
        rows = self.elements
        if len(rows) > max_rows:  # keep the worst ones
            rows = sorted(rows, key=lambda r: -r["error_mean"] if math.isfinite(r["error_mean"]) else -math.inf)
            rows = rows[:max_rows]
        body = [
            [r["element"], "yes" if r["exact"] else "no", _fmt(r["error_mean"]), _fmt(r["error_max"])]
            + [_fmt(r["distance_mean"])] * extra + [_fmt(r["input_floor"]), _fmt(r["output_floor"]), r["verdict"]]
            for r in rows
        ]  # fmt: skip
        return header, body

    def _sections(self) -> list[str]:
        out = []
        if self.layers is not None:
            out += _layer_section(self.layers)
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
