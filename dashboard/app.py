"""auditlm dashboard (Streamlit, multipage): browse the run store, read-only.

Start it with ``auditlm dashboard [--store PATH] [--port N] [--host 127.0.0.1]`` (or ``streamlit run
dashboard/app.py -- --store PATH``). Pages, each deep-linkable by its query parameters:

- ``/`` — Runs: every run (filter and search: ``?q=TEXT&status=S&model=M``);
- ``/run?run=ID`` — a run's metrics, per-group charts with fairlearn disparities, gates, provenance, coverage;
- ``/items?run=ID&suite=S`` — the most biased or leaking items first;
- ``/explain?run=ID&suite=S&item=I`` — stored attributions as token heatmaps, and the per-group view;
- ``/compare?a=ID&b=ID`` — ``auditlm compare`` rendered.

The store is opened with SQLite ``mode=ro`` (no migration, nothing written); nothing here imports the runner,
the targets or torch. Outputs are shown as stored (PII redacted) and, for ``--store-raw`` runs, redacted again
for display unless the reviewer turns on "show raw values".
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import json  # noqa: E402
import sqlite3  # noqa: E402

import streamlit as st  # noqa: E402

from auditlm.errors import AuditError  # noqa: E402

st.set_page_config(page_title="auditlm", layout="wide")
pages = [
    st.Page(str(_HERE / "views" / "runs.py"), title="Runs", url_path="runs", default=True),
    st.Page(str(_HERE / "views" / "run.py"), title="Run", url_path="run"),
    st.Page(str(_HERE / "views" / "items.py"), title="Items", url_path="items"),
    st.Page(str(_HERE / "views" / "explain.py"), title="Explain", url_path="explain"),
    st.Page(str(_HERE / "views" / "compare.py"), title="Compare", url_path="compare"),
]
page = st.navigation(pages)
try:
    page.run()
except (AuditError, sqlite3.DatabaseError, json.JSONDecodeError, KeyError, TypeError) as e:
    # a store that opened but whose content is damaged (or not what this auditlm wrote): say so, no traceback
    import data

    st.error(f"This store cannot be shown: {' '.join(str(e).split()) or type(e).__name__} (store "
             f"{data.store_path()}; it was opened read-only and is unchanged).")
