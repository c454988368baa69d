"""Utility scorers: how well the model still models ordinary text (for comparing a model before and after a
mitigation, next to the bias and privacy numbers)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from auditlm import stats
from auditlm.errors import DataError
from auditlm.metrics import MetricResult, metric_row, stable_seed
from auditlm.scorers import (
    LL,
    ItemRecord,
    Linear,
    Output,
    RowStatistic,
    ScoreContext,
    ScoredItem,
    Scorer,
    register_scorer,
)

#: The window when neither the target nor the suite names one: lm-evaluation-harness's fallback context length.
FALLBACK_WINDOW = 2048
#: Where a text may be cut into pieces that a byte-level BPE (GPT-2's pre-tokeniser regex, SentencePiece's
#: whitespace split) tokenises the same whole or apart: before a space that follows a non-space character.
_CUT = re.compile(r"(?<=\S)(?= )")


def text_pieces(text: str) -> list[str]:
    """``text`` cut before every space that follows a non-space character (``"".join`` gives it back).

    A byte-level BPE tokeniser never merges across such a cut (its pre-tokeniser starts a word at the space), so a
    window of whole pieces scored after a context of whole pieces is tokenised as the whole text is.
    """
    cuts = [m.start() for m in _CUT.finditer(text)]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if b > a]


def split_long_pieces(pieces: Sequence[str], counts: Sequence[int], window: int,
                      count: Callable[[Sequence[str]], list[int]]) -> tuple[list[str], list[int]]:
    """``pieces`` with each one of more than ``window`` tokens (a long run of text without spaces) cut into
    character chunks of at most ``window`` tokens each, so that no window outgrows the model; with their counts."""
    out_p: list[str] = []
    out_c: list[int] = []
    for p, c in zip(pieces, counts, strict=True):
        if c <= window or len(p) < 2:
            out_p.append(p)
            out_c.append(c)
            continue
        step = max(1, len(p) * window // (2 * c))
        parts = [p[i : i + step] for i in range(0, len(p), step)]
        sub_p, sub_c = split_long_pieces(parts, count(parts), window, count)
        out_p += sub_p
        out_c += sub_c
    return out_p, out_c


def rolling_windows(counts: Sequence[int], window: int) -> list[tuple[int, int, int]]:
    """Disjoint windows over pieces with ``counts`` tokens each, as ``(context_start, start, end)`` piece indices.

    The pieces ``start:end`` of a window hold at most ``window`` tokens (a single piece holding more is a window of
    its own) and the windows cover every piece exactly once, in order. The first window has no context (it is
    conditioned on the start token); a later window of ``L`` tokens is conditioned on the pieces before it that hold
    at least ``window − L + 1`` tokens (whole pieces, so rounded up to the next piece; the document's start where it
    holds fewer). This is lm-evaluation-harness's ``get_rolling_token_windows(…, context_len=1)`` followed by
    ``make_disjoint_window``, on piece boundaries instead of token boundaries.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 token, not {window}")
    out: list[tuple[int, int, int]] = []
    start, n = 0, len(counts)
    while start < n:
        end, total = start + 1, counts[start]
        while end < n and total + counts[end] <= window:
            total += counts[end]
            end += 1
        ctx, budget, have = start, max(1, window - total + 1), 0
        if start > 0:
            while ctx > 0 and have < budget:
                ctx -= 1
                have += counts[ctx]
        out.append((ctx, start, end))
        start = end
    return out


class PerplexityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The longest window in tokens; the window is the model's context length (lm-eval's ``max_length``) capped at
    #: this. ``null``: no cap (lm-eval's windows). The cap bounds the cost of a forward pass on a CPU.
    max_window: int | None = Field(1024, ge=2, le=1_000_000)


