"""Explain (``?run=ID&suite=S[&item=I]``): stored attributions (``auditlm explain``) as token heatmaps, and the
per-group attribution view (the group-share summary and each group term's attribution)."""

from __future__ import annotations

import html

import altair as alt
import data
import pandas as pd
import streamlit as st
import ui

from auditlm.explain.report import _CSS, _heatmap, top_features
from auditlm.explain.types import Explanation

path, ver = ui.store()
runs = data.runs(path, ver)
run_id = ui.param("run")
st.title("Explain")
if run_id is None:
    if runs.empty:
        st.info("The store holds no runs yet.")
        st.stop()
    run_id = st.selectbox("run", list(runs["run"]))
    st.query_params["run"] = run_id
info = data.run(path, ver, run_id)
if info is None:
    ui.not_found(f"unknown run '{run_id}' in this store", list(runs["run"]))
explained = info["explanations"]
if not explained:
    st.info(f"run {run_id} has no stored explanations: run `auditlm explain {run_id}` first.")
    st.stop()
suite = ui.param("suite")
if suite is None:
    suite = st.selectbox("suite", list(explained))
    st.query_params["suite"] = suite
elif suite not in explained:
    ui.not_found(f"run {run_id} has no explanations of suite '{suite}'", list(explained))
ui.link("run", f"← run {run_id}", run=run_id)
exps = [Explanation.from_dict(d) for d in data.explanations(path, ver, run_id, suite)]
hidden = bool(info["run"]["config"].get("store_raw")) and suite.startswith("privacy.")
show_raw = st.toggle("show raw values", value=False) if hidden else False
if hidden and not show_raw:
    st.warning("This run was stored with --store-raw: the explained texts hold PII unredacted and are hidden "
               "unless you turn on the toggle.")

items = list(dict.fromkeys(e.item_id for e in exps))
item = ui.param("item")
if item is not None and item not in items:
    ui.not_found(f"item '{item}' of {suite} has no stored explanation", items)
st.subheader(f"{suite} · run {run_id}" + (f" · item {item}" if item else f" · {len(items)} items"))
st.markdown("red raises the explained quantity, blue lowers it (colour scaled per item by its largest "
            "|attribution|; hover a span for its value)")
shown = [e for e in exps if item is None or e.item_id == item]
parts = [f"<style>{_CSS}</style>"]
for e in shown[:100]:
    group = ", ".join(f"{k}={v}" for k, v in sorted(e.group.items()) if k != "unit")
    meta = (f"item <b>{html.escape(e.item_id)}</b> · {html.escape(e.method)} · {html.escape(e.granularity)} · "
            f"target {html.escape(e.target.kind)} = {ui.fmt(e.target.value)}"
            + (f" · group {html.escape(group)}" if group else ""))
    text = html.escape(ui.RAW_HIDDEN) if hidden and not show_raw else _heatmap(e)
    parts.append(f'<div class="item" data-item="{html.escape(e.item_id)}"><div class="meta">{meta}</div>'
                 f'<div class="text">{text}</div></div>')
st.html("".join(parts))
if item is None:
    pick = st.selectbox("item", items)
    ui.link("explain", f"only {pick}", run=run_id, suite=suite, item=pick)
rows = [{"item": e.item_id, "method": e.method, "granularity": e.granularity,
         "group": ", ".join(f"{k}={v}" for k, v in sorted(e.group.items()) if k != "unit"),
         "target": e.target.kind, "value": e.target.value, "delta": e.delta,
         "top features": "" if hidden and not show_raw else
         "; ".join(f"{t} {a:+.3g}" for t, a in top_features(e))} for e in shown]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.header("Per-group attribution")
share = [m for m in info["explain_summary"].get("group_share", []) if m["suite"] == suite]
if share:
    df = pd.DataFrame(share)
    df["label"] = ["overall" if pd.isna(g) else (f"{f}={g}" if isinstance(f, str) else str(g))
                   for f, g in zip(df["group_field"], df["group"], strict=True)]
    df["method"] = [(e or {}).get("method", "") for e in df["extra"]]
    st.dataframe(df[["method", "label", "value", "ci_low", "ci_high", "n"]], hide_index=True)
    base = alt.Chart(df).encode(y=alt.Y("label:N", sort=None, title=None),
                                yOffset=alt.YOffset("method:N"), color=alt.Color("method:N", title="method"))
    st.altair_chart(alt.layer(base.mark_errorbar(ticks=True).encode(x=alt.X("ci_low:Q", title="share of |attribution|"),
                                                                    x2="ci_high:Q"),
                              base.mark_point(filled=True).encode(x="value:Q", tooltip=["method", "label", "value",
                                                                                        "ci_low", "ci_high", "n"])),
                    width="stretch")
else:
    st.caption("no group-share summary stored (run `auditlm explain` on a counterfactual suite)")
terms = []
for e in exps:
    for f in e.features:
        if f.kind == "group_term":
            terms.append({"group": e.group.get("group") or f.text, "axis": e.group.get("axis", ""),
                          "attribution": f.attribution, "method": e.method})
if terms:
    t = pd.DataFrame(terms).groupby(["axis", "group", "method"], as_index=False)["attribution"].agg(["mean", "count"])
    st.markdown("**group-term attribution by group** (mean over the explained items)")
    st.dataframe(t, hide_index=True)
