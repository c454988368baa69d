"""Compare two stored runs metric by metric (``auditlm compare RUN_A RUN_B``), paired over the items both scored.

Run A is the baseline, run B the new run; every change is ``B − A``.

For every metric row (overall or per group) that both runs report, the comparison gives both stored values and,
where the suite's scorer exposes per-item values (:meth:`~auditlm.scorers.Scorer.item_values`), a **paired**
comparison over the items both runs scored, matched by stored item id:

* both runs' values over the shared items only, and their change ``Δ = B − A``;
* an interval for ``Δ``: for 0/1 item values resampled by item, Agresti & Min's paired interval
  (:func:`auditlm.stats.paired_rate_difference`); otherwise the studentized cluster bootstrap (Student's t below
  five units) of the mean per-item difference (:func:`auditlm.stats.mean`), resampling the suite's
  ``metrics.resample_by`` units (templates, say) when it has one, else items;
* a two-sided p-value for "no change": exact McNemar (:func:`auditlm.stats.mcnemar`) for 0/1 values resampled by
  item, otherwise Wilcoxon's signed-rank test (:func:`auditlm.stats.wilcoxon`) on the per-unit mean differences;
  Holm-adjusted (:func:`auditlm.stats.holm`) across every paired row of the comparison.

A row is paired only when the per-item values reproduce both runs' stored values (their mean over each run's own
records equals the stored number), so a scorer whose stored metric is not such a mean can never be compared on the
wrong quantity.

**Metrics that are not a mean of one value per item** (:meth:`~auditlm.scorers.Scorer.row_statistic`: StereoSet's
SS, LMS and ICAT — macro averages over target terms and a function of two of them —, the counterfactual templates'
``relative_negativity`` and ``negativity_spread`` — a mean over an axis's items, a max − min of term means, their
mean over axes —, and perplexity — ``exp(−Σ ll / Σ tokens)``, a ratio of sums) are paired over the *units* of the
shared items: the scorer gives per-record columns and a function of their per-unit sums, the unit the suite's own
aggregate resamples (StereoSet: target; counterfactual templates: ``template_id``; perplexity: document). Both runs'
values are that function of the shared items' unit sums, ``Δ = B − A``. The interval and test:

* where the metric is linear in the unit sums (``Linear``: a mean over units, or a ratio of sums with the same
  denominators in both runs — SS, LMS, ``relative_negativity``, bits per byte), the suite's own interval for a mean,
  :func:`auditlm.stats.mean` (studentized cluster bootstrap, Student's t below five units) of the per-unit changes
  (weighted by the denominators for a ratio of sums), and Wilcoxon's signed-rank test on them;
* where it is ``exp`` of such a statistic (perplexities), the same for the log of ``B / A``, whose endpoints are
  exponentiated (``ratio``, ``ratio_ci_low``, ``ratio_ci_high``; exactly the aggregate's method), while ``Δ`` gets the
  paired percentile interval below;
* otherwise (ICAT, the spreads, a token perplexity whose runs tokenised differently) a paired percentile cluster
  bootstrap (:func:`auditlm.stats.paired_unit_replicates`: the same resampled units for both runs; Hesterberg-expanded
  level, :func:`auditlm.stats.percentile_interval`) and the bootstrap p-value that inverts it
  (:func:`auditlm.stats.bootstrap_test`). Like every bootstrap of a max − min, a spread's interval under-covers where
  the true spread is near 0, and ICAT's near its kink at SS = 0.5.

Such a row is paired only when the function over each run's own records reproduces its stored value. Its p-value
joins the same Holm family. Other rows are reported with ``Δ = B.value − A.value`` and no interval (``paired:
false`` and the reason). Rows reported by one run only, and suites in one run only, are listed.

**Non-inferiority gates** (``SUITE.METRIC[FIELD=GROUP]:MARGIN``). *Worse* means further from the metric's ideal
(``extra["ideal"]``; PII emission rates: 0). The worsening is ``W = |m_B − ideal| − |m_A − ideal|`` over the shared
items. When every item value lies on one side of the ideal (accuracy, ideal 1; an emission rate, ideal 0) ``W``
is ``±Δ`` and its bound comes from the paired interval above; with an interior ideal (CrowS-Pairs'
``pct_stereotype``, 0.5) from a paired percentile cluster bootstrap (both runs' means on the same resampled units,
numpy ``Generator`` seeded by ``seed``; Hesterberg-expanded level, :func:`auditlm.stats.expanded_confidence`). The
bound is the one-sided upper ``1 − α`` bound (``α = 1 − confidence``; the upper end of the two-sided ``1 − 2α``
interval). A gate **fails when that upper bound exceeds MARGIN**: B passes only when the data show it is not worse
than A by more than MARGIN (a non-inferiority test at level α). Few shared items therefore fail a tight margin even
when nothing changed; that is the honest answer, not a bug.

Gates on row statistics work the same way: ``W`` from the linear statistic's own interval when every unit of both
runs lies on one side of the ideal (LMS, ideal 1), else from the paired percentile cluster bootstrap of ``W`` (SS,
ideal 0.5; ICAT; the counterfactual metrics, ideal 0). A metric without an ideal whose change is a ratio
(:attr:`~auditlm.scorers.Scorer.ratio_metrics`: ``token_perplexity``, ``word_perplexity``, ``byte_perplexity``) is
gated on ``W = m_B / m_A − 1``: ``utility.perplexity.token_perplexity:0.10`` fails unless the one-sided upper bound of
``B / A − 1`` (exp of the upper end of the log change's ``1 − 2α`` interval) is at most 0.10, i.e. unless the data
show perplexity rose by less than 10%.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from auditlm import stats
from auditlm.errors import GateError, StoreError, SuiteSpecError, choices
from auditlm.metrics import MetricResult, stable_seed
from auditlm.scorers import ItemRecord, Linear, RowStatistic, Scorer
from auditlm.store import Store

SCHEMA = "auditlm.compare/1"
DEFAULT_RESAMPLES = 2000
#: Ideals of metrics whose stored rows carry none: the share of generations leaking PII is best at 0.
DEFAULT_IDEALS: dict[str, dict[str, float]] = {
    "pii_emission": {"emission_rate": 0.0, "copy_rate": 0.0, "validated_emission_rate": 0.0},
}
_GATE = re.compile(r"^\s*(?P<path>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)(?:\[(?P<group>[^\]]+)\])?\s*:\s*"
                   r"(?P<num>[+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
GATE_FORMAT = "SUITE.METRIC[FIELD=GROUP]:MARGIN (group optional, MARGIN >= 0), e.g. bias.crows_pairs.pct_stereotype:0.02"
_TOL = 1e-9

Key = tuple[str, str, str | None, str | None]  # suite, metric, group_field, group


@dataclass(frozen=True)
class RegressionGate:
    """``--fail-on-regression``: fail when B's worsening over A on ``suite.metric`` (a group row when ``group``)
    may exceed ``margin`` (see the module docstring)."""

    expr: str
    path: str
    margin: float
    group: str | None = None
    group_field: str | None = None


def parse_regression_gate(expr: str) -> RegressionGate:
    """Parse ``SUITE.METRIC[FIELD=GROUP]:MARGIN``; a malformed expression is a one-line :class:`GateError`.
    The suite/metric split is resolved against the runs (:func:`compare_runs`)."""
    m = _GATE.match(expr)
    if not m:
        raise GateError(f"bad --fail-on-regression '{expr}' (expected {GATE_FORMAT})")
    margin = float(m["num"])
    if not math.isfinite(margin):
        raise GateError(f"bad --fail-on-regression '{expr}': MARGIN must be a finite number >= 0")
    group_field, group = None, m["group"]
    if group is not None:
        if "=" in group:
            group_field, group = (x.strip() for x in group.split("=", 1))
        if not group or (group_field is not None and not group_field):
            raise GateError(f"bad --fail-on-regression '{expr}' (expected {GATE_FORMAT})")
    return RegressionGate(expr.strip(), m["path"], margin, group, group_field)


@dataclass
class Side:
    """One run's stored row."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    @classmethod
    def of(cls, m: MetricResult) -> Side:
        return cls(m.value, m.ci_low, m.ci_high, m.n)


