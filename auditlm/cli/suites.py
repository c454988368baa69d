"""``auditlm suites …``: list and inspect probe suites."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from auditlm.cli._common import JsonOpt, ProbesOpt, out

suites_app = typer.Typer(no_args_is_help=True, help="List and inspect probe suites.")


@suites_app.command("list")
def suites_list(probes: ProbesOpt = None, as_json: JsonOpt = False) -> None:
    """Every discovered suite."""
    from auditlm.suites.loader import discover

    found = discover(probes)
    if as_json:
        print(json.dumps([{"id": k, "version": s.spec.version, "kind": s.spec.kind, "default": s.spec.default,
                           "path": str(s.path)} for k, s in sorted(found.items())], indent=2))
        return
    table = Table(title_justify="left")
    for col in ("id", "version", "kind", "default", "data", "description"):
        table.add_column(col)
    for k, s in sorted(found.items()):
        d = s.spec.data
        if d.reader:
            data = f"{d.reader}: {d.path}"
        elif d.generator:
            data = f"generated: {d.generator} ×{d.size}"
        else:
            data = "templates" if d.templates else f"{len(d.items or [])} items"
        table.add_row(k, s.spec.version, s.spec.kind, "yes" if s.spec.default else "", data,
                      s.spec.description.split(". ")[0][:80])
    out.print(table)


@suites_app.command("show")
def suites_show(suite_id: str, probes: ProbesOpt = None) -> None:
    """A suite's full definition and where it lives."""
    from auditlm.suites.loader import discover, select

    s = select(discover(probes), [suite_id])[0]
    out.print(f"[bold]{s.spec.id}[/] v{s.spec.version} ({s.spec.kind}) — {s.path}")
    out.print(s.spec.description)
    out.print(f"[italic]Citation:[/] {s.spec.citation}")
    out.print_json(s.spec.model_dump_json(exclude={"description", "citation"}))


