"""Runs: every stored run with model, revision, suites, date, status, gates and headline metrics; filter and
search (``?q=TEXT&status=S&model=M``, kept in the URL)."""

from __future__ import annotations

import data
import streamlit as st
import ui

path, ver = ui.store()
st.title("Runs")
st.caption(f"store: {path} (read-only)")
df = data.runs(path, ver)
if df.empty:
    st.info("The store holds no runs yet: run `auditlm run` first.")
    st.stop()

c1, c2, c3 = st.columns([3, 1, 2])
q = c1.text_input("search (run id, model, suite, metric)", value=ui.param("q") or "")
statuses = sorted(df["status"].unique())
status = c2.selectbox("status", ["all", *statuses],
                      index=1 + statuses.index(ui.param("status")) if ui.param("status") in statuses else 0)
models = sorted(df["model"].unique())
model = c3.selectbox("model", ["all", *models],
                     index=1 + models.index(ui.param("model")) if ui.param("model") in models else 0)
for k, v in (("q", q), ("status", None if status == "all" else status), ("model", None if model == "all" else model)):
    if v:
        st.query_params[k] = v
    elif k in st.query_params:
        del st.query_params[k]

view = df
if status != "all":
    view = view[view["status"] == status]
if model != "all":
    view = view[view["model"] == model]
if q:
    needle = q.lower()
    hay = (view["run"] + " " + view["model"] + " " + view["suites"] + " " + view["headline"]).str.lower()
    view = view[hay.str.contains(needle, regex=False)]

st.write(f"{len(view)} of {len(df)} runs")
shown = view.copy()
shown.insert(0, "open", "run?run=" + shown["run"])
st.dataframe(shown, hide_index=True, width="stretch",
             column_config={"open": st.column_config.LinkColumn("open", display_text="open"),
                            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f")})
if len(view):
    pick = st.selectbox("run", list(view["run"][:500]))
    c1, c2 = st.columns(2)
    with c1:
        ui.link("run", f"open run {pick}", run=pick)
    others = [r for r in view["run"][:500] if r != pick]
    if others:
        with c2:
            ui.link("compare", f"compare {others[0]} → {pick}", a=others[0], b=pick)