@register_scorer("perplexity")
class PerplexityScorer(Scorer):
    """Token-level perplexity of documents, as lm-evaluation-harness's (Gao et al.) ``wikitext`` task (v0.4,
    ``output_type: loglikelihood_rolling``) scores WikiText-2 (Merity, Xiong, Bradbury, Socher. *Pointer Sentinel
    Mixture Models*. ICLR 2017; arXiv:1609.07843, 2016).

    Each document is scored whole by its rolling log-likelihood: disjoint windows of at most ``W`` tokens, the
    first conditioned on the tokenizer's start token (BOS, else EOS), each later one on the tokens just before it
    so that window and context together fill ``W + 1`` tokens (lm-eval's ``get_rolling_token_windows`` with
    ``context_len=1`` and ``make_disjoint_window``; :func:`rolling_windows`). ``W`` is the model's context length
    (lm-eval's ``max_length``) capped at ``options.max_window``. Every window is a plain log-likelihood request
    ``(context, window)`` on the text: windows and contexts are cut at word starts (:func:`text_pieces`), where the
    tokenizer splits the same way whole or apart, and sized with the target's ``count_tokens``; each token of the
    document is scored exactly once. A target without a tokenizer (the fake target) counts words as tokens.

    Per document the store keeps the summed log-likelihood ``ll`` (nats), the tokens scored, the tokenizer's count
    of the whole text (``doc_tokens``; the rows carry a note when any document scored a different number, as a
    tokenizer that merges across word starts would make it), and lm-eval's word and byte counts of the document
    before detokenising. Metrics over documents (lm-eval's
    ``weighted_perplexity`` and ``bits_per_byte`` aggregations; lower is better, no ideal value):

    - ``token_perplexity`` = ``exp(−Σ ll / Σ tokens)`` (lm-eval reports no token-level number for ``wikitext``);
    - ``word_perplexity`` = ``exp(−Σ ll / Σ words)``; ``byte_perplexity`` = ``exp(−Σ ll / Σ bytes)``;
    - ``bits_per_byte`` = ``−Σ ll / Σ bytes / ln 2``.

    Intervals: the studentized bootstrap over documents of the ratio of sums ``Σ ll / Σ denominator``
    (:func:`auditlm.stats.mean` with weights; Student's t below 5 documents), mapped through the metric's monotone
    transform (``exp(−r)``, ``−r / ln 2``) endpoint by endpoint. ``n`` is the number of documents.

    Deviations from lm-eval's ``wikitext`` (checked on WikiText-2 test article 41, 2,873 SmolLM2 tokens: as one
    window auditlm's log-likelihood equals lm-eval 0.4.13's ``loglikelihood_rolling`` to 1e-4 nats):

    - the window is capped at ``max_window`` (default 1024 tokens; lm-eval uses the model's whole context, 8192 for
      SmolLM2), so later windows see less context and perplexity is higher (article 41: 13.10 at 1024, 11.41 whole);
    - windows end at word starts, so they are up to a word shorter than ``W`` and their contexts up to a word longer
      than ``W − L + 1`` tokens (article 41 at 1024: 13.10 against lm-eval's 13.20 with ``max_length=1024``); a run of
      text without spaces of more than ``W`` tokens is cut into character chunks (:func:`split_long_pieces`);
    - a later window's context is text the target re-tokenises, so a tokenizer that adds a BOS token puts one before
      each window's context (lm-eval's token windows carry none); SmolLM2's adds none;
    - the scored tokens are the text's own, without special tokens: lm-eval 0.4.13 with ``add_bos_token`` unset
      encodes the document with them, so for a BOS-adding tokenizer it also scores that BOS; auditlm matches lm-eval
      run with ``add_bos_token=False``;
    - the bundled WikiText-2 file is the tokenised release (``<unk>`` for rare words), not the ``wikitext-2-raw-v1``
      text lm-eval reads, so numbers are not comparable with published ones.
    """

    Options = PerplexityOptions
    item_schema: ClassVar[dict[str, str]] = {"title": "str", "text": "text", "words": "int", "bytes": "int"}
    metrics = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")

    def group_values(self, items: list[dict[str, Any]]) -> dict[str, set[str]] | None:
        return {}

    def check_items(self, items: list[dict[str, Any]]) -> None:
        for it in items:
            bad = [f for f in ("words", "bytes") if it[f] < 1]
            if bad:
                raise DataError(f"suite {self.spec.id}: item {it['id']!r}: {bad[0]} must be at least 1, "
                                f"got {it[bad[0]]}")

    # ------------------------------------------------------------------------------------------- requests

    def window(self) -> int:
        """The window in tokens: the target's context length capped at ``options.max_window``."""
        known = [w for w in (self.context.max_length, self.options.max_window) if w is not None]
        return min(known) if known else FALLBACK_WINDOW

    def _counter(self) -> Callable[[Sequence[str]], list[int]]:
        count = self.context.count_tokens
        if count is not None:
            return count
        return lambda texts: [len(t.split()) for t in texts]

    def requests(self, item: dict[str, Any]) -> list[LL]:
        count, window = self._counter(), self.window()
        pieces = text_pieces(item["text"])
        pieces, counts = split_long_pieces(pieces, count(pieces), window, count)
        return [LL("".join(pieces[c:a]), "".join(pieces[a:b])) for c, a, b in rolling_windows(counts, window)]

    def score_batch(self, items: list[dict[str, Any]], outputs: list[list[Output]],
                    ctx: ScoreContext) -> list[ScoredItem]:
        out = []
        for it, outs in zip(items, outputs, strict=True):
            windows = [(float(o.logprob), int(o.n_tokens)) for o in outs]  # type: ignore[union-attr]
            score: dict[str, Any] = {
                "ll": math.fsum(lp for lp, _ in windows),
                "tokens": sum(n for _, n in windows),
                "words": int(it["words"]),
                "bytes": int(it["bytes"]),
                "windows": len(windows),
                "window": self.window(),
            }
            if ctx.count_tokens is not None:
                score["doc_tokens"] = int(ctx.count_tokens([it["text"]])[0])
            out.append(ScoredItem([[lp, n] for lp, n in windows], score))
        return out

    # ------------------------------------------------------------------------------------------- aggregate

    def _ratio(self, records: list[ItemRecord], denom: str, seed: int, metric: str) -> stats.Estimate:
        """``Σ ll / Σ denom`` over documents with its interval (bootstrap over documents)."""
        ll = np.array([r.score["ll"] for r in records], dtype=float)
        d = np.array([r.score[denom] for r in records], dtype=float)
        rng = np.random.default_rng(stable_seed(seed, self.spec.id, metric))
        return stats.mean(ll / d, weights=d, clusters=self.clusters(records), unit=self.unit,
                          confidence=self.confidence, n_resamples=self.n_boot, random_state=rng)

    statistic_metrics = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
    ratio_metrics = ("token_perplexity", "word_perplexity", "byte_perplexity")
    _DENOMINATOR: ClassVar[dict[str, str]] = {"token_perplexity": "tokens", "word_perplexity": "words",
                                              "byte_perplexity": "bytes", "bits_per_byte": "bytes"}

    def row_statistic(self, records: list[ItemRecord], metric: str, group_field: str | None,
                      group: str | None) -> RowStatistic | None:
        """Every metric is a transform of the ratio of sums ``Σ ll / Σ denominator`` over the documents that scored
        tokens: ``exp(−r)`` for the perplexities, ``−r / ln 2`` for bits per byte (:class:`~auditlm.scorers.Linear`
        on the columns ``ll`` and the denominator). Units: documents (or ``metrics.resample_by``)."""
        if metric not in self._DENOMINATOR or group_field is not None or group is not None:
            return None
        denom = self._DENOMINATOR[metric]
        mask = np.array([r.score.get("tokens", 0) > 0 for r in records], dtype=bool)
        ll = np.array([r.score["ll"] if m else 0.0 for r, m in zip(records, mask, strict=True)], dtype=float)
        d = np.array([r.score[denom] if m else 0.0 for r, m in zip(records, mask, strict=True)], dtype=float)
        lin = Linear(0, 1, scale=-1.0, exp=True) if metric != "bits_per_byte" else Linear(0, 1, scale=-1 / math.log(2))
        return RowStatistic(np.column_stack([ll, d]), mask, lin.function(), self.clusters(records),
                            self.unit or "item", lin)

    def aggregate(self, records: list[ItemRecord], *, seed: int) -> list[MetricResult]:
        usable = [r for r in records if r.score.get("tokens", 0) > 0]
        sid = self.spec.id
        totals = {k: int(sum(r.score[k] for r in usable)) for k in ("tokens", "words", "bytes")}
        base: dict[str, Any] = {"ideal": None, "better": "lower", "window": records[0].score.get("window"),
                                "windows": int(sum(r.score.get("windows", 0) for r in usable)), **totals}
        notes = []
        if len(usable) < len(records):
            notes.append(f"{len(records) - len(usable)} document(s) scored no tokens and are left out")
        off = [r.item_id for r in usable if "doc_tokens" in r.score and r.score["doc_tokens"] != r.score["tokens"]]
        if off:
            notes.append(f"{len(off)} document(s) scored a different number of tokens than the tokenizer gives the "
                         f"whole text (first: {off[0]})")
        if notes:
            base["note"] = "; ".join(notes)

        def exp_neg(e: stats.Estimate) -> stats.Estimate:
            return dataclasses.replace(e, value=math.exp(-e.value), low=math.exp(-e.high), high=math.exp(-e.low))

        def bits(e: stats.Estimate) -> stats.Estimate:
            return dataclasses.replace(e, value=-e.value / math.log(2), low=-e.high / math.log(2),
                                       high=-e.low / math.log(2))

        by_token = self._ratio(usable, "tokens", seed, "token_perplexity")
        by_word = self._ratio(usable, "words", seed, "word_perplexity")
        by_byte = self._ratio(usable, "bytes", seed, "byte_perplexity")
        rows = [("token_perplexity", exp_neg(by_token), {"per": "token", "ll_per_token": by_token.value}),
                ("word_perplexity", exp_neg(by_word), {"per": "word (before detokenising)"}),
                ("byte_perplexity", exp_neg(by_byte), {"per": "UTF-8 byte (before detokenising)"}),
                ("bits_per_byte", bits(by_byte), {"per": "UTF-8 byte (before detokenising)", "unit": "bits"})]
        return [metric_row(e, suite=sid, metric=m, extra={**base, **ex}) for m, e, ex in rows]
