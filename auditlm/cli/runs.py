"""``auditlm runs …``: inspect stored runs."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from auditlm.cli._common import JsonOpt, StoreOpt, _open_store, _print_table, _store_path, out

runs_app = typer.Typer(no_args_is_help=True, help="Inspect stored runs.")


@runs_app.command("list")
def runs_list(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Stored runs, newest first."""
    with _open_store(store, readonly=True) as st:
        rows = st.list_runs()
        suites = {r.run_id: st.run_suites(r.run_id) for r in rows}
    if as_json:
        print(json.dumps([{"run_id": r.run_id, "created_at": r.created_at, "status": r.status, "model": r.model,
                           "suites": [s["suite_id"] for s in suites[r.run_id] if s["status"] != "skipped"],
                           "duration_s": r.duration_s} for r in rows], indent=2))
        return
    table = Table(title=f"runs in {_store_path(store)}", title_justify="left")
    for col in ("run id", "created", "status", "model", "suites", "duration"):
        table.add_column(col)
    for r in rows:
        ss = [s["suite_id"] for s in suites[r.run_id] if s["status"] != "skipped"]
        table.add_row(r.run_id, r.created_at, r.status, r.model, ", ".join(ss),
                      f"{r.duration_s:.1f}s" if r.duration_s else "—")
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: str, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """One run's provenance and metrics."""
    from auditlm.report import summary

    with _open_store(store, readonly=True) as st:
        row = st.get_run(run_id)
        suites = st.run_suites(run_id)
        metrics = st.metrics(run_id)
        signoffs = st.signoffs(run_id)
    if as_json:
        print(json.dumps(summary(row, suites, metrics), indent=2))
        return
    info = row.model_info
    out.print(f"[bold]run {row.run_id}[/]  status={row.status}  created={row.created_at}  seed={row.seed}")
    out.print(f"model {escape(row.model)}  revision={info.get('revision')}  device={info.get('device')} "
              f"dtype={info.get('dtype')}")
    out.print(f"auditlm {row.auditlm_version}  git={row.git_hash or '—'}  "
              f"duration={row.duration_s or 0:.1f}s" + (f"  error={row.error}" if row.error else ""))
    for s in suites:
        out.print(f"  {s['suite_id']} v{s['suite_version']}: {s['status']}, {s['n_items']} items"
                  + (f" ({s['detail']})" if s["detail"] else "") + f"  digest={s['suite_digest']}")
        for f in s.get("data_files") or []:
            out.print(f"    {f['source']} {f['path']}  size {f['size']} · sha256 {f['sha256'][:16]}…", highlight=False)
    for so in signoffs:
        out.print(f"  sign-off: {so['decision']} by {so['reviewer']} at {so['created_at']}"
                  + (f" — {so['note']}" if so["note"] else "") + f"  evidence sha256 {so['bundle_sha256'] or '—'}",
                  highlight=False, markup=False)
    _print_table(f"run {row.run_id} · {escape(row.model)}", metrics, [])


