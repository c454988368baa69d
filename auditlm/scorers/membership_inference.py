"""``privacy.membership_inference``: loss (Yeom et al. 2018), zlib-ratio (Carlini et al. 2021, "Extracting Training
Data from Large Language Models", USENIX Security), Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data
from Large Language Models", ICLR) and reference-calibrated loss attacks; ROC AUC and TPR at a low FPR."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from auditlm import stats
from auditlm.errors import DataError
from auditlm.metrics import MetricResult, metric_row, stable_seed
from auditlm.scorers import LL, ItemRecord, Request, ScoreContext, ScoredItem, Scorer, register_scorer
from auditlm.targets.base import LoglikelihoodResult

_WORD = re.compile(r"\S+")


def mean_nll(result: LoglikelihoodResult) -> float:
    """Mean negative log-likelihood per token (nats): the *loss* attack's signal (Yeom et al. 2018)."""
    return -result.logprob / max(result.n_tokens, 1)


def zlib_entropy(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (default level), Carlini et al. 2021's zlib entropy."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(loss: float, text: str) -> float:
    """Loss over zlib entropy (Carlini et al. 2021, §5.2): low when the model finds a text far more
    predictable than a generic compressor does."""
    return loss / zlib_entropy(text)


def min_k_prob(token_logprobs: Sequence[float], k: float = 0.2) -> float:
    """Min-K% Prob (Shi et al. 2024): the mean log-probability of the ``k`` share of tokens with the lowest
    log-probability (at least one token). Higher means more likely a training member."""
    x = np.sort(np.asarray(token_logprobs, dtype=float))
    if x.size == 0:
        raise ValueError("min_k_prob needs at least one token")
    n = max(1, math.floor(x.size * k))
    return float(x[:n].mean())


def word_requests(text: str) -> list[tuple[str, str]]:
    """``(context, continuation)`` pairs that split ``text`` into its whitespace-separated words: word ``i``
    (with the whitespace before it) given everything before it. Their log-likelihoods sum to the text's for
    tokenizers that keep a word's leading space with the word (BPE and SentencePiece both do)."""
    out, prev = [], 0
    for m in _WORD.finditer(text):
        out.append((text[:prev], text[prev : m.end()]))
        prev = m.end()
    return out


def word_token_logprobs(results: Sequence[LoglikelihoodResult]) -> list[float]:
    """Per-token log-probabilities approximated from per-word results: each of a word's tokens gets the
    word's mean. Exact for single-token words; for Min-K% it ranks words by their mean token probability."""
    out: list[float] = []
    for r in results:
        if r.n_tokens:
            out.extend([r.logprob / r.n_tokens] * r.n_tokens)
    return out


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC of ``scores`` (higher = member) for binary ``labels`` (``sklearn.metrics.roc_auc_score``)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)))


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[bool], fpr: float = 0.01) -> float:
    """The highest true-positive rate of any threshold whose false-positive rate is at most ``fpr``
    (``sklearn.metrics.roc_curve``), the low-FPR operating point of Carlini et al. 2022 ("Membership
    Inference Attacks From First Principles", IEEE S&P)."""
    from sklearn.metrics import roc_curve

    # Every threshold: dropping "intermediate" points can drop the best one under the FPR bound.
    f, t, _ = roc_curve(
        np.asarray(labels, dtype=int), np.asarray(scores, dtype=float), drop_intermediate=False
    )
    return float(t[f <= fpr + 1e-12].max())


class MembershipOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Min-K% Prob's k, in percent of the tokens (Shi et al. 2024 use 20).
    k_percent: float = Field(20.0, gt=0.0, le=100.0)
    #: The false-positive rate of the reported TPR operating point.
    fpr: float = Field(0.01, gt=0.0, lt=1.0)


#: Membership scores (higher = more likely a member) computed from an item's stored score.
_MIA_SIGNALS = {
    "loss": lambda s: -s["loss"],
    "zlib": lambda s: -s["loss"] / s["zlib_bytes"],
    "min_k": lambda s: s["min_k"],
    "reference": lambda s: s["reference_loss"] - s["loss"],
}


def _fpr_name(fpr: float) -> str:
    return f"tpr_at_{fpr * 100:g}pct_fpr".replace(".", "p")


