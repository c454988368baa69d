"""``auditlm run``: audit a model with probe suites."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from auditlm.cli._common import (
    JsonOpt,
    ProbesOpt,
    StoreOpt,
    _open_store,
    _print_table,
    _progress_factory,
    _quiet_libraries,
    err,
    out,
)

#: The seeds a run accepts: the store keeps the seed as an SQLite INTEGER (signed 64-bit), and numpy's and
#: torch's generators take non-negative seeds.
SEED_MAX = 2**63 - 1
#: ``--dtype`` values (those of :mod:`auditlm.targets.hf`, which reads them).
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "half")


def run(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Built-in model name, local directory, "
                                              "Hugging Face model id, or openai:BASE_URL#MODEL (an "
                                              "OpenAI-compatible server) [default: smollm2-135m-instruct].")] = None,
    suite: Annotated[list[str] | None, typer.Option("--suite", "-s", help="Suite id or family (repeatable) "
                                                    "[default: the default suites].")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Seeded subset of N items per suite, "
                                              "stratified by group.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Only items whose group field is one of "
                                                    "the values, e.g. 'bias_type=gender' (repeatable; suites "
                                                    "without that field run in full).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, max=SEED_MAX, help="Seed for subsets, sampling "
                                             "and bootstrap CIs, 0 to 2**63-1 [default: 0].")] = None,
    confidence: Annotated[float | None, typer.Option("--confidence",
                                                     help="Confidence level of every interval and the alpha "
                                                     "(1 - level) of every test [default: each suite's, 0.95].")
                          ] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Model revision (Hub models).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N, mps "
                                               "[default: auto].")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="auto, float32, bfloat16, float16 "
                                              "[default: auto].")] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help="Batch size, or 'auto' "
                                                   "[default: auto].")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Benchmark data folder [env AUDITLM_DATA].")] = None,
    probes: ProbesOpt = None,
    store: StoreOpt = None,
    fail_on: Annotated[list[str] | None, typer.Option("--fail-on", help="Fail (exit 1) when a metric meets "
                                                      "this condition, e.g. 'bias.crows_pairs.pct_stereotype>0.6'.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an interrupted run.")] = None,
    store_raw: Annotated[bool, typer.Option("--store-raw", help="Store PII found in outputs unredacted.")] = False,
    reference_model: Annotated[str | None, typer.Option("--reference-model", help="Base model that privacy "
                                                        "attacks compare against.")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="Training corpus for privacy suites: a "
                                               "text/JSONL/CSV file, or hf:ORG/NAME for a Hugging Face "
                                               "dataset.")] = None,
    non_members: Annotated[str | None, typer.Option("--non-members", help="Texts known NOT to be in the "
                                                    "training data (membership inference).")] = None,
    canaries: Annotated[str | None, typer.Option("--canaries", help="Canary record written by "
                                                 "'auditlm privacy canaries'.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow models whose "
                                                    "repository ships its own code (it runs that code).")] = False,
    api_key_env: Annotated[str | None, typer.Option("--api-key-env", help="openai: models: the environment "
                                                    "variable holding the API key (the key is never stored) "
                                                    "[default: none, a dummy key].")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, help="openai: models: requests "
                                                 "in flight at once.")] = 8,
    request_timeout: Annotated[float, typer.Option("--request-timeout", min=0.001, help="openai: models: "
                                                   "seconds per request (retries are extra).")] = 600.0,
    bos_token: Annotated[str | None, typer.Option("--bos-token", help="openai: models: the text of the start "
                                                  "token that empty contexts are conditioned on, when the server "
                                                  "prepends none (e.g. '<|im_start|>').")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Answer the run's chunks on a pool of Ray actors, one "
                                            "model replica each: '--ray' alone starts a local Ray; or auto, "
                                            "ray://HOST:PORT, HOST:PORT (needs auditlm[ray]).")] = None,
    ray_actors: Annotated[int | None, typer.Option("--ray-actors", min=1, help="Replicas with --ray [default: one "
                                                   "per GPU of the cluster, else 2].")] = None,
    details: Annotated[bool, typer.Option("--details", help="Print the full metrics table after the summary "
                                          "(every row, interval, n, test and note).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit a model with probe suites; print the summary and store everything.

    The summary is one line per suite: its headline metric, interval, ideal value and a plain verdict (bias or
    leakage detected / no evidence / underpowered; rules in :mod:`auditlm.report.verdicts`); ``--details``
    adds the full table, and ``auditlm report RUN_ID`` has everything.

    Everything that can be checked without the model is checked first (flags, suites, items, gates, the
    model's folder or Hub config), and the store is opened (created, for a new run) only after that, so bad
    input leaves no store behind and costs no model load.
    """
    from auditlm import runner
    from auditlm.errors import GateError
    from auditlm.report import summary
    from auditlm.targets import registry

    if confidence is not None and not 0.5 < confidence < 1.0:
        raise typer.BadParameter(f"{confidence} (valid: a level in (0.5, 1), e.g. 0.95 or 0.99)",
                                 param_hint="--confidence")
    if batch_size is not None and batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
        raise typer.BadParameter(f"'{batch_size}' (valid: auto or a positive integer)", param_hint="--batch-size")
    if dtype is not None and dtype not in DTYPES:
        raise typer.BadParameter(f"'{dtype}' (valid: {', '.join(DTYPES)})", param_hint="--dtype")
    if device is not None:
        registry.check_device(device)
    if ray_actors is not None and ray is None:
        raise typer.BadParameter("needs --ray", param_hint="--ray-actors")
    if ray is not None:
        from auditlm import distributed

        distributed.check_address(None if ray == distributed.LOCAL else ray)
        distributed._import_ray()
        distributed.check_reachable(ray)
    bs = None if batch_size is None else (int(batch_size) if batch_size != "auto" else "auto")
    if resume is not None:
        given = {"model": model, "suite": suite, "limit": limit, "where": where, "data_dir": data_dir, "revision": revision,
                 "reference_model": reference_model, "corpus": corpus, "non_members": non_members,
                 "canaries": canaries, "confidence": confidence, "seed": seed, "bs": bs, "device": device,
                 "dtype": dtype, "store_raw": store_raw, "trust_remote_code": trust_remote_code, "probes": probes}
        with _resume_reader(store) as ro:
            cfg = _resumed_config(ro, resume, given)
            # gates given again replace the stored ones for this check; the stored ones are checked otherwise
            skipped, prepared, gates = _plan(cfg, suite=None, fail_on=fail_on or cfg.fail_on, resuming=True)
            runner.check_resumable(ro, resume, prepared)  # before the model loads: a refusal costs nothing
            ro.check_lease_free(resume)  # another process resuming it: refused before the model loads too
    else:
        cfg = runner.RunConfig(model=model or registry.DEFAULT_MODEL, suites=[], seed=0 if seed is None else seed,
                               limit=limit, where=_parse_where(where), revision=revision, device=device or "auto", dtype=dtype or "auto",
                               batch_size="auto" if bs is None else bs, data_dir=data_dir,
                               probes=list(probes or []), store_raw=store_raw, confidence=confidence,
                               trust_remote_code=trust_remote_code, reference_model=reference_model,
                               inputs={k: v for k, v in (("corpus", corpus), ("non_members", non_members),
                                                         ("canaries", canaries)) if v},
                               fail_on=[e.strip() for e in fail_on or []],
                               api_key_env=api_key_env, max_concurrency=max_concurrency,
                               request_timeout=request_timeout, bos_token=bos_token, ray=ray,
                               ray_actors=ray_actors)
        skipped, prepared, gates = _plan(cfg, suite=suite, fail_on=fail_on, resuming=False)
    registry.check_device(cfg.device)
    server = {"api_key_env": cfg.api_key_env, "max_concurrency": cfg.max_concurrency,
              "request_timeout": cfg.request_timeout, "bos_token": cfg.bos_token}
    needs_ll = _sends_loglikelihood(prepared)
    registry.check_model(cfg.model, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                         api_key_env=cfg.api_key_env, needs_loglikelihood=needs_ll)
    if cfg.reference_model is not None:
        registry.check_model(cfg.reference_model, trust_remote_code=cfg.trust_remote_code,
                             api_key_env=cfg.api_key_env, needs_loglikelihood=needs_ll)
    if ray is None:
        pool_cm: Any = contextlib.nullcontext()
    else:  # connect (and start the actors) before a store or run exists: a cluster refused is a clean exit 2
        from auditlm.distributed import LOCAL, RayPool

        with err.status("connecting to Ray …"):
            pool_cm = RayPool(cfg.to_dict(), address=None if ray == LOCAL else ray, actors=ray_actors)
    with pool_cm as pool, _open_store(store, must_exist=resume is not None) as st:
        _quiet_libraries()
        t0 = time.perf_counter()
        with err.status(f"loading model {escape(cfg.model)} …"):
            target = registry.resolve(cfg.model, revision=cfg.revision, device=cfg.device, dtype=cfg.dtype,
                                      batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code, **server)
        err.print(f"model {escape(cfg.model)} loaded in {time.perf_counter() - t0:.2f} s")
        reference = None
        if cfg.reference_model is not None:
            with err.status(f"loading reference model {cfg.reference_model} …"):
                reference = registry.resolve(cfg.reference_model, device=cfg.device, dtype=cfg.dtype,
                                             batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code,
                                             **server)
        if resume is not None:
            run_id = resume
            err.print(f"resuming run [bold]{run_id}[/] (store {st.path})")
        else:
            run_id = runner.start_run(st, target, prepared, cfg, skipped)
            err.print(f"run [bold]{run_id}[/] started (store {st.path})")
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=False, disable=not err.is_terminal and as_json) as progress:
            if pool is not None:
                err.print(f"Ray: {pool.n} {'GPU' if pool.gpus else 'CPU'} actor(s), one model replica each")
            result = runner.execute(st, run_id, target, prepared, cfg, _progress_factory(progress), reference,
                                    pool=pool)
        checked, unmeasured = [], []
        for g in gates:
            try:
                checked.append((g, *g.check(result.metrics)))
            except GateError as e:  # producible, but this run measured no such row (say, a group left empty)
                unmeasured.append(e)
        row = st.get_run(run_id)
    if as_json:
        print(json.dumps(summary(row, result.suites, result.metrics, checked,
                                 {p.suite.spec.id: p.suite.spec.kind for p in prepared}), indent=2))
    else:
        if details:
            _print_table(f"run {run_id} · {escape(row.model)}", result.metrics, result.suites)
        _print_summary(run_id, row.model, result.suites, result.metrics, details,
                       {p.suite.spec.id: p.suite.spec.kind for p in prepared})
        for g, ok, v in checked:
            (out if ok else err).print(f"gate {g.expr}: {'[green]pass[/]' if ok else '[red]FAIL[/]'} (value {v:.4f})")
    if unmeasured:
        raise unmeasured[0]
    if any(not ok for _, ok, _ in checked):
        raise typer.Exit(1)


