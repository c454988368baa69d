"""Deterministic fake targets for tests and dry runs (no model weights needed).

Like lm-evaluation-harness's dummy LM and garak's test generators: a suite can be run end to end without a
model, and tests can count exactly which requests were computed.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from auditlm.targets.base import (
    GenerationParams,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ProgressCallback,
    prompt_seeds,
)


def _unit(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) derived from the strings."""
    h = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


class FakeTarget:
    """A target whose outputs are a pure function of the request.

    ``loglikelihood`` returns ``-len(words) - u`` with ``u`` in [0, 1) hashed from the request, so longer
    continuations are less likely and ties are essentially impossible. ``generate`` returns
    ``responder(prompt)``, or ``responder(prompt, seed)`` for a responder that takes two arguments (the draw's
    seed, see :meth:`~auditlm.targets.base.Target.generate`); default: a fixed sentence. Its "tokens" are
    words: :meth:`split_first_token` splits off the first word. ``ll_calls`` / ``gen_calls`` / ``gen_seeds``
    record every request the target computed, in order, so tests can check what a resumed run recomputed.
    """

    def __init__(
        self, name: str = "fake", responder: Callable[[str], str] | Callable[[str, int], str] | None = None
    ) -> None:
        self.name = name
        self._responder: Callable[..., str] = responder or (lambda prompt: " I cannot share personal information.")
        self._takes_seed = _positional_arity(self._responder) >= 2
        self.ll_calls: list[LoglikelihoodRequest] = []
        self.gen_calls: list[str] = []
        self.gen_seeds: list[int] = []

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

    def split_first_token(self, text: str) -> tuple[str, str]:
        """``(first word, the rest)``; the rest keeps its leading whitespace."""
        m = re.match(r"\s*\S+", text)
        return (m.group(0), text[m.end() :]) if m else (text, "")

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        out = []
        for p, seed in zip(prompts, prompt_seeds(prompts, params, seeds), strict=True):
            self.gen_calls.append(p)
            self.gen_seeds.append(seed)
            text = self._responder(p, seed) if self._takes_seed else self._responder(p)
            for s in params.stop:
                if s and s in text:
                    text = text[: text.index(s)]
            out.append(text)
        if progress:
            progress(len(prompts))
        return out


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` accepts (a large number for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 1 << 16
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
