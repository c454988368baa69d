"""Metric rows: what every suite reports, built on the one statistics layer (:mod:`auditlm.stats`).

Every number auditlm reports is a :class:`MetricResult`: the value, the sample size ``n`` it rests on, and an
interval at the run's confidence level whose method, level and resampling unit are recorded in
``extra["ci"]``. :func:`summarize` is the common case — a rate or mean overall and per group (group values from
fairlearn's :class:`~fairlearn.metrics.MetricFrame`), and the gap between the groups with a simultaneous interval
and an omnibus test. Scorers with other statistics call :mod:`auditlm.stats` directly and wrap the result with
:func:`metric_row`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from auditlm import stats
from auditlm.stats import Estimate, Kind, TestResult

#: Below this many independent units (items, or clusters when a suite resamples by cluster), or below this ``n``, a
#: row is flagged as resting on a small sample in tables.
SMALL_N = 30


@dataclass(frozen=True)
class MetricResult:
    """One reported number: ``value`` with its interval ``[ci_low, ci_high]`` over ``n`` items, overall
    (``group is None``) or for one group of ``group_field``. ``extra["ci"]`` says how the interval was made
    (method, confidence, resampling unit and number of units); ``extra["test"]`` holds a hypothesis test where the
    row has one; ``extra["note"]`` explains an undefined value, a fallback or a degenerate interval."""

    suite: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    group: str | None = None
    group_field: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_row(est: Estimate, *, suite: str, metric: str, group: str | None = None, group_field: str | None = None,
               extra: dict[str, Any] | None = None, test: TestResult | None = None, value: float | None = None
               ) -> MetricResult:
    """A :class:`MetricResult` from a :class:`~auditlm.stats.Estimate` (``value`` overrides the point estimate, e.g.
    with fairlearn's)."""
    ext = dict(extra or {})
    ext["ci"] = est.ci_extra()
    notes = [x for x in (ext.get("note"), est.note) if x]
    if notes:
        ext["note"] = "; ".join(dict.fromkeys(notes))
    if min(est.n, est.n_units) < SMALL_N:  # few units, or few items (or trials) however many units hold them
        ext["small_n"] = True
    if test is not None:
        ext["test"] = test.to_dict()
    v = est.value if value is None else value
    return MetricResult(suite, metric, float(v), float(est.low), float(est.high), int(est.n), group, group_field, ext)


def stable_seed(*parts: object) -> int:
    """A 32-bit seed derived from the parts, independent of ``PYTHONHASHSEED`` and call order."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "big")


def summarize(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | None = None,
    *,
    suite: str,
    metric: str,
    kind: Kind,
    group_field: str | None = None,
    clusters: Sequence[Any] | None = None,
    unit: str | None = None,
    trials: Sequence[float] | np.ndarray | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    n_boot: int = stats.DEFAULT_RESAMPLES,
    random_state: int = 0,
    extra: dict[str, Any] | None = None,
    gap: bool = True,
) -> list[MetricResult]:
    """A rate (``kind="rate"``: 0/1 values, or success counts out of ``trials``; :func:`auditlm.stats.rate`) or mean (:func:`auditlm.stats.mean`) of
    per-item ``values``, overall and, when ``groups`` is given, per group; ``clusters`` names each item's resampling
    unit (``unit`` is its field name).

    Group values come from fairlearn's ``MetricFrame`` (so ``by_group`` and ``difference()`` mean what they mean
    in fairlearn). With two or more groups and ``gap``, ``<metric>_group_gap`` is ``max − min`` of the group values
    with the simultaneous interval and omnibus permutation test of :func:`auditlm.stats.group_gap`.
    """
    x = np.asarray(values, dtype=float)
    tr = None if trials is None else np.asarray(trials, dtype=float)
    extra = dict(extra or {})
    cl = None if clusters is None else [str(c) for c in clusters]
    rs = np.random.default_rng(stable_seed(random_state, suite, metric, group_field))

    def estimate(mask: np.ndarray) -> Estimate:
        c = None if cl is None else [k for k, m in zip(cl, mask.tolist(), strict=True) if m]
        if kind == "rate":
            return stats.rate(x[mask], trials=None if tr is None else tr[mask], clusters=c, unit=unit,
                              confidence=confidence)
        return stats.mean(x[mask], clusters=c, unit=unit, confidence=confidence, n_resamples=n_boot, random_state=rs)

    out = [metric_row(estimate(np.ones(x.size, bool)), suite=suite, metric=metric, extra=extra)]
    if groups is None or x.size == 0:
        return out
    g = np.asarray([str(v) for v in groups], dtype=object)
    frame = disaggregate(x, g, group_field=group_field or "group", weights=tr)
    for name, value in frame.by_group.items():
        out.append(metric_row(estimate(g == name), suite=suite, metric=metric, group=str(name),
                              group_field=group_field, extra=extra, value=float(value)))
    if gap and len(frame.by_group) > 1:
        res = stats.group_gap(x, g, kind=kind, clusters=cl, unit=unit, trials=tr, confidence=confidence,
                              n_resamples=n_boot, random_state=rs)
        out.append(metric_row(res.estimate, suite=suite, metric=f"{metric}_group_gap", group_field=group_field,
                              extra={**extra, "groups": len(frame.by_group), "ideal": 0.0}, test=res.test,
                              value=float(frame.difference())))
    return out


def disaggregate(values: np.ndarray, groups: Sequence[Any], *, group_field: str = "group",
                 weights: np.ndarray | None = None):
    """A fairlearn ``MetricFrame`` of the mean of ``values`` per group (``Σ values / Σ weights`` with ``weights``:
    success counts out of trials).

    fairlearn's metrics take ``(y_true, y_pred)``; per-item scores are passed as both and the metric reads
    ``y_pred`` (weights go in as ``sample_params``).
    """
    from fairlearn.metrics import MetricFrame

    x = np.asarray(values, dtype=float)
    g = {group_field: np.asarray(groups, dtype=object)}
    if weights is None:
        return MetricFrame(metrics=_mean_metric, y_true=x, y_pred=x, sensitive_features=g)
    return MetricFrame(metrics=_ratio_metric, y_true=x, y_pred=x, sensitive_features=g,
                       sample_params={"trials": np.asarray(weights, dtype=float)})


def _mean_metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred))


def _ratio_metric(y_true: np.ndarray, y_pred: np.ndarray, trials: np.ndarray) -> float:
    return float(np.sum(y_pred) / np.sum(trials))


def stratified_subset(keys: Sequence[str], groups: Sequence[str] | None, limit: int, seed: int) -> list[int]:
    """Indices of a deterministic, seeded subset of size ``limit``, stratified by group.

    Each group gets a share proportional to its size (largest remainders break ties, every group present
    keeps at least one item while the limit allows). Within a group, items are ordered by a hash of
    ``(seed, key)``, so the subset depends only on the item keys and the seed — not on file order — and a
    larger limit is a superset of a smaller one for the same group sizes. Returned indices are sorted.
    """
    n = len(keys)
    if limit >= n:
        return list(range(n))
    if groups is None:
        groups = [""] * n
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(str(g), []).append(i)
    names = sorted(by_group)
    sizes = np.array([len(by_group[g]) for g in names], dtype=float)
    quota = sizes / sizes.sum() * limit
    take = np.floor(quota).astype(int)
    if limit >= len(names):
        take = np.maximum(take, 1)
    while take.sum() > limit:
        take[int(np.argmax(take))] -= 1
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    k = 0
    while take.sum() < limit:
        j = order[k % len(order)]
        if take[j] < sizes[j]:
            take[j] += 1
        k += 1
    chosen: list[int] = []
    for g, t in zip(names, take, strict=True):
        members = sorted(by_group[g], key=lambda i: hashlib.sha256(f"{seed}\x1f{keys[i]}".encode()).digest())
        chosen.extend(members[: int(t)])
    return sorted(chosen)


