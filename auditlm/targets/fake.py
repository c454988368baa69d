"""Deterministic fake targets for tests and dry runs (no model weights needed).

Like lm-evaluation-harness's dummy LM and garak's test generators: a suite can be run end to end without a
model, and tests can count exactly which requests were computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from auditlm.targets.base import GenerationParams, LoglikelihoodRequest, LoglikelihoodResult, ProgressCallback


def _unit(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) derived from the strings."""
    h = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


class FakeTarget:
    """A target whose outputs are a pure function of the request.

    ``loglikelihood`` returns ``-len(words) - u`` with ``u`` in [0, 1) hashed from the request, so longer
    continuations are less likely and ties are essentially impossible. ``generate`` returns
    ``responder(prompt)`` (default: a fixed sentence). ``ll_calls`` / ``gen_calls`` record every request the
    target computed, in order, so tests can check what a resumed run recomputed.
    """

    def __init__(self, name: str = "fake", responder: Callable[[str], str] | None = None) -> None:
        self.name = name
        self._responder = responder or (lambda prompt: " I cannot share personal information.")
        self.ll_calls: list[LoglikelihoodRequest] = []
        self.gen_calls: list[str] = []

    def info(self) -> dict[str, Any]:
        return {"backend": "fake", "model": self.name, "revision": "fake-1"}

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: ProgressCallback | None = None
    ) -> list[LoglikelihoodResult]:
        out = []
        for ctx, cont in requests:
            self.ll_calls.append((ctx, cont))
            words = cont.split()
            out.append(LoglikelihoodResult(-float(len(words)) - _unit(ctx, cont), max(1, len(words)), False))
        if progress:
            progress(len(requests))
        return out

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: ProgressCallback | None = None
    ) -> list[str]:
        out = []
        for p in prompts:
            self.gen_calls.append(p)
            text = self._responder(p)
            for s in params.stop:
                if s and s in text:
                    text = text[: text.index(s)]
            out.append(text)
        if progress:
            progress(len(prompts))
        return out