def _sends_loglikelihood(prepared) -> bool:
    """Whether any prepared suite sends log-likelihood requests (judged from its first item's requests; a
    scorer whose requests cannot be built without the model counts as one unless it generates)."""
    from auditlm.scorers import LL, get_scorer

    for p in prepared:
        scorer = get_scorer(p.suite.spec)
        try:
            if any(isinstance(r, LL) for r in scorer.requests(p.items[0][1])):
                return True
        except Exception:
            if not scorer.generates:
                return True
    return False


def _print_summary(run_id: str, model: str, suites, metrics, details: bool, kinds: dict[str, str]) -> None:
    """The ten-second summary: one line per suite (headline metric, interval, ideal, verdict)."""
    from auditlm.report.verdicts import DETECTED, NO_EVIDENCE, UNDERPOWERED, one_line, suite_verdicts

    colour = {DETECTED: "red", NO_EVIDENCE: "green", UNDERPOWERED: "yellow"}
    out.print(f"[bold]run {run_id}[/] · {escape(model)}: summary (headline metric per suite)")
    verdicts = suite_verdicts(suites, metrics, kinds)
    width = max((len(v.suite) for v in verdicts), default=0)
    for v in verdicts:
        c = colour.get(v.verdict)
        line = escape(one_line(v, width))
        out.print(f"  [{c}]{line}[/]" if c else f"  {line}", highlight=False)
    if not details:
        out.print(f"full table: --details, or 'auditlm report {run_id}' (md, html, json)", highlight=False)


