"""What an MLflow run shows beside its bundle: metrics for the UI's compare view, the error curves
as pictures under `plots/`, and the verdict table as the run's description. `atlas/` stays exactly
the SPEC bundle; none of this is in its manifest.

Both doors build the record from the same stage report dicts (`StageReport.to_dict()` in memory,
`reports/<stage>.json` on disk), so a push shows the same figures whichever door made it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_atlas_sdk import mapped_pages
from ml_atlas_sdk.checks.result import CheckResult
from ml_atlas_sdk.compare import CHUNK_ELEMENTS, worst

PLOTS_DIR = "plots"  # beside atlas/ in the run's artifacts
NOTE_TAG = "mlflow.note.content"  # what the MLflow UI shows as the run's description
ROUNDTRIP_FIGURES = ("max_abs_err", "mean_abs_err", "frac_out_of_tol", "tol_usage", "nrmse")
QUANTILES = np.linspace(0.0, 1.0, 101)
_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")  # MLflow's metric-name alphabet

Curve = list[tuple[float, float]]  # (percentile 0..100, |error| at it)


@dataclass(frozen=True)
class RunRecord:
    metrics: dict[str, float] = field(default_factory=dict)
    error_curves: dict[str, dict[str, Curve]] = field(default_factory=dict)  # "roundtrip" -> output -> curve


def log_run_record(client: Any, run_id: str, record: RunRecord, results: list[CheckResult]) -> None:
    """Metrics, one picture per compared stage under plots/, and the verdict table as the description."""
    import time

    from mlflow.entities import Metric, RunTag

    from ml_atlas_sdk.mlflow_store import with_retries

    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in sorted(record.metrics.items())]
    for start in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        chunk = metrics[start:start + 1000]
        with_retries("logging metrics", lambda c=chunk: client.log_batch(run_id, metrics=c), client.tracking_uri)
    tolerances = judged_tolerances(results)
    for stage, curves in record.error_curves.items():
        if any(curves.values()):
            figure = error_figure(stage, curves, tolerances.get(stage))
            with_retries(f"logging the {stage} plot",
                         lambda f=figure, s=stage: client.log_figure(run_id, f, f"{PLOTS_DIR}/{s}_error_quantiles.png"),
                         client.tracking_uri)
    note = RunTag(NOTE_TAG, verdict_note(results))
    with_retries("writing the run description", lambda: client.log_batch(run_id, tags=[note]), client.tracking_uri)


def judged_tolerances(results: list[CheckResult]) -> dict[str, dict[str, tuple[float, str]]]:
    """stage -> output -> (absolute tolerance, its legend label), from the checks' own details: each
    output's round-trip atol (its own under roundtrip.tolerances; rtol*|ref| comes on top), the
    drift's tolerance_max_abs."""
    found: dict[str, dict[str, tuple[float, str]]] = {}
    for r in results:
        details = r.details or {}
        if r.name == "roundtrip":
            for output, tol in (details.get("tolerances") or {}).items():
                atol, rtol = _number(tol.get("atol")), _number(tol.get("rtol"))
                if atol is not None:
                    found.setdefault("roundtrip", {})[output] = (atol, f"{output} atol {atol:g}" + (f" + rtol {rtol:g}*|ref|" if rtol else ""))
        elif r.name == "drift" and _number(details.get("tolerance_max_abs")) is not None:
            limit = _number(details["tolerance_max_abs"])
            for output in details.get("outputs") or {}:
                found.setdefault("drift", {})[output] = (limit, f"{output} tolerance_max_abs {limit:g}")
    return found


