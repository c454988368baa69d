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


def _test_cell(m) -> str:
    """The test column: the (Holm-adjusted) p-value and the test's name, or why there is none to trust."""
    t = m.extra.get("test")
    if not t:
        return ""
    if t.get("underpowered"):
        return f"underpowered (n={t.get('n')})"
    p = t.get("p_holm", t.get("p"))
    label = "p_holm" if "p_holm" in t else "p"
    return f"{label}={p:.3g} {t.get('name', '')}".strip()


def _print_table(title: str, metrics, suites: list[dict[str, Any]]) -> None:
    """The metrics table: value, interval (with its level), n, the resampling units where they are not the items,
    the test, and numbered notes printed under the table (undefined values, fallbacks, degenerate intervals)."""
    levels = {m.extra.get("ci", {}).get("confidence") for m in metrics} - {None}
    ci_head = f"{levels.pop():.0%} CI" if len(levels) == 1 else "CI (level)"
    table = Table(title=title, title_justify="left")
    for col, kw in (("suite", {}), ("metric", {}), ("group", {}), ("value", {"justify": "right"}),
                    (ci_head, {"justify": "right"}), ("n", {"justify": "right"}), ("test", {}), ("note", {})):
        table.add_column(col, **kw)
    notes: dict[str, int] = {}
    for m in metrics:
        group = "" if m.group is None else (f"{m.group_field}: {m.group}" if m.group_field else m.group)
        ci = m.extra.get("ci", {})
        n = f"{m.n}"
        if ci.get("unit") not in (None, "item"):
            n += f" ({ci.get('n_units')} {ci['unit'].removesuffix('_id')}s)"
        if m.extra.get("small_n"):
            n += " ⚠ small n"
        interval = f"[{_fmt(m.ci_low, m.metric)}, {_fmt(m.ci_high, m.metric)}]"
        if ci_head == "CI (level)" and ci.get("confidence"):
            interval += f" {ci['confidence']:.0%}"
        mark = ""
        if m.extra.get("note"):
            k = notes.setdefault(m.extra["note"], len(notes) + 1)
            mark = f"[{k}]"
        table.add_row(m.suite, m.metric, group, _fmt(m.value, m.metric), interval, n, _test_cell(m), mark)
    out.print(table)
    for text, k in notes.items():
        out.print(f"[{k}] {text}", highlight=False, markup=False)
    for s in suites:
        if s["status"] == "skipped":
            err.print(f"[yellow]skipped[/] {s['suite_id']}: {s['detail']}")


