"""The Markdown report, rendered from the ``auditlm.report/1`` document (:func:`auditlm.report.build_report`)."""

from __future__ import annotations

from typing import Any

RAW_WARNING = ("**⚠ RAW VALUES: this run was made with `--store-raw`; item texts below hold unredacted personal "
               "data found in prompts and outputs. Handle this report as personal data.**")


def g(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ") if x is not None else ""


def ci(m: dict[str, Any]) -> str:
    return f"[{g(m.get('ci_low'))}, {g(m.get('ci_high'))}]"


def group_label(m: dict[str, Any]) -> str:
    if m.get("group") is None:
        return "overall"
    return f"{m['group_field']}={m['group']}" if m.get("group_field") else str(m["group"])


def method_label(m: dict[str, Any]) -> str:
    """The attribution method of a group-share row (``extra.method``)."""
    return (m.get("extra") or {}).get("method", "")


def n_cell(m: dict[str, Any]) -> str:
    c = (m.get("extra") or {}).get("ci") or {}
    n = str(m["n"])
    if c.get("unit") not in (None, "item") and c.get("n_units") is not None:
        n += f" ({c['n_units']} {str(c['unit']).removesuffix('_id')}s)"
    if (m.get("extra") or {}).get("small_n"):
        n += " ⚠ small n"
    return n


def render_markdown(doc: dict[str, Any]) -> str:
    """The whole report: summary with verdicts, sign-offs, per-suite tables with intervals, worst items,
    attribution highlights, coverage, provenance, the comparison when there is one, and the model-card section."""
    run = doc["run"]
    out: list[str] = [f"# Audit report: {run['model']}", ""]
    if doc["raw_values"]:
        out += [RAW_WARNING, ""]
    out += [f"Run `{run['run_id']}` · status {run['status']} · created {run['created_at']} · seed {run['seed']} · "
            f"auditlm {run['auditlm_version']} · schema `{doc['schema']}`", ""]
    out += ["## Summary", "", "| suite | headline metric | value | interval | ideal | n | verdict |",
            "|---|---|---:|---:|---:|---:|---|"]
    for v in doc["summary"]:
        level = f" ({v['confidence']:.0%})" if v.get("confidence") else ""
        metric = (v["metric"] or "—") + (f" [{v['group_field']}={v['group']}]" if v.get("group") is not None else "")
        out.append(f"| {v['suite']} | {_cell(metric)} | {g(v['value'])} | {ci(v)}{level} | {g(v['ideal'])} | "
                   f"{v['n'] if v['n'] is not None else '—'} | **{v['label']}** — {_cell(v['reason'])} |")
    out.append("")
    out += ["Verdict rule: *detected* when the interval excludes the ideal (at small n too, which the line says); "
            "*no evidence* when it includes the ideal, lies within ideal ± tolerance and n is not small; otherwise "
            "(no interval, a wider interval, or small n with the ideal inside) *underpowered*.",
            ""]
    out += ["## Gates", ""]
    if doc.get("gates"):
        out += ["| gate (fails when it holds) | value | result |", "|---|---:|---|"]
        for x in doc["gates"]:
            result = "**pass**" if x["passed"] else ("**FAIL**" if x["passed"] is False else f"not checked — {_cell(x['error'])}")
            out.append(f"| `{x['expr']}` | {g(x['value'])} | {result} |")
    else:
        out.append("No `--fail-on` gates were given with this run.")
    out.append("")
    out += ["## Sign-off", ""]
    if doc["signoffs"]:
        out += ["| when | reviewer | decision | note | evidence sha256 |", "|---|---|---|---|---|"]
        for s in doc["signoffs"]:
            out.append(f"| {s['created_at']} | {_cell(s['reviewer'])} | **{s['decision']}** | {_cell(s['note'])} | "
                       f"`{s['bundle_sha256'] or '—'}` |")
    else:
        out.append("Not signed off.")
    out.append("")
    for s in doc["suites"]:
        out += [f"## {s['id']} (v{s['version']})", ""]
        if s.get("description"):
            out += [s["description"], ""]
        if s.get("citation"):
            out += [f"*{s['citation']}*", ""]
        v = s["verdict"]
        out += [f"**Verdict: {v['label']}** — {v['reason']}", ""]
        if s["status"] != "complete":
            out += [f"Status: {s['status']}" + (f" ({s['detail']})" if s.get("detail") else ""), ""]
            continue
        out += ["| metric | group | value | interval | n | test | note |", "|---|---|---:|---:|---:|---|---|"]
        for m in s["metrics"]:
            ex = m.get("extra") or {}
            t = ex.get("test") or {}
            test = ""
            if t:
                p = t.get("p_holm", t.get("p"))
                test = f"underpowered (n={t.get('n')})" if t.get("underpowered") else \
                    (f"p={p:.3g} {t.get('name', '')}" if p is not None else t.get("name", ""))
            out.append(f"| {m['metric']} | {_cell(group_label(m))} | {g(m['value'])} | {ci(m)} | {n_cell(m)} | "
                       f"{_cell(test)} | {_cell(ex.get('note'))} |")
        out.append("")
        if s["worst_items"]:
            out += ["Worst items (as stored" + ("; RAW" if doc["raw_values"] else ", redacted") + "):", "",
                    "| item | severity | group | text | output |", "|---|---:|---|---|---|"]
            for it in s["worst_items"]:
                grp = ", ".join(f"{k}={v}" for k, v in (it.get("group") or {}).items())
                out.append(f"| `{_cell(it['item_id'])}` | {g(it['severity'])} | {_cell(grp)} | {_cell(it['text'])} | "
                           f"{_cell(it['output'])} |")
            out.append("")
    if doc["attributions"]:
        out += ["## Attribution highlights", "", "| suite | item | method | target | top features |",
                "|---|---|---|---:|---|"]
        for a in doc["attributions"][:30]:
            feats = ", ".join(f"`{_cell(f['text'])}` {g(f['attribution'])}" for f in a["top_features"][:3])
            out.append(f"| {a['suite']} | `{_cell(a['item_id'])}` | {a['method']} | {g(a['target_value'])} | {feats} |")
        out.append("")
    if doc["group_share"]:
        out += ["Group-term share of the attribution:", "", "| suite | method | group | value | interval | n |",
                "|---|---|---|---:|---:|---:|"]
        for m in doc["group_share"]:
            out.append(f"| {m['suite']} | {_cell(method_label(m))} | {_cell(group_label(m))} | {g(m['value'])} | {ci(m)} "
                       f"| {m['n']} |")
        out.append("")
    cov = doc["coverage"]
    out += ["## Coverage", ""]
    out += [f"- Skipped: {c['suite']} — {c['reason']}" for c in cov["skipped"]] or ["- No suite skipped."]
    out += [f"- Absent from the audited items: {a['suite']} {a['field']}: {', '.join(a['absent'])}"
            for a in cov["absent_groups"]]
    out += [f"- {n}" for n in cov["notes"]]
    out.append(f"- Rows below the small-n line (fewer than 30 units): {len(cov['small_n'])}")
    if cov["small_n"]:
        out += ["", "| suite | metric | group | n | units |", "|---|---|---|---:|---:|"]
        out += [f"| {r['suite']} | {r['metric']} | {_cell(group_label(r))} | {r['n']} | {r['n_units'] or '—'} |"
                for r in cov["small_n"]]
    out.append("")
    prov = doc["provenance"]
    info = prov["model_info"] or {}
    out += ["## Provenance", "", f"- model `{prov['model']}` revision `{info.get('revision')}` device "
            f"{info.get('device')} dtype {info.get('dtype')}",
            f"- auditlm {prov['auditlm_version']} git `{prov['git_hash'] or '—'}` seed {prov['seed']}"]
    for s in prov["suites"]:
        out.append(f"- {s['id']} v{s['version']} digest `{s['digest']}`")
        for f in s.get("data_files") or []:
            out.append(f"  - {f['source']} `{f['path']}` size {f['size']} sha256 `{f['sha256']}`")
    out.append("")
    if doc.get("comparison"):
        c = doc["comparison"]
        out += [f"## Comparison with {c['run_a']['run_id']} (A: baseline, B: this run)", "",
                "| suite | metric | group | A | B | Δ (B−A) | interval | verdict |", "|---|---|---|---:|---:|---:|---:|---|"]
        for m in c["metrics"]:
            out.append(f"| {m['suite']} | {m['metric']} | {_cell(group_label(m))} | {g(m['a']['value'])} | "
                       f"{g(m['b']['value'])} | {g(m['delta'])} | {ci(m)} | {m['verdict']} |")
        out += [f"- warning: {w}" for w in c["warnings"]]
        out.append("")
    out += ["## Model card section", "", "```markdown", doc["model_card"]["markdown"].rstrip(), "```", ""]
    return "\n".join(out)
