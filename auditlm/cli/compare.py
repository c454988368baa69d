"""``auditlm compare RUN_A RUN_B``: every metric two stored runs share, paired over the items both scored."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from auditlm.cli._common import ProbesOpt, StoreOpt, _open_store, err, out

_SEED_MAX = 2**63 - 1


def compare(
    run_a: Annotated[str, typer.Argument(help="Baseline run id (A).")],
    run_b: Annotated[str, typer.Argument(help="New run id (B); every change is B - A.")],
    suite: Annotated[list[str] | None, typer.Option("--suite", "-s", help="Compare only this suite (repeatable) "
                                                    "[default: every suite both runs have].")] = None,
    fail_on_regression: Annotated[list[str] | None, typer.Option(
        "--fail-on-regression", help="Non-inferiority gate 'SUITE.METRIC[FIELD=GROUP]:MARGIN' (repeatable): exit "
        "1 when the one-sided upper confidence bound of B's worsening over A (distance from the metric's ideal) "
        "exceeds MARGIN. For a perplexity (no ideal) the worsening is B/A - 1: "
        "'utility.perplexity.token_perplexity:0.10' passes only when perplexity rose by less than 10%.")] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="Confidence level of every interval; the "
                                              "alpha (1 - level) of the tests and the gates' one-sided bounds.")
                          ] = 0.95,
    seed: Annotated[int, typer.Option("--seed", min=0, max=_SEED_MAX, help="Seed of the bootstrap resamples.")] = 0,
    resamples: Annotated[int, typer.Option("--resamples", min=100, max=100_000, help="Bootstrap resamples.")] = 2000,
    probes: ProbesOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable comparison (schema "
                                          "auditlm.compare/1).")] = False,
) -> None:
    """Compare run B with baseline run A: each shared metric's change with a paired interval over the items
    both runs scored (matched by item id) and a Holm-adjusted p-value; items in one run only are counted."""
    from auditlm.compare import check_gates, compare_runs, parse_regression_gate

    if not 0.75 < confidence < 1.0:
        raise typer.BadParameter(f"{confidence} (valid: a level in (0.75, 1), e.g. 0.95)", param_hint="--confidence")
    gates = [parse_regression_gate(g) for g in fail_on_regression or []]  # malformed: exit 2 before the store opens
    with _open_store(store, readonly=True) as st:
        res = compare_runs(st, run_a, run_b, suites=suite, gates=gates, confidence=confidence, seed=seed,
                           n_resamples=resamples, probes=probes)
    for w in res.warnings:
        err.print(f"[yellow]warning[/] {escape(w)}", highlight=False)
    if as_json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        _print(res)
    check_gates(res)
    if any(not g.passed for g in res.gates):
        raise typer.Exit(1)


def _f(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _print(res) -> None:
    title = (f"compare A = {res.run_a['run_id']} ({res.run_a['model']}) → B = {res.run_b['run_id']} "
             f"({res.run_b['model']})")
    table = Table(title=title, title_justify="left")
    for col, kw in (("suite", {}), ("metric", {}), ("group", {}), ("A", {"justify": "right"}),
                    ("B", {"justify": "right"}), ("Δ B−A", {"justify": "right"}),
                    (f"paired {res.confidence:.0%} CI", {"justify": "right"}), ("p_holm", {"justify": "right"}),
                    ("n_shared", {"justify": "right"}), ("verdict", {}), ("note", {})):
        table.add_column(col, **kw)
    notes: dict[str, int] = {}
    for m in res.metrics:
        group = "" if m.group is None else f"{m.group_field}: {m.group}"
        a, b = _f(m.a.value), _f(m.b.value)
        if m.paired and m.a_shared is not None and abs(m.a_shared - m.a.value) > 1e-12:
            a += f" ({_f(m.a_shared)} shared)"
        if m.paired and m.b_shared is not None and abs(m.b_shared - m.b.value) > 1e-12:
            b += f" ({_f(m.b_shared)} shared)"
        ci = f"[{_f(m.ci_low, True)}, {_f(m.ci_high, True)}]" if m.paired else "—"
        p = "—"
        if m.test is not None:
            p = f"{m.test.p_holm:.3g}" if m.test.p_holm is not None else f"{m.test.p:.3g}"
        text = m.reason if not m.paired else m.note
        mark = f"[{notes.setdefault(text, len(notes) + 1)}]" if text else ""
        delta = _f(m.delta, True)
        if m.ratio is not None:
            delta += f" (×{_f(m.ratio)} [{_f(m.ratio_low)}, {_f(m.ratio_high)}])"
        table.add_row(m.suite, m.metric, group, a, b, delta, ci, p,
                      "" if m.n_shared is None else str(m.n_shared), m.verdict, mark)
    out.print(table)
    for text, k in notes.items():
        out.print(f"[{k}] {text}", highlight=False, markup=False)
    for sid, it in res.items.items():
        out.print(f"{sid}: items shared {it.shared} · only in A {it.only_a} · only in B {it.only_b}", highlight=False)
    if res.suites_only_a or res.suites_only_b:
        out.print(f"suites only in A: {', '.join(res.suites_only_a) or 'none'} · only in B: "
                  f"{', '.join(res.suites_only_b) or 'none'}", highlight=False)
    if res.metrics_only_a or res.metrics_only_b:
        out.print(f"metric rows only in A: {len(res.metrics_only_a)} · only in B: {len(res.metrics_only_b)}",
                  highlight=False)
    for g in res.gates:
        bound = _f(g.upper, True)
        line = (f"gate {escape(g.expr)}: {'[green]pass[/]' if g.passed else '[red]FAIL[/]'} (worsening {'B/A - 1 ' if g.ideal is None else ''}{_f(g.worsening, True)}, "
                f"{g.level:.0%} upper bound {bound} vs margin {g.margin:g})")
        (out if g.passed else err).print(line, highlight=False)
