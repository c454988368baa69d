"""Run (``?run=ID``): each suite's metrics with interval error bars and the ideal value marked, per-group charts
with fairlearn disparities, small-n and underpowered flags, gates, sign-offs, provenance and a coverage panel."""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import data
import pandas as pd
import streamlit as st
import ui

path, ver = ui.store()
runs = data.runs(path, ver)
run_id = ui.param("run")
if run_id is None:
    st.title("Run")
    if runs.empty:
        st.info("The store holds no runs yet.")
        st.stop()
    run_id = st.selectbox("run", list(runs["run"]))
    st.query_params["run"] = run_id
info = data.run(path, ver, run_id)
if info is None:
    st.title("Run")
    ui.not_found(f"unknown run '{run_id}' in this store", list(runs["run"]))
r: dict[str, Any] = info["run"]
st.title(f"Run {run_id}")
st.markdown(f"**{r['model']}** · status **{r['status']}** · created {r['created_at']}"
            + (f" · {r['duration_s']:.1f} s" if r["duration_s"] else ""))
if r.get("error"):
    st.warning(f"error: {r['error']}")
c1, c2 = st.columns(2)
with c1:
    ui.link("items", "items of this run", run=run_id)
with c2:
    others = [x for x in runs["run"] if x != run_id]
    if others:
        ui.link("compare", f"compare with {others[0]} (baseline)", a=others[0], b=run_id)

metrics = pd.DataFrame(info["metrics"])
suites = info["suites"]


def _flags(extra: dict[str, Any]) -> str:
    out = []
    if extra.get("small_n"):
        out.append("small n")
    t = extra.get("test") or {}
    if t.get("underpowered"):
        out.append("underpowered")
    return ", ".join(out)


def _test(extra: dict[str, Any]) -> str:
    t = extra.get("test") or {}
    if not t:
        return ""
    p = t.get("p_holm", t.get("p"))
    label = "p_holm" if "p_holm" in t else "p"
    return f"{t.get('name', '')} {label}={ui.fmt(p)}" + (" (underpowered)" if t.get("underpowered") else "")


def _table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "metric": df["metric"], "group": ["" if pd.isna(g) else (f"{f}={g}" if isinstance(f, str) else str(g))
                                   for f, g in zip(df["group_field"], df["group"], strict=True)],
        "value": df["value"], "ci_low": df["ci_low"], "ci_high": df["ci_high"], "n": df["n"],
        "ideal": [e.get("ideal") for e in df["extra"]], "flags": [_flags(e) for e in df["extra"]],
        "test": [_test(e) for e in df["extra"]], "note": [e.get("note") or "" for e in df["extra"]],
    })


def _chart(df: pd.DataFrame, y: str, title: str) -> alt.LayerChart:
    """Points with interval error bars; a red rule at the ideal value when the rows have one."""
    d = df.assign(value=df["value"].astype(float), ci_low=df["ci_low"].astype(float),
                  ci_high=df["ci_high"].astype(float))
    d["ideal"] = [e.get("ideal") for e in df["extra"]]
    d["flags"] = [_flags(e) or "none" for e in df["extra"]]
    base = alt.Chart(d).encode(y=alt.Y(f"{y}:N", title=None, sort=None, axis=alt.Axis(labelLimit=320, labelOverlap=False)))
    bars = base.mark_errorbar(ticks=True).encode(x=alt.X("ci_low:Q", title=title), x2="ci_high:Q")
    pts = base.mark_point(filled=True, size=60).encode(
        x="value:Q", color=alt.Color("flags:N", title="flags", scale=alt.Scale(scheme="set1")),
        tooltip=[y, "value", "ci_low", "ci_high", "n", "flags"])
    layers = [bars, pts]
    ideals = {v for v in d["ideal"] if v is not None}
    if len(ideals) == 1:
        layers.append(alt.Chart(pd.DataFrame({"ideal": [ideals.pop()]})).mark_rule(color="red", strokeDash=[4, 3])
                      .encode(x="ideal:Q"))
    return alt.layer(*layers).properties(height=max(60, 30 * len(d)))


@st.cache_data(show_spinner=False)
def _disparity(groups: tuple[str, ...], values: tuple[float, ...]) -> dict[str, Any]:
    """fairlearn's between-group difference and ratio of the stored per-group values (a MetricFrame over one
    value per group, :func:`auditlm.metrics.disaggregate`)."""
    import numpy as np

    from auditlm.metrics import disaggregate

    frame = disaggregate(np.asarray(values, float), list(groups), group_field="group")
    out = {"difference": float(frame.difference()), "max": float(frame.group_max()), "min": float(frame.group_min())}
    by = frame.by_group
    out["best"], out["worst"] = str(by.idxmin()), str(by.idxmax())
    out["ratio"] = float(frame.ratio()) if min(values) >= 0 else None
    return out


if metrics.empty:
    st.info("No metrics stored for this run yet.")
