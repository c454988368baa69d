"""The data every part of ``auditlm explain`` shares: what was explained, by which method, and the attributions.

An :class:`Explanation` is one (item, method) pair. ``text`` is the explained input as the store keeps it (PII
redacted unless the run was ``--store-raw``); each :class:`Feature` is a span ``[start, end)`` of that text (a
token, or a template feature such as the group term) with its attribution to ``target``: positive attributions
push the target quantity up. ``delta`` is Layer Integrated Gradients' convergence delta (None for other methods).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Attribution methods: Captum FeatureAblation, ShapleyValueSampling, LayerIntegratedGradients (embeddings).
METHODS = ("feature_ablation", "shapley_sampling", "layer_integrated_gradients")

#: Feature granularities: ``token`` (every token of the input; a template feature such as the group term stays
#: one feature) or ``template`` (the group term, BBQ's context sentences and question, and the rest as one).
GRANULARITIES = ("token", "template")

#: Target quantities. ``preference``: log p(stereotyped / chosen option) − log p(anti-stereotyped / runner-up),
#: attributed to the shared input (contrastive). ``sequence_logprob``: log p(generated text | prompt).
#: ``span_logprob``: log p(the leaked PII span | prompt and the text before it).
TARGET_KINDS = ("preference", "sequence_logprob", "span_logprob")


@dataclass(frozen=True)
class Feature:
    """One input feature: the span ``text[start:end]`` of the explained text and its attribution."""

    text: str
    start: int
    end: int
    attribution: float
    #: ``token`` or a template feature name (``group_term``, ``context_sentence_1``, ``question``, ``rest`` …).
    kind: str = "token"
    #: The character spans of a feature made of separate pieces (a group term named twice, ``rest``); ``start``
    #: and ``end`` then bound them, and ``text`` joins their texts with `` … ``. None: the one span.
    spans: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class Target:
    """The explained quantity: its kind (one of :data:`TARGET_KINDS`) and its value on the unperturbed input."""

    kind: str
    value: float


@dataclass
class Explanation:
    """One stored item explained by one method."""

    suite: str
    item_id: str
    method: str
    target: Target
    text: str
    features: list[Feature]
    delta: float | None = None
    seed: int = 0
    seconds: float = 0.0
    #: The item's group (for the per-group view), e.g. ``{"axis": "gender", "group": "woman"}``; ``unit`` is the
    #: item's resampling unit where the suite has one (a counterfactual item's template).
    group: dict[str, str] = field(default_factory=dict)
    #: ``token`` (every input token a feature) or ``template`` (group term, named segments, the rest).
    granularity: str = "token"

    def to_dict(self) -> dict[str, Any]:
        """The ``auditlm.explain/1`` JSON form of this explanation (one entry of ``items``)."""
        d = asdict(self)
        d["target"] = {"kind": self.target.kind, "value": self.target.value}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        return cls(suite=d["suite"], item_id=d["item_id"], method=d["method"],
                   target=Target(d["target"]["kind"], d["target"]["value"]), text=d["text"],
                   features=[feature_from_dict(f) for f in d["features"]], delta=d.get("delta"), seed=d.get("seed", 0),
                   seconds=d.get("seconds", 0.0), group=d.get("group") or {},
                   granularity=d.get("granularity", "token"))


def feature_from_dict(f: dict[str, Any]) -> Feature:
    """A :class:`Feature` from its stored or JSON form (``spans`` as a list of pairs, or absent)."""
    spans = f.get("spans")
    return Feature(text=f["text"], start=f["start"], end=f["end"], attribution=f["attribution"],
                   kind=f.get("kind", "token"), spans=tuple((int(a), int(b)) for a, b in spans) if spans else None)