def _resume_reader(store):
    """The store of the run to resume, opened read-only for the checks before the model loads; a store of an
    older schema is opened as the writer instead (which upgrades it, as resuming always did), since the checks
    read what the current schema holds."""
    from auditlm.errors import StoreError
    from auditlm.store import SCHEMA_VERSION

    try:
        ro = _open_store(store, must_exist=True, readonly=True)
    except StoreError as e:
        if "readers never write to it" not in str(e):
            raise
        return _open_store(store, must_exist=True)
    if ro.conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return ro
    ro.close()
    return _open_store(store, must_exist=True)


def _parse_where(specs: list[str] | None) -> dict[str, list[str]]:
    """``['bias_type=gender', 'axis=gender,race']`` -> ``{'bias_type': ['gender'], 'axis': ['gender', 'race']}``."""
    where: dict[str, list[str]] = {}
    for spec in specs or []:
        fld, eq, values = spec.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not fld.strip() or not vals:
            raise typer.BadParameter(f"'{spec}' (valid: FIELD=VALUE[,VALUE…], e.g. bias_type=gender)",
                                     param_hint="--where")
        where.setdefault(fld.strip(), [])
        where[fld.strip()] += [v for v in vals if v not in where[fld.strip()]]
    return where


def _resumed_config(st, run_id: str, given: dict[str, Any]):
    """The stored config of the run to resume. Settings that select what is measured cannot be given again;
    settings that could change results (seed, raw storage, batch size, device, dtype, remote code, probe
    folders) are refused when they differ from the stored ones, naming each."""
    from auditlm import runner
    from auditlm.errors import SuiteSpecError

    named = [f for f, k in (("--model", "model"), ("--suite", "suite"), ("--limit", "limit"), ("--where", "where"),
                            ("--data-dir", "data_dir"), ("--revision", "revision"),
                            ("--reference-model", "reference_model"), ("--corpus", "corpus"),
                            ("--non-members", "non_members"), ("--canaries", "canaries"),
                            ("--confidence", "confidence")) if given[k]]
    if named:
        raise SuiteSpecError(f"--resume reuses the run's stored settings; drop {', '.join(named)}")
    cfg = runner.RunConfig.from_dict(st.get_run(run_id).config)
    differ = []
    for flag, value, stored in (
        ("--seed", given["seed"], cfg.seed),
        ("--batch-size", given["bs"], cfg.batch_size),
        ("--device", given["device"], cfg.device),
        ("--dtype", given["dtype"], cfg.dtype),
        ("--store-raw", given["store_raw"] or None, cfg.store_raw),
        ("--trust-remote-code", given["trust_remote_code"] or None, cfg.trust_remote_code),
        ("--probes", list(given["probes"]) if given["probes"] else None, cfg.probes),
    ):
        if value is not None and value != stored:
            differ.append(f"{flag} (the run was started without it)" if isinstance(value, bool)
                          else f"{flag} {value} (the run used {stored})")
    if differ:
        raise SuiteSpecError(f"--resume continues run {run_id} with its stored settings, and these would change "
                             f"its results: {'; '.join(differ)}; drop them, or start a new run")
    return cfg


