"""Cached, read-only queries of the run store for the dashboard pages.

Every query opens the store with :class:`auditlm.store.Store` ``readonly=True`` (SQLite ``mode=ro``: no migration,
nothing written), reads, closes, and returns plain data; results are cached by ``st.cache_data`` keyed on the
store's path and a *version* (the modification time and size of the file and of its ``-wal``), so a run written
while the dashboard is open shows on the next rerun and nothing stale is served. Nothing here imports the runner,
the targets or torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from auditlm.errors import AuditError
from auditlm.report import stored_gates
from auditlm.store import Store

#: The environment variable ``auditlm dashboard`` passes the store path in.
STORE_ENV = "AUDITLM_DASHBOARD_STORE"
#: Items shown per page of the Items view.
PAGE_ITEMS = 200


def store_path() -> Path:
    """The store to show: ``$AUDITLM_DASHBOARD_STORE`` (set by ``auditlm dashboard``), else ``--store`` after the
    script's ``--``, else ``$AUDITLM_STORE``, else ``$AUDITLM_HOME/runs.sqlite`` (the CLI's default)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store")
    args, _ = parser.parse_known_args(sys.argv[1:])
    if args.store:
        return Path(args.store).expanduser()
    if os.environ.get("AUDITLM_STORE"):
        return Path(os.environ["AUDITLM_STORE"]).expanduser()
    return _auditlm_home() / "runs.sqlite"


def _auditlm_home() -> Path:
    # auditlm.targets.registry.auditlm_home, repeated here so that the dashboard does not import the targets
    if home := os.environ.get("AUDITLM_HOME"):
        return Path(home).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "auditlm"
    return Path.home() / ".cache" / "auditlm"


