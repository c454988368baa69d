"""The HTML report: one self-contained page (inline CSS, per-group charts as inline SVG drawn by matplotlib's SVG
backend, no scripts, no external fonts, images or CDN: it opens offline). Rendered from the ``auditlm.report/1``
document; every text is HTML-escaped and is the text as stored (redacted unless the run was ``--store-raw``, which
the page then says at the top in red)."""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any

from auditlm.report.markdown import RAW_WARNING, ci, g, group_label, method_label, n_cell

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:70em;color:#222;
line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.9em;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.v-detected{background:#fde2e1;font-weight:bold}.v-no_evidence{background:#def5e1;font-weight:bold}
.v-underpowered{background:#fff3cd;font-weight:bold}.v-no_verdict,.v-not_run{background:#eee}
.raw{border:3px solid #b00;background:#fee;padding:.8em;font-weight:bold;color:#900}
code{background:#f6f6f6;padding:0 .2em}.chart svg{max-width:100%;height:auto}pre{background:#f6f6f6;padding:1em;
overflow-x:auto;white-space:pre-wrap}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def chart_svg(chart: dict[str, Any], title: str) -> str:
    """One per-group chart as an inline ``<svg>``: each group's value with its interval (a whisker), the ideal as
    a dashed line; groups flagged small-n are drawn hollow."""
    import matplotlib
    from matplotlib.figure import Figure

    rows = chart["rows"]
    fig = Figure(figsize=(6.5, 0.6 + 0.28 * len(rows)), dpi=72)
    ax = fig.add_subplot()
    for i, r in enumerate(rows):
        v, lo, hi = r["value"], r["ci_low"], r["ci_high"]
        y = len(rows) - 1 - i
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color="#555", lw=1.2)
        if v is not None:
            ax.plot([v], [y], "o", color="#1f5fa8", mfc="white" if r["small_n"] else "#1f5fa8", ms=5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(r["group"]) for r in reversed(rows)], fontsize=8)
    if chart.get("ideal") is not None and math.isfinite(chart["ideal"]):
        ax.axvline(chart["ideal"], color="#b00", ls="--", lw=1)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "auditlm"}):  # text as text; stable ids
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE (which names a DTD URL)
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)


