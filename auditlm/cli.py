"""The ``auditlm`` command line: thin commands over the library (parse, call, print).

Exit codes: 0 — done and every ``--fail-on`` gate passed; 1 — a gate failed; 2 — bad input (one line on
stderr, no traceback, nothing already stored is lost).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import NoSuchOption, UsageError
from rich.console import Console
from rich.table import Table

from auditlm.errors import AuditError, choices

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for social bias and privacy leakage.")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect stored runs.")
suites_app = typer.Typer(no_args_is_help=True, help="List and inspect probe suites.")
models_app = typer.Typer(no_args_is_help=True, help="Built-in models (cached locally).")
app.add_typer(runs_app, name="runs")
app.add_typer(suites_app, name="suites")
app.add_typer(models_app, name="models")

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


def _open_store(store: Path | None, *, must_exist: bool = False):
    from auditlm.errors import StoreError
    from auditlm.store import Store

    path = _store_path(store)
    if must_exist and not path.exists():
        raise StoreError(f"no run store at '{path}' (run 'auditlm run' first, or pass --store)")
    return Store(path)


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


@app.command()
def run(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Built-in model name, local directory "
                                              "or Hugging Face model id [default: smollm2-135m-instruct].")] = None,
    suite: Annotated[list[str] | None, typer.Option("--suite", "-s", help="Suite id or family (repeatable) "
                                                    "[default: the default suites].")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Seeded subset of N items per suite, "
                                              "stratified by group.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for subsets, sampling and bootstrap CIs.")] = 0,
    revision: Annotated[str | None, typer.Option("--revision", help="Model revision (Hub models).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16, float16.")] = "auto",
    batch_size: Annotated[str, typer.Option("--batch-size", help="Batch size, or 'auto'.")] = "auto",
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Benchmark data folder [env AUDITLM_DATA].")] = None,
    probes: ProbesOpt = None,
    store: StoreOpt = None,
    fail_on: Annotated[list[str] | None, typer.Option("--fail-on", help="Fail (exit 1) when a metric meets "
                                                      "this condition, e.g. 'bias.crows_pairs.pct_stereotype>0.6'.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an interrupted run.")] = None,
    store_raw: Annotated[bool, typer.Option("--store-raw", help="Store PII found in outputs unredacted.")] = False,
    reference_model: Annotated[str | None, typer.Option("--reference-model", help="Base model that privacy "
                                                        "attacks compare against.")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="Training corpus (text/JSONL/CSV file or "
                                               "Hugging Face dataset id) for privacy suites.")] = None,
    non_members: Annotated[str | None, typer.Option("--non-members", help="Texts known NOT to be in the "
                                                    "training data (membership inference).")] = None,
    canaries: Annotated[str | None, typer.Option("--canaries", help="Canary record written by "
                                                 "'auditlm privacy canaries'.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit a model with probe suites; print the summary and store everything."""
    from auditlm import runner
    from auditlm.errors import SuiteSpecError
    from auditlm.report import parse_gate, summary
    from auditlm.suites.datasets import has_local_data, resolve_data_dir
    from auditlm.suites.loader import discover, select
    from auditlm.targets.registry import DEFAULT_MODEL, resolve

    if batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
        raise typer.BadParameter(f"'{batch_size}' (valid: auto or a positive integer)", param_hint="--batch-size")
    with _open_store(store, must_exist=resume is not None) as st:
        if resume is not None:
            given = [f for f, v in (("--model", model), ("--suite", suite), ("--limit", limit),
                                    ("--data-dir", data_dir), ("--revision", revision),
                                    ("--reference-model", reference_model), ("--corpus", corpus),
                                    ("--non-members", non_members), ("--canaries", canaries)) if v]
            if given:
                raise SuiteSpecError(f"--resume reuses the run's stored settings; drop {', '.join(given)}")
            cfg = runner.RunConfig.from_dict(st.get_run(resume).config)
        else:
            cfg = runner.RunConfig(model=model or DEFAULT_MODEL, suites=[], seed=seed, limit=limit, revision=revision,
                                   device=device, dtype=dtype,
                                   batch_size=int(batch_size) if batch_size != "auto" else "auto",
                                   data_dir=data_dir, probes=list(probes or []), store_raw=store_raw,
                                   trust_remote_code=trust_remote_code, reference_model=reference_model,
                                   inputs={k: v for k, v in (("corpus", corpus), ("non_members", non_members),
                                                             ("canaries", canaries)) if v})
        ddir = resolve_data_dir(cfg.data_dir)
        available = discover(cfg.probes)
        skipped: dict[str, str] = {}
        if resume is not None:
            chosen = select(available, cfg.suites)
        elif suite:
            chosen = select(available, list(suite))
        else:
            chosen = []
            for sid, s in sorted(available.items()):
                if not s.spec.default:
                    continue
                if has_local_data(s.spec, ddir):
                    chosen.append(s)
                else:
                    skipped[sid] = "no benchmark data (pass --data-dir or set AUDITLM_DATA)"
        detector = available.get("privacy.pii_detector")
        if detector is not None and detector not in chosen and any(s.spec.family == "privacy" for s in chosen):
            chosen.append(detector)  # privacy results are printed next to the detector's own precision/recall
        cfg.suites = [s.spec.id for s in chosen]
        gates = [parse_gate(e, cfg.suites) for e in (fail_on or [])]
        prepared = runner.prepare(chosen, cfg, ddir)
        _quiet_libraries()
        t0 = time.perf_counter()
        with err.status(f"loading model {cfg.model} …"):
            target = resolve(cfg.model, revision=cfg.revision, device=cfg.device, dtype=cfg.dtype,
                             batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
        err.print(f"model {cfg.model} loaded in {time.perf_counter() - t0:.2f} s")
        reference = None
        if cfg.reference_model is not None:
            with err.status(f"loading reference model {cfg.reference_model} …"):
                reference = resolve(cfg.reference_model, device=cfg.device, dtype=cfg.dtype,
                                    batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
        if resume is not None:
            runner.check_resumable(st, resume, prepared)
            run_id = resume
            err.print(f"resuming run [bold]{run_id}[/] (store {st.path})")
        else:
            run_id = runner.start_run(st, target, prepared, cfg, skipped)
            err.print(f"run [bold]{run_id}[/] started (store {st.path})")
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=False, disable=not err.is_terminal and as_json) as progress:
            result = runner.execute(st, run_id, target, prepared, cfg, _progress_factory(progress), reference)
        checked = [(g, *g.check(result.metrics)) for g in gates]
        row = st.get_run(run_id)
    if as_json:
        print(json.dumps(summary(row, result.suites, result.metrics, checked), indent=2))
    else:
        _print_table(f"run {run_id} · {row.model}", result.metrics, result.suites)
        for g, ok, v in checked:
            (out if ok else err).print(f"gate {g.expr}: {'[green]pass[/]' if ok else '[red]FAIL[/]'} (value {v:.4f})")
    if any(not ok for _, ok, _ in checked):
        raise typer.Exit(1)


@runs_app.command("list")
def runs_list(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Stored runs, newest first."""
    with _open_store(store, must_exist=True) as st:
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

    with _open_store(store, must_exist=True) as st:
        row = st.get_run(run_id)
        suites = st.run_suites(run_id)
        metrics = st.metrics(run_id)
    if as_json:
        print(json.dumps(summary(row, suites, metrics), indent=2))
        return
    info = row.model_info
    out.print(f"[bold]run {row.run_id}[/]  status={row.status}  created={row.created_at}  seed={row.seed}")
    out.print(f"model {row.model}  revision={info.get('revision')}  device={info.get('device')} "
              f"dtype={info.get('dtype')}")
    out.print(f"auditlm {row.auditlm_version}  git={row.git_hash or '—'}  "
              f"duration={row.duration_s or 0:.1f}s" + (f"  error={row.error}" if row.error else ""))
    for s in suites:
        out.print(f"  {s['suite_id']} v{s['suite_version']}: {s['status']}, {s['n_items']} items"
                  + (f" ({s['detail']})" if s["detail"] else ""))
    _print_table(f"run {row.run_id} · {row.model}", metrics, [])


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


def _register_subcommands() -> None:
    from auditlm.cli_privacy import privacy_app

    app.add_typer(privacy_app, name="privacy")


_register_subcommands()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn bad input into one line on stderr with exit code 2."""
    try:
        rc = app(args=argv, standalone_mode=False)  # returns the code of a typer.Exit instead of raising it
    except AuditError as e:
        print(f"auditlm: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except NoSuchOption as e:
        ctx = e.ctx
        opts = sorted({o for p in (ctx.command.params if ctx else []) for o in p.opts if o.startswith("--")})
        print(f"auditlm: error: no such option {e.option_name} (valid: {choices(opts, 40)})", file=sys.stderr)
        sys.exit(2)
    except UsageError as e:
        ctx = e.ctx
        msg = _one_line(e.format_message() if hasattr(e, "format_message") else e)
        if ctx is not None and hasattr(ctx.command, "commands") and "No such command" in msg:
            msg += f" (valid: {choices(ctx.command.commands)})"  # type: ignore[union-attr]
        print(f"auditlm: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("auditlm: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("auditlm: interrupted (resume with 'auditlm run --resume RUN_ID')", file=sys.stderr)
        sys.exit(130)
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
