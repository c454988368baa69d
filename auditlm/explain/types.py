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
    #: ``token`` or a template feature name (``group_term``, ``context_sentence_1``, ``question`` …).
    kind: str = "token"


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
    #: The item's group (for the per-group view), e.g. ``{"axis": "gender", "group": "woman"}``.
    group: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``auditlm.explain/1`` JSON form of this explanation (one entry of ``items``)."""
        d = asdict(self)
        d["target"] = {"kind": self.target.kind, "value": self.target.value}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        return cls(suite=d["suite"], item_id=d["item_id"], method=d["method"],
                   target=Target(d["target"]["kind"], d["target"]["value"]), text=d["text"],
                   features=[Feature(**f) for f in d["features"]], delta=d.get("delta"), seed=d.get("seed", 0),
                   seconds=d.get("seconds", 0.0), group=d.get("group") or {})