def version(path: Path) -> str:
    """What the cache keys on besides the path: mtime and size of the store and its WAL ("" when absent)."""
    parts = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            s = p.stat()
            parts.append(f"{s.st_mtime_ns}:{s.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def _open(path: str) -> Store:
    return Store(path, readonly=True)


@st.cache_data(show_spinner=False, max_entries=64)
def check(path: str, ver: str) -> str | None:
    """``None`` when the store opens read-only, else the one-line reason it cannot be shown."""
    p = Path(path)
    if not p.exists():
        return f"no run store at '{p}' (run 'auditlm run' first, or pass --store)"
    try:
        st_ = _open(path)
    except AuditError as e:
        return str(e)
    except Exception as e:  # a file SQLite itself chokes on (beyond what Store checks)
        return f"store '{p}' cannot be read: {e}"
    st_.close()
    return None


def _nan(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


@st.cache_data(show_spinner=False, max_entries=16)
def runs(path: str, ver: str) -> pd.DataFrame:
    """One row per run: id, date, status, model, revision, dtype, suites, gates, headline metrics, duration."""
    with _open(path) as s:
        rows = s.list_runs()
        suites: dict[str, list[str]] = {}
        for r in s.conn.execute("SELECT run_id, suite_id, status FROM run_suites ORDER BY run_id, position"):
            suites.setdefault(r[0], []).append(r[1] + ("" if r[2] == "complete" else f" ({r[2]})"))
        heads: dict[str, list[str]] = {}
        q = ("SELECT m.run_id, m.suite_id, m.metric, m.value FROM metrics m JOIN run_suites s ON s.run_id=m.run_id "
             "AND s.suite_id=m.suite_id WHERE m.grp IS NULL AND m.group_field IS NULL ORDER BY s.position, m.rowid")
        seen: set[tuple[str, str]] = set()
        for rid, sid, metric, value in s.conn.execute(q):
            if (rid, sid) in seen:  # the suite's first overall metric is its headline
                continue
            seen.add((rid, sid))
            v = "—" if value is None else f"{value:.3g}"
            heads.setdefault(rid, []).append(f"{sid.split('.', 1)[-1]}.{metric}={v}")
    out = []
    for r in rows:
        info = r.model_info or {}
        gates = r.config.get("fail_on") or r.config.get("gates") or []
        out.append({
            "run": r.run_id, "created": r.created_at, "status": r.status, "model": r.model,
            "revision": str(info.get("revision") or ""), "dtype": str(info.get("dtype") or ""),
            "suites": ", ".join(suites.get(r.run_id, [])), "gates": ", ".join(map(str, gates)),
            "headline": "; ".join(heads.get(r.run_id, [])), "duration_s": r.duration_s,
            "store_raw": bool(r.config.get("store_raw")),
        })
    return pd.DataFrame(out, columns=["run", "created", "status", "model", "revision", "dtype", "suites", "gates",
                                      "headline", "duration_s", "store_raw"])


@st.cache_data(show_spinner=False, max_entries=32)
def run(path: str, ver: str, run_id: str) -> dict[str, Any] | None:
    """A run's header, suites, metric rows and its ``--fail-on`` gates re-checked on the stored metrics
    (:func:`auditlm.report.stored_gates`); ``None`` for an unknown run."""
    with _open(path) as s:
        try:
            r = s.get_run(run_id)
        except AuditError:
            return None
        suites = s.run_suites(run_id)
        rows = s.metrics(run_id)
        metrics = [m.to_dict() for m in rows]
        gates = stored_gates(r.config or {}, [x["suite_id"] for x in suites], rows)  # the run's --fail-on
        summaries = {k: [m.to_dict() for m in v] for k, v in s.explain_summary(run_id).items()}
        try:
            signoffs = list(s.signoffs(run_id))  # `auditlm signoff`; [] on a store older than the sign-off table
        except AuditError:
            signoffs = None
        n_expl = _count_explanations(s, run_id)
    return {"run": {k: getattr(r, k) for k in r.__dataclass_fields__}, "suites": suites, "metrics": metrics,
            "explain_summary": summaries, "signoffs": signoffs, "explanations": n_expl, "gates": gates}


def _count_explanations(s: Store, run_id: str) -> dict[str, int]:
    for table in ("attributions", "explanations"):
        if s.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone():
            rows = s.conn.execute(f"SELECT suite_id, COUNT(*) FROM {table} WHERE run_id=? GROUP BY suite_id",
                                  (run_id,))
            return {r[0]: r[1] for r in rows}
    return {}


@st.cache_resource(show_spinner=False)
def suite_kinds() -> dict[str, str]:
    """Installed suite id → scorer kind (for ranking items), from the probe files only (no model)."""
    try:
        from auditlm.suites.loader import discover

        return {sid: s.spec.kind for sid, s in discover().items()}
    except AuditError:
        return {}


def _group_cols(inp: Any) -> dict[str, str]:
    if not isinstance(inp, dict):
        return {}
    return {k: str(v) for k, v in inp.items()
            if k in ("bias_type", "axis", "category", "entity", "domain", "group", "entity_type", "context_condition")
            and isinstance(v, str | int)}


@st.cache_data(show_spinner=False, max_entries=16)
def items(path: str, ver: str, run_id: str, suite: str, kind: str | None) -> pd.DataFrame:
    """A suite's stored items, most biased or leaking first (:func:`auditlm.explain.severity.severity`; stored
    order where the suite kind has no ordering), with their group fields, input, output and score as JSON."""
    from auditlm.explain.severity import severity

    with _open(path) as s:
        recs = s.items(run_id, suite)
    rows = []
    for pos, r in enumerate(recs):
        sev = severity(kind, r) if kind else ()
        rows.append({"item": r.item_id, "severity": _nan(float(sev[0])) if sev else None, "_key": sev, "_pos": pos,
                     **_group_cols(r.input), "input": json.dumps(r.input, ensure_ascii=False),
                     "output": json.dumps(r.output, ensure_ascii=False),
                     "score": json.dumps(r.score, ensure_ascii=False)})
    rows.sort(key=lambda d: (tuple(-v for v in d["_key"]), d["_pos"]))
    df = pd.DataFrame(rows)
    return df.drop(columns=["_key", "_pos"]) if not df.empty else df


@st.cache_data(show_spinner=False, max_entries=16)
def item(path: str, ver: str, run_id: str, suite: str, item_id: str) -> dict[str, Any] | None:
    with _open(path) as s:
        row = s.conn.execute("SELECT input, output, score FROM items WHERE run_id=? AND suite_id=? AND item_id=?",
                             (run_id, suite, item_id)).fetchone()
    if row is None:
        return None
    return {"input": json.loads(row[0]), "output": json.loads(row[1]), "score": json.loads(row[2])}


@st.cache_data(show_spinner=False, max_entries=16)
def explanations(path: str, ver: str, run_id: str, suite: str | None) -> list[dict[str, Any]]:
    """Stored explanations (``Explanation.to_dict``) of a run's suite."""
    with _open(path) as s:
        return [e.to_dict() for e in s.explanations(run_id, suite)]


@st.cache_data(show_spinner=False, max_entries=8)
def compare(path: str, ver: str, a: str, b: str, margin: float | None = None
            ) -> tuple[dict[str, Any] | None, str | None]:
    """``auditlm compare A B`` as its ``auditlm.compare/1`` document, or ``(None, the one-line reason)``. With
    ``margin``, every overall paired row with an ideal is also gated for non-inferiority
    (``--fail-on-regression SUITE.METRIC:MARGIN``)."""
    from auditlm.compare import compare_runs, parse_regression_gate

    with _open(path) as s:
        try:
            doc = compare_runs(s, a, b).to_json()
            if margin is None:
                return doc, None
            gates = [parse_regression_gate(f"{m['suite']}.{m['metric']}:{margin}") for m in doc["metrics"]
                     if m["group"] is None and m["paired"] and m["ideal"] is not None]
            if gates:
                doc = compare_runs(s, a, b, gates=gates).to_json()
            return doc, None
        except AuditError as e:
            return None, str(e)

@st.cache_resource(show_spinner=False)
def suite_group_fields() -> dict[str, list[str]]:
    """Installed suite id → the group fields its spec declares."""
    try:
        from auditlm.suites.loader import discover

        return {sid: list(s.spec.group_fields) for sid, s in discover().items()}
    except AuditError:
        return {}


@st.cache_data(show_spinner=False, max_entries=16)
def absent_groups(path: str, ver: str, run_id: str) -> list[dict[str, str]]:
    """Groups (``group_field=group``) other runs of the store report for a suite this run has but this run does
    not, and group fields a suite declares with no group row in this run."""
    declared = suite_group_fields()
    out: list[dict[str, str]] = []
    with _open(path) as s:
        mine = [r[0] for r in s.conn.execute(
            "SELECT suite_id FROM run_suites WHERE run_id=? AND status != 'skipped' ORDER BY position", (run_id,))]
        for sid in mine:
            here = {(r[0], r[1]) for r in s.conn.execute(
                "SELECT DISTINCT group_field, grp FROM metrics WHERE run_id=? AND suite_id=? AND grp IS NOT NULL",
                (run_id, sid))}
            fields_here = {f for f, _ in here}
            elsewhere = {(r[0], r[1]) for r in s.conn.execute(
                "SELECT DISTINCT group_field, grp FROM metrics WHERE suite_id=? AND run_id != ? AND grp IS NOT NULL",
                (sid, run_id))}
            for f, g in sorted(elsewhere - here, key=lambda x: (str(x[0]), str(x[1]))):
                out.append({"suite": sid, "group": f"{f}={g}", "why": "reported by other runs of this suite"})
            for f in declared.get(sid, []):
                if f not in fields_here:
                    out.append({"suite": sid, "group": f"{f}=*", "why": "declared by the suite; no group rows"})
    return out
