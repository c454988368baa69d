"""``auditlm explain``: attribute the quantity a suite scores, for stored items of a run, on the run's own model."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from auditlm.cli._common import (
    StoreOpt,
    _open_store,
    _print_table,
    _progress_factory,
    _quiet_libraries,
    err,
    out,
)
from auditlm.errors import DataError, SuiteSpecError, TargetError, choices

#: Items explained per suite when neither ``--item`` nor ``--top`` is given.
DEFAULT_TOP = 10


@dataclass
class _Plan:
    """What to explain, checked before the model loads."""

    suite_id: str
    spec: Any
    records: list[Any]
    top: int | None


def explain(
    run_id: Annotated[str, typer.Argument(help="The run whose stored items to explain (see 'auditlm runs list').")],
    suite: Annotated[str | None, typer.Option("--suite", help="Explain this suite of the run (default: every "
                                              "explainable suite of the run).")] = None,
    item: Annotated[list[str] | None, typer.Option("--item", help="Explain this stored item (repeatable).")] = None,
    top: Annotated[int | None, typer.Option("--top", help="Explain the K items the suite scores as most biased or "
                                            f"leaking (default: {DEFAULT_TOP}).")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="Attribution method (repeatable) "
                                                     "(default: all).")] = None,
    features: Annotated[str, typer.Option("--features", help="Feature granularity: token (every input token) or "
                                          "template (the group term, BBQ's context sentences and question, and "
                                          "the rest of the input as one feature; cheap).")] = "token",
    each_group: Annotated[bool, typer.Option("--each-group", help="Counterfactual suites: explain every group "
                                             "term of each item (the per-group view), not only the most extreme "
                                             "one.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling methods and baselines.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanations as JSON "
                                          "(schema auditlm.explain/1).")] = False,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write a self-contained token heatmap page "
                                                   "here.")] = None,
    with_faithfulness: Annotated[bool, typer.Option("--faithfulness", help="Also measure the explanations' "
                                                    "faithfulness (comprehensiveness, sufficiency, delta, "
                                                    "agreement) and print it.")] = False,
    store: StoreOpt = None,
) -> None:
    """Explain why the model scored stored items as it did: Captum attributions of the suite's own quantity (the
    preference for pair and multiple-choice suites, the generated text's or leaked span's log-probability for
    generation suites) on the run's own model, stored in the run store.

    Everything is checked before the model loads (run, suite, items, methods, the run's target); a bad input
    changes nothing.
    """
    from auditlm.explain.report import to_html, to_json
    from auditlm.explain.types import GRANULARITIES, METHODS
    from auditlm.runner import RunConfig

    methods = _check_flags(item, top, method, METHODS)
    if features not in GRANULARITIES:
        raise typer.BadParameter(f"'{features}' (valid: {', '.join(GRANULARITIES)})", param_hint="--features")
    with _open_store(store, readonly=True) as ro:
        row = ro.get_run(run_id)
        cfg = RunConfig.from_dict(row.config)
        plans = _plan(ro, run_id, cfg, suite, item, top)
    model_spec, load_opts = _model_of(row, cfg)

    from auditlm.explain import faithfulness as faith_mod
    from auditlm.explain import methods as methods_mod
    from auditlm.targets import registry

    registry.check_device(load_opts["device"])
    registry.check_model(model_spec, revision=load_opts["revision"], trust_remote_code=cfg.trust_remote_code)
    _quiet_libraries()
    t0 = time.perf_counter()
    with err.status(f"loading model {model_spec} …"):
        target = registry.resolve(model_spec, batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code,
                                  **load_opts)
    err.print(f"model {model_spec} loaded in {time.perf_counter() - t0:.2f} s")
    _check_same_model(row, target)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    explanations: list[Any] = []
    faith: list[Any] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False, disable=not err.is_terminal and as_json) as progress:
        for p in plans:
            records = p.records if p.top is None else methods_mod.select_top(p.spec, p.records, p.top)
            n_terms = sum(len(methods_mod.group_terms(p.spec, r)) for r in records) if each_group else len(records)
            raw = methods_mod.raw_inputs(p.spec, cfg) if p.spec.kind == "pii_emission" else {}
            kw = {"raw": raw} if raw else {}
            exps = methods_mod.explain_items(target, p.spec, records, methods, seed=seed, granularity=features,
                                             each_group=each_group, **kw,
                                             progress=_progress_factory(progress)(f"explain {p.spec.id}",
                                                                                  n_terms * len(methods)))
            explanations.extend(exps)
            if with_faithfulness:
                faith.extend(faith_mod.faithfulness(target, p.spec, records, exps, seed=seed, **kw))
    shares = faith_mod.group_share(explanations, seed=seed)

    with _open_store(store, must_exist=True) as st:  # the writer: upgrades an older store to schema 6 here
        st.write_explanations(run_id, explanations)
        st.write_explain_summary(run_id, "group_share", shares)
        if with_faithfulness:
            st.write_explain_summary(run_id, "faithfulness", faith)
    err.print(f"{len(explanations)} explanations of run [bold]{run_id}[/] stored in {st.path}")

    if html_path is not None:
        page = to_html(run_id, explanations, model=row.model, faithfulness=faith if with_faithfulness else None,
                       group_share=shares)
        try:
            html_path.write_text(page, encoding="utf-8")
        except OSError as e:
            raise DataError(f"cannot write --html '{html_path}': {e.strerror or e}") from e
        err.print(f"heatmap page written to {html_path}")
    if as_json:
        doc = to_json(run_id, explanations, faithfulness=faith if with_faithfulness else None, group_share=shares)
        print(json.dumps(doc, indent=2, allow_nan=False))
        return
    _print_explanations(run_id, explanations)
    if with_faithfulness:
        _print_table(f"faithfulness · run {run_id}", faith, [])
    for method in sorted({str(m.extra.get("method") or "") for m in shares}):  # one table per method
        _print_table(f"group-term share of the preference · {method + ' · ' if method else ''}run {run_id}",
                     [m for m in shares if str(m.extra.get("method") or "") == method], [])


def _check_flags(item: list[str] | None, top: int | None, method: list[str] | None,
                 valid: tuple[str, ...]) -> list[str]:
    if item and top is not None:
        raise typer.BadParameter("give --item or --top, not both", param_hint="--top")
    if top is not None and top < 1:
        raise typer.BadParameter(f"{top} (must be at least 1)", param_hint="--top")
    methods = list(dict.fromkeys(method or valid))
    bad = [m for m in methods if m not in valid]
    if bad:
        raise typer.BadParameter(f"'{bad[0]}' (valid: {', '.join(valid)})", param_hint="--method")
    return methods


def _plan(ro, run_id: str, cfg, suite: str | None, item: list[str] | None, top: int | None) -> list[_Plan]:
    """The suites and items to explain, from the read-only store and the probe files (no model)."""
    from auditlm.explain.methods import explainable_kinds
    from auditlm.suites.loader import discover

    stored = [s["suite_id"] for s in ro.run_suites(run_id) if s["status"] != "skipped"]
    if suite is not None and suite not in stored:
        raise SuiteSpecError(f"suite '{suite}' is not in run {run_id} (valid: {choices(stored)})")
    available = discover(cfg.probes or None)
    kinds = explainable_kinds()
    wanted = [suite] if suite is not None else stored
    missing = [s for s in wanted if s not in available]
    if suite is not None and missing:
        raise SuiteSpecError(f"suite '{suite}' of run {run_id} is no longer among the probe files (its probe "
                             f"file was removed or renamed)")
    specs = {s: available[s].spec for s in wanted if s in available}
    explainable = [s for s in wanted if s in specs and specs[s].kind in kinds]
    if suite is not None and not explainable:
        raise SuiteSpecError(f"suite '{suite}' (kind {specs[suite].kind}) cannot be explained (explainable kinds: "
                             f"{choices(kinds)})")
    if not explainable:
        raise SuiteSpecError(f"run {run_id} has no explainable suite (its suites: {choices(stored)}; explainable "
                             f"kinds: {choices(kinds)})")
    plans = []
    for sid in explainable:
        records = ro.items(run_id, sid)
        if not records:
            if suite is not None:
                raise DataError(f"run {run_id} stored no items of suite '{sid}'")
            continue
        if item:
            wanted_ids = set(item)
            plans.append(_Plan(sid, specs[sid], [r for r in records if r.item_id in wanted_ids], None))
        else:
            plans.append(_Plan(sid, specs[sid], records, top if top is not None else DEFAULT_TOP))
    if item:
        found = {r.item_id for p in plans for r in p.records}
        unknown = [i for i in dict.fromkeys(item) if i not in found]
        if unknown:
            ids = [r.item_id for p in plans for r in p.records] or [r.item_id for sid in explainable
                                                                     for r in ro.items(run_id, sid)]
            raise DataError(f"item '{unknown[0]}' is not stored in run {run_id} "
                            f"({'suite ' + suite if suite else 'its explainable suites'}; e.g. "
                            f"{choices(ids, 8)})")
        plans = [p for p in plans if p.records]
    if not plans:
        raise DataError(f"run {run_id} stored no items of its explainable suites ({choices(explainable)})")
    return plans


def _model_of(row, cfg) -> tuple[str, dict[str, Any]]:
    """The run's model spec and load options: the model it recorded, at the revision and dtype it ran with.

    Refuses a run whose target is not a local Hugging Face model: attributions need the weights (gradients
    for Layer Integrated Gradients, many batched forward passes for ablation and Shapley sampling)."""
    from auditlm.cli.run import DTYPES

    info = row.model_info or {}
    backend = info.get("backend")
    if backend != "hf":
        raise TargetError(f"cannot explain run {row.run_id}: its target {row.model!r} (backend {backend}) is not a "
                          f"local Hugging Face model; a server target has no gradients and ablation through an "
                          f"API is not offered")
    dtype = info.get("dtype") if info.get("dtype") in DTYPES else cfg.dtype
    from auditlm.targets.registry import KNOWN_MODELS

    revision = cfg.revision
    stored = str(info.get("revision") or "")
    hub = cfg.model not in KNOWN_MODELS and not Path(cfg.model).expanduser().is_dir()
    if hub and len(stored) == 40 and all(c in "0123456789abcdef" for c in stored):
        revision = stored  # the Hub commit the run resolved its revision to
    return cfg.model, {"revision": revision, "dtype": dtype, "device": cfg.device}


def _check_same_model(row, target) -> None:
    """The loaded model must be the one the run scored (same resolved revision or weights hash)."""
    want = (row.model_info or {}).get("revision")
    try:
        got = target.info().get("revision")
    except Exception:  # a target without info cannot be checked; explain what loaded
        return
    if want and got and want != got:
        raise TargetError(f"cannot explain run {row.run_id}: model {row.model!r} now loads as revision {got}, but "
                          f"the run scored revision {want}; its explanations would be of a different model")


def _print_explanations(run_id: str, explanations) -> None:
    from auditlm.explain.report import top_features

    table = Table(title=f"explanations · run {run_id}", title_justify="left")
    for col, kw in (("suite", {}), ("item", {}), ("group", {}), ("method", {}), ("target", {}),
                    ("value", {"justify": "right"}), ("top features", {})):
        table.add_column(col, **kw)
    for e in explanations:
        feats = ", ".join(f"{t.strip() or repr(t)} {a:+.3g}" for t, a in top_features(e))
        value = "—" if e.target.value != e.target.value else f"{e.target.value:.4f}"
        group = e.group.get("term") or e.group.get("group") or ""
        table.add_row(*(Text(c) for c in (e.suite, e.item_id, group, e.method, e.target.kind, value, feats)))
    out.print(table)
