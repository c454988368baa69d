"""Scorers: one per suite ``kind``. A scorer turns an item into model requests, scores the outputs, and
aggregates stored item scores into :class:`~auditlm.metrics.MetricResult` rows.

Scorers register themselves with :func:`register_scorer`; the probe loader validates a suite's ``kind``
against this registry, so there is no second list to keep in sync.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from auditlm.errors import DataError, StoreError, SuiteSpecError, choices
from auditlm.metrics import MetricResult
from auditlm.suites.provenance import DataRecord
from auditlm.suites.spec import SuiteSpec
from auditlm.targets.base import LoglikelihoodResult

_SCORERS: dict[str, type[Scorer]] = {}
_MODULES = (
    "auditlm.scorers.bias",
    "auditlm.scorers.generation",
    "auditlm.scorers.privacy",
    "auditlm.scorers.training_data_leakage",
    "auditlm.scorers.canary_exposure",
    "auditlm.scorers.membership_inference",
    "auditlm.scorers.utility",
)


@dataclass(frozen=True)
class LL:
    """A log-likelihood request: score ``continuation`` after ``context``.

    ``target`` is ``"main"`` (the audited model) or ``"reference"`` (``--reference-model``, for attacks and
    calibrations that compare against a base model).
    """

    context: str
    continuation: str
    target: str = "main"


@dataclass(frozen=True)
class Gen:
    """A generation request (parameters come from the suite's ``generation`` section).

    ``sample`` numbers independent draws for the same prompt, so a scorer can ask for several samples of one
    prompt. Each request is sampled with its own seed, derived from the run seed, the suite id, the item id,
    the request's index in the item's request list and ``sample`` (:func:`auditlm.runner.generation_seed`).
    """

    prompt: str
    target: str = "main"
    sample: int = 0


Request = LL | Gen
Output = LoglikelihoodResult | str


@dataclass(frozen=True)
class ScoreContext:
    """Run-level settings a scorer may need: whether raw PII may be stored, the store's hash key, the run's
    confidence level, the benchmark data folder (``--data-dir`` / ``AUDITLM_DATA``) for files a scorer reads
    itself, and the main target's ``split_first_token``, ``count_tokens`` and ``max_length`` (see
    :class:`~auditlm.targets.base.Target`) when it has them.

    ``key`` returns the store's HMAC key (:meth:`auditlm.store.Store.hash_key`); it is called only when a
    scorer hashes, so a run that hashes nothing never needs the key file.
    """

    store_raw: bool = False
    key: Callable[[], bytes] | None = None
    has_reference: bool = False
    #: The run's ``--confidence``; None means each suite's ``metrics.confidence``.
    confidence: float | None = None
    data_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    split_first_token: Callable[[str], tuple[str, str]] | None = None
    #: ``count_tokens(texts)``: how many tokens the main target's tokenizer makes of each text (no special tokens).
    count_tokens: Callable[[Sequence[str]], list[int]] | None = None
    #: The main target's context length in tokens (lm-evaluation-harness's ``max_length``).
    max_length: int | None = None

    def hash(self, value: str, entity_type: str) -> str:
        """:func:`~auditlm.privacy.pii.keyed_hash` of a PII value under the store's key."""
        from auditlm.privacy.pii import keyed_hash

        return keyed_hash(value, entity_type, self._key())

    def token(self, value: str, label: str) -> str:
        """:func:`~auditlm.privacy.pii.keyed_token` of ``value`` as given (an item id, say) under the store's key."""
        from auditlm.privacy.pii import keyed_token

        return keyed_token(value, label, self._key())

    def _key(self) -> bytes:
        if self.key is None:
            raise StoreError("hashing needs the run store's key, and this score context has none")
        return self.key()


@dataclass(frozen=True)
class ScoredItem:
    """What the store keeps for one item: the model ``output`` (already redacted where needed) and the
    item's ``score`` (a JSON-able dict the aggregate reads)."""

    output: Any
    score: dict[str, Any]


@dataclass(frozen=True)
class ItemRecord:
    """One stored item, as read back from the store for aggregation."""

    item_id: str
    input: dict[str, Any]
    output: Any
    score: dict[str, Any]


