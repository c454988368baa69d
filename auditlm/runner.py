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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditlm.errors import StoreError
from auditlm.metrics import MetricResult, stratified_subset
from auditlm.scorers import LL, Gen, Output, ScoreContext, get_scorer
from auditlm.store import Store, new_run_id
from auditlm.suites.datasets import load_items
from auditlm.suites.loader import LoadedSuite
from auditlm.targets.base import Target

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
    chunk_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class PreparedSuite:
    """A suite with its selected items (after ``--limit``)."""

    suite: LoadedSuite
    items: list[tuple[int, dict[str, Any]]]
    total: int


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
        items = load_items(s.spec, data_dir)
        indexed = list(enumerate(items))
        if config.limit is not None and config.limit < len(items):
            gf = s.spec.group_fields
            groups = ["|".join(str(it[f]) for f in gf) for it in items] if gf else None
            keep = stratified_subset([it["id"] for it in items], groups, config.limit, config.seed)
            indexed = [indexed[i] for i in keep]
        out.append(PreparedSuite(s, indexed, len(items)))
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
            progress: ProgressFactory | None = None) -> RunResult:
    """Compute every pending item, aggregate each suite from the store, and mark the run complete."""
    t0 = time.perf_counter()
    ctx = ScoreContext(store_raw=config.store_raw, salt=store.salt)
    store.set_run_status(run_id, "running")
    try:
        for pos, p in enumerate(prepared):
            _run_suite(store, run_id, target, p, pos, config, ctx, progress)
    except BaseException as e:
        store.set_run_status(run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                             error=f"{type(e).__name__}: {e}"[:500])
        raise
    prev = store.get_run(run_id).duration_s or 0.0
    store.set_run_status(run_id, "complete", duration_s=prev + time.perf_counter() - t0, model_info=target.info())
    return RunResult(run_id, store.metrics(run_id), store.run_suites(run_id))


def _run_suite(store: Store, run_id: str, target: Target, p: PreparedSuite, pos: int, config: RunConfig,
               ctx: ScoreContext, progress: ProgressFactory | None) -> None:
    spec = p.suite.spec
    scorer = get_scorer(spec)
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
        flat_ll = [(r.context, r.continuation) for rs in reqs for r in rs if isinstance(r, LL)]
        flat_gen = [r.prompt for rs in reqs for r in rs if isinstance(r, Gen)]
        ll_out = iter(target.loglikelihood(flat_ll) if flat_ll else [])
        gen_out = iter(target.generate(flat_gen, params) if flat_gen and params else [])
        outputs: list[list[Output]] = [[next(ll_out) if isinstance(r, LL) else next(gen_out) for r in rs] for rs in reqs]
        scored = scorer.score_batch(items, outputs, ctx)
        store.write_items(run_id, spec.id, [(it["id"], i, it, s.output, s.score)
                                            for (i, it), s in zip(chunk, scored, strict=True)])
        if advance:
            advance(len(chunk))
    records = store.items(run_id, spec.id)
    metrics = scorer.aggregate(records, seed=config.seed) if records else []
    store.replace_metrics(run_id, spec.id, metrics)
    prev = next((s["duration_s"] for s in store.run_suites(run_id) if s["suite_id"] == spec.id), None) or 0.0
    store.upsert_suite(run_id, spec.id, version=spec.version, digest=p.suite.digest, position=pos,
                       n_items=len(p.items), status="complete", duration_s=prev + time.perf_counter() - t0)
