"""Shared pieces of the command line: consoles, option types, the store opener and the metrics table."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

# Wide tables when writing to a file or CI log (rich falls back to 80 columns there).
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

StoreOpt = Annotated[Path | None, typer.Option("--store", help="Run store file [env AUDITLM_STORE; default "
                                                "$AUDITLM_HOME/runs.sqlite].")]
ProbesOpt = Annotated[list[str] | None, typer.Option("--probes", help="Extra probe directory (repeatable) "
                                                      "[env AUDITLM_PROBES].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary (schema auditlm.run/1).")]


def _store_path(store: Path | None) -> Path:
    if store is not None:
        return store
    if os.environ.get("AUDITLM_STORE"):
        return Path(os.environ["AUDITLM_STORE"])
    from auditlm.targets.registry import auditlm_home

    return auditlm_home() / "runs.sqlite"


def _open_store(store: Path | None, *, must_exist: bool = False, readonly: bool = False):
    """The run store; ``readonly`` for commands that only read it (never migrated, never written)."""
    from auditlm.errors import StoreError
    from auditlm.store import Store

    path = _store_path(store)
    if (must_exist or readonly) and not path.exists():
        raise StoreError(f"no run store at '{path}' (run 'auditlm run' first, or pass --store)")
    return Store(path, readonly=readonly)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _progress_factory(progress):
    def make(description: str, total: int):
        task = progress.add_task(description, total=total)
        return lambda k: progress.advance(task, k)

    return make


def _fmt(x: float, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.3f}"


def _print_table(title: str, metrics, suites: list[dict[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for col, kw in (("suite", {}), ("metric", {}), ("group", {}), ("value", {"justify": "right"}),
                    ("95% CI", {"justify": "right"}), ("n", {"justify": "right"})):
        table.add_column(col, **kw)
    for m in metrics:
        group = "" if m.group is None else (f"{m.group_field}: {m.group}" if m.group_field else m.group)
        n = f"{m.n}" + (" ⚠ small n" if m.extra.get("small_n") else "")
        table.add_row(m.suite, m.metric, group, _fmt(m.value, m.metric),
                      f"[{_fmt(m.ci_low, m.metric)}, {_fmt(m.ci_high, m.metric)}]", n)
    out.print(table)
    for s in suites:
        if s["status"] == "skipped":
            err.print(f"[yellow]skipped[/] {s['suite_id']}: {s['detail']}")


