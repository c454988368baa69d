"""Shared-prefix scoring on the real default model and BBQ items: same answers as plain per-request scoring."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

#: lm-evaluation-harness ``bbq_multiple_choice.yaml`` ``doc_to_text``; answers follow after a ``" "`` delimiter.
PROMPT = "{context}\n\nQ: {question}\nA:"
PER_CATEGORY = 10


def _bbq_dir() -> Path | None:
    candidates = [os.environ.get("AUDITLM_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "bbq").is_dir():
            return Path(c) / "bbq"
    return None


@pytest.fixture(scope="module")
def bbq_items() -> list[list[tuple[str, str]]]:
    """10 seeded items from each category file: the prompt with each of the item's three answers."""
    bbq = _bbq_dir()
    if bbq is None:
        pytest.skip("needs the BBQ data (AUDITLM_DATA)")
    rng = random.Random(0)
    items = []
    for path in sorted(bbq.glob("*.jsonl")):
        docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for d in rng.sample(docs, PER_CATEGORY):
            prompt = PROMPT.format(context=d["context"], question=d["question"])
            items.append([(prompt, " " + d[f"ans{i}"]) for i in range(3)])
    assert len(items) >= 6 * PER_CATEGORY
    return items


@pytest.fixture(scope="module")
def default_model():
    from auditlm.targets.registry import resolve

    target = resolve(None)
    return target.model, target.tokenizer


def test_bbq_answers_equal_with_and_without_shared_prefixes(default_model, bbq_items) -> None:
    from auditlm.targets.hf import HFTarget

    model, tokenizer = default_model
    requests = [r for item in bbq_items for r in item]
    scores = {}
    for sharing in (True, False):
        target = HFTarget(model=model, tokenizer=tokenizer, prefix_sharing=sharing)
        scores[sharing] = target.loglikelihood(requests)

    for a, b, r in zip(scores[True], scores[False], requests, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3), r
        assert a.n_tokens == b.n_tokens, r

    def chosen(results) -> list[int]:
        lps = [res.logprob for res in results]
        return [max(range(3), key=lambda j, i=i: lps[3 * i + j]) for i in range(len(bbq_items))]

    assert chosen(scores[True]) == chosen(scores[False])