def _table(head: list[str], rows: list[list[str]], num: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(doc: dict[str, Any]) -> str:
    """The whole report as one HTML page (the same sections as :func:`~auditlm.report.markdown.render_markdown`,
    plus the charts)."""
    run = doc["run"]
    p: list[str] = [f"<h1>Audit report: {_e(run['model'])}</h1>"]
    if doc["raw_values"]:
        p.append(f"<p class=\"raw\">{_e(RAW_WARNING.replace('**', '').replace('`', ''))}</p>")
    p.append(f"<p>Run <code>{_e(run['run_id'])}</code> · status {_e(run['status'])} · created "
             f"{_e(run['created_at'])} · seed {_e(run['seed'])} · auditlm {_e(run['auditlm_version'])} · schema "
             f"<code>{_e(doc['schema'])}</code></p>")
    p.append("<h2>Summary</h2>")
    rows = []
    for v in doc["summary"]:
        metric = (v["metric"] or "—") + (f" [{v['group_field']}={v['group']}]" if v.get("group") is not None else "")
        level = f" ({v['confidence']:.0%})" if v.get("confidence") else ""
        rows.append([_e(v["suite"]), _e(metric), g(v["value"]), _e(ci(v) + level), g(v["ideal"]),
                     _e(v["n"] if v["n"] is not None else "—"),
                     f"<span class=\"v-{_e(v['verdict'])}\">{_e(v['label'])}</span> — {_e(v['reason'])}"])
    p.append(_table(["suite", "headline metric", "value", "interval", "ideal", "n", "verdict"], rows, {2, 3, 4, 5}))
    p.append("<p>Verdict rule: <em>detected</em> when the interval excludes the ideal (at small n too, which the line "
             "says); <em>no evidence</em> when it includes the ideal, lies within ideal ± tolerance and n is not "
             "small; otherwise (no interval, a wider interval, or small n with the ideal inside) "
             "<em>underpowered</em>.</p>")
    p.append("<h2>Gates</h2>")
    if doc.get("gates"):
        p.append(_table(["gate (fails when it holds)", "value", "result"],
                        [[f"<code>{_e(x['expr'])}</code>", g(x["value"]),
                          "<b>pass</b>" if x["passed"] else ("<b class=\"fail\">FAIL</b>" if x["passed"] is False
                                                              else f"not checked — {_e(x['error'])}")]
                         for x in doc["gates"]], {1}))
    else:
        p.append("<p>No <code>--fail-on</code> gates were given with this run.</p>")
    p.append("<h2>Sign-off</h2>")
    if doc["signoffs"]:
        p.append(_table(["when", "reviewer", "decision", "note", "evidence sha256"],
                        [[_e(s["created_at"]), _e(s["reviewer"]), f"<b>{_e(s['decision'])}</b>", _e(s["note"]),
                          f"<code>{_e(s['bundle_sha256'] or '—')}</code>"] for s in doc["signoffs"]]))
    else:
        p.append("<p>Not signed off.</p>")
    for s in doc["suites"]:
        v = s["verdict"]
        p.append(f"<h2>{_e(s['id'])} (v{_e(s['version'])})</h2>")
        if s.get("description"):
            p.append(f"<p>{_e(s['description'])}</p>")
        if s.get("citation"):
            p.append(f"<p><em>{_e(s['citation'])}</em></p>")
        p.append(f"<p>Verdict: <span class=\"v-{_e(v['verdict'])}\">{_e(v['label'])}</span> — {_e(v['reason'])}</p>")
        if s["status"] != "complete":
            continue
        mrows = []
        for m in s["metrics"]:
            ex = m.get("extra") or {}
            t = ex.get("test") or {}
            pv = t.get("p_holm", t.get("p")) if t else None
            test = (f"underpowered (n={t.get('n')})" if t.get("underpowered") else
                    (f"p={pv:.3g} {t.get('name', '')}" if pv is not None else t.get("name", ""))) if t else ""
            mrows.append([_e(m["metric"]), _e(group_label(m)), g(m["value"]), _e(ci(m)), _e(n_cell(m)), _e(test),
                          _e(ex.get("note"))])
        p.append(_table(["metric", "group", "value", "interval", "n", "test", "note"], mrows, {2, 3, 4}))
        for c in s["charts"]:
            title = f"{s['id']} · {c['metric']} by {c['group_field'] or 'group'}"
            p.append(f"<div class=\"chart\">{chart_svg(c, title)}</div>")
        if s["charts"]:
            p.append("<p><small>Each group's value (dot) and interval (line); hollow dots rest on a small n; the "
                     "dashed red line is the ideal.</small></p>")
        if s["worst_items"]:
            p.append("<p>Worst items (as stored" + ("; RAW" if doc["raw_values"] else ", redacted") + "):</p>")
            p.append(_table(["item", "severity", "group", "text", "output"], [
                [f"<code>{_e(it['item_id'])}</code>", g(it["severity"]),
                 _e(", ".join(f"{k}={x}" for k, x in (it.get("group") or {}).items())), _e(it["text"]),
                 _e(it["output"])] for it in s["worst_items"]], {1}))
    if doc["attributions"]:
        p.append("<h2>Attribution highlights</h2>")
        p.append(_table(["suite", "item", "method", "target", "top features"], [
            [_e(a["suite"]), f"<code>{_e(a['item_id'])}</code>", _e(a["method"]), g(a["target_value"]),
             ", ".join(f"<code>{_e(f['text'])}</code> {g(f['attribution'])}" for f in a["top_features"][:3])]
            for a in doc["attributions"][:30]], {3}))
    if doc["group_share"]:
        p.append(_table(["suite", "method", "group", "group-term share", "interval", "n"], [
            [_e(m["suite"]), _e(method_label(m)), _e(group_label(m)), g(m["value"]),
             _e(ci(m)), _e(m["n"])] for m in doc["group_share"]], {3, 4, 5}))
    cov = doc["coverage"]
    p.append("<h2>Coverage</h2><ul>")
    p += [f"<li>Skipped: {_e(c['suite'])} — {_e(c['reason'])}</li>" for c in cov["skipped"]] or \
        ["<li>No suite skipped.</li>"]
    p += [f"<li>Absent from the audited items: {_e(a['suite'])} {_e(a['field'])}: {_e(', '.join(a['absent']))}</li>"
          for a in cov["absent_groups"]]
    p += [f"<li>{_e(n)}</li>" for n in cov["notes"]]
    p.append(f"<li>Rows below the small-n line (fewer than 30 units): {len(cov['small_n'])}</li></ul>")
    if cov["small_n"]:
        p.append(_table(["suite", "metric", "group", "n", "units"], [
            [_e(r["suite"]), _e(r["metric"]), _e(group_label(r)), _e(r["n"]), _e(r["n_units"] or "—")]
            for r in cov["small_n"]], {3, 4}))
    prov = doc["provenance"]
    info = prov["model_info"] or {}
    p.append("<h2>Provenance</h2><ul>")
    p.append(f"<li>model <code>{_e(prov['model'])}</code> revision <code>{_e(info.get('revision'))}</code> device "
             f"{_e(info.get('device'))} dtype {_e(info.get('dtype'))}</li>")
    p.append(f"<li>auditlm {_e(prov['auditlm_version'])} git <code>{_e(prov['git_hash'] or '—')}</code> seed "
             f"{_e(prov['seed'])}</li>")
    for s in prov["suites"]:
        files = "".join(f"<li>{_e(f['source'])} <code>{_e(f['path'])}</code> size {_e(f['size'])} sha256 "
                        f"<code>{_e(f['sha256'])}</code></li>" for f in s.get("data_files") or [])
        p.append(f"<li>{_e(s['id'])} v{_e(s['version'])} digest <code>{_e(s['digest'])}</code>"
                 + (f"<ul>{files}</ul>" if files else "") + "</li>")
    p.append("</ul>")
    if doc.get("comparison"):
        c = doc["comparison"]
        p.append(f"<h2>Comparison with {_e(c['run_a']['run_id'])} (A: baseline, B: this run)</h2>")
        p.append(_table(["suite", "metric", "group", "A", "B", "Δ (B−A)", "interval", "verdict"], [
            [_e(m["suite"]), _e(m["metric"]), _e(group_label(m)), g(m["a"]["value"]), g(m["b"]["value"]),
             g(m["delta"]), _e(ci(m)), _e(m["verdict"])] for m in c["metrics"]], {3, 4, 5, 6}))
    p.append("<h2>Model card section</h2>")
    p.append(f"<pre>{_e(doc['model_card']['markdown'])}</pre>")
    title = f"auditlm report {run['run_id']}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(p) + "\n</body></html>\n")
