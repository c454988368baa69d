"""What ``auditlm explain`` prints and writes: the ``auditlm.explain/1`` JSON document and a self-contained HTML
token heatmap page (inline CSS only: no CDN, no external fonts or scripts, so it opens offline).

Both show the explained text as the store keeps it: found PII stays redacted unless the run was ``--store-raw``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

from auditlm.explain.types import Explanation
from auditlm.metrics import MetricResult

#: The ``schema`` field of ``auditlm explain --json``.
SCHEMA = "auditlm.explain/1"


def _clean(x: float | None) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def item_dict(e: Explanation) -> dict[str, Any]:
    """One entry of ``items``: suite, item id, method, target {kind, value}, features (with their kind), delta,
    feature granularity and the item's group (no internals)."""
    return {
        "suite": e.suite,
        "item_id": e.item_id,
        "method": e.method,
        "target": {"kind": e.target.kind, "value": _clean(e.target.value)},
        "features": [_feature_json(f) for f in e.features],
        "delta": _clean(e.delta),
        "granularity": e.granularity,
        "group": {k: str(v) for k, v in sorted(e.group.items())},
    }


def _feature_json(f: Any) -> dict[str, Any]:
    d = {"text": f.text, "start": f.start, "end": f.end, "attribution": _clean(f.attribution), "kind": f.kind}
    if f.spans:
        d["spans"] = [list(s) for s in f.spans]
    return d


def metric_dict(m: MetricResult) -> dict[str, Any]:
    """A metric row as ``auditlm.run/1`` writes it (NaN as null)."""
    return {"suite": m.suite, "metric": m.metric, "group": m.group, "group_field": m.group_field,
            "value": _clean(m.value), "ci_low": _clean(m.ci_low), "ci_high": _clean(m.ci_high), "n": m.n,
            "extra": m.extra}


def to_json(run_id: str, explanations: Iterable[Explanation], *, faithfulness: list[MetricResult] | None = None,
            group_share: list[MetricResult] | None = None) -> dict[str, Any]:
    """The ``auditlm.explain/1`` document; ``faithfulness`` appears only when it was computed."""
    doc: dict[str, Any] = {"schema": SCHEMA, "run_id": run_id, "items": [item_dict(e) for e in explanations]}
    if faithfulness is not None:
        doc["faithfulness"] = [metric_dict(m) for m in faithfulness]
    doc["group_share"] = [metric_dict(m) for m in (group_share or [])]
    return doc


