"""``auditlm report``, ``auditlm bundle`` and ``auditlm signoff``: the sign-off desk over a stored run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from auditlm.cli._common import StoreOpt, _open_store, _store_path, out

FORMATS = ("md", "html", "json")


def report(
    run_id: Annotated[str, typer.Argument(help="The run to report on.")],
    compare: Annotated[str | None, typer.Option("--compare", help="Baseline run to compare with (A; this run is "
                                                "B).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="md, html or json (schema auditlm.report/1).")] = "md",
    out_path: Annotated[Path | None, typer.Option("--out", help="Write to this file [default: stdout].")] = None,
    store: StoreOpt = None,
) -> None:
    """A run's report: verdicts, per-suite tables with intervals, per-group charts (HTML), worst items (as stored:
    redacted), attribution highlights, coverage, provenance, sign-offs and a Hugging Face model-card section."""
    from auditlm.report.jsonreport import build_report

    if fmt not in FORMATS:
        raise typer.BadParameter(f"'{fmt}' (valid: {', '.join(FORMATS)})", param_hint="--format")
    with _open_store(store, readonly=True) as st:
        doc = build_report(st, run_id, compare)
    if fmt == "json":
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    elif fmt == "html":
        from auditlm.report.html import render_html

        text = render_html(doc)
    else:
        from auditlm.report.markdown import render_markdown

        text = render_markdown(doc)
    if out_path is None:
        print(text, end="")
        return
    from auditlm.report.bundle import write_private

    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_private(out_path, text)  # mode 0600: item texts, even redacted, are the run's data
    out.print(f"report of run {run_id} written to {out_path}" + (" (RAW VALUES: the run was --store-raw)"
                                                                  if doc["raw_values"] else ""), highlight=False)


def bundle(
    run_id: Annotated[str, typer.Argument(help="The run to bundle.")],
    out_dir: Annotated[Path, typer.Option("--out", help="A new (or empty) folder for the bundle.")],
    store_raw: Annotated[bool, typer.Option("--store-raw", help="Include the items of a run made with "
                                            "--store-raw (raw PII); without it they are left out.")] = False,
    store: StoreOpt = None,
) -> None:
    """One reproducible evidence bundle: the report in every format, the run exported from the store, sha256 of
    model weights, suite and data files, the environment, the command that reproduces the run, and a MANIFEST."""
    from auditlm.report.bundle import write_bundle

    with _open_store(store, readonly=True) as st:
        res = write_bundle(st, run_id, out_dir, include_raw=store_raw, store_path=str(_store_path(store)))
    out.print(f"bundle of run {run_id} written to {res['dir']} ({len(res['files'])} files); MANIFEST sha256 "
              f"{res['manifest_sha256']}", highlight=False)


def signoff(
    run_id: Annotated[str, typer.Argument(help="The run to sign off.")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who decides.")],
    decision: Annotated[str, typer.Option("--decision", help="approve, reject or conditional.")],
    note: Annotated[str | None, typer.Option("--note", help="Why, or the conditions.")] = None,
    bundle_dir: Annotated[Path | None, typer.Option("--bundle", help="The bundle the decision rests on (its "
                                                    "MANIFEST is verified and its sha256 stored).")] = None,
    store: StoreOpt = None,
) -> None:
    """Store a reviewer's decision with the run (who, when, decision, note, evidence digest)."""
    from auditlm.report.signoff import check_inputs, evidence_digest

    check_inputs(reviewer, decision)
    with _open_store(store, readonly=True) as ro:  # every check before anything is written
        ro.get_run(run_id)
        digest = evidence_digest(ro, run_id, bundle_dir)
    with _open_store(store, must_exist=True) as st:
        row = st.add_signoff(run_id, reviewer=reviewer, decision=decision, note=note, bundle_sha256=digest)
    out.print(f"run {run_id}: {row['decision']} by {row['reviewer']} at {row['created_at']} (evidence sha256 "
              f"{digest})", highlight=False, markup=False)
