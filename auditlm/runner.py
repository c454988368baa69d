"""Run suites against a target and store everything: ``start_run`` then ``execute``.

No printing and no argv here: the CLI (or a notebook) passes a progress callback and reads the result.
Work is split into fixed chunks of items; each chunk is computed, scored and committed in one transaction,
so a run killed at any point resumes with ``execute`` on the same run id, recomputing nothing stored and
ending with exactly the metrics an uninterrupted run gives (chunks are the same either way, and metrics are
always aggregated from the stored items).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from auditlm.errors import (
    DataError,
    LeaseLost,
    RunInterrupted,
    StoreError,
    SuiteSpecError,
    TargetError,
    Terminated,
)
from auditlm.metrics import MetricResult, stable_seed, stratified_subset
from auditlm.scorers import LL, Gen, Output, Request, ScoreContext, get_scorer
from auditlm.store import Store, new_run_id
from auditlm.suites.datasets import read_suite_data
from auditlm.suites.loader import LoadedSuite
from auditlm.suites.provenance import DataRecord, combined_digest, first_change
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
    #: The confidence level of every interval (``--confidence``); None means each suite's ``metrics.confidence``.
    confidence: float | None = None
    trust_remote_code: bool = False
    #: Items computed and committed together. Larger chunks batch better (one length-sorted call per chunk:
    #: 256 CrowS-Pairs items score ~1.6x faster than 32 here); a crash loses at most one chunk's work.
    chunk_size: int = 256
    #: A base model some privacy attacks compare against (``--reference-model``).
    reference_model: str | None = None
    #: Run inputs that suites read through ``{name}`` placeholders in ``data.path`` (``--corpus`` …).
    inputs: dict[str, str] = field(default_factory=dict)
    #: ``--where FIELD=VALUE,…``: keep only the items whose group field ``FIELD`` is one of the values, in every
    #: suite that has that group field (other suites run in full); applied before ``limit``.
    where: dict[str, list[str]] = field(default_factory=dict)
    #: ``--ray [ADDRESS]``: the run's chunks were answered by a pool of Ray actors ("local" = a local Ray), and
    #: ``--ray-actors``: how many. Provenance only: a run resumes with or without Ray to the same metrics.
    ray: str | None = None
    ray_actors: int | None = None
    #: ``--fail-on`` gate expressions the run was started with (the Run page and the report re-check them
    #: against the stored metrics).
    fail_on: list[str] = field(default_factory=list)
    #: ``openai:`` server models only: the environment variable holding the API key (its name; the key itself is
    #: never stored), requests in flight at once, seconds per request, and the text of the start token an empty
    #: context is conditioned on when the server prepends none.
    api_key_env: str | None = None
    max_concurrency: int = 8
    request_timeout: float = 600.0
    bos_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class PreparedSuite:
    """A suite with its selected items (after ``--limit``), what they were read from (``data``: the probe file
    first, then every data file, Hub split or generated set, :class:`DataRecord`) and the data folder."""

    suite: LoadedSuite
    items: list[tuple[int, dict[str, Any]]]
    total: int
    data: list[DataRecord] = field(default_factory=list)
    data_dir: Path | None = None

    @property
    def digest(self) -> str:
        """The digest stored with the run: over the probe file and every data record (the probe file's own
        digest when no records were taken)."""
        return combined_digest(self.data) if self.data else self.suite.digest


@dataclass
class RunResult:
    run_id: str
    metrics: list[MetricResult]
    suites: list[dict[str, Any]]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_hash(where: Path | None = None) -> str | None:
    """The commit auditlm runs from (``where``: the package directory), when it runs from a git checkout;
    ``-dirty`` is appended when tracked files have uncommitted changes (or their state cannot be read), since
    the commit alone then does not say which code produced a run."""
    here = where or Path(__file__).resolve().parent
    head = _git(["rev-parse", "HEAD"], here)
    if not head:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    return head + ("-dirty" if status is None or status else "")


def prepare(suites: list[LoadedSuite], config: RunConfig, data_dir: Path | None) -> list[PreparedSuite]:
    """Load and subset every suite's items before anything is stored (so bad data writes nothing)."""
    out = []
    seen: dict[str, set[str]] = {f: set() for f in (config.where or {})}
    for s in suites:
        scorer = get_scorer(s.spec)
        scorer.check()
        if scorer.needs_reference and config.reference_model is None:
            raise TargetError(f"suite {s.spec.id} needs --reference-model (a base model to compare against)")
        data = read_suite_data(s.spec, data_dir, inputs=config.inputs, seed=config.seed)
        items = data.items
        if not items:
            read = ", ".join(f"'{r.path}'" for r in data.records) or "its data"
            raise DataError(f"suite {s.spec.id} has no items ({read} holds none): an audit of nothing measures "
                            "nothing; check the data")
        scorer.check_schema(items)
        scorer.check_items(items)
        missing = scorer.missing_data(data_dir)
        if missing:
            raise DataError(f"suite {s.spec.id}: {missing}")
        indexed = list(enumerate(items))
        for fld, values in sorted((config.where or {}).items()):
            if fld in s.spec.group_fields:
                seen[fld] |= {str(it.get(fld)) for it in items}
                wanted = {str(v) for v in values}
                indexed = [(i, it) for i, it in indexed if str(it.get(fld)) in wanted]
                if not indexed:
                    have = sorted({str(it.get(fld)) for it in items})
                    raise DataError(f"suite {s.spec.id}: --where {fld}={','.join(values)} keeps none of its items "
                                    f"(valid {fld} values: {', '.join(have)})")
        if config.limit is not None and config.limit < len(indexed):
            gf = s.spec.group_fields
            kept = [it for _, it in indexed]
            groups = ["|".join(str(it[f]) for f in gf) for it in kept] if gf else None
            keep = stratified_subset([it["id"] for it in kept], groups, config.limit, config.seed)
            indexed = [indexed[i] for i in keep]
        if not indexed:
            raise DataError(f"suite {s.spec.id}: --limit {config.limit} selects none of its {len(items)} items "
                            "(valid: a positive limit)")
        out.append(PreparedSuite(s, indexed, len(items), [s.record(), *data.records, *scorer.resources(data_dir)],
                                 data_dir))
    for fld, values in sorted((config.where or {}).items()):
        fields = sorted({f for s in suites for f in s.spec.group_fields})
        if fld not in fields:
            raise DataError(f"--where {fld}=…: no suite of this run has a group field '{fld}' "
                            f"(valid: {', '.join(fields) or 'none'})")
        unknown = [v for v in values if str(v) not in seen[fld]]
        if unknown:
            raise DataError(f"--where {fld}={','.join(values)}: no item has {fld} {', '.join(unknown)} "
                            f"(valid: {', '.join(sorted(seen[fld]))})")
    return out