def top_features(e: Explanation, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` features of largest absolute attribution, largest first (NaN attributions left out)."""
    feats = [(f.text, f.attribution) for f in e.features if _clean(f.attribution) is not None]
    return sorted(feats, key=lambda t: -abs(t[1]))[:k]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222;max-width:70em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
.item{border:1px solid #ccc;border-radius:6px;padding:.8em 1em;margin:1em 0}
.meta{font-size:.9em;color:#555;margin-bottom:.5em}
.text{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.9;font-size:.95em}
.feat{border-radius:3px;padding:1px 0}
.legend span{display:inline-block;padding:2px 8px;margin-right:4px;border-radius:3px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _colour(a: float, scale: float) -> str:
    """Red for positive attributions (pushes the target up), blue for negative; alpha by |a| / scale."""
    if scale <= 0 or _clean(a) is None:
        return "transparent"
    alpha = min(1.0, abs(a) / scale) * 0.85
    return f"rgba(220,40,40,{alpha:.3f})" if a > 0 else f"rgba(40,90,220,{alpha:.3f})"


def _heatmap(e: Explanation) -> str:
    """The explained text with each feature span coloured by its signed attribution, normalised per item by the
    largest absolute attribution; text outside every feature is shown plain. Every feature is drawn (the group term
    of a pair is a feature of its own, outside the shared tokens); where spans overlap the first drawn wins (token
    features, then template features, each by position); a feature of several pieces (``spans``) colours each.
    A template ``rest`` feature colours only the characters of its pieces that no other feature holds."""
    n = len(e.text)
    owner: list[int | None] = [None] * n
    feats = [f for f in e.features if 0 <= f.start <= f.end <= n]
    order = sorted(range(len(feats)), key=lambda i: (feats[i].kind == "rest", feats[i].start,
                                                     feats[i].kind != "token", feats[i].end))
    for i in order:
        f = feats[i]
        chars = [c for a, b in (f.spans or [(f.start, f.end)]) for c in range(max(0, a), min(n, b))]
        if f.kind != "rest" and any(owner[c] is not None for c in chars):
            continue  # overlaps a span already drawn: skip it rather than repeat text
        for c in chars:
            if owner[c] is None:
                owner[c] = i
    scale = max((abs(f.attribution) for f in feats if _clean(f.attribution) is not None), default=0.0)
    parts, pos = [], 0
    while pos < n:
        i = owner[pos]
        end = pos
        while end < n and owner[end] == i:
            end += 1
        chunk = html.escape(e.text[pos:end])
        if i is None or (feats[i].kind == "rest" and not e.text[pos:end].strip()):
            parts.append(chunk)
        else:
            f = feats[i]
            value = _clean(f.attribution)
            tip = f"{f.kind}: {value:+.4g}" if value is not None else f"{f.kind}: undefined"
            parts.append(f'<span class="feat" style="background:{_colour(f.attribution, scale)}" '
                         f'title="{html.escape(tip)}" data-attribution="{value if value is not None else ""}">'
                         f"{chunk}</span>")
        pos = end
    return "".join(parts)


def _fmt(x: float | None) -> str:
    v = _clean(x)
    return "—" if v is None else f"{v:.4g}"


def _metric_table(title: str, metrics: list[MetricResult]) -> str:
    rows = []
    for m in metrics:
        group = "" if m.group is None else (f"{m.group_field}: {m.group}" if m.group_field else m.group)
        note = m.extra.get("note") or ""
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (m.suite, m.metric, group))
                    + f'<td class="num">{_fmt(m.value)}</td><td class="num">[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]</td>'
                    + f'<td class="num">{m.n}</td><td>{html.escape(str(note))}</td></tr>')
    return (f"<h2>{html.escape(title)}</h2><table><thead><tr><th>suite</th><th>metric</th><th>group</th>"
            f"<th>value</th><th>CI</th><th>n</th><th>note</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def to_html(run_id: str, explanations: Iterable[Explanation], *, model: str = "",
            faithfulness: list[MetricResult] | None = None, group_share: list[MetricResult] | None = None) -> str:
    """One self-contained HTML page: a token heatmap per explained item, then the faithfulness and group-share
    tables when present. Every text is escaped."""
    exps = list(explanations)
    body = [f"<h1>auditlm explain · run {html.escape(run_id)}</h1>",
            f'<p class="meta">model {html.escape(model)} · {len(exps)} explanations · red raises the explained '
            f"quantity, blue lowers it (colour scaled per item by its largest |attribution|; hover a span for its "
            f"value). Text as stored: PII redacted unless the run was --store-raw.</p>",
            '<p class="legend"><span style="background:rgba(220,40,40,.85)">+ raises</span>'
            '<span style="background:rgba(40,90,220,.85)">− lowers</span></p>']
    for e in exps:
        group = ", ".join(f"{k}={v}" for k, v in sorted(e.group.items())) if e.group else ""
        meta = (f"suite <b>{html.escape(e.suite)}</b> · item <b>{html.escape(e.item_id)}</b> · method "
                f"<b>{html.escape(e.method)}</b> · target {html.escape(e.target.kind)} = {_fmt(e.target.value)}"
                + (f" · delta {_fmt(e.delta)}" if e.delta is not None else "")
                + (f" · group {html.escape(group)}" if group else ""))
        body.append(f'<div class="item" data-item="{html.escape(e.item_id)}" data-method="{html.escape(e.method)}">'
                    f'<div class="meta">{meta}</div><div class="text">{_heatmap(e)}</div></div>')
    if faithfulness:
        body.append(_metric_table("Faithfulness", faithfulness))
    if group_share:
        body.append(_metric_table("Share of the preference carried by the group term", group_share))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>auditlm explain {html.escape(run_id)}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