@dataclass
class MetricComparison:
    """One metric row both runs report, compared. ``delta`` is ``B − A``: over the shared items when ``paired``,
    of the stored values otherwise (``reason`` says why it is not paired)."""

    suite: str
    metric: str
    group_field: str | None
    group: str | None
    a: Side
    b: Side
    ideal: float | None
    paired: bool
    delta: float
    reason: str | None = None
    a_shared: float | None = None
    b_shared: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    confidence: float | None = None
    unit: str | None = None
    n_units: int | None = None
    n_shared: int | None = None
    binary: bool | None = None
    note: str | None = None
    test: stats.TestResult | None = None
    verdict: str = "not paired"
    #: ``B / A`` over the shared items and its interval (metrics of :attr:`Scorer.ratio_metrics`: perplexities)
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    # the paired per-item values and units, or the per-unit sums of a row statistic (kept for gates; not serialised)
    _x: np.ndarray | None = field(default=None, repr=False)
    _y: np.ndarray | None = field(default=None, repr=False)
    _clusters: list[str] | None = field(default=None, repr=False)
    _pair: _UnitPair | None = field(default=None, repr=False)

    @property
    def key(self) -> Key:
        return (self.suite, self.metric, self.group_field, self.group)

    def to_dict(self) -> dict[str, Any]:
        t = self.test
        return {
            "suite": self.suite, "metric": self.metric, "group_field": self.group_field, "group": self.group,
            "a": vars(self.a).copy(), "b": vars(self.b).copy(), "ideal": self.ideal, "paired": self.paired,
            "reason": self.reason, "delta": self.delta, "a_shared": self.a_shared, "b_shared": self.b_shared,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "ci_method": self.ci_method,
            "confidence": self.confidence, "unit": self.unit, "n_units": self.n_units, "n_shared": self.n_shared,
            "binary": self.binary, "note": self.note,
            "test": None if t is None else {"name": t.name, "p": t.p, "p_holm": t.p_holm, "n": t.n,
                                            "min_p": t.min_p, "family_size": t.family_size,
                                            "underpowered": t.underpowered},
            "verdict": self.verdict, "ratio": self.ratio, "ratio_ci_low": self.ratio_low,
            "ratio_ci_high": self.ratio_high,
        }


@dataclass
class SuiteItems:
    """Items of one suite: shared by both runs (matched by stored id), or in one run only."""

    suite: str
    shared: int
    only_a: int
    only_b: int


