"""Compare (``?a=ID&b=ID``): ``auditlm compare A B`` rendered — per-metric deltas (B − A) with paired intervals
and Holm-adjusted p-values, non-inferiority verdicts, the utility change, significant changes highlighted."""

from __future__ import annotations

import altair as alt
import data
import pandas as pd
import streamlit as st
import ui

path, ver = ui.store()
runs = data.runs(path, ver)
st.title("Compare")
ids = list(runs["run"])
a, b = ui.param("a"), ui.param("b")
if a is None or b is None:
    if len(ids) < 2:
        st.info("Comparing needs two runs in the store.")
        st.stop()
    c1, c2 = st.columns(2)
    a = c1.selectbox("baseline run A", ids, index=ids.index(a) if a in ids else 1)
    b = c2.selectbox("new run B", ids, index=ids.index(b) if b in ids else 0)
    st.query_params["a"], st.query_params["b"] = a, b
for x in (a, b):
    if x not in ids:
        ui.not_found(f"unknown run '{x}' in this store", ids)
try:
    margin0 = float(ui.param("margin")) if ui.param("margin") else None
except ValueError:
    margin0 = None
margin = st.number_input("non-inferiority margin (gate every overall paired metric with an ideal; 0: off)",
                         min_value=0.0, value=margin0 or 0.0, step=0.01, format="%.3f")
if margin > 0:
    st.query_params["margin"] = f"{margin:g}"
elif "margin" in st.query_params:
    del st.query_params["margin"]
doc, problem = data.compare(path, ver, a, b, margin if margin > 0 else None)
if doc is None:
    st.warning(f"cannot compare: {problem}")
    st.stop()
c1, c2 = st.columns(2)
with c1:
    ui.link("run", f"A (baseline): {a} · {doc['run_a']['model']}", run=a)
with c2:
    ui.link("run", f"B (new): {b} · {doc['run_b']['model']}", run=b)
st.caption(f"Δ = B − A over the items both runs scored · {doc['confidence']:.0%} intervals · p-values "
           f"Holm-adjusted across the paired rows · schema {doc['schema']}")
for w in doc["warnings"]:
    st.warning(w)

rows = []
for m in doc["metrics"]:
    t = m.get("test") or {}
    sig = bool(t) and not t.get("underpowered") and (t.get("p_holm") if t.get("p_holm") is not None
                                                      else 1.0) < 1 - doc["confidence"]
    rows.append({"suite": m["suite"], "metric": m["metric"],
                 "group": "" if m["group"] is None else f"{m['group_field']}={m['group']}",
                 "A": m["a_shared"] if m["paired"] else m["a"]["value"],
                 "B": m["b_shared"] if m["paired"] else m["b"]["value"], "delta": m["delta"],
                 "ci_low": m["ci_low"], "ci_high": m["ci_high"], "p_holm": t.get("p_holm"),
                 "test": t.get("name") or "", "underpowered": bool(t.get("underpowered")),
                 "significant": sig, "verdict": m["verdict"], "ideal": m["ideal"], "paired": m["paired"],
                 "n_shared": m["n_shared"], "reason": m["reason"] or ""})
df = pd.DataFrame(rows)
if df.empty:
    st.info("the runs report no metric row in common")
    st.stop()
n_sig = int(df["significant"].sum())
st.markdown(f"**{n_sig} significant change{'s' if n_sig != 1 else ''}** of {len(df)} rows "
            f"({int(df['paired'].sum())} paired)")
only = st.toggle("significant changes only", value=ui.param("sig") == "1")
view = df[df["significant"]] if only else df


def _hl(row: pd.Series) -> list[str]:
    return ["background-color: #fde2a8" if row["significant"] else "" for _ in row]


st.dataframe(view.style.apply(_hl, axis=1), hide_index=True, width="stretch")

paired = view[view["paired"] & view["ci_low"].notna()]
if not paired.empty:
    paired = paired.assign(label=paired["suite"].str.split(".").str[-1] + "." + paired["metric"]
                           + paired["group"].map(lambda g: f"[{g}]" if g else ""))
    base = alt.Chart(paired).encode(y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=360, labelOverlap=False)))
    chart = alt.layer(
        base.mark_errorbar(ticks=True).encode(x=alt.X("ci_low:Q", title="Δ = B − A (paired interval)"),
                                              x2="ci_high:Q"),
        base.mark_point(filled=True, size=60).encode(x="delta:Q", color=alt.Color("significant:N"),
                                                      tooltip=["label", "delta", "ci_low", "ci_high", "p_holm"]),
        alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="gray").encode(x="zero:Q"),
    ).properties(height=max(80, 22 * len(paired)))
    st.altair_chart(chart, width="stretch")

st.header("Utility change")
util = df[df["suite"].str.startswith("utility.")]
if util.empty:
    st.caption("neither run has a utility suite in common (add utility.perplexity to both runs)")
else:
    st.dataframe(util[["suite", "metric", "group", "A", "B", "delta", "ci_low", "ci_high", "p_holm", "verdict"]],
                 hide_index=True)

st.header("Non-inferiority")
if doc["gates"]:
    gates = pd.DataFrame(doc["gates"])
    n_fail = int((~gates["passed"]).sum())
    (st.error if n_fail else st.success)(
        f"{n_fail} of {len(gates)} gates fail: B may be worse than A by more than the margin" if n_fail else
        f"all {len(gates)} gates pass: B is not worse than A by more than the margin (one-sided bound)")
    st.dataframe(gates[["expr", "worsening", "upper", "level", "margin", "passed", "method", "n_shared", "note"]],
                 hide_index=True, width="stretch")
else:
    st.caption("no margin set: per-row verdicts are in the table's verdict column (set a margin above, or "
               "`auditlm compare A B --fail-on-regression SUITE.METRIC:MARGIN`)")
st.header("Items")
st.dataframe(pd.DataFrame([{"suite": k, **v} for k, v in doc["items"].items()]), hide_index=True)
if doc["suites_only_in_a"] or doc["suites_only_in_b"]:
    st.write({"suites only in A": doc["suites_only_in_a"], "suites only in B": doc["suites_only_in_b"]})