def error_figure(stage: str, curves: Mapping[str, Curve], tolerances: Mapping[str, tuple[float, str]] | None = None):
    """|error| against percentile, one line per output, log scale: the shape of the error, not just its max;
    a dashed line in the output's colour at the tolerance it was judged against."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for output, curve in curves.items():
        if curve:
            percentiles, errors = zip(*curve)
            (line,) = axes.plot(percentiles, [max(e, 1e-12) for e in errors], label=output)
            if output in (tolerances or {}) and tolerances[output][0] > 0:
                limit, label = tolerances[output]
                axes.axhline(limit, color=line.get_color(), linestyle="--", linewidth=1, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("percentile of elements")
    compared = "|ONNX - PyTorch|" if stage == "roundtrip" else "|user - canonical|"
    axes.set_ylabel(f"{compared} (0 drawn at 1e-12)")
    axes.set_title(f"{stage}: error quantiles per output")
    axes.legend()
    figure.tight_layout()
    return figure


def error_curve(actual: np.ndarray | None, reference: np.ndarray) -> Curve:
    """|actual - reference| at each percentile over the finite elements; [] when there is nothing to compare."""
    if actual is None or actual.shape != reference.shape:
        return []
    # One float64 array of errors, computed in place and sorted in place: a 1M-row output's
    # temporaries (widened copies, difference, filtered copy, quantile's copy) were 3x its size.
    a, r = np.asarray(actual).reshape(-1), np.asarray(reference).reshape(-1)
    errors = np.empty(a.size, np.float64)
    for start in range(0, a.size, CHUNK_ELEMENTS):
        part = slice(start, start + CHUNK_ELEMENTS)
        np.subtract(a[part], r[part], out=errors[part], dtype=np.float64)
        mapped_pages.release([a[part], r[part]])
    np.abs(errors, out=errors)
    finite = np.isfinite(errors)
    if not finite.all():
        errors = errors[finite]
    if errors.size == 0:
        return []
    curve = np.quantile(errors, QUANTILES, overwrite_input=True)
    return [(round(float(q) * 100, 1), float(e)) for q, e in zip(QUANTILES, curve)]


def run_metrics(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The numbers two pushes are compared by, named `<stage>.<output>.<figure>`."""
    metrics: dict[str, float] = {}
    roundtrip = reports.get("roundtrip", {}).get("metrics", {})
    for output, figures in roundtrip.get("outputs", {}).items():
        for figure in ROUNDTRIP_FIGURES:
            _put(metrics, f"roundtrip.{output}.{figure}", figures.get(figure))
    for size, usage in roundtrip.get("dynamic_axes", {}).items():  # "seq_len=24" -> worst tol_usage there
        _put(metrics, f"dynamic_axes.{size.replace('=', '.')}.tol_usage", usage)
    for output, figures in reports.get("drift", {}).get("metrics", {}).items():
        for figure, value in figures.items() if isinstance(figures, Mapping) else ():
            _put(metrics, f"drift.{output}.{figure}", value)
    precision = reports.get("precision", {})
    figures = precision.get("metrics", {})
    for figure in ("max_abs_activation", "modules_over", "modules_underflow"):
        _put(metrics, f"precision.{figure}", figures.get(figure))
    for output, errors in figures.get("fp16_outputs", {}).items():
        _put(metrics, f"precision.{output}.fp16_max_abs_err", errors.get("max_abs_err"))
    coverage = next((c for c in precision.get("checks", []) if c.get("name") == "int8_calibration_coverage"), {})
    for name, cover in (coverage.get("details", {}).get("inputs") or {}).items():
        for figure in ("outside_share", "quantile_gap", "unseen_share"):
            _put(metrics, f"precision.{name}.{figure}", cover.get(figure))
    export = reports.get("export", {}).get("metrics", {})
    _put(metrics, "export.accepted_step", export.get("accepted_step"))
    _put(metrics, "export.attempts", export.get("attempts"))
    for stage, report in reports.items():
        _put(metrics, f"seconds.{stage}", report.get("seconds"))
    return metrics


def headline(roundtrip: Mapping[str, Any], export_used: Mapping[str, Any]) -> dict[str, Any]:
    """One experiment in three short columns of `dvc exp show` (README): the accepted ladder step,
    the round-trip verdict and the worst output's max |error|. Top-level keys of
    reports/roundtrip.json, so their column names stay short."""
    outputs = roundtrip.get("metrics", {}).get("outputs", {})
    return {
        "step": export_used.get("escalation_step"),
        "verdict": roundtrip.get("verdicts", {}).get("roundtrip", "missing"),
        "worst_err": _worst([_number(m.get("max_abs_err")) for m in outputs.values()]),
    }


def verdict_note(results: list[CheckResult]) -> str:
    """The verdict table as Markdown, for the run's description in the MLflow UI."""
    rows = ["| check | verdict | message |", "| --- | --- | --- |"]
    for r in results:
        message = r.message.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {r.label} | {r.verdict.value} | {message[:300]} |")
    return "\n".join(rows)[:7000]  # under MLflow's tag value limit


def metric_key(name: str) -> str:
    return _NOT_IN_KEY.sub("_", name)[:250]


def _put(metrics: dict[str, float], name: str, value: Any) -> None:
    number = _number(value)
    if number is not None:
        metrics[metric_key(name)] = number


def _number(value: Any) -> float | None:
    """Report values as numbers: JSON keeps non-finite floats as "nan"/"inf" strings (reports.write_json)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _worst(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return worst(present) if present else None