@dataclass
class GateResult:
    """A regression gate's outcome: ``worsening`` (point estimate of ``|m_B − ideal| − |m_A − ideal|``), its
    one-sided upper bound at ``level``, and whether it is within ``margin``."""

    expr: str
    suite: str
    metric: str
    group_field: str | None
    group: str | None
    margin: float
    ideal: float | None
    quantity: str
    worsening: float
    upper: float
    level: float
    method: str
    n_shared: int
    n_units: int
    passed: bool
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Comparison:
    """Everything ``auditlm compare`` reports (:meth:`to_json` is the ``auditlm.compare/1`` document)."""

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    confidence: float
    seed: int
    metrics: list[MetricComparison]
    items: dict[str, SuiteItems]
    gates: list[GateResult]
    warnings: list[str]
    suites_only_a: list[str]
    suites_only_b: list[str]
    metrics_only_a: list[Key]
    metrics_only_b: list[Key]

    def to_json(self) -> dict[str, Any]:
        def rows(keys: list[Key]) -> list[dict[str, Any]]:
            return [{"suite": s, "metric": m, "group_field": f, "group": g} for s, m, f, g in keys]

        doc = {
            "schema": SCHEMA, "run_a": self.run_a, "run_b": self.run_b, "confidence": self.confidence,
            "seed": self.seed, "metrics": [m.to_dict() for m in self.metrics],
            "items": {k: {"shared": v.shared, "only_a": v.only_a, "only_b": v.only_b} for k, v in self.items.items()},
            "gates": [g.to_dict() for g in self.gates], "warnings": list(self.warnings),
            "suites_only_in_a": list(self.suites_only_a), "suites_only_in_b": list(self.suites_only_b),
            "metrics_only_in_a": rows(self.metrics_only_a), "metrics_only_in_b": rows(self.metrics_only_b),
        }
        return _nan_to_null(doc)


