"""The Target protocol: the two batched primitives every model backend implements.

A *target* is the model under audit. Suites never talk to a model directly; they hand the runner a list of
requests and get results back in the same order (the same contract as lm-evaluation-harness's ``LM``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from auditlm.errors import TargetError
from auditlm.metrics import stable_seed

#: ``(context, continuation)``: score ``continuation`` given ``context``.
LoglikelihoodRequest = tuple[str, str]

#: Called with the number of requests just finished; used for progress bars.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Log-likelihood of a continuation given a context.

    ``logprob`` is the sum of the continuation tokens' log-probabilities (natural log), ``n_tokens`` the
    number of continuation tokens, and ``is_greedy`` whether greedy decoding would have produced exactly
    those tokens (lm-evaluation-harness semantics).
    """

    logprob: float
    n_tokens: int
    is_greedy: bool


@dataclass(frozen=True)
class GenerationParams:
    """How to generate a continuation.

    ``temperature == 0`` is greedy decoding. With ``temperature > 0`` each prompt's draw is seeded by its own
    seed (``generate(..., seeds=...)``); without per-prompt seeds they are derived from ``seed`` and the prompt
    text (:func:`prompt_seeds`), so a draw never depends on what else is in the call. ``stop`` strings end a generation early (the stop string is not returned).
    ``chat_template`` wraps the prompt as a single user turn with the tokenizer's chat template, when the
    model has one.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    chat_template: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@runtime_checkable
class Target(Protocol):
    """A model under audit.

    A target that has a tokenizer may also offer ``split_first_token(text) -> (head, rest)``: ``head`` is the
    text of ``text``'s first token as the tokenizer encodes it (no special tokens), ``head + rest == text``.
    Scorers that score a sentence token by token read it from :class:`~auditlm.scorers.ScoreContext`.
    It may also offer ``count_tokens(texts) -> list[int]`` (the number of tokens of each text, no special tokens)
    and an integer ``max_length`` (its context length), which the perplexity scorer sizes its windows with.
    """

    #: A short, human-readable model spec (what the user asked for).
    name: str

    def info(self) -> dict[str, Any]:
        """Provenance: resolved revision or content hash, dtype, device, backend."""
        ...

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: ProgressCallback | None = None
    ) -> list[LoglikelihoodResult]:
        """Score each ``(context, continuation)``; results in request order.

        An empty context is conditioned on the tokenizer's BOS token (EOS when there is none), as
        lm-evaluation-harness does.
        """
        ...

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Generate one continuation per prompt (without the prompt); results in prompt order.

        When sampling, ``seeds[i]`` seeds prompt ``i``'s draw alone: the same prompt, parameters and seed give
        the same text whatever else is in the call (batch size, order, retries). ``seeds=None`` derives them with
        :func:`prompt_seeds`. Greedy decoding ignores the seeds.
        """
        ...


def prompt_seeds(
    prompts: Sequence[str], params: GenerationParams, seeds: Sequence[int] | None = None
) -> list[int]:
    """One sampling seed per prompt: ``seeds`` as given, else ``stable_seed(params.seed, "prompt", prompt)``.

    Raises :class:`~auditlm.errors.TargetError` when ``seeds`` does not hold one integer per prompt.
    """
    if seeds is None:
        return [stable_seed(params.seed, "prompt", p) for p in prompts]
    out = list(seeds)
    if len(out) != len(prompts):
        raise TargetError(f"generate got {len(out)} seeds for {len(prompts)} prompts; give one per prompt")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
        raise TargetError("generate seeds must be non-negative integers")
    return out