def start_run(store: Store, target: Target, prepared: list[PreparedSuite], config: RunConfig,
              skipped: dict[str, str] | None = None) -> str:
    """Create the run record (and its suites) and return the new run id.

    Interrupted (Ctrl-C, SIGTERM) once the record exists, the run is stored as ``interrupted`` and
    :class:`~auditlm.errors.RunInterrupted` is raised, as by :func:`execute`.
    """
    from auditlm import __version__

    run_id = new_run_id()
    store.create_run(run_id=run_id, model=config.model, model_info=target.info(), config=config.to_dict(),
                     seed=config.seed, auditlm_version=__version__, git_hash=git_hash())
    try:
        for pos, p in enumerate(prepared):
            store.upsert_suite(run_id, p.suite.spec.id, version=p.suite.spec.version, digest=p.digest,
                               position=pos, n_items=len(p.items), status="pending",
                               data_files=[r.to_dict() for r in p.data])
        for k, (sid, why) in enumerate(sorted((skipped or {}).items())):
            store.upsert_suite(run_id, sid, version="-", digest="-", position=len(prepared) + k, n_items=0,
                               status="skipped", detail=why)
    except BaseException as e:
        _stop(store, run_id, e)
        raise
    return run_id


def check_resumable(store: Store, run_id: str, prepared: list[PreparedSuite]) -> None:
    """A run can only be resumed with the same suite versions, probe files and data: a changed, added or
    removed file is a one-line :class:`StoreError` naming it (the stored items came from the old bytes).
    Reads the store only."""
    stored = {s["suite_id"]: s for s in store.run_suites(run_id)}
    for p in prepared:
        sid = p.suite.spec.id
        s = stored.get(sid)
        if s is None:
            raise StoreError(f"run {run_id} has no suite {sid}")
        if s["suite_version"] != p.suite.spec.version:
            raise StoreError(
                f"cannot resume run {run_id}: suite {sid} is now version {p.suite.spec.version}, "
                f"the run used {s['suite_version']}"
            )
        if s.get("data_files") is not None:
            change = first_change([DataRecord.from_dict(r) for r in s["data_files"]], p.data)
            if change is None and s["suite_digest"] != p.digest:
                change = f"its data (digest {s['suite_digest']} then, {p.digest} now)"
        elif s["suite_digest"] != p.suite.digest:  # a run stored before data files were recorded
            change = f"{p.suite.record().describe()} changed"
        else:
            change = None
        if change is not None:
            raise StoreError(f"cannot resume run {run_id}: suite {sid}: {change}; start a new run")