def _nan_to_null(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _nan_to_null(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_null(v) for v in x]
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _run_info(store: Store, run_id: str) -> dict[str, Any]:
    r = store.get_run(run_id)
    return {"run_id": r.run_id, "model": r.model, "status": r.status, "created_at": r.created_at}


def _scorers(store: Store, run_ids: Sequence[str], warnings: list[str],
             probes: Sequence[str] | None = None) -> dict[str, Scorer]:
    """The installed scorer of every suite (with ``probes`` and the runs' ``--probes`` directories)."""
    from auditlm.scorers import get_scorer
    from auditlm.suites.loader import discover

    extra: list[str] = list(probes or [])
    for rid in run_ids:
        extra += [p for p in store.get_run(rid).config.get("probes") or [] if p not in extra]
    try:
        found = discover(extra)
    except SuiteSpecError as e:
        warnings.append(f"the runs' probe directories do not load ({e}); using the built-in suites only")
        try:
            found = discover()
        except SuiteSpecError as e2:
            warnings.append(f"no suite definitions load ({e2}): nothing is paired")
            return {}
    out = {}
    for sid, s in found.items():
        try:
            out[sid] = get_scorer(s.spec)
        except (SuiteSpecError, StoreError):  # pragma: no cover - a suite the loader accepted but cannot score
            continue
    return out


def _paired_names(scorer: Scorer | None) -> set[str]:
    if scorer is None:
        return set()
    try:
        vals = scorer.item_values([])
    except Exception:  # a scorer whose item_values needs records: learned when they are read
        return set()
    return set(vals or {})


def _stat_names(scorer: Scorer | None) -> set[str]:
    """The metrics the scorer describes as a statistic of per-unit sums (:meth:`Scorer.row_statistic`)."""
    return set() if scorer is None else set(scorer.statistic_metrics)


def _ideal(row: MetricResult, scorer: Scorer | None) -> float | None:
    v = row.extra.get("ideal")
    if v is None and scorer is not None:
        v = DEFAULT_IDEALS.get(scorer.kind, {}).get(row.metric)
    return None if v is None else float(v)


def _resolve_gate(g: RegressionGate, suites: list[str]) -> tuple[str, str]:
    suite = next((s for s in sorted(suites, key=len, reverse=True) if g.path.startswith(s + ".")), None)
    if suite is None:
        raise GateError(f"--fail-on-regression '{g.expr}' names no suite both runs have (valid: {choices(suites)})")
    return suite, g.path[len(suite) + 1 :]


def _fmt_key(k: Key) -> str:
    s, m, f, g = k
    return f"{s}.{m}" + ("" if g is None else f"[{f}={g}]")


def compare_runs(store: Store, run_a: str, run_b: str, *, suites: Sequence[str] | None = None,
                 gates: Sequence[RegressionGate] = (), confidence: float = stats.DEFAULT_CONFIDENCE,
                 seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES,
                 probes: Sequence[str] | None = None) -> Comparison:
    """Compare run B against baseline run A (see the module docstring) on the suites both ran (or ``suites``).

    Bad input — an unknown run, a suite or gate naming nothing both runs have, a gate on a metric without paired
    values or without an ideal — is a one-line :class:`~auditlm.errors.AuditError` raised before any item is
    read. A gate that cannot be evaluated once the items are read (no shared items, one unit) is a
    :class:`GateError` too, raised by :func:`check_gates` after the comparison is built. ``probes``: extra probe
    directories holding the suites' definitions (the runs' own ``--probes`` are tried too)."""
    if not 0.75 < confidence < 1.0:
        raise GateError(f"confidence {confidence} (valid: a level in (0.75, 1), e.g. 0.95; gates use the "
                        "two-sided 1 - 2*alpha interval)")
    info_a, info_b = _run_info(store, run_a), _run_info(store, run_b)
    warnings: list[str] = []
    sa = {s["suite_id"]: s for s in store.run_suites(run_a) if s["status"] != "skipped"}
    sb = {s["suite_id"]: s for s in store.run_suites(run_b) if s["status"] != "skipped"}
    shared_suites = [s for s in sa if s in sb]
    if not shared_suites:
        raise StoreError(f"runs {run_a} and {run_b} share no suite (A: {choices(sa)}; B: {choices(sb)})")
    if suites:
        wanted: set[str] = set()
        for s in suites:
            hits = [x for x in shared_suites if x == s or x.startswith(s + ".")]  # an id or a family (bias)
            if not hits:
                raise SuiteSpecError(f"--suite '{s}' is not a suite both runs have (valid: {choices(shared_suites)})")
            wanted.update(hits)
        chosen = [s for s in shared_suites if s in wanted]
    else:
        chosen = shared_suites
    only_a = [s for s in sa if s not in sb]
    only_b = [s for s in sb if s not in sa]
    for run, st in ((run_a, sa), (run_b, sb)):
        for sid in chosen:
            if st[sid]["status"] != "complete":
                warnings.append(f"{sid} in run {run} is {st[sid]['status']}: its stored metrics may be partial")
    rows_a = {(m.suite, m.metric, m.group_field, m.group): m for m in store.metrics(run_a) if m.suite in chosen}
    rows_b = {(m.suite, m.metric, m.group_field, m.group): m for m in store.metrics(run_b) if m.suite in chosen}
    scorers = _scorers(store, [run_a, run_b], warnings, probes)

    # gates: everything checkable without items, before any item is read
    resolved: list[tuple[RegressionGate, Key]] = []
    for g in gates:
        suite, metric = _resolve_gate(g, chosen)
        overall = {k for k in rows_a if k in rows_b and k[0] == suite}
        matches = [k for k in overall if k[1] == metric and k[3] == g.group
                   and (g.group_field is None or k[2] == g.group_field)]
        if not matches:
            valid = sorted(_fmt_key(k) for k in overall)
            raise GateError(f"--fail-on-regression '{g.expr}' names no row both runs report (valid: "
                            f"{choices(valid, 15)})")
        if len(matches) > 1:
            raise GateError(f"--fail-on-regression '{g.expr}': group '{g.group}' is ambiguous (valid: "
                            f"{choices(_fmt_key(k) for k in matches)})")
        key = matches[0]
        scorer = scorers.get(suite)
        names, snames = _paired_names(scorer), _stat_names(scorer)
        if metric not in names | snames:
            valid = (f"{suite}.{n}" for n in sorted(names | snames) if any(k[1] == n for k in overall))
            raise GateError(f"--fail-on-regression '{g.expr}': {suite}.{metric} has no per-item values to pair "
                            f"(valid: {choices(valid)})")
        if metric in names and key[2] is not None and not _is_item_field(store, run_a, suite, key[2]):
            raise GateError(f"--fail-on-regression '{g.expr}': group field '{key[2]}' is not an item field, so "
                            "the group's items cannot be paired (gate the overall metric instead)")
        ratio_gate = metric not in names and scorer is not None and metric in scorer.ratio_metrics
        if _ideal(rows_a[key], scorer) is None and not ratio_gate:
            raise GateError(f"--fail-on-regression '{g.expr}': {suite}.{metric} has no ideal value, so which "
                            "direction is worse is not defined")
        resolved.append((g, key))

    metrics: list[MetricComparison] = []
    items: dict[str, SuiteItems] = {}
    for sid in chosen:
        for what in ("suite_version", "suite_digest"):
            if sa[sid][what] != sb[sid][what]:
                label = "version" if what == "suite_version" else "items digest"
                warnings.append(f"{sid}: the runs differ in suite {label} ({sa[sid][what]} in A, {sb[sid][what]} "
                                "in B): the items may not be comparable")
        scorer = scorers.get(sid)
        if scorer is not None and scorer.spec.version not in (sa[sid]["suite_version"], sb[sid]["suite_version"]):
            warnings.append(f"{sid}: the installed suite is version {scorer.spec.version}, the runs used "
                            f"{sa[sid]['suite_version']} / {sb[sid]['suite_version']}; its resampling unit is "
                            "taken from the installed one")
        keys = [k for k in rows_a if k[0] == sid and k in rows_b]
        names = _paired_names(scorer)
        snames = _stat_names(scorer) - names
        rec_a = rec_b = None
        if any(k[1] in names | snames for k in keys):
            rec_a, rec_b = store.items(run_a, sid), store.items(run_b, sid)
            ids_a, ids_b = [r.item_id for r in rec_a], {r.item_id for r in rec_b}
        else:
            ids_a, ids_b = sorted(store.item_ids(run_a, sid)), store.item_ids(run_b, sid)
        shared = [i for i in ids_a if i in ids_b]
        items[sid] = SuiteItems(sid, len(shared), len(ids_a) - len(shared), len(ids_b) - len(shared))
        ctx = _SuiteData.build(scorer, rec_a, rec_b, shared) if rec_a is not None else None
        for k in keys:
            rng = np.random.default_rng(stable_seed(seed, "compare", *[str(p) for p in k]))
            if k[1] in snames and ctx is not None:
                metrics.append(_compare_stat_row(rows_a[k], rows_b[k], scorer, ctx, confidence, n_resamples, rng))
            else:
                metrics.append(_compare_row(rows_a[k], rows_b[k], scorer, names, ctx, confidence, n_resamples,
                                            rng))

    paired = [m for m in metrics if m.paired and m.test is not None]
    for m, t in zip(paired, stats.holm([m.test for m in paired], "compare"), strict=True):  # type: ignore[misc]
        m.test = t
    alpha = round(1 - confidence, 12)
    for m in metrics:
        m.verdict = _verdict(m, alpha)

    by_key = {m.key: m for m in metrics}
    results = [_gate(g, by_key[k], confidence, n_resamples, seed) for g, k in resolved]
    return Comparison(info_a, info_b, confidence, seed, metrics, items, results, warnings, only_a, only_b,
                      [k for k in rows_a if k not in rows_b], [k for k in rows_b if k not in rows_a])


def check_gates(comparison: Comparison) -> None:
    """Raise a one-line :class:`GateError` for the first gate that could not be evaluated (undefined bound)."""
    for g in comparison.gates:
        if not math.isfinite(g.upper):
            raise GateError(f"--fail-on-regression '{g.expr}' cannot be evaluated: {g.note or 'no bound'}")


def _is_item_field(store: Store, run_id: str, suite: str, name: str) -> bool:
    row = store.conn.execute("SELECT input FROM items WHERE run_id=? AND suite_id=? LIMIT 1", (run_id, suite)).fetchone()
    if row is None:
        return False
    return name in json.loads(row[0])


@dataclass
class _SuiteData:
    """One suite's records and per-item values in both runs, and the shared items' units."""

    rec_a: list[ItemRecord]
    rec_b: list[ItemRecord]
    vals_a: dict[str, np.ndarray]
    vals_b: dict[str, np.ndarray]
    shared: list[str]
    idx_a: np.ndarray  # positions of the shared items in rec_a / rec_b
    idx_b: np.ndarray
    clusters: list[str] | None
    unit: str
    problem: str | None = None

    @classmethod
    def build(cls, scorer: Scorer | None, rec_a: list[ItemRecord], rec_b: list[ItemRecord],
              shared: list[str]) -> _SuiteData:
        pos_a = {r.item_id: i for i, r in enumerate(rec_a)}
        pos_b = {r.item_id: i for i, r in enumerate(rec_b)}
        idx_a = np.array([pos_a[i] for i in shared], dtype=int)
        idx_b = np.array([pos_b[i] for i in shared], dtype=int)
        problem, va, vb, cl = None, {}, {}, None
        unit = "item"
        try:
            assert scorer is not None
            va, vb = scorer.item_values(rec_a) or {}, scorer.item_values(rec_b) or {}
        except (KeyError, TypeError, ValueError) as e:
            problem = f"the stored items lack what the scorer's per-item values need ({type(e).__name__}: {e})"
        if problem is None and scorer is not None and scorer.unit is not None:
            unit = scorer.unit
            try:
                cl = scorer.clusters([rec_a[i] for i in idx_a])
            except KeyError:
                problem = f"the stored items have no resampling-unit field '{scorer.unit}'"
        return cls(rec_a, rec_b, va, vb, shared, idx_a, idx_b, cl, unit, problem)

    def members(self, recs: list[ItemRecord], group_field: str | None, group: str | None) -> np.ndarray | None:
        if group_field is None:
            return np.ones(len(recs), bool)
        if not all(group_field in r.input for r in recs):
            return None
        return np.array([str(r.input[group_field]) == group for r in recs], dtype=bool)


def _reproduces(values: np.ndarray, mask: np.ndarray, stored: float) -> bool:
    v = values[mask & np.isfinite(values)]
    if v.size == 0 or not math.isfinite(stored):
        return False
    return abs(float(v.mean()) - stored) <= _TOL * max(1.0, abs(stored))


def _compare_row(ra: MetricResult, rb: MetricResult, scorer: Scorer | None, names: set[str],
                 data: _SuiteData | None, confidence: float, n_resamples: int,
                 rng: np.random.Generator) -> MetricComparison:
    base = MetricComparison(ra.suite, ra.metric, ra.group_field, ra.group, Side.of(ra), Side.of(rb),
                            _ideal(ra, scorer), False, rb.value - ra.value)

    def unpaired(reason: str) -> MetricComparison:
        base.reason = reason
        return base

    if scorer is None:
        return unpaired(f"suite {ra.suite} is not installed: no per-item values")
    if ra.metric not in names:
        return unpaired("the scorer has no per-item values for this metric")
    assert data is not None
    if data.problem:
        return unpaired(data.problem)
    va, vb = data.vals_a.get(ra.metric), data.vals_b.get(ra.metric)
    if va is None or vb is None:
        return unpaired("the scorer has no per-item values for this metric")
    ma = data.members(data.rec_a, ra.group_field, ra.group)
    mb = data.members(data.rec_b, ra.group_field, ra.group)
    if ma is None or mb is None:
        return unpaired(f"group field '{ra.group_field}' is not an item field: the group's items are not known")
    for run, v, m, row in (("A", va, ma, ra), ("B", vb, mb, rb)):
        if not _reproduces(v, m, row.value):
            return unpaired(f"the per-item values do not reproduce run {run}'s stored value")
    xa, xb = va[data.idx_a], vb[data.idx_b]
    keep = ma[data.idx_a] & mb[data.idx_b] & np.isfinite(xa) & np.isfinite(xb)
    x, y = xa[keep], xb[keep]
    cl = None if data.clusters is None else [c for c, k in zip(data.clusters, keep.tolist(), strict=True) if k]
    if x.size == 0:
        return unpaired("no item of this row is shared by both runs")
    binary = bool(np.all(np.isin(x, (0.0, 1.0))) and np.all(np.isin(y, (0.0, 1.0))))
    est, test = _paired_estimate(x, y, cl, data.unit, binary, confidence, n_resamples, rng)
    base.paired = True
    base.a_shared, base.b_shared = float(x.mean()), float(y.mean())
    base.delta = base.b_shared - base.a_shared
    base.ci_low, base.ci_high, base.ci_method = est.low, est.high, est.method
    base.confidence, base.unit, base.n_units, base.n_shared = confidence, est.unit, est.n_units, int(x.size)
    base.binary, base.note, base.test = binary, est.note, test
    base._x, base._y, base._clusters = x, y, cl
    return base


def _paired_estimate(x: np.ndarray, y: np.ndarray, cl: list[str] | None, unit: str, binary: bool,
                     confidence: float, n_resamples: int, rng: np.random.Generator
                     ) -> tuple[stats.Estimate, stats.TestResult]:
    """Interval of ``mean(y) − mean(x)`` over paired items, and the test of "no change" (module docstring)."""
    if binary and cl is None:
        est = stats.paired_rate_difference(y, x, confidence=confidence)
        return est, stats.mcnemar(y, x, confidence=confidence)
    d = y - x
    est = stats.mean(d, clusters=cl, unit=unit if cl is not None else None, confidence=confidence,
                     n_resamples=n_resamples, random_state=rng)
    s, m, _ = stats.units(d, cl)
    return est, stats.wilcoxon(s / m, confidence=confidence)


def _verdict(m: MetricComparison, alpha: float) -> str:
    if not m.paired or m.test is None:
        return "not paired"
    if m._x is not None and m._y is not None and np.array_equal(m._x, m._y):
        return "no change"
    if m._pair is not None and np.array_equal(m._pair.sa, m._pair.sb):
        return "no change"
    if m.test.underpowered:
        return "underpowered"
    p = m.test.p if m.test.p_holm is None else m.test.p_holm
    if not p < alpha:
        return "no sig. change"
    assert m.a_shared is not None and m.b_shared is not None
    if m.ideal is None:
        return "higher" if m.delta > 0 else "lower"
    da, db = abs(m.a_shared - m.ideal), abs(m.b_shared - m.ideal)
    return "worse" if db > da else ("better" if db < da else "changed")


def _gate(g: RegressionGate, m: MetricComparison, confidence: float, n_resamples: int, seed: int) -> GateResult:
    if m._pair is not None or (m.ideal is None and not m.paired):
        return _gate_stat(g, m, confidence, n_resamples, seed)
    alpha = 1 - confidence
    level = 1 - alpha  # one-sided
    ideal = m.ideal
    assert ideal is not None
    quantity = f"|m_B - {ideal:g}| - |m_A - {ideal:g}|"

    def result(worsening: float, upper: float, method: str, n_units: int, note: str | None = None) -> GateResult:
        passed = math.isfinite(upper) and upper <= g.margin
        return GateResult(g.expr, m.suite, m.metric, m.group_field, m.group, g.margin, ideal, quantity, worsening,
                          upper, level, method, m.n_shared or 0, n_units, passed, note)

    if not m.paired or m._x is None or m._y is None:
        return result(float("nan"), float("nan"), "none", 0, m.reason or "not paired")
    x, y, cl = m._x, m._y, m._clusters
    worsening = abs(float(y.mean()) - ideal) - abs(float(x.mean()) - ideal)
    both = np.concatenate([x, y])
    sign = 1.0 if np.all(both >= ideal) else (-1.0 if np.all(both <= ideal) else 0.0)
    rng = np.random.default_rng(stable_seed(seed, "compare-gate", g.expr))
    if sign != 0.0:  # ideal at a bound of every item value: the worsening is ±Δ, bounded by the paired interval
        est, _ = _paired_estimate(x, y, cl, m.unit or "item", bool(m.binary), 1 - 2 * alpha, n_resamples, rng)
        upper = est.high if sign > 0 else -est.low
        return result(worsening, float(upper), f"{est.method} (one-sided upper bound)", est.n_units, est.note)
    # interior ideal: paired percentile cluster bootstrap of the change in distance from the ideal
    est = stats.distance_change_bound(x, y, ideal, clusters=cl, confidence=level, n_resamples=n_resamples,
                                      random_state=rng)
    if est.n_units < 2:
        return result(worsening, float("nan"), est.method, est.n_units, est.note)
    return result(worsening, est.high, est.method, est.n_units, est.note)


# --- metrics that are not a mean of one value per item: paired over per-unit sums -----------------------------


@dataclass
class _UnitPair:
    """One row statistic's per-unit sums in both runs over the shared items (rows: the same units)."""

    sa: np.ndarray
    sb: np.ndarray
    f: Callable[[np.ndarray, np.ndarray], np.ndarray]
    linear: Linear | None
    unit: str
    n_shared: int
    #: per-unit changes of the linear statistic and their weights, when ``linear`` and the denominators agree
    d: np.ndarray | None = None
    w: np.ndarray | None = None


def _unit_sums(cols: np.ndarray, labels: list[str] | None) -> np.ndarray:
    """Column sums within each unit (first-seen order); without labels every row is its own unit."""
    if labels is None:
        return np.asarray(cols, dtype=float)
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(c, len(index)) for c in labels), dtype=np.int64, count=len(labels))
    out = np.zeros((len(index), cols.shape[1]))
    np.add.at(out, codes, cols)
    return out


