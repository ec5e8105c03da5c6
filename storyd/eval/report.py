"""The result of `storyd eval`: one column per run, one row per metric, as data, rows or CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from storyd.eval import protocol
from storyd.eval.stats import Estimate


@dataclass(frozen=True)
class ModelInfo:
    name: str  # weights.lock name, or "toy-reader"
    repo: str | None
    revision: str | None  # None: unpinned

    def describe(self) -> str:
        if self.repo is None:
            return self.name
        return f"{self.repo}@{self.revision[:12] if self.revision else 'unpinned'}"


@dataclass(frozen=True)
class RunInfo:
    label: str
    folder: str
    models: tuple[str, ...]
    csa: str  # on | off | mixed | ?
    stories: int


@dataclass(frozen=True)
class Skipped:
    metric: str
    reason: str  # what is missing and what to do, one line


@dataclass
class EvalReport:
    runs: list[RunInfo]
    metrics: list[str]  # computed rows, in protocol order
    models: dict[str, ModelInfo]  # metric -> the model that scored it
    estimates: dict[str, list[Estimate | None]]  # metric -> one per run; None: not applicable to that run
    per_story: dict[str, dict[str, dict[str, float]]]  # run label -> metric -> story -> value
    differences: dict[str, list[Estimate | None]] = field(default_factory=dict)  # metric -> run k minus run 0
    skipped: list[Skipped] = field(default_factory=list)
    mask_background: bool = False
    protocol: str = "storyd"  # one of protocol.PROTOCOLS
    background: dict[str, str] = field(default_factory=dict)  # run label -> the removal method that ran; {}: none

    def as_dict(self) -> dict:
        return {
            "protocol": {**protocol.describe(self.protocol), "mask_background": self.mask_background,
                         "background": self.background},
            "runs": [vars(r) | {"models": list(r.models)} for r in self.runs],
            "metrics": {
                name: {
                    "label": protocol.METRICS[name].label,
                    "model": vars(self.models[name]),
                    "higher_is_better": protocol.METRICS[name].higher_is_better,
                    "scale": protocol.METRICS[name].scale,
                    "runs": [e.as_dict() if e else None for e in self.estimates[name]],
                    "difference_from_first": [e.as_dict() if e else None for e in self.differences.get(name, [])],
                }
                for name in self.metrics
            },
            "per_story": {run: {m: {s: _clean(v) for s, v in vals.items()} for m, vals in metrics.items()}
                          for run, metrics in self.per_story.items()},
            "skipped": [vars(s) for s in self.skipped],
        }

    def csv_text(self) -> str:
        """One line per (run, metric): the table in long form, for spreadsheets and scripts."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["protocol", "run", "folder", "csa", "metric", "model", "mean", "low", "high", "stories"])
        for name in self.metrics:
            for run, est in zip(self.runs, self.estimates[name]):
                if est is None:
                    continue
                cells = [_fmt(v) for v in (est.mean, est.low, est.high)]
                writer.writerow([protocol.PROTOCOL_VERSION, run.label, run.folder, run.csa, name,
                                 self.models[name].describe(), *cells, est.n])
        return buffer.getvalue()

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the human table: metric and model, then one cell per run."""
        header = ["metric", "model"] + [f"{r.label} ({', '.join(r.models)}, CSA {r.csa}, {r.stories} st.)"
                                        for r in self.runs]
        rows = []
        for name in self.metrics:
            arrow = "↑" if protocol.METRICS[name].higher_is_better else "↓"
            cells = [format_estimate(e) for e in self.estimates[name]]
            rows.append([f"{protocol.METRICS[name].label} {arrow}", self.models[name].describe(), *cells])
            diffs = self.differences.get(name, [])
            if any(d is not None for d in diffs):
                rows.append(["  minus first run", "", "", *[format_estimate(d, signed=True) for d in diffs[1:]]])
        return header, rows


def format_estimate(est: Estimate | None, *, signed: bool = False) -> str:
    if est is None or est.n == 0:
        return "n/a"
    mean = f"{est.mean:+.3f}" if signed else f"{est.mean:.3f}"
    if est.low is None:
        return mean
    return f"{mean} [{est.low:.3f}, {est.high:.3f}]"


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
