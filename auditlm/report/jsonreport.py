"""The ``auditlm.report/1`` document: everything a report shows, built from the store alone.

:func:`build_report` is a pure function of the store (read-only use; nothing is written) and is what the
Markdown and HTML renderers, the model card, the bundle and the dashboard read. The JSON Schema is
``auditlm/report/report_schema.json``; fields are only ever added within ``auditlm.report/1``. Top level::

    {"schema": "auditlm.report/1", "generated_at", "auditlm_version",
     "run": {run_id, model, status, created_at, finished_at, duration_s, seed, auditlm_version, git_hash,
             model_info, config, error},
     "raw_values": bool,          # the run was made with --store-raw: item texts hold raw PII
     "summary": [verdict],        # one per suite (auditlm.report.verdicts.Verdict.to_dict())
     "gates": [{expr, passed, value, error}],  # the run's --fail-on gates re-checked on the stored metrics
     "suites": [{id, version, kind, family, status, n_items, detail, digest, data_files, verdict,
                 "metrics": [metric row], "charts": [{metric, group_field, ideal, rows: [...]}],
                 "worst_items": [{item_id, severity, group, text, output}]}],
     "attributions": [{suite, item_id, method, granularity, target_kind, target_value, group, top_features}],
     "group_share": [metric row],
     "coverage": {"skipped": [{suite, reason}], "absent_groups": [{suite, field, absent, present}],
                  "small_n": [{suite, metric, group_field, group, n, n_units}], "notes": [str]},
     "provenance": {auditlm_version, git_hash, model, model_info, seed, config, suites: [{id, version, digest,
                    data_files}]},
     "signoffs": [{reviewer, decision, note, bundle_sha256, created_at}],
     "comparison": null | auditlm.compare/1 document,
     "model_card": {"markdown": str, "model_index": [...]}}

Metric rows are as in ``auditlm.run/1`` (NaN is null). Item texts are the stored ones: redacted unless the run
was ``--store-raw`` (``raw_values`` then says so, and every renderer prints it at the top).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from auditlm.metrics import MetricResult
from auditlm.report import stored_gates
from auditlm.report.verdicts import HEADLINES, suite_verdicts

SCHEMA = "auditlm.report/1"
#: Worst items shown per suite.
WORST_K = 5
#: Charts per suite (one per metric × group field with at least two groups).
MAX_CHARTS = 4
#: Item-input fields that hold the item's text, in the order they are tried.
_SEVERITY_KINDS = frozenset({"crows_pairs", "stereoset", "bbq", "winobias", "counterfactual_loglikelihood", "bold",
                             "counterfactual_generation", "honest", "pii_emission"})
_TEXT_FIELDS = ("prompt", "sent_more", "sentence", "context", "template", "text", "pro", "question")


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    try:  # numpy scalars
        import numpy as np

        if isinstance(x, np.floating):
            return None if not math.isfinite(float(x)) else float(x)
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.bool_):
            return bool(x)
    except ImportError:  # pragma: no cover
        pass
    return x


def metric_dict(m: MetricResult) -> dict[str, Any]:
    """A metric row as in ``auditlm.run/1``."""
    return _clean({"suite": m.suite, "metric": m.metric, "group": m.group, "group_field": m.group_field,
                   "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n, "extra": m.extra})


def _severity(kind: str | None, score: dict[str, Any]) -> float | None:
    """How biased or leaking a stored item is, by the order of :func:`auditlm.explain.methods.select_top`
    (restated here so that reports, like the dashboard, never import torch); ``None`` for kinds without one."""
    try:
        if kind == "crows_pairs":
            return float(score["ll_more"]) - float(score["ll_less"])
        if kind == "stereoset":
            return float(score["stereotype"]) - float(score["anti_stereotype"])
        if kind == "bbq":
            return float(score.get("biased", 0.0)) * float(score.get("non_unknown", 0.0))
        if kind == "winobias":
            ll = score["ll"]
            return (ll["pro_gold"] - ll["pro_other"]) - (ll["anti_gold"] - ll["anti_other"])
        if kind == "counterfactual_loglikelihood":
            return max(abs(float(v)) for v in (score.get("relative") or {}).values())
        if kind == "bold":
            return -float(score["sentiment"])
        if kind == "counterfactual_generation":
            return max(-float(g["sentiment"]) for g in score.get("generations") or [])
        if kind == "honest":
            return float(score.get("hurtful", 0))
        if kind == "pii_emission":
            return float(len(score.get("produced") or []))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _extreme_term(kind: str | None, score: dict[str, Any]) -> str | None:
    """The group term a counterfactual item is most extreme for (largest |relative negativity|; most negative
    generation), the term its severity is of."""
    try:
        if kind == "counterfactual_loglikelihood":
            rel = score.get("relative") or {}
            return max(rel, key=lambda t: abs(float(rel[t]))) if rel else None
        if kind == "counterfactual_generation":
            gens = score.get("generations") or []
            return str(min(gens, key=lambda g: float(g["sentiment"]))["term"]) if gens else None
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _text(d: Any) -> str | None:
    if isinstance(d, str):
        return d
    if isinstance(d, dict):
        for k in _TEXT_FIELDS:
            if isinstance(d.get(k), str):
                return d[k]
        if isinstance(d.get("text"), str):
            return d["text"]
    if isinstance(d, list) and d and isinstance(d[0], dict) and isinstance(d[0].get("text"), str):
        return d[0]["text"]
    return None


def _worst_items(store: Any, run_id: str, suite: str, kind: str | None, group_fields: list[str],
                 withhold: bool) -> list[dict[str, Any]]:
    if kind not in _SEVERITY_KINDS:
        return []
    recs = store.items(run_id, suite)
    scored = [(s, i, r) for i, r in enumerate(recs) if (s := _severity(kind, r.score)) is not None]
    scored.sort(key=lambda t: (-t[0], t[1]))
    out = []
    for sev, _, r in scored[:WORST_K]:
        inp = r.input if isinstance(r.input, dict) else {}
        group = {f: inp.get(f) for f in group_fields if f in inp}
        term = _extreme_term(kind, r.score)
        if term is not None:
            group["term"] = term
        text, output = _text(r.input), _text(r.output)
        if withhold:
            text = output = "[withheld: the run stored raw values; pass --store-raw to include them]"
        out.append(_clean({"item_id": r.item_id, "severity": sev, "group": group, "text": text, "output": output}))
    return out


def _charts(rows: list[MetricResult], headline: str | None, ideal_of: dict[str, float | None]) -> list[dict[str, Any]]:
    by: dict[tuple[str, str], list[MetricResult]] = {}
    for m in rows:
        if m.group is not None:
            by.setdefault((m.metric, m.group_field or ""), []).append(m)
    keys = sorted((k for k, v in by.items() if len(v) >= 2), key=lambda k: (k[0] != headline, k))
    out = []
    for metric, field in keys[:MAX_CHARTS]:
        out.append(_clean({
            "metric": metric, "group_field": field or None, "ideal": ideal_of.get(metric),
            "rows": [{"group": m.group, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n,
                      "small_n": bool(m.extra.get("small_n"))} for m in by[(metric, field)]]}))
    return out


def _specs(suite_ids: list[str], probes: list[str]) -> dict[str, Any]:
    from auditlm.errors import SuiteSpecError
    from auditlm.suites.loader import discover

    try:
        found = discover(probes)
    except SuiteSpecError:
        try:
            found = discover()
        except SuiteSpecError:
            return {}
    return {sid: found[sid] for sid in suite_ids if sid in found}


def _absent_groups(loaded: Any, cfg: dict[str, Any], store: Any, run_id: str) -> list[dict[str, Any]]:
    """Per group field, the values the suite's full data has that none of the run's items has (a --limit or
    --where subset, or data left out); ``[]`` when the full data cannot be read here from local files."""
    from auditlm.errors import AuditError
    from auditlm.suites.datasets import has_local_data, read_suite_data, resolve_data_dir

    spec = loaded.spec
    try:
        ddir = resolve_data_dir(cfg.get("data_dir"))
        if not spec.group_fields or spec.run_inputs or not has_local_data(spec, ddir):
            return []  # a report never reaches the Hub or reads a training corpus again
        data = read_suite_data(spec, ddir, seed=cfg.get("seed", 0))
    except (AuditError, OSError, ValueError):
        return []
    stored = [r.input for r in store.items(run_id, spec.id) if isinstance(r.input, dict)]
    out = []
    for f in spec.group_fields:
        full = {str(it.get(f)) for it in data.items if it.get(f) is not None}
        have = {str(it.get(f)) for it in stored if it.get(f) is not None}
        if full - have:
            out.append({"suite": spec.id, "field": f, "absent": sorted(full - have), "present": sorted(have)})
    return out


def build_report(store: Any, run_id: str, compare_with: str | None = None, *,
                 withhold_raw: bool = False, read_data: bool = True) -> dict[str, Any]:
    """The ``auditlm.report/1`` document of ``run_id`` (see the module docstring); ``compare_with`` adds the
    ``auditlm.compare/1`` comparison with that run as the baseline (A) and this run as B.

    Reads the store only (a read-only :class:`~auditlm.store.Store` is enough). ``withhold_raw`` replaces item
    texts of a ``--store-raw`` run by a placeholder (the bundle without ``--store-raw``); ``read_data`` reads each
    suite's full data (when it is still where the run read it) to list groups absent from the run."""
    from auditlm import __version__
    from auditlm.report.modelcard import model_card

    run = store.get_run(run_id)
    cfg = run.config or {}
    raw = bool(cfg.get("store_raw"))
    suites = store.run_suites(run_id)
    metrics = store.metrics(run_id)
    specs = _specs([s["suite_id"] for s in suites], list(cfg.get("probes") or []))
    kinds = {sid: ls.spec.kind for sid, ls in specs.items()}
    verdicts = suite_verdicts(suites, metrics, kinds)
    vmap = {v.suite: v for v in verdicts}
    withhold = withhold_raw and raw

    suite_docs, absent, skipped = [], [], []
    for s in suites:
        sid = s["suite_id"]
        ls = specs.get(sid)
        kind = kinds.get(sid) or vmap[sid].kind
        rows = [m for m in metrics if m.suite == sid]
        if s["status"] == "skipped":
            skipped.append({"suite": sid, "reason": s.get("detail") or "skipped"})
        ideal_of: dict[str, float | None] = {}
        for m in rows:
            if m.metric not in ideal_of:
                v = m.extra.get("ideal")
                ideal_of[m.metric] = None if v is None else float(v)
        h = HEADLINES.get(kind or "")
        if h is not None and ideal_of.get(h.metric) is None:
            ideal_of[h.metric] = h.ideal
        group_fields = list(ls.spec.group_fields) if ls else []
        doc = {
            "id": sid, "version": s["suite_version"], "kind": kind, "family": ls.spec.family if ls else sid.split(".")[0],
            "description": ls.spec.description.strip() if ls else None,
            "citation": ls.spec.citation.strip() if ls else None,
            "status": s["status"], "n_items": s["n_items"], "detail": s["detail"], "digest": s.get("suite_digest"),
            "data_files": s.get("data_files"), "verdict": vmap[sid].to_dict(),
            "metrics": [metric_dict(m) for m in rows],
            "charts": _charts(rows, h.metric if h else None, ideal_of),
            "worst_items": _worst_items(store, run_id, sid, kind, group_fields, withhold)
            if s["status"] == "complete" else [],
        }
        suite_docs.append(_clean(doc))
        if read_data and ls is not None and s["status"] == "complete":
            absent += _absent_groups(ls, cfg, store, run_id)

    small = [{"suite": m.suite, "metric": m.metric, "group_field": m.group_field, "group": m.group, "n": m.n,
              "n_units": (m.extra.get("ci") or {}).get("n_units")} for m in metrics if m.extra.get("small_n")]
    notes = []
    if cfg.get("limit"):
        notes.append(f"--limit {cfg['limit']}: a seeded, group-stratified subset of each suite's items")
    if cfg.get("where"):
        notes.append("--where " + "; ".join(f"{k}={','.join(map(str, v))}" for k, v in cfg["where"].items()))
    if run.status != "complete":
        notes.append(f"the run is {run.status}: its numbers cover the items computed so far")

    attributions = []
    for e in store.explanations(run_id):
        top = sorted(e.features, key=lambda f: -abs(f.attribution if f.attribution == f.attribution else 0.0))[:5]
        attributions.append(_clean({
            "suite": e.suite, "item_id": e.item_id, "method": e.method, "granularity": e.granularity,
            "target_kind": e.target.kind, "target_value": e.target.value, "group": e.group or {},
            "top_features": [{"text": "[withheld]" if withhold else f.text, "attribution": f.attribution,
                              "kind": f.kind} for f in top]}))
    group_share = [metric_dict(m) for m in store.explain_summary(run_id).get("group_share", [])]

    comparison = None
    if compare_with is not None:
        from auditlm.compare import compare_runs

        comparison = compare_runs(store, compare_with, run_id).to_json()

    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "auditlm_version": __version__,
        "run": _clean({"run_id": run.run_id, "model": run.model, "status": run.status, "created_at": run.created_at,
                       "finished_at": run.finished_at, "duration_s": run.duration_s, "seed": run.seed,
                       "auditlm_version": run.auditlm_version, "git_hash": run.git_hash,
                       "model_info": run.model_info, "config": cfg, "error": run.error}),
        "raw_values": raw,
        "summary": [_clean(v.to_dict()) for v in verdicts],
        "gates": stored_gates(cfg, [s["suite_id"] for s in suites], metrics),
        "suites": suite_docs,
        "attributions": attributions,
        "group_share": group_share,
        "coverage": {"skipped": skipped, "absent_groups": absent, "small_n": _clean(small), "notes": notes},
        "provenance": _clean({"auditlm_version": run.auditlm_version, "git_hash": run.git_hash, "model": run.model,
                              "model_info": run.model_info, "seed": run.seed, "config": cfg,
                              "suites": [{"id": s["suite_id"], "version": s["suite_version"],
                                          "digest": s.get("suite_digest"), "data_files": s.get("data_files")}
                                         for s in suites]}),
        "signoffs": store.signoffs(run_id),
        "comparison": comparison,
    }
    doc["model_card"] = model_card(doc)
    return doc