for s in suites:
    sid = s["suite_id"]
    st.header(sid)
    st.caption(f"version {s['suite_version']} · digest {s['suite_digest']} · {s['n_items']} items · status "
               f"{s['status']}" + (f" · {s['detail']}" if s.get("detail") else ""))
    if s["status"] == "skipped":
        st.warning(f"skipped: {s.get('detail') or 'no reason stored'}")
        continue
    g = metrics[metrics["suite"] == sid] if not metrics.empty else metrics
    if g.empty:
        st.info("no metrics stored for this suite")
        continue
    c1, c2, c3 = st.columns(3)
    with c1:
        ui.link("items", "items, most biased first", run=run_id, suite=sid)
    if info["explanations"].get(sid):
        with c2:
            ui.link("explain", f"explanations ({info['explanations'][sid]})", run=run_id, suite=sid)
    st.dataframe(_table(g), hide_index=True, width="stretch")
    overall = g[g["group"].isna()]
    finite = overall[[isinstance(v, float) and math.isfinite(v) for v in overall["value"]]]
    if not finite.empty:
        for unit, part in finite.groupby(finite["extra"].map(lambda e: str(e.get("unit") or "")), sort=False):
            st.altair_chart(_chart(part, "metric", f"overall {unit}".strip()), width="stretch")
    grouped = g[g["group"].notna()]
    for (metric, field), part in grouped.groupby(["metric", "group_field"], sort=False):
        st.subheader(f"{metric} by {field}")
        part = part[[isinstance(v, float) and math.isfinite(v) for v in part["value"]]]
        if part.empty:
            st.caption("no finite group values")
            continue
        st.altair_chart(_chart(part, "group", metric), width="stretch")
        if len(part) > 1:
            d = _disparity(tuple(map(str, part["group"])), tuple(map(float, part["value"])))
            ratio = f" · ratio (fairlearn) {ui.fmt(d['ratio'])}" if d["ratio"] is not None else ""
            st.markdown(f"between-group difference (fairlearn) **{ui.fmt(d['difference'])}** (max {ui.fmt(d['max'])}"
                        f" at {d['worst']}, min {ui.fmt(d['min'])} at {d['best']}){ratio}")

st.header("Gates")
gates = info["gates"]
if gates:
    st.dataframe(pd.DataFrame([{"gate (fails when it holds)": x["expr"], "value": ui.fmt(x["value"]),
                                "result": "pass" if x["passed"] else ("FAIL" if x["passed"] is False
                                                                      else f"not checked: {x['error']}")}
                               for x in gates]), hide_index=True, width="stretch")
    failed = [x["expr"] for x in gates if x["passed"] is False]
    (st.error if failed else st.success)(f"{len(failed)} of {len(gates)} gates fail" if failed
                                         else f"all {len(gates)} gates pass")
else:
    st.caption("no --fail-on gates are stored with this run (gates are checked by `auditlm run --fail-on` and "
               "`auditlm compare --fail-on-regression`; see the Compare page)")
flagged = metrics[[bool((e.get("test") or {}).get("underpowered")) for e in metrics["extra"]]] if not metrics.empty \
    else metrics
if not flagged.empty:
    st.caption(f"{len(flagged)} tested rows are underpowered: their p-values cannot reach the test level")

st.header("Sign-off")
if info["signoffs"]:
    st.dataframe(pd.DataFrame(info["signoffs"]), hide_index=True, width="stretch")
else:
    st.write("no sign-off recorded")

st.header("Coverage")
skipped = [s for s in suites if s["status"] == "skipped"]
if skipped:
    st.dataframe(pd.DataFrame([{"suite": s["suite_id"], "why": s.get("detail") or ""} for s in skipped]),
                 hide_index=True)
else:
    st.write("no suite was skipped")
absent = data.absent_groups(path, ver, run_id)
if absent:
    st.markdown("**groups or categories absent from this run's data** (reported for the same suite by other runs "
                "of this store, or declared by the suite with no rows here)")
    st.dataframe(pd.DataFrame(absent), hide_index=True)
else:
    st.write("no group or category known to this store is absent from this run")
if not metrics.empty:
    small = metrics[[bool(e.get("small_n")) for e in metrics["extra"]]]
    st.markdown(f"**{len(small)} of {len(metrics)} rows are below the small-n line** (fewer than 30 items or "
                f"resampling units)")
    if not small.empty:
        st.dataframe(_table(small).assign(suite=list(small["suite"]))[["suite", "metric", "group", "n", "value"]],
                     hide_index=True)

st.header("Provenance")
mi = r["model_info"] or {}
prov = {"model": r["model"], "revision": mi.get("revision"), "dtype": mi.get("dtype"), "device": mi.get("device"),
        "backend": mi.get("backend"), "parameters": mi.get("n_params"), "seed": r["seed"],
        "auditlm version": r["auditlm_version"], "git hash": r["git_hash"],
        "store raw": bool(r["config"].get("store_raw")), "limit": r["config"].get("limit"),
        "confidence": r["config"].get("confidence"), "finished": r["finished_at"]}
st.dataframe(pd.DataFrame([{"field": k, "value": "" if v is None else str(v)} for k, v in prov.items()]),
             hide_index=True)
st.dataframe(pd.DataFrame([{"suite": s["suite_id"], "version": s["suite_version"], "digest": s["suite_digest"],
                            "data files": "; ".join(f"{d.get('path')} ({str(d.get('sha256', ''))[:12]})"
                                                    for d in (s.get("data_files") or []))} for s in suites]),
             hide_index=True, width="stretch")
with st.expander("model info and run config as stored"):
    ui.show_json("model_info", mi)
    ui.show_json("config", r["config"])