def _value(st: RowStatistic) -> float:
    """The row statistic over all its records (each run's own units): what the stored value must equal."""
    cl = None if st.clusters is None else [c for c, k in zip(st.clusters, st.mask.tolist(), strict=True) if k]
    s = _unit_sums(st.columns[st.mask], cl)
    if s.shape[0] == 0:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(st.function(s, np.ones((1, s.shape[0])))[0])


def _close(v: float, stored: float) -> bool:
    return math.isfinite(v) and math.isfinite(stored) and abs(v - stored) <= _TOL * max(1.0, abs(stored))


def _linear_change(p: _UnitPair, confidence: float, n_resamples: int, rng: np.random.Generator) -> stats.Estimate:
    """The suite's own interval of the paired change of the linear statistic ``L``: :func:`auditlm.stats.mean` of
    the per-unit changes (weighted by the denominators for a ratio of sums), studentized as every mean's."""
    assert p.d is not None and p.linear is not None
    return stats.mean(p.d, weights=None if p.linear.macro else p.w, unit=p.unit, confidence=confidence,
                      n_resamples=n_resamples, random_state=rng)


def _scaled(lin: Linear, lo: float, hi: float) -> tuple[float, float]:
    a, b = lin.scale * lo, lin.scale * hi
    if lin.exp:
        a, b = math.exp(a), math.exp(b)
    return (min(a, b), max(a, b))


