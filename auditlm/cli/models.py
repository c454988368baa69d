"""``auditlm models …``: built-in models (cached locally)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from auditlm.cli._common import JsonOpt, _quiet_libraries, err, out

models_app = typer.Typer(no_args_is_help=True, help="Built-in models (cached locally).")


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Built-in models and whether they are cached."""
    from auditlm.targets.registry import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title_justify="left")
    for col in ("name", "pulled", "size", "path", "description"):
        table.add_column(col)
    for r in rows:
        size = f"{r['size'] / 1e6:.0f} MB" if r.get("size") else "—"
        table.add_row(r["name"], "yes" if r["pulled"] else "no", size, str(r["path"]), r["description"])
    out.print(table)


@models_app.command("pull")
def models_pull(name: str, force: Annotated[bool, typer.Option("--force")] = False) -> None:
    """Fetch a built-in model and cache it as safetensors."""
    from auditlm.targets.registry import pull

    _quiet_libraries()
    with err.status(f"pulling {name} …"):
        path = pull(name, force=force)
    out.print(f"{name} cached at {path}")