@dataclass(frozen=True)
class Linear:
    """A row statistic that is ``scale · L`` (``exp(scale · L)`` with ``exp``) of a linear statistic ``L`` of the
    per-unit sums ``S``: the ratio of sums ``Σ_u S[u, num] / Σ_u S[u, den]``, or with ``macro`` the mean over
    units of ``S[u, num] / S[u, den]`` (StereoSet's per-target average)."""

    num: int
    den: int
    macro: bool = False
    scale: float = 1.0
    exp: bool = False

    def function(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``f(S, w)`` of :class:`RowStatistic` for this form."""

        def f(s: np.ndarray, w: np.ndarray) -> np.ndarray:
            if self.macro:
                v = s[:, self.num] / s[:, self.den]
                lin = (w @ v) / w.sum(axis=1)
            else:
                t = w @ s
                lin = t[:, self.num] / t[:, self.den]
            return np.exp(self.scale * lin) if self.exp else self.scale * lin

        return f


@dataclass(frozen=True)
class RowStatistic:
    """A metric row that is not a mean of one value per item, described for ``auditlm compare`` to pair two runs
    on it (:meth:`Scorer.row_statistic`).

    ``columns`` (records × k) are each record's contributions and ``mask`` says which records the row covers;
    ``clusters`` is each record's resampling unit (None: the record itself), named ``unit``. The metric is
    ``function(S, w)``: ``S`` the per-unit sums of the covered records' columns (units × k), ``w`` multiplicities
    of the units (resamples × units), one value per resample (``w`` all ones gives the metric). ``linear``, when
    set, says the metric is a scale (or ``exp``) of a linear statistic, so the paired change gets the suite's own
    interval for a mean; ``function`` must agree with it."""

    columns: np.ndarray
    mask: np.ndarray
    function: Callable[[np.ndarray, np.ndarray], np.ndarray]
    clusters: list[str] | None
    unit: str
    linear: Linear | None = None


#: Item field types of :attr:`Scorer.item_schema`: ``text`` — a string with something besides whitespace (a
#: prompt, a sentence the model reads); ``str`` — any string; ``int`` — an integer (not a bool); ``bool``;
#: ``list``; ``dict``. No string in an item may hold a NUL byte.
FIELD_TYPES = ("text", "str", "int", "bool", "list", "dict")


def _got(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def field_problem(value: Any, want: str) -> str | None:
    """Why ``value`` is not of item field type ``want`` (None when it is)."""
    if want in ("text", "str"):
        if not isinstance(value, str):
            return f"must be a string, got {_got(value)}"
        if want == "text" and not value.strip():
            return "is empty" if not value else "is only whitespace"
        return None
    ok = {"int": isinstance(value, int) and not isinstance(value, bool), "bool": isinstance(value, bool),
          "list": isinstance(value, list), "dict": isinstance(value, dict)}[want]
    return None if ok else f"must be {'an' if want == 'int' else 'a'} {want}, got {_got(value)}"


def _nul_field(value: Any, path: str, depth: int = 0) -> str | None:
    """The field path of the first string holding a NUL byte inside ``value`` (None when none does)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if depth > 4:
        return None
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _nul_field(v, f"{path}.{k}", depth + 1))), None)
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _nul_field(v, f"{path}[{i}]", depth + 1))), None)
    return None


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scorer:
    """Base class. Subclasses set ``kind`` (and ``Options``, a pydantic model for ``spec.options``) and
    implement :meth:`requests`, :meth:`score_batch` and :meth:`aggregate`."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: Whether the suite needs a ``generation`` section.
    generates: ClassVar[bool] = False
    #: Whether the suite needs ``--reference-model`` (if False, reference requests are optional extras).
    needs_reference: ClassVar[bool] = False
    #: The fields every item must carry and their types (see :data:`FIELD_TYPES`), checked by
    #: :meth:`check_schema` in ``runner.prepare`` before anything is stored or the model loads.
    item_schema: ClassVar[dict[str, str]] = {}

    def __init__(self, spec: SuiteSpec) -> None:
        self.spec = spec
        #: Run-level settings; the runner sets it before asking for requests.
        self.context = ScoreContext()
        try:
            self.options = self.Options.model_validate(spec.options)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown option (valid: {choices(self.Options.model_fields)})"
            raise SuiteSpecError(f"suite {spec.id}: options.{loc}: {msg}") from e
        if self.generates and spec.generation is None:
            raise SuiteSpecError(f"suite {spec.id}: kind '{self.kind}' needs a generation section")

    #: Every metric name :meth:`aggregate` can emit (``--fail-on`` gates are checked against it before the
    #: model loads; :meth:`metric_names` adds names that depend on the options).
    metrics: ClassVar[tuple[str, ...]] = ()

    def metric_names(self) -> frozenset[str]:
        """Every metric name :meth:`aggregate` can emit for this suite, its options included. A ``--fail-on``
        gate naming any other metric is refused before the model loads."""
        return frozenset(self.metrics)

    #: The metrics of :meth:`metric_names` reported only per group (no overall row): a gate on one names a group.
    group_only_metrics: ClassVar[tuple[str, ...]] = ()

    def group_only(self) -> frozenset[str]:
        """The metrics :meth:`aggregate` reports only per group (see :attr:`group_only_metrics`)."""
        return frozenset(self.group_only_metrics)

    def group_values(self, items: list[dict[str, Any]]) -> dict[str, set[str]] | None:
        """``{group_field: group values}`` a metric row of this suite can carry, known from the prepared
        ``items`` (and the options) before anything runs; ``{}`` when the suite reports no groups, ``None`` when
        they are not known in advance (gates naming a group are then checked only after the run)."""
        return None

    def requests(self, item: dict[str, Any]) -> list[Request]:
        raise NotImplementedError

    def stored_input(self, item: dict[str, Any]) -> dict[str, Any]:
        """What the store keeps of an item's input. Privacy scorers override this to redact PII (raw values
        only with ``self.context.store_raw``); :meth:`aggregate` must need no more than this."""
        return item

    def stored_ids(self, items: list[dict[str, Any]]) -> list[str]:
        """The ids the store keeps for ``items`` (and ``--resume`` matches on), one per item, distinct when the
        items' ids are. Scorers whose ids come from private data (a hash of a training text, say) return a
        keyed token of the id instead, so nothing that can be inverted is stored."""
        return [it["id"] for it in items]

    def score_batch(
        self, items: list[dict[str, Any]], outputs: list[list[Output]], ctx: ScoreContext
    ) -> list[ScoredItem]:
        raise NotImplementedError

    def aggregate(self, records: list[ItemRecord], *, seed: int) -> list[MetricResult]:
        raise NotImplementedError

    def item_values(self, records: list[ItemRecord]) -> dict[str, np.ndarray] | None:
        """Per-record values whose mean over ``records`` is the overall metric of that name, for the metrics of
        :meth:`aggregate` that are a mean (or rate) of one value per item; ``auditlm compare`` pairs two runs
        item by item on them. ``NaN`` marks a record the metric leaves out (BBQ's ``accuracy_amb`` skips the
        disambiguated items). A group row of the same metric is the mean over the records whose input field
        ``group_field`` holds the group. Called with no records it returns the names it covers (empty arrays).
        None (the default): no metric of the suite has per-item values, and runs are compared without pairing."""
        return None

    #: Metrics :meth:`row_statistic` describes (pairable by ``auditlm compare`` without per-item values).
    statistic_metrics: ClassVar[tuple[str, ...]] = ()
    #: Metrics of :attr:`statistic_metrics` without an ideal whose change is reported as a ratio ``B / A`` (positive
    #: values where lower is better, perplexities); a ``--fail-on-regression`` gate on one bounds ``B / A − 1``.
    ratio_metrics: ClassVar[tuple[str, ...]] = ()

    def row_statistic(self, records: list[ItemRecord], metric: str, group_field: str | None,
                      group: str | None) -> RowStatistic | None:
        """The metric row ``metric`` (overall, or the ``group_field`` = ``group`` row) of :meth:`aggregate` as a
        function of per-unit sums of per-record columns (:class:`RowStatistic`), for the metrics of
        :attr:`statistic_metrics` that are not a mean of one value per item (a ratio of sums, a function of
        several means, a max − min over groups). None for a row it does not describe (the default)."""
        return None

    def check(self) -> None:
        """Extra validation of the suite against this scorer (called by the loader's contract test)."""

    def check_schema(self, items: list[dict[str, Any]]) -> None:
        """Check every item against :attr:`item_schema` (and every string in it for NUL bytes): a missing field,
        a field of the wrong type, an empty or whitespace-only text is a one-line
        :class:`~auditlm.errors.DataError` naming the suite, the item (index and id) and the field."""
        sid = self.spec.id
        for i, it in enumerate(items):
            where = f"suite {sid}: item {i} (id {str(it.get('id', i))!r})"
            for name, want in self.item_schema.items():
                if name not in it:
                    fields = ", ".join(sorted(k for k in it if k != "id")) or "none"
                    raise DataError(f"{where} has no field '{name}' (kind {self.kind} needs "
                                    f"{', '.join(self.item_schema)}; the item has {fields})")
                problem = field_problem(it[name], want)
                if problem is not None:
                    raise DataError(f"{where}: field '{name}' {problem}")
            for name, value in it.items():
                bad = _nul_field(value, str(name))
                if bad is not None:
                    raise DataError(f"{where}: field '{bad}' contains a NUL byte (\\x00); fix the data")

    def check_items(self, items: list[dict[str, Any]]) -> None:
        """Validate the loaded items before anything is stored or the model loads (``runner.prepare``); raise a
        :class:`~auditlm.errors.DataError` naming the problem."""

    # --- statistics settings every aggregate uses -------------------------------------------------------------

    @property
    def confidence(self) -> float:
        """The confidence level of every interval: the run's ``--confidence``, else the suite's."""
        return self.context.confidence or self.spec.metrics.confidence

    @property
    def n_boot(self) -> int:
        return self.spec.metrics.bootstrap

    @property
    def unit(self) -> str | None:
        """The suite's resampling unit (``metrics.resample_by``), or None for independent items."""
        return self.spec.metrics.resample_by

    def clusters(self, records: list[ItemRecord]) -> list[str] | None:
        """Each record's resampling unit (the value of its ``metrics.resample_by`` field), or None."""
        f = self.unit
        return None if f is None else [str(r.input[f]) for r in records]

    def stat_kw(self, seed: int) -> dict[str, Any]:
        """Keyword arguments for :func:`auditlm.metrics.summarize`: confidence, resamples, seed and unit name."""
        return {"confidence": self.confidence, "n_boot": self.n_boot, "random_state": seed, "unit": self.unit}

    def resources(self, data_dir: Path | None) -> list[DataRecord]:
        """Files the scorer itself reads that shape its scores (e.g. a lexicon), recorded with the run next to
        the suite's data files; none by default. Called after :meth:`check`."""
        return []

    def missing_data(self, data_dir: Path | None) -> str | None:
        """Why the suite cannot run with ``data_dir``, for a file the scorer reads itself beyond the suite's
        ``data`` section (HONEST's lexicon), or None when nothing is missing. The reason is a short sentence:
        the CLI records it as the ``detail`` of a skipped suite, or raises it for a suite named by id."""
        return None


def register_scorer(kind: str):
    """Class decorator: make a scorer available to probe files as ``kind: <kind>``."""

    def deco(cls: type[Scorer]) -> type[Scorer]:
        if kind in _SCORERS and _SCORERS[kind] is not cls:
            raise ValueError(f"scorer kind '{kind}' registered twice")
        cls.kind = kind
        _SCORERS[kind] = cls
        return cls

    return deco


def _load_builtin() -> None:
    for m in _MODULES:
        importlib.import_module(m)


def scorer_kinds() -> list[str]:
    """Every registered scorer kind."""
    _load_builtin()
    return sorted(_SCORERS)


def get_scorer(spec: SuiteSpec) -> Scorer:
    """Instantiate the scorer for a suite (validating its options)."""
    _load_builtin()
    if spec.kind not in _SCORERS:
        raise SuiteSpecError(f"suite {spec.id}: unknown kind '{spec.kind}' (valid: {choices(_SCORERS)})")
    return _SCORERS[spec.kind](spec)
