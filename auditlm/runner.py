"""Run suites against a target and store everything: ``start_run`` then ``execute``.

No printing and no argv here: the CLI (or a notebook) passes a progress callback and reads the result.
Work is split into fixed chunks of items; each chunk is computed, scored and committed in one transaction,
so a run killed at any point resumes with ``execute`` on the same run id, recomputing nothing stored and
ending with exactly the metrics an uninterrupted run gives (chunks are the same either way, and metrics are
always aggregated from the stored items).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from auditlm.errors import DataError, StoreError, SuiteSpecError, TargetError
from auditlm.metrics import MetricResult, stable_seed, stratified_subset
from auditlm.scorers import LL, Gen, Output, Request, ScoreContext, get_scorer
from auditlm.store import Store, new_run_id
from auditlm.suites.datasets import load_items
from auditlm.suites.loader import LoadedSuite
from auditlm.targets.base import GenerationParams, Target

#: ``progress(description, total)`` returns ``advance(k)``.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class RunConfig:
    """Everything needed to reproduce (or resume) a run; stored as the run's ``config``."""

    model: str
    suites: list[str]
    seed: int = 0
    limit: int | None = None
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | str = "auto"
    data_dir: str | None = None
    probes: list[str] = field(default_factory=list)
    store_raw: bool = False
    trust_remote_code: bool = False
    #: Items computed and committed together. Larger chunks batch better (one length-sorted call per chunk:
    #: 256 CrowS-Pairs items score ~1.6x faster than 32 here); a crash loses at most one chunk's work.
    chunk_size: int = 256
    #: A base model some privacy attacks compare against (``--reference-model``).
    reference_model: str | None = None
    #: Run inputs that suites read through ``{name}`` placeholders in ``data.path`` (``--corpus`` …).
    inputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class PreparedSuite:
    """A suite with its selected items (after ``--limit``) and the data folder they were read from."""

    suite: LoadedSuite
    items: list[tuple[int, dict[str, Any]]]
    total: int
    data_dir: Path | None = None


@dataclass
class RunResult:
    run_id: str
    metrics: list[MetricResult]
    suites: list[dict[str, Any]]


def git_hash() -> str | None:
    """The commit auditlm runs from, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def prepare(suites: list[LoadedSuite], config: RunConfig, data_dir: Path | None) -> list[PreparedSuite]:
    """Load and subset every suite's items before anything is stored (so bad data writes nothing)."""
    out = []
    for s in suites:
        scorer = get_scorer(s.spec)
        scorer.check()
        if scorer.needs_reference and config.reference_model is None:
            raise TargetError(f"suite {s.spec.id} needs --reference-model (a base model to compare against)")
        items = load_items(s.spec, data_dir, inputs=config.inputs, seed=config.seed)
        missing = scorer.missing_data(data_dir)
        if missing:
            raise DataError(f"suite {s.spec.id}: {missing}")
        indexed = list(enumerate(items))
        if config.limit is not None and config.limit < len(items):
            gf = s.spec.group_fields
            groups = ["|".join(str(it[f]) for f in gf) for it in items] if gf else None
            keep = stratified_subset([it["id"] for it in items], groups, config.limit, config.seed)
            indexed = [indexed[i] for i in keep]
        out.append(PreparedSuite(s, indexed, len(items), data_dir))
    return out


def start_run(store: Store, target: Target, prepared: list[PreparedSuite], config: RunConfig,
              skipped: dict[str, str] | None = None) -> str:
    """Create the run record (and its suites) and return the new run id."""
    from auditlm import __version__

    run_id = new_run_id()
    store.create_run(run_id=run_id, model=config.model, model_info=target.info(), config=config.to_dict(),
                     seed=config.seed, auditlm_version=__version__, git_hash=git_hash())
    for pos, p in enumerate(prepared):
        store.upsert_suite(run_id, p.suite.spec.id, version=p.suite.spec.version, digest=p.suite.digest,
                           position=pos, n_items=len(p.items), status="pending")
    for k, (sid, why) in enumerate(sorted((skipped or {}).items())):
        store.upsert_suite(run_id, sid, version="-", digest="-", position=len(prepared) + k, n_items=0,
                           status="skipped", detail=why)
    return run_id


def check_resumable(store: Store, run_id: str, prepared: list[PreparedSuite]) -> None:
    """A run can only be resumed with the same suite versions."""
    stored = {s["suite_id"]: s for s in store.run_suites(run_id)}
    for p in prepared:
        s = stored.get(p.suite.spec.id)
        if s is None:
            raise StoreError(f"run {run_id} has no suite {p.suite.spec.id}")
        if s["suite_version"] != p.suite.spec.version:
            raise StoreError(
                f"cannot resume run {run_id}: suite {p.suite.spec.id} is now version {p.suite.spec.version}, "
                f"the run used {s['suite_version']}"
            )