@register_scorer("membership_inference")
class MembershipInferenceScorer(Scorer):
    """Membership inference on known members (training texts) and non-members.

    Per text: the **loss** (mean token NLL; Yeom et al. 2018), the **zlib** ratio of loss to zlib entropy
    (Carlini et al. 2021), **Min-K% Prob** (Shi et al. 2024; mean log-probability of the ``k_percent`` least
    likely tokens) and, with ``--reference-model``, the **reference**-calibrated loss (loss minus the base
    model's loss; Carlini et al. 2021). For each: ``<signal>_auc`` (ROC AUC, sklearn) and
    ``<signal>_tpr_at_1pct_fpr``; AUC intervals by Newcombe's method 5 (:func:`auditlm.stats.auc`), TPR
    intervals as :func:`auditlm.stats.tpr_at_fpr` (with fewer than ``1/fpr`` non-members the row is TPR at 0%
    FPR and says so in ``extra.note``).

    Min-K% needs per-token log-probabilities, which the Target protocol's ``loglikelihood`` does not return
    (only their sum). The scorer therefore asks for each whitespace-separated word given the text before it
    (:func:`word_requests`; one forward pass per text on an HF target, whose token-tree batching shares the
    common prefixes) and gives each token its word's mean log-probability (:func:`word_token_logprobs`) —
    the paper's statistic exactly when words are single tokens. Items need a boolean ``member``.
    """

    Options = MembershipOptions

    item_schema: ClassVar[dict[str, str]] = {"text": "text"}

    def metric_names(self) -> frozenset[str]:
        return frozenset(f"{name}_{suffix}" for name in _MIA_SIGNALS for suffix in ("auc", _fpr_name(self.options.fpr)))

    def group_values(self, items: list[dict[str, Any]]) -> dict[str, set[str]] | None:
        return {}

    def requests(self, item: dict[str, Any]) -> list[Request]:
        if not isinstance(item.get("member"), bool):
            raise DataError(f"suite {self.spec.id}: a text has no member label (true/false)")
        reqs: list[Request] = [LL("", item["text"])]
        reqs += [LL(c, x) for c, x in word_requests(item["text"])]
        if self.context.has_reference:
            reqs.append(LL("", item["text"], "reference"))
        return reqs

    def stored_ids(self, items: list[dict[str, Any]]) -> list[str]:
        """A text's id is the unkeyed sha256 of the text (:func:`auditlm.suites.corpus.doc_id`), which a short
        templated text is found back from by enumeration: the store keeps a keyed token of it instead."""
        return ["text-" + self.context.token(it["id"], "ITEM_ID") for it in items]

    def stored_input(self, item: dict[str, Any]) -> dict[str, Any]:
        out = {
            "member": item["member"],
            "n_chars": len(item["text"]),
            "hash": self.context.hash(item["text"], "TEXT"),
        }
        if self.context.store_raw:
            out["text"] = item["text"]
        return out

    def score_batch(self, items, outputs, ctx: ScoreContext) -> list[ScoredItem]:
        out = []
        for item, outs in zip(items, outputs, strict=True):
            n_words = len(word_requests(item["text"]))
            full, words = outs[0], outs[1 : 1 + n_words]
            loss = mean_nll(full)
            tokens = word_token_logprobs(words)
            score = {
                "member": item["member"],
                "loss": loss,
                "n_tokens": full.n_tokens,
                "zlib_bytes": zlib_entropy(item["text"]),
                "min_k": min_k_prob(tokens, self.options.k_percent / 100),
            }
            if len(outs) > 1 + n_words:
                score["reference_loss"] = mean_nll(outs[-1])
            out.append(ScoredItem({k: v for k, v in score.items() if k != "member"}, score))
        return out

    def check_items(self, items: list[dict[str, Any]]) -> None:
        """Both classes must be present before anything runs (AUC and TPR need members and non-members)."""
        labels = [it.get("member") for it in items]
        bad = next((it["id"] for it, v in zip(items, labels, strict=True) if not isinstance(v, bool)), None)
        if bad is not None:
            raise DataError(f"suite {self.spec.id}: item {bad} has no member label (true/false)")
        n1 = sum(labels)
        if n1 == 0 or n1 == len(items):
            raise DataError(f"suite {self.spec.id}: membership inference needs both members and non-members "
                            f"(got {n1} members of {len(items)} texts; pass --corpus and --non-members)")
        empty = next((it["id"] for it in items if not word_requests(it["text"])), None)
        if empty is not None:
            raise DataError(f"suite {self.spec.id}: text {empty} has no words (Min-K% needs at least one token)")

    def aggregate(self, records: list[ItemRecord], *, seed: int) -> list[MetricResult]:
        sid, fpr, conf = self.spec.id, self.options.fpr, self.confidence
        y = np.array([bool(r.score["member"]) for r in records])
        n1 = int(y.sum())
        if n1 == 0 or n1 == y.size:
            raise DataError(
                f"suite {sid}: membership inference needs both members and non-members "
                f"(got {n1} members of {y.size} texts)"
            )
        extra = {"members": n1, "non_members": int(y.size - n1), "fpr": fpr}
        res = []
        for name, signal in _MIA_SIGNALS.items():
            if name == "reference" and not all("reference_loss" in r.score for r in records):
                continue
            s = np.array([signal(r.score) for r in records], dtype=float)
            ext = {**extra, "signal": name}
            res.append(metric_row(stats.auc(s, y, confidence=conf), suite=sid, metric=f"{name}_auc", extra=ext))
            tpr = stats.tpr_at_fpr(s, y, fpr, confidence=conf, n_resamples=self.n_boot,
                                   random_state=stable_seed(seed, sid, name))
            res.append(metric_row(tpr, suite=sid, metric=f"{name}_{_fpr_name(fpr)}", extra=ext))
        return res