def execute(store: Store, run_id: str, target: Target, prepared: list[PreparedSuite], config: RunConfig,
            progress: ProgressFactory | None = None, reference: Target | None = None,
            pool: Any | None = None) -> RunResult:
    """Compute every pending item, aggregate each suite from the store, and mark the run complete.

    ``reference`` answers the requests a scorer addresses to ``"reference"`` (``--reference-model``).
    ``pool`` (a :class:`~auditlm.distributed.RayPool`) answers the pending chunks' requests on its replicas
    instead of ``target``; scoring and every store write stay in this process.

    The run's lease (:meth:`Store.acquire_lease`) is held throughout, so a second process executing the same
    run (two ``--resume``) is refused with a one-line :class:`StoreError` before it computes anything.
    Interrupted by Ctrl-C (:class:`KeyboardInterrupt`) or SIGTERM (:class:`~auditlm.errors.Terminated`, raised
    by the CLI's handler), the chunks already computed stay committed, the run is stored as ``interrupted`` and
    :class:`~auditlm.errors.RunInterrupted` (a :class:`KeyboardInterrupt` carrying the run id, the store path
    and the resume command) is raised; any other exception stores it as ``failed`` and propagates.
    """
    t0 = time.perf_counter()
    ctx = ScoreContext(store_raw=config.store_raw, key=store.hash_key, has_reference=reference is not None,
                       confidence=config.confidence, split_first_token=getattr(target, "split_first_token", None),
                       count_tokens=getattr(target, "count_tokens", None), max_length=_max_length(target))
    targets = {"main": target} | ({"reference": reference} if reference is not None else {})
    try:
        token = store.acquire_lease(run_id)
    except (KeyboardInterrupt, Terminated) as e:
        _stop(store, run_id, e)
        raise
    try:
        store.set_run_status(run_id, "running")
        for pos, p in enumerate(prepared):
            _run_suite(store, run_id, targets, p, pos, config, ctx, progress, token, pool)
        result = RunResult(run_id, store.metrics(run_id), store.run_suites(run_id))
        prev = store.get_run(run_id).duration_s or 0.0
        with _signals_deferred():  # marked complete, a run is never then marked interrupted
            store.set_run_status(run_id, "complete", duration_s=prev + time.perf_counter() - t0,
                                 model_info=target.info())
            store.release_lease(run_id, token)
    except LeaseLost:
        raise  # the run is another process's now: its record is theirs to write
    except BaseException as e:
        _stop(store, run_id, e, token)
        raise
    return result


