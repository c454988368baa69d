"""Reports: gates (``--fail-on``), machine-readable run summaries, and (in submodules) verdicts, the
``auditlm.report/1`` document (:func:`build_report`), Markdown, HTML, the model-card section, evidence bundles and
sign-offs.

JSON summary schema ``auditlm.run/1`` (stable; additions only within a major version)::

    {"schema": "auditlm.run/1", "run_id": str, "model": str, "status": str,
     "model_info": {...}, "suites": [{"id", "version", "status", "n_items", "detail", "digest",
                                      "data_files": [{"source", "path", "size", "sha256"}] | null}],
     "metrics": [{"suite", "metric", "group", "group_field", "value", "ci_low", "ci_high", "n", "extra"}],
     "gates": [{"expr", "passed", "value"}],
     "verdicts": [{"suite", "verdict", "label", "reason", "metric", "value", "ci_low", "ci_high", "ideal", ...}]}

``verdicts`` (one per suite, :mod:`auditlm.report.verdicts`) was added within ``auditlm.run/1``.

Rates are fractions in [0, 1]; ``group`` is null for the overall value; NaN is written as null.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditlm.errors import GateError, choices
from auditlm.metrics import MetricResult

SCHEMA = "auditlm.run/1"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
_GATE = re.compile(
    r"^\s*(?P<path>[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)(?:\[(?P<group>[^\]]+)\])?\s*"
    r"(?P<op>>=|<=|==|!=|>|<)\s*(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
GATE_FORMAT = ("SUITE.METRIC[FIELD=GROUP] OP NUMBER (FIELD= optional), e.g. bias.crows_pairs.pct_stereotype>0.60 "
               "or bias.crows_pairs.pct_stereotype[bias_type=gender]>0.6")


@dataclass(frozen=True)
class Gate:
    """A failing condition: the run fails the gate when ``metric op threshold`` holds. ``group`` selects a group
    row (``None``: the overall row); ``field`` its group field, needed when the same group name appears under
    two fields (HONEST's ``queer`` is both a category and an identity)."""

    expr: str
    suite: str
    metric: str
    group: str | None
    op: str
    threshold: float
    field: str | None = None

    def select(self, metrics: list[MetricResult]) -> MetricResult:
        """The one row this gate reads. Naming nothing measured, or a group that more than one group field
        has without saying which, is a :class:`GateError` listing the valid choices."""
        same_suite = [m for m in metrics if m.suite == self.suite]
        hits = [m for m in same_suite if m.metric == self.metric and m.group == self.group
                and (self.field is None or m.group_field == self.field)]
        if not hits:
            valid = {_path(m) for m in same_suite}
            raise GateError(f"gate '{self.expr}' names nothing this run measured (valid: {choices(valid, 15)})")
        if len({m.group_field for m in hits}) > 1:
            raise GateError(f"gate '{self.expr}': group '{self.group}' is ambiguous (valid: "
                            f"{choices(_path(m) for m in hits)})")
        return hits[0]

    def check_producible(self, metrics: frozenset[str] | set[str], groups: dict[str, set[str]] | None,
                         group_only: frozenset[str] | set[str] = frozenset()) -> None:
        """Refuse, before anything runs, a gate its suite cannot produce: a metric not in ``metrics`` (the
        suite scorer's :meth:`~auditlm.scorers.Scorer.metric_names`; empty: not declared, not checked), or a
        group (and field) not in ``groups`` (``{field: values}`` from the prepared items; None: not known
        before the run), or no group for a metric in ``group_only`` (reported per group only). A
        :class:`GateError` listing the valid choices."""
        if metrics and self.metric not in metrics:
            raise GateError(f"--fail-on '{self.expr}': suite {self.suite} reports no metric '{self.metric}' "
                            f"(valid: {choices(metrics)})")
        if self.group is None and self.metric in group_only:
            eg = f" (valid fields: {choices(groups)})" if groups else ""
            raise GateError(f"--fail-on '{self.expr}': {self.suite}.{self.metric} is reported per group only; "
                            f"name one as {self.suite}.{self.metric}[FIELD=GROUP]{eg}")
        if self.group is None or groups is None:
            return
        if self.field is not None:
            if self.field not in groups:
                raise GateError(f"--fail-on '{self.expr}': suite {self.suite} has no group field '{self.field}' "
                                f"(valid: {choices(groups) if groups else 'none: it reports no groups'})")
            if self.group not in groups[self.field]:
                raise GateError(f"--fail-on '{self.expr}': suite {self.suite} has no {self.field} "
                                f"'{self.group}' in this run (valid: {choices(groups[self.field])})")
            return
        if not any(self.group in v for v in groups.values()):
            valid = [f"{f}={g}" for f, vs in groups.items() for g in vs]
            raise GateError(f"--fail-on '{self.expr}': suite {self.suite} has no group '{self.group}' in this run "
                            f"(valid: {choices(valid) if valid else 'none: it reports no groups'})")

    def check(self, metrics: list[MetricResult]) -> tuple[bool, float]:
        """``(passed, value)``. An undefined (NaN) value fails the gate (the row's note says why)."""
        value = self.select(metrics).value
        if math.isnan(value):
            return False, value
        return not _OPS[self.op](value, self.threshold), value


def _path(m: MetricResult) -> str:
    if m.group is None:
        return f"{m.suite}.{m.metric}"
    return f"{m.suite}.{m.metric}[{m.group_field}={m.group}]" if m.group_field else f"{m.suite}.{m.metric}[{m.group}]"


def parse_gate(expr: str, suite_ids: list[str]) -> Gate:
    """Parse ``SUITE.METRIC[FIELD=GROUP] OP NUMBER`` (``FIELD=`` optional); the suite must be one of
    ``suite_ids``."""
    m = _GATE.match(expr)
    if not m:
        raise GateError(f"bad --fail-on expression '{expr}' (expected {GATE_FORMAT})")
    path = m["path"]
    suite = next((s for s in sorted(suite_ids, key=len, reverse=True) if path.startswith(s + ".")), None)
    if suite is None:
        raise GateError(f"--fail-on '{expr}' names no suite of this run (valid: {choices(suite_ids)})")
    field, group = None, m["group"]
    if group is not None and "=" in group:
        field, group = (x.strip() for x in group.split("=", 1))
        if not field or not group:
            raise GateError(f"bad --fail-on expression '{expr}' (expected {GATE_FORMAT})")
    return Gate(expr.strip(), suite, path[len(suite) + 1 :], group, m["op"], float(m["num"]), field)


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summary(run: Any, suites: list[dict[str, Any]], metrics: list[MetricResult],
            gates: list[tuple[Gate, bool, float]] | None = None, kinds: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """The ``auditlm.run/1`` JSON summary of a stored run (``kinds``: suite id → scorer kind, for the verdicts;
    default: the installed suites')."""
    from auditlm.report.verdicts import suite_verdicts

    return {
        "schema": SCHEMA,
        "run_id": run.run_id,
        "model": run.model,
        "status": run.status,
        "created_at": run.created_at,
        "duration_s": run.duration_s,
        "seed": run.seed,
        "auditlm_version": run.auditlm_version,
        "git_hash": run.git_hash,
        "model_info": run.model_info,
        "suites": [
            {"id": s["suite_id"], "version": s["suite_version"], "status": s["status"], "n_items": s["n_items"],
             "detail": s["detail"], "digest": s.get("suite_digest"), "data_files": s.get("data_files")}
            for s in suites
        ],
        "metrics": [
            {"suite": m.suite, "metric": m.metric, "group": m.group, "group_field": m.group_field,
             "value": _clean(m.value), "ci_low": _clean(m.ci_low), "ci_high": _clean(m.ci_high), "n": m.n,
             "extra": m.extra}
            for m in metrics
        ],
        "gates": [{"expr": g.expr, "passed": ok, "value": _clean(v)} for g, ok, v in (gates or [])],
        "verdicts": [v.to_dict() for v in suite_verdicts(suites, metrics, kinds)],
    }


def stored_gates(config: dict[str, Any], suite_ids: list[str], metrics: list[MetricResult]) -> list[dict[str, Any]]:
    """Re-check the ``--fail-on`` gates a run was started with (``config["fail_on"]``) against its stored
    metrics: one ``{"expr", "passed", "value", "error"}`` per gate, in the order given. ``passed`` is None (and
    ``error`` says why) for a gate that no longer parses or names no stored row (a group left empty, a run
    still running)."""
    out: list[dict[str, Any]] = []
    for expr in config.get("fail_on") or []:
        try:
            ok, value = parse_gate(str(expr), suite_ids).check(metrics)
        except GateError as e:
            out.append({"expr": str(expr), "passed": None, "value": None, "error": str(e)})
        else:
            out.append({"expr": str(expr), "passed": ok, "value": _clean(value), "error": None})
    return out


def build_report(store: Any, run_id: str, compare_with: str | None = None, **kw: Any) -> dict[str, Any]:
    """The ``auditlm.report/1`` document of a stored run (:func:`auditlm.report.jsonreport.build_report`)."""
    from auditlm.report.jsonreport import build_report as _build

    return _build(store, run_id, compare_with, **kw)
