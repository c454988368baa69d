"""auditlm dashboard (Streamlit): browse stored runs and their metrics.

Run with ``streamlit run dashboard/app.py -- --store PATH``. It opens the run store read-only (SQLite
``mode=ro``: no migration, nothing written, no hash key needed); it never imports the runner or the targets.
Stored outputs are already redacted unless a run was made with ``--store-raw``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from auditlm.errors import AuditError
from auditlm.store import Store


def _store_path() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=os.environ.get("AUDITLM_STORE"))
    args, _ = parser.parse_known_args()
    if args.store:
        return Path(args.store)
    from auditlm.targets.registry import auditlm_home

    return auditlm_home() / "runs.sqlite"


def main() -> None:
    st.set_page_config(page_title="auditlm", layout="wide")
    path = _store_path()
    st.title("auditlm runs")
    st.caption(str(path))
    if not path.exists():
        st.info("No run store yet: run `auditlm run` first.")
        return
    try:
        store = Store(path, readonly=True)
    except AuditError as e:
        st.error(str(e))
        return
    runs = store.list_runs()
    if not runs:
        st.info("The store holds no runs.")
        return
    st.dataframe(pd.DataFrame([{"run": r.run_id, "created": r.created_at, "status": r.status, "model": r.model,
                                "duration_s": r.duration_s} for r in runs]), hide_index=True)
    run_id = st.selectbox("run", [r.run_id for r in runs])
    metrics = store.metrics(run_id)
    df = pd.DataFrame([m.to_dict() for m in metrics])
    if df.empty:
        st.info("No metrics stored for this run yet.")
        return
    for suite, g in df.groupby("suite", sort=False):
        st.subheader(suite)
        st.dataframe(g[["metric", "group_field", "group", "value", "ci_low", "ci_high", "n"]], hide_index=True)
        items = store.items(run_id, suite)
        with st.expander(f"{len(items)} items"):
            st.dataframe(pd.DataFrame([{"id": r.item_id, "score": r.score, "output": r.output} for r in items[:500]]))


main()
