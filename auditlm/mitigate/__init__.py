"""Mitigations that produce a new model directory, which ``auditlm run`` then audits like any other model.

:func:`~auditlm.mitigate.finetune.finetune` is the shared training loop: a plain causal-LM fine-tune (full or
LoRA) that the privacy ground-truth test uses to make a model that provably saw its training texts, and that
data-side mitigations (scrubbing, counterfactual augmentation) reuse on their transformed corpora.
:func:`~auditlm.mitigate.cda.augment` is counterfactual data augmentation; :func:`~auditlm.mitigate.scrub.scrub_corpus`
rewrites a corpus's PII (``auditlm mitigate scrub``). :class:`~auditlm.mitigate.self_debias.SelfDebiasTarget`
is a decoding-time mitigation that wraps a loaded model instead of making a new one (``--model self-debias:SPEC``).
"""

from __future__ import annotations

from auditlm.mitigate.cda import augment
from auditlm.mitigate.finetune import finetune
from auditlm.mitigate.scrub import scrub_corpus

__all__ = ["augment", "finetune", "scrub_corpus"]
