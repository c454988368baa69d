"""Checks of the explainer: ERASER faithfulness, rank agreement between methods, LIG's convergence, group shares.

* **comprehensiveness** at ``k`` (DeYoung et al. 2020, ERASER): ``target(full) − target(top-k% features
  removed)``; **sufficiency**: ``target(full) − target(only the top-k% kept)``. Top features rank by signed
  attribution, highest first (those that push the target up); ``ceil(k · n_features)`` of them, at least one.
  Removing a feature is ablating it as the ablation methods do (baseline token, neutral term). AOPC is the mean
  over ``ks``. The same with as many *random* features (seeded per item and method) is the baseline;
  ``comprehensiveness_vs_random`` is the paired per-item difference (method minus random). Every row is the
  mean over items with the studentized bootstrap interval of :func:`auditlm.stats.mean`.
* **rank agreement**: per item, Spearman's rho (``scipy.stats.spearmanr``) between the two methods' feature
  attributions, then the mean over items with :func:`auditlm.stats.mean`'s bootstrap-t interval (the item is the
  independent unit; items where either method's attributions are constant are left out). No Fisher z: the
  per-item rhos rest on few features each, and the mean over items is what is reported.
* **lig_abs_delta**: mean ``|delta|`` of Layer Integrated Gradients (nats), with its interval; and
  **lig_relative_delta**: the mean of ``|delta| / |F(input) − F(baseline)|`` (the change the attributions should
  add up to, on LIG's own path); well above 0.05 the LIG attributions do not add up and should not be read as
  the target's decomposition (on CrowS-Pairs pairs of the default model it is about 1–2 at 32 steps:
  ``bench/README.md``).

Rows are :class:`~auditlm.metrics.MetricResult` with ``group_field="method"`` (``group`` the method; rank
agreement: ``method_pair``, ``"a~b"``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from auditlm import stats
from auditlm.explain.methods import build_problem, explained_term
from auditlm.explain.types import METHODS, Explanation
from auditlm.metrics import MetricResult, metric_row, stable_seed

#: Resamples of the bootstrap intervals here (explained items are few; the bootstrap is cheap).
N_RESAMPLES = 2000


def _est(values: list[float], parts: tuple[object, ...], *, confidence: float, seed: int) -> stats.Estimate:
    return stats.mean(np.asarray(values, dtype=float), confidence=confidence, n_resamples=N_RESAMPLES,
                      random_state=stable_seed(seed, *parts))


def erasure_scores(problem: Any, attributions: np.ndarray, *, ks: tuple[float, ...], rng: np.random.Generator
                   ) -> dict[str, float]:
    """Comprehensiveness and sufficiency AOPC of ``attributions`` and of random features, for one problem."""
    nf = problem.n_features
    order = np.argsort(-np.asarray(attributions, dtype=float), kind="stable")
    rows = [np.ones(nf)]
    for k in ks:
        m = min(nf, max(1, math.ceil(k * nf)))
        for chosen in (order[:m], rng.permutation(nf)[:m]):
            removed = np.ones(nf)
            removed[chosen] = 0.0
            kept = np.zeros(nf)
            kept[chosen] = 1.0
            rows += [removed, kept]
    v = problem.value_of(torch.tensor(np.stack(rows), dtype=torch.float64)).numpy()
    full = v[0]
    comp, suff, rcomp, rsuff = [], [], [], []
    for i in range(len(ks)):
        a, b, c, d = v[1 + 4 * i : 5 + 4 * i]
        comp.append(full - a)
        suff.append(full - b)
        rcomp.append(full - c)
        rsuff.append(full - d)
    return {"comprehensiveness_aopc": float(np.mean(comp)), "sufficiency_aopc": float(np.mean(suff)),
            "random_comprehensiveness_aopc": float(np.mean(rcomp)),
            "random_sufficiency_aopc": float(np.mean(rsuff))}


def faithfulness(target: Any, spec: Any, records: list[Any], explanations: list[Explanation], *, seed: int = 0,
                 ks: tuple[float, ...] = (0.1, 0.2, 0.5), confidence: float = 0.95,
                 raw: dict[str, dict[str, Any]] | None = None) -> list[MetricResult]:
    """ERASER faithfulness per method, rank agreement between methods and LIG's mean |delta| (module docstring).

    ``explanations`` are those of ``records`` (matched by item id; others are ignored) on ``target``; ``raw`` as
    for :func:`~auditlm.explain.methods.explain_items` (the same problems are rebuilt).
    """
    by_id = {r.item_id: r for r in records}
    exps = [e for e in explanations if e.suite == spec.id and e.item_id in by_id]
    problems: dict[tuple[str, str], Any] = {}
    per_method: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in exps:
        key = (e.item_id, explained_term(e) or "", e.granularity)
        if key not in problems:
            problems[key] = build_problem(target, spec, by_id[e.item_id], seed=e.seed,
                                          group_term=explained_term(e), granularity=e.granularity,
                                          raw_input=(raw or {}).get(e.item_id))
        p = problems[key]
        if p.n_features == 0 or len(e.features) != p.n_features:
            continue
        rng = np.random.default_rng(stable_seed(seed, spec.id, e.item_id, key[1], e.method, "random"))
        s = erasure_scores(p, np.array([f.attribution for f in e.features]), ks=ks, rng=rng)
        for name, v in s.items():
            per_method[e.method][name].append(v)
        per_method[e.method]["comprehensiveness_vs_random"].append(
            s["comprehensiveness_aopc"] - s["random_comprehensiveness_aopc"])
        if e.delta is not None:
            per_method[e.method]["lig_abs_delta"].append(abs(float(e.delta)))
            with torch.no_grad():
                change = float(p.forward_ids(p.input_ids)[0] - p.forward_ids(p.baseline_ids)[0])
            if change != 0 and math.isfinite(change):
                per_method[e.method]["lig_relative_delta"].append(abs(float(e.delta)) / abs(change))
    rows: list[MetricResult] = []
    names = ("comprehensiveness_aopc", "sufficiency_aopc", "random_comprehensiveness_aopc",
             "random_sufficiency_aopc", "comprehensiveness_vs_random", "lig_abs_delta", "lig_relative_delta")
    for m in [m for m in METHODS if m in per_method] + sorted(set(per_method) - set(METHODS)):
        for name in names:
            vals = per_method[m].get(name)
            if not vals:
                continue
            extra: dict[str, Any] = {"ks": list(ks), "unit": "ratio" if name == "lig_relative_delta" else "nats",
                                     "granularity": ",".join(sorted({e.granularity for e in exps}))}
            if name == "comprehensiveness_vs_random":
                extra["paired"] = "per item: method minus random features of the same number"
            rows.append(metric_row(_est(vals, (spec.id, m, name), confidence=confidence, seed=seed), suite=spec.id,
                                   metric=name, group=m, group_field="method", extra=extra))
    rows += rank_agreement(exps, seed=seed, confidence=confidence)
    return rows


def rank_agreement(explanations: list[Explanation], *, seed: int = 0, confidence: float = 0.95
                   ) -> list[MetricResult]:
    """Mean per-item Spearman rho between each pair of methods explaining the same items, with an interval."""
    from scipy.stats import spearmanr

    by: dict[tuple[str, str, str], dict[str, np.ndarray]] = defaultdict(dict)
    for e in explanations:
        key = (e.suite, e.item_id, explained_term(e) or "", e.granularity)
        by[key][e.method] = np.array([f.attribution for f in e.features])
    suites = sorted({k[0] for k in by})
    methods = [m for m in METHODS if any(m in v for v in by.values())]
    rows: list[MetricResult] = []
    for suite in suites:
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                rhos = []
                for key, v in by.items():
                    if key[0] != suite or a not in v or b not in v or len(v[a]) != len(v[b]) or len(v[a]) < 2:
                        continue
                    if np.ptp(v[a]) == 0 or np.ptp(v[b]) == 0:
                        continue
                    rhos.append(float(spearmanr(v[a], v[b]).statistic))
                if not rhos:
                    continue
                est = _est(rhos, (suite, a, b, "spearman"), confidence=confidence, seed=seed)
                rows.append(metric_row(est, suite=suite, metric="rank_agreement", group=f"{a}~{b}",
                                       group_field="method_pair",
                                       extra={"statistic": "mean over items of Spearman's rho"}))
    return rows


#: Group keys of :attr:`Explanation.group` that are not a group of the per-group view.
_NOT_GROUPS = ("unit", "term", "chosen", "runner_up", "context_condition")


def _group_labels(e: Explanation) -> list[tuple[str, str]]:
    """``(group_field, group)`` rows an explanation counts in: ``(axis, a)`` and ``(a, group)`` for counterfactual
    suites (BOLD: ``(domain, d)`` and ``(d, group)``), else its first group key with a value."""
    g = e.group
    for outer in ("axis", "domain"):
        if g.get(outer) and g.get("group"):
            return [(outer, g[outer]), (g[outer], g["group"])]
    for k, v in g.items():
        if v and k not in _NOT_GROUPS:
            return [(k, v)]
    return []


def group_share(explanations: list[Explanation], *, seed: int = 0, confidence: float = 0.95) -> list[MetricResult]:
    """Per suite, method and feature granularity: the share of ``Σ|attribution|`` carried by the ``group_term``.

    Per explanation ``|a_group| / Σ_i |a_i|`` (explanations with no group term or all-zero attributions are
    left out); the mean with :func:`auditlm.stats.mean` (``proportions``), resampling the suite's unit (a
    counterfactual item's template, ``group["unit"]``; else the item: the explanations of one item for several
    group terms are not independent), overall (``group`` None), per axis and per group (counterfactual suites:
    ``group_field`` ``axis`` then the axis for its terms; CrowS-Pairs: ``bias_type`` …). ``extra``: ``method``,
    ``granularity``, ``rest`` (``1 − share``) and ``signed_share`` — the mean of ``a_group / target`` (the part of
    the preference the group term carries, which for feature ablation at template granularity is
    ``1 − target(group term neutral) / target``; left out where the target is 0).
    """
    data: dict[tuple[str, str, str], list[tuple[list[tuple[str, str]], float, float | None, str]]] = defaultdict(list)
    for e in explanations:
        tot = sum(abs(f.attribution) for f in e.features if _finite(f.attribution))
        grp = [f.attribution for f in e.features if f.kind == "group_term" and _finite(f.attribution)]
        if not grp or tot <= 0:
            continue
        v = e.target.value
        signed = sum(grp) / v if _finite(v) and v != 0 else None
        unit = str(e.group.get("unit") or e.item_id)
        data[(e.suite, e.method, e.granularity)].append((_group_labels(e), sum(abs(x) for x in grp) / tot, signed,
                                                        unit))
    rows: list[MetricResult] = []
    unit_name = "template" if any(e.group.get("unit") for e in explanations) else "item"
    for (suite, method, gran), vals in sorted(data.items()):
        labels = sorted({lab for labs, _, _, _ in vals for lab in labs}, key=lambda t: (t[0] not in ("axis", "domain"),
                                                                                       t))
        for label in [None, *labels]:
            sel = [x for x in vals if label is None or label in x[0]]
            shares = np.asarray([x[1] for x in sel])
            est = stats.mean(shares, clusters=[x[3] for x in sel], unit=unit_name, confidence=confidence,
                             n_resamples=N_RESAMPLES, proportions=True,
                             random_state=stable_seed(seed, suite, method, gran, label))
            signed = [x[2] for x in sel if x[2] is not None]
            extra = {"method": method, "granularity": gran, "rest": 1.0 - est.value,
                     "unit": "share of |attribution|",
                     "signed_share": float(np.mean(signed)) if signed else None,
                     "n_explanations": len(sel)}
            rows.append(metric_row(est, suite=suite, metric="group_term_share",
                                   group=None if label is None else label[1],
                                   group_field=None if label is None else label[0], extra=extra))
    return rows


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(float(x))