def _compare_stat_row(ra: MetricResult, rb: MetricResult, scorer: Scorer | None, data: _SuiteData,
                      confidence: float, n_resamples: int, rng: np.random.Generator) -> MetricComparison:
    """A row whose metric is a function of per-unit sums (:meth:`Scorer.row_statistic`): both runs' statistic over
    the shared items' units, the change ``B − A`` (and ``B / A`` for ratio metrics) with the suite's own interval
    where the statistic is linear and a paired percentile cluster bootstrap otherwise (module docstring)."""
    base = MetricComparison(ra.suite, ra.metric, ra.group_field, ra.group, Side.of(ra), Side.of(rb),
                            _ideal(ra, scorer), False, rb.value - ra.value)
    assert scorer is not None
    try:
        st_a = scorer.row_statistic(data.rec_a, ra.metric, ra.group_field, ra.group)
        st_b = scorer.row_statistic(data.rec_b, ra.metric, ra.group_field, ra.group)
    except (KeyError, TypeError, ValueError) as e:
        base.reason = f"the stored items lack what the scorer's row statistic needs ({type(e).__name__}: {e})"
        return base
    if st_a is None or st_b is None:
        base.reason = "the scorer does not describe this row as a statistic of per-unit sums"
        return base
    for run, st, row in (("A", st_a, ra), ("B", st_b, rb)):
        if not _close(_value(st), row.value):
            base.reason = f"the row statistic does not reproduce run {run}'s stored value"
            return base
    ia, ib = data.idx_a, data.idx_b
    ca, cb = st_a.columns[ia], st_b.columns[ib]
    keep = st_a.mask[ia] & st_b.mask[ib] & np.all(np.isfinite(ca), axis=1) & np.all(np.isfinite(cb), axis=1)
    if not keep.any():
        base.reason = "no item of this row is shared by both runs"
        return base
    labels = None if st_a.clusters is None else [st_a.clusters[i] for i in ia[keep].tolist()]
    sa, sb = _unit_sums(ca[keep], labels), _unit_sums(cb[keep], labels)
    g, n = int(sa.shape[0]), int(keep.sum())
    f, lin, unit = st_a.function, st_a.linear, st_a.unit
    one = np.ones((1, g))
    with np.errstate(invalid="ignore", divide="ignore"):
        a_sh, b_sh = float(f(sa, one)[0]), float(f(sb, one)[0])
    pair = _UnitPair(sa, sb, f, lin, unit, n)
    ratio_metric = ra.metric in scorer.ratio_metrics
    if lin is not None and np.array_equal(sa[:, lin.den], sb[:, lin.den]) and np.all(sa[:, lin.den] > 0):
        den = sa[:, lin.den]
        pair.d, pair.w = (sb[:, lin.num] - sa[:, lin.num]) / den, den
    reps: tuple[np.ndarray, np.ndarray] | None = None

    def replicates() -> tuple[np.ndarray, np.ndarray]:
        nonlocal reps
        if reps is None:
            reps = stats.paired_unit_replicates(f, sa, sb, n_resamples=n_resamples, random_state=rng)
        return reps

    delta = b_sh - a_sh
    if pair.d is not None and np.all(np.isfinite(pair.d)):
        assert lin is not None
        est_l = _linear_change(pair, confidence, n_resamples, rng)
        test = stats.wilcoxon(pair.d, confidence=confidence)
        if lin.exp:  # the change itself is not linear: its interval by bootstrap; the ratio's is exp of L's
            ra_, rb_ = replicates()
            est = stats.percentile_interval(delta, rb_ - ra_, n=n, n_units=g, unit=unit, confidence=confidence)
            base.ratio = b_sh / a_sh
            base.ratio_low, base.ratio_high = _scaled(lin, est_l.low, est_l.high)
            base.note = (f"ratio B/A: {est_l.method} of the per-{unit} change of the log (exp of its endpoints)"
                         + (f"; {est_l.note}" if est_l.note else ""))
        else:
            lo, hi = _scaled(lin, est_l.low, est_l.high)
            if math.isfinite(lo) and math.isfinite(hi):  # the same number up to rounding: a degenerate interval holds it
                lo, hi = min(lo, delta), max(hi, delta)
            est = replace(est_l, value=delta, low=lo, high=hi, n=n,
                          method=f"{est_l.method} of the per-{unit} change")
    else:
        ra_, rb_ = replicates()
        est = stats.percentile_interval(delta, rb_ - ra_, n=n, n_units=g, unit=unit, confidence=confidence)
        test = stats.bootstrap_test(rb_ - ra_, 0.0, g, confidence=confidence)
        if ratio_metric:
            with np.errstate(invalid="ignore", divide="ignore"):
                r_est = stats.percentile_interval(b_sh / a_sh, rb_ / ra_, n=n, n_units=g, unit=unit,
                                                  confidence=confidence)
            base.ratio, base.ratio_low, base.ratio_high = r_est.value, r_est.low, r_est.high
    base.paired = True
    base.a_shared, base.b_shared, base.delta = a_sh, b_sh, delta
    base.ci_low, base.ci_high, base.ci_method = est.low, est.high, est.method
    base.confidence, base.unit, base.n_units, base.n_shared = confidence, unit, g, n
    base.binary, base.test, base._pair = False, test, pair
    if est.note:
        base.note = est.note if base.note is None else f"{base.note}; {est.note}"
    return base