def _max_length(target: Target) -> int | None:
    """The target's context length in tokens, when it says (a Hugging Face model does; the fake target does not)."""
    n = getattr(target, "max_length", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _signum(e: BaseException) -> int:
    return e.signum if isinstance(e, Terminated | RunInterrupted) else signal.SIGINT


def _stop(store: Store, run_id: str, e: BaseException, token: str | None = None) -> None:
    """Record why a run stopped (``interrupted`` for Ctrl-C / SIGTERM, else ``failed``) and give its lease
    back, with further signals held off so the record is written whole; an interruption is then re-raised as
    :class:`RunInterrupted` (from the original)."""
    interrupted = isinstance(e, KeyboardInterrupt | Terminated)
    with _signals_deferred():
        try:
            # an interruption's text is ours (no data in it): no PII scan to load while the process is stopping
            text = f"{type(e).__name__}: {e}"[:500] if interrupted else error_text(e)
            store.set_run_status(run_id, "interrupted" if interrupted else "failed", error=text)
        finally:
            if token is not None:
                with contextlib.suppress(Exception):
                    store.release_lease(run_id, token)
    if interrupted and not isinstance(e, RunInterrupted):
        raise RunInterrupted(run_id, str(store.path.absolute()), _signum(e)) from e


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off (in the main thread; elsewhere signals are not delivered anyway) while the
    block runs; one that arrives meanwhile is dropped, since the process is already stopping or finishing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def error_text(e: BaseException, limit: int = 500) -> str:
    """``Type: message`` of an exception as the store keeps it: the message goes through
    :func:`~auditlm.privacy.pii.redact_message` (a PII scan where Presidio loads, then every e-mail address and
    every run of 4+ digits masked), since messages quote the data that failed (a corpus line, a prompt)."""
    message = str(e)[: 4 * limit]
    if message:
        from auditlm.privacy.pii import redact_message, scrub_digits_and_emails

        try:
            message = redact_message(message)
        except Exception:  # already reporting a failure: store the pattern-scrubbed text instead
            message = scrub_digits_and_emails(message)
    return f"{type(e).__name__}: {message}"[:limit]


def generation_seed(run_seed: int, suite_id: str, item_id: str, request_index: int, sample: int) -> int:
    """The sampling seed of one generation request: a function of the run seed, the suite, the item, the
    request's index in the item's request list and its draw number (:attr:`Gen.sample`) only, so a draw is the
    same whatever the chunking, batching, order or resume."""
    return stable_seed(run_seed, "generate", suite_id, item_id, request_index, sample)


def answer(targets: dict[str, Target], reqs: list[list[Request]], params: GenerationParams | None,
            suite_id: str, item_ids: list[str]) -> list[list[Output]]:
    """Send each target its requests in one batched call per primitive; outputs in request order.

    Generation requests carry one seed each (:func:`generation_seed`, from ``params.seed``, the run seed).
    """
    outputs: list[list[Output | None]] = [[None] * len(rs) for rs in reqs]
    for name, target in targets.items():
        ll = [(i, j, r) for i, rs in enumerate(reqs) for j, r in enumerate(rs) if isinstance(r, LL) and r.target == name]
        gen = [(i, j, r) for i, rs in enumerate(reqs) for j, r in enumerate(rs) if isinstance(r, Gen) and r.target == name]
        if ll:
            for (i, j, _), o in zip(ll, target.loglikelihood([(r.context, r.continuation) for _, _, r in ll]), strict=True):
                outputs[i][j] = o
        if gen:
            if params is None:
                raise SuiteSpecError(f"suite {suite_id} generates text but has no generation section")
            seeds = [generation_seed(params.seed, suite_id, item_ids[i], j, r.sample) for i, j, r in gen]  # type: ignore[union-attr]
            texts = target.generate([r.prompt for _, _, r in gen], params, seeds=seeds)  # type: ignore[union-attr]
            for (i, j, _), o in zip(gen, texts, strict=True):
                outputs[i][j] = o
    missing = {r.target for rs, os_ in zip(reqs, outputs, strict=True) for r, o in zip(rs, os_, strict=True) if o is None}
    if missing:
        raise TargetError(f"suite {suite_id} needs a {'/'.join(sorted(missing))} model (pass --reference-model)")
    return outputs  # type: ignore[return-value]


def _run_suite(store: Store, run_id: str, targets: dict[str, Target], p: PreparedSuite, pos: int,
               config: RunConfig, ctx: ScoreContext, progress: ProgressFactory | None, token: str,
               pool: Any | None = None) -> None:
    spec = p.suite.spec
    scorer = get_scorer(spec)
    ctx = replace(ctx, data_dir=p.data_dir)
    scorer.context = ctx
    t0 = time.perf_counter()
    done = store.item_ids(run_id, spec.id)
    # Matched by the id the store keeps (a keyed token for ids derived from private data), not the loaded one.
    sids = scorer.stored_ids([it for _, it in p.items])
    ids = [(i, it, sid) for (i, it), sid in zip(p.items, sids, strict=True)]
    chunks = [ids[i : i + config.chunk_size] for i in range(0, len(ids), config.chunk_size)]
    pending = [c for c in chunks if any(sid not in done for _, _, sid in c)]
    advance = progress(spec.id, len(p.items)) if progress else None
    if advance:
        advance(len(p.items) - sum(len(c) for c in pending))
    params = spec.generation.params(config.seed) if spec.generation else None
    todo = [[(i, it, sid) for i, it, sid in chunk if sid not in done] for chunk in pending]
    # one chunk's work, built when it is sent: (key, requests, params, suite, item ids)
    work = ((k, [scorer.requests(it) for _, it, _ in chunk], params, spec.id, [it["id"] for _, it, _ in chunk])
            for k, chunk in enumerate(todo))
    if pool is None:
        answered: Iterator[tuple[int, list[list[Output]]]] = ((k, answer(targets, *rest)) for k, *rest in work)
    else:  # the replicas answer; this process scores and writes each chunk once, in the order they finish
        answered = pool.answer_chunks(work)
    for k, outputs in answered:
        chunk = todo[k]
        items = [it for _, it, _ in chunk]
        scored = scorer.score_batch(items, outputs, ctx)
        store.write_items(run_id, spec.id, [(sid, i, scorer.stored_input(it), s.output, s.score)
                                            for (i, it, sid), s in zip(chunk, scored, strict=True)],
                          lease=token)
        if advance:
            advance(len(chunk))
    records = store.items(run_id, spec.id)
    metrics = scorer.aggregate(records, seed=config.seed) if records else []
    store.replace_metrics(run_id, spec.id, metrics)
    prev = next((s["duration_s"] for s in store.run_suites(run_id) if s["suite_id"] == spec.id), None) or 0.0
    store.upsert_suite(run_id, spec.id, version=spec.version, digest=p.digest, position=pos,
                       n_items=len(p.items), status="complete", duration_s=prev + time.perf_counter() - t0)