def execute(store: Store, run_id: str, target: Target, prepared: list[PreparedSuite], config: RunConfig,
            progress: ProgressFactory | None = None, reference: Target | None = None) -> RunResult:
    """Compute every pending item, aggregate each suite from the store, and mark the run complete.

    ``reference`` answers the requests a scorer addresses to ``"reference"`` (``--reference-model``).
    """
    t0 = time.perf_counter()
    ctx = ScoreContext(store_raw=config.store_raw, salt=store.salt, has_reference=reference is not None)
    targets = {"main": target} | ({"reference": reference} if reference is not None else {})
    store.set_run_status(run_id, "running")
    try:
        for pos, p in enumerate(prepared):
            _run_suite(store, run_id, targets, p, pos, config, ctx, progress)
    except BaseException as e:
        store.set_run_status(run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                             error=f"{type(e).__name__}: {e}"[:500])
        raise
    prev = store.get_run(run_id).duration_s or 0.0
    store.set_run_status(run_id, "complete", duration_s=prev + time.perf_counter() - t0, model_info=target.info())
    return RunResult(run_id, store.metrics(run_id), store.run_suites(run_id))


def _answer(targets: dict[str, Target], reqs: list[list[Request]], params: GenerationParams | None,
            suite_id: str) -> list[list[Output]]:
    """Send each target its requests in one batched call per primitive; outputs in request order."""
    outputs: list[list[Output | None]] = [[None] * len(rs) for rs in reqs]
    for name, target in targets.items():
        ll = [(i, j, r) for i, rs in enumerate(reqs) for j, r in enumerate(rs) if isinstance(r, LL) and r.target == name]
        gen = [(i, j, r) for i, rs in enumerate(reqs) for j, r in enumerate(rs) if isinstance(r, Gen) and r.target == name]
        if ll:
            for (i, j, _), o in zip(ll, target.loglikelihood([(r.context, r.continuation) for _, _, r in ll]), strict=True):
                outputs[i][j] = o
        if gen and params is None:
            raise SuiteSpecError(f"suite {suite_id} generates text but has no generation section")
        for k in sorted({r.sample for _, _, r in gen}):
            draw = [(i, j, r) for i, j, r in gen if r.sample == k]
            p = params if k == 0 else replace(params, seed=stable_seed(params.seed, "sample", k))  # type: ignore[arg-type]
            for (i, j, _), o in zip(draw, target.generate([r.prompt for _, _, r in draw], p), strict=True):
                outputs[i][j] = o
    missing = {r.target for rs, os_ in zip(reqs, outputs, strict=True) for r, o in zip(rs, os_, strict=True) if o is None}
    if missing:
        raise TargetError(f"suite {suite_id} needs a {'/'.join(sorted(missing))} model (pass --reference-model)")
    return outputs  # type: ignore[return-value]


def _run_suite(store: Store, run_id: str, targets: dict[str, Target], p: PreparedSuite, pos: int,
               config: RunConfig, ctx: ScoreContext, progress: ProgressFactory | None) -> None:
    spec = p.suite.spec
    scorer = get_scorer(spec)
    ctx = replace(ctx, data_dir=p.data_dir)
    scorer.context = ctx
    t0 = time.perf_counter()
    done = store.item_ids(run_id, spec.id)
    chunks = [p.items[i : i + config.chunk_size] for i in range(0, len(p.items), config.chunk_size)]
    pending = [c for c in chunks if any(it["id"] not in done for _, it in c)]
    advance = progress(spec.id, len(p.items)) if progress else None
    if advance:
        advance(len(p.items) - sum(len(c) for c in pending))
    params = spec.generation.params(config.seed) if spec.generation else None
    for chunk in pending:
        chunk = [(i, it) for i, it in chunk if it["id"] not in done]
        items = [it for _, it in chunk]
        reqs = [scorer.requests(it) for it in items]
        outputs = _answer(targets, reqs, params, spec.id)
        scored = scorer.score_batch(items, outputs, ctx)
        store.write_items(run_id, spec.id, [(it["id"], i, scorer.stored_input(it), s.output, s.score)
                                            for (i, it), s in zip(chunk, scored, strict=True)])
        if advance:
            advance(len(chunk))
    records = store.items(run_id, spec.id)
    metrics = scorer.aggregate(records, seed=config.seed) if records else []
    store.replace_metrics(run_id, spec.id, metrics)
    prev = next((s["duration_s"] for s in store.run_suites(run_id) if s["suite_id"] == spec.id), None) or 0.0
    store.upsert_suite(run_id, spec.id, version=spec.version, digest=p.suite.digest, position=pos,
                       n_items=len(p.items), status="complete", duration_s=prev + time.perf_counter() - t0)