def _plan(cfg, *, suite: list[str] | None, fail_on: list[str] | None, resuming: bool):
    """Choose and prepare the suites and parse the gates, checking each gate against what the prepared suites
    can report. Reads probe files and data only: nothing is stored and no model loads."""
    from auditlm import runner
    from auditlm.errors import GateError
    from auditlm.report import parse_gate
    from auditlm.scorers import get_scorer
    from auditlm.suites.datasets import has_local_data, resolve_data_dir
    from auditlm.suites.loader import discover, select

    ddir = resolve_data_dir(cfg.data_dir)
    available = discover(cfg.probes)
    skipped: dict[str, str] = {}
    if resuming:
        chosen = select(available, cfg.suites)
    elif suite:
        # a suite named by its id must run (missing data is an error in prepare); one reached through its
        # family ("--suite bias") is skipped, with the reason, when a file its scorer reads is missing
        chosen = []
        for s in select(available, list(suite)):
            why = None if s.spec.id in suite else get_scorer(s.spec).missing_data(ddir)
            if why:
                skipped[s.spec.id] = why
            else:
                chosen.append(s)
    else:
        chosen = []
        for sid, s in sorted(available.items()):
            if not s.spec.default:
                continue
            if not has_local_data(s.spec, ddir):
                skipped[sid] = "no benchmark data (pass --data-dir or set AUDITLM_DATA)"
            elif why := get_scorer(s.spec).missing_data(ddir):
                skipped[sid] = why
            else:
                chosen.append(s)
    detector = available.get("privacy.pii_detector")
    if detector is not None and detector not in chosen and any(s.spec.family == "privacy" for s in chosen):
        chosen.append(detector)  # privacy results are printed next to the detector's own precision/recall
    if not resuming:
        cfg.suites = [s.spec.id for s in chosen]
    for e in fail_on or []:
        sid = next((k for k in sorted(skipped, key=len, reverse=True) if e.strip().startswith(k + ".")), None)
        if sid is not None and not any(e.strip().startswith(k + ".") for k in cfg.suites if len(k) > len(sid)):
            raise GateError(f"--fail-on '{e}': suite {sid} is skipped in this run ({skipped[sid]}), so the gate "
                            "could never be checked")
    gates = [parse_gate(e, cfg.suites) for e in (fail_on or [])]
    prepared = runner.prepare(chosen, cfg, ddir)
    by_suite = {p.suite.spec.id: p for p in prepared}
    for g in gates:
        p = by_suite[g.suite]
        scorer = get_scorer(p.suite.spec)
        g.check_producible(scorer.metric_names(), scorer.group_values([it for _, it in p.items]),
                           scorer.group_only())
    return skipped, prepared, gates