def _gate_stat(g: RegressionGate, m: MetricComparison, confidence: float, n_resamples: int,
               seed: int) -> GateResult:
    """The gate of a row statistic: ``|m_B − ideal| − |m_A − ideal|``, or ``m_B / m_A − 1`` for a ratio metric
    without an ideal (perplexity), bounded one-sidedly at ``1 − α`` (the upper end of the two-sided ``1 − 2α``
    interval): from the linear statistic's own interval where the change is linear and on one side of the ideal
    (or a ratio of an ``exp`` form), else from the paired percentile cluster bootstrap (Hesterberg-expanded)."""
    alpha = 1 - confidence
    two = 1 - 2 * alpha
    ideal, p = m.ideal, m._pair
    quantity = "m_B / m_A - 1" if ideal is None else f"|m_B - {ideal:g}| - |m_A - {ideal:g}|"

    def result(worsening: float, upper: float, method: str, n_units: int, note: str | None = None) -> GateResult:
        passed = math.isfinite(upper) and upper <= g.margin
        return GateResult(g.expr, m.suite, m.metric, m.group_field, m.group, g.margin, ideal, quantity, worsening,
                          upper, 1 - alpha, method, m.n_shared or 0, n_units, passed, note)

    if not m.paired or p is None:
        return result(float("nan"), float("nan"), "none", 0, m.reason or "not paired")
    a, b, gunits = m.a_shared, m.b_shared, int(p.sa.shape[0])
    assert a is not None and b is not None
    rng = np.random.default_rng(stable_seed(seed, "compare-gate", g.expr))
    linear_ok = p.d is not None and p.linear is not None and bool(np.all(np.isfinite(p.d)))
    if ideal is None:
        worsening = b / a - 1
        if linear_ok and p.linear is not None and p.linear.exp:
            est = _linear_change(p, two, n_resamples, rng)
            upper = _scaled(p.linear, est.low, est.high)[1] - 1
            return result(worsening, upper, f"{est.method} of the per-{p.unit} log change, exp (one-sided upper "
                          "bound)", est.n_units, est.note)
        ra, rb = stats.paired_unit_replicates(p.f, p.sa, p.sb, n_resamples=n_resamples, random_state=rng)
        with np.errstate(invalid="ignore", divide="ignore"):
            est = stats.percentile_interval(b / a, rb / ra, n=p.n_shared, n_units=gunits, unit=p.unit,
                                            confidence=two)
        return result(worsening, est.high - 1, f"{est.method} (one-sided upper bound)", gunits, est.note)
    worsening = abs(b - ideal) - abs(a - ideal)
    if linear_ok and p.linear is not None and not p.linear.exp:
        lin = p.linear
        with np.errstate(invalid="ignore", divide="ignore"):
            per = [lin.scale * s[:, lin.num] / s[:, lin.den] for s in (p.sa, p.sb)]
        both = np.concatenate(per)
        sign = 1.0 if np.all(both >= ideal) else (-1.0 if np.all(both <= ideal) else 0.0)
        if sign != 0.0:  # every unit on one side of the ideal: the worsening is ±Δ, bounded by its own interval
            est = _linear_change(p, two, n_resamples, rng)
            lo, hi = _scaled(lin, est.low, est.high)
            upper = hi if sign > 0 else -lo
            return result(worsening, float(upper), f"{est.method} of the per-{p.unit} change (one-sided upper "
                          "bound)", est.n_units, est.note)
    ra, rb = stats.paired_unit_replicates(p.f, p.sa, p.sb, n_resamples=n_resamples, random_state=rng)
    est = stats.percentile_interval(worsening, np.abs(rb - ideal) - np.abs(ra - ideal), n=p.n_shared,
                                    n_units=gunits, unit=p.unit, confidence=two)
    return result(worsening, est.high, f"{est.method} (one-sided upper bound)", gunits, est.note)
