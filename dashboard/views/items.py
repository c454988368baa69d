"""Items (``?run=ID&suite=S[&group=FIELD=VALUE]``): the most biased or leaking items first, with their inputs,
outputs and scores, filtered by group. Outputs are shown as stored (PII redacted); a ``--store-raw`` run is
redacted again for display unless "show raw values" is turned on."""

from __future__ import annotations

import json

import data
import streamlit as st
import ui

path, ver = ui.store()
runs = data.runs(path, ver)
run_id = ui.param("run")
st.title("Items")
if run_id is None:
    if runs.empty:
        st.info("The store holds no runs yet.")
        st.stop()
    run_id = st.selectbox("run", list(runs["run"]))
    st.query_params["run"] = run_id
info = data.run(path, ver, run_id)
if info is None:
    ui.not_found(f"unknown run '{run_id}' in this store", list(runs["run"]))
suites = [s["suite_id"] for s in info["suites"] if s["status"] != "skipped"]
suite = ui.param("suite")
if suite is None:
    if not suites:
        st.info("This run has no scored suite.")
        st.stop()
    suite = st.selectbox("suite", suites)
    st.query_params["suite"] = suite
elif suite not in suites:
    ui.not_found(f"run {run_id} has no scored suite '{suite}'", suites)
ui.link("run", f"← run {run_id}", run=run_id)
st.subheader(f"{suite} · run {run_id}")

raw_run = bool(info["run"]["config"].get("store_raw"))
show_raw = False
if raw_run:
    st.warning("This run was stored with --store-raw: the store holds PII unredacted. It is redacted here for "
               "display unless you turn on the toggle.")
    show_raw = st.toggle("show raw values", value=False, key="show_raw")
else:
    st.caption("outputs as stored: PII redacted by the run (raw values are never in this store)")

kind = data.suite_kinds().get(suite)
df = data.items(path, ver, run_id, suite, kind)
if df.empty:
    st.info("no items stored for this suite")
    st.stop()
group_cols = [c for c in df.columns if c not in ("item", "severity", "input", "output", "score")]
choices = ["all"] + [f"{c}={v}" for c in group_cols for v in sorted(df[c].dropna().unique())]
want = ui.param("group")
group = st.selectbox("group", choices, index=choices.index(want) if want in choices else 0)
if group != "all":
    st.query_params["group"] = group
    f, v = group.split("=", 1)
    df = df[df[f] == v]
elif "group" in st.query_params:
    del st.query_params["group"]
st.write(f"{len(df)} items" + (" · ordered most biased / leaking first" if kind and df["severity"].notna().any()
                               else " · stored order"))


def _display(row) -> tuple[object, object, object]:
    inp, out, score = json.loads(row["input"]), json.loads(row["output"]), json.loads(row["score"])
    if raw_run and not show_raw:
        return ui.redact_raw(suite, inp, out, score)
    return inp, out, score


page = df.head(data.PAGE_ITEMS)
table = []
for _, row in page.iterrows():
    inp, out, score = _display(row)
    table.append({"item": row["item"], "severity": row["severity"],
                  **{c: row[c] for c in group_cols},
                  "input": json.dumps(inp, ensure_ascii=False)[:300],
                  "output": json.dumps(out, ensure_ascii=False)[:300],
                  "score": json.dumps(score, ensure_ascii=False)[:300],
                  "explain": f"explain?run={run_id}&suite={suite}&item={row['item']}"})
import pandas as pd  # noqa: E402

st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch",
             column_config={"explain": st.column_config.LinkColumn("explain", display_text="explain")})
if len(df) > data.PAGE_ITEMS:
    st.caption(f"showing the first {data.PAGE_ITEMS} of {len(df)}")

pick = st.selectbox("item", list(page["item"]))
row = page[page["item"] == pick].iloc[0]
inp, out, score = _display(row)
c1, c2, c3 = st.columns(3)
with c1:
    ui.show_json("input", inp)
with c2:
    ui.show_json("output", out)
with c3:
    ui.show_json("score", score)
ui.link("explain", f"explain {pick}", run=run_id, suite=suite, item=pick)
