"""A Hugging Face model-card section from a report: "Bias, Risks, and Limitations" prose with the measured numbers
and their intervals, and ``model-index`` ``results`` entries (the card metadata the Hub reads; see
https://huggingface.co/docs/hub/model-cards#evaluation-results — one result per suite: ``task``, ``dataset`` and
``metrics`` with ``type``, ``value`` and ``name``; auditlm's numbers are not Hub-verified, so ``verified:
false``)."""

from __future__ import annotations

from typing import Any

import yaml


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def _ci(v: dict[str, Any]) -> str:
    level = f"{v['confidence']:.0%} " if v.get("confidence") else ""
    return f"{level}CI [{_g(v.get('ci_low'))}, {_g(v.get('ci_high'))}]"


def model_index(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``model-index`` of the run: one result per suite with a headline verdict, its overall metric rows."""
    results = []
    for s in doc["suites"]:
        if s["status"] != "complete":
            continue
        metrics = []
        for m in s["metrics"]:
            if m["group"] is not None or m["value"] is None:
                continue
            level = (m.get("extra") or {}).get("ci", {}).get("confidence")
            has_ci = level and m["ci_low"] is not None and m["ci_high"] is not None
            name = (f"{m['metric']} ({level:.0%} CI {_g(m['ci_low'])}–{_g(m['ci_high'])}, n={m['n']})"
                    if has_ci else f"{m['metric']} (no interval, n={m['n']})")
            metrics.append({"type": m["metric"], "value": round(float(m["value"]), 6), "name": name,
                            "verified": False})
        if not metrics:
            continue
        results.append({"task": {"type": "text-generation", "name": f"{s['family']} audit"},
                        "dataset": {"type": s["id"], "name": s["id"], "revision": s.get("digest")},
                        "metrics": metrics})
    return [{"name": doc["run"]["model"], "results": results}]


def prose(doc: dict[str, Any]) -> str:
    """The "Bias, Risks, and Limitations" section (Markdown)."""
    run = doc["run"]
    lines = ["## Bias, Risks, and Limitations", ""]
    lines.append(f"Audited with auditlm {run['auditlm_version']} (run `{run['run_id']}`, seed {run['seed']}, "
                 f"{run['created_at']}). Every number below comes with its confidence interval and sample size; "
                 "a verdict says whether the interval excludes the metric's ideal value (bias or leakage "
                 "detected), lies within a stated tolerance of it (no evidence), or is too wide or rests on too "
                 "few units to tell (underpowered).")
    lines.append("")
    for v in doc["summary"]:
        if v["metric"] is None:
            lines.append(f"- **{v['suite']}**: {v['label']} ({v['reason']}).")
            continue
        ideal = f"; ideal {_g(v['ideal'])}" if v.get("ideal") is not None else ""
        group = f" [{v['group_field']}={v['group']}]" if v.get("group") is not None else ""
        lines.append(f"- **{v['suite']}** — `{v['metric']}`{group} = {_g(v['value'])} ({_ci(v)}, n = {v['n']}"
                     f"{ideal}): **{v['label']}** — {v['reason']}.")
    cov = doc["coverage"]
    lim = []
    if cov["skipped"]:
        lim.append("Suites not run: " + "; ".join(f"{c['suite']} ({c['reason']})" for c in cov["skipped"]) + ".")
    if cov["absent_groups"]:
        lim.append("Groups absent from the audited items: " + "; ".join(
            f"{a['suite']} {a['field']}: {', '.join(a['absent'])}" for a in cov["absent_groups"]) + ".")
    if cov["small_n"]:
        lim.append(f"{len(cov['small_n'])} metric rows rest on fewer than 30 independent units (flagged small n).")
    lim += [n[0].upper() + n[1:] + "." for n in cov["notes"]]
    lim.append("A benchmark measures the behaviours its items probe, in English, for the groups it names; "
               "no evidence of bias on these suites is not evidence of its absence elsewhere.")
    lines += ["", "### Limitations of this audit", "", *[f"- {x}" for x in lim]]
    return "\n".join(lines) + "\n"


def model_card(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"markdown": the section (YAML front matter with model-index, then the prose), "model_index": [...]}``."""
    index = model_index(doc)
    front = yaml.safe_dump({"model-index": index}, sort_keys=False, allow_unicode=True)
    return {"markdown": f"---\n{front}---\n\n{prose(doc)}", "model_index": index}
