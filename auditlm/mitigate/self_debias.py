"""Self-Debias (Schick, Udupa & Schütze, TACL 2021): a decoding-time debiasing baseline that needs no training.

The model is run on the input ``x`` and on each *debiasing prefix* followed by ``x`` (a prefix that invites
biased text: "The following text discriminates against people because of their gender: "). A next token the
prefixes make more likely than the plain input does is scaled down::

    delta(w)  = p(w | x) - max_k p(w | prefix_k + x)
    alpha(d)  = 1 if d >= 0 else exp(decay_constant * d), floored at epsilon
    q(w)      = alpha(delta(w)) * p(w | x) / sum_v alpha(delta(v)) * p(v | x)

``decay_constant`` (lambda, default 50) and ``epsilon`` (default 0.01, the floor bias-bench's
``SelfDebiasingLogitsProcessor`` puts on the scaling factor) are the paper's and bias-bench's defaults.

:class:`SelfDebiasTarget` wraps an :class:`~auditlm.targets.hf.HFTarget`:

* ``loglikelihood`` scores the continuation token by token (teacher forcing) under ``q``, as bias-bench's
  ``compute_loss_self_debiasing`` does for CrowS-Pairs and StereoSet: the plain input and its prefixed copies
  run in one batch, left-padded so that their last tokens share columns, with position ids counted from each
  row's first real token; prefix tokens are never scored. The continuation is tokenised exactly as
  ``HFTarget`` does (its ``_encode_request``), and ``is_greedy`` asks whether ``argmax q`` reproduces it.
* ``generate`` applies the same ``q`` as a transformers ``LogitsProcessor`` (:class:`SelfDebiasingLogitsProcessor`)
  with ``HFTarget``'s generation settings: the prefixed copies are generated alongside the prompt and every
  row of a group is given the group's debiased scores, so all rows take the same token.

A prefix is tokenised on its own (no special tokens) and its tokens are put before the input's, after the
input's BOS token when the input starts with one (bias-bench concatenates the token ids the same way, with
GPT-2, which has no BOS). An input whose prefixed copy exceeds the context length loses that copy's leading
tokens.

The prefixes default to bias-bench's nine, one per CrowS-Pairs bias type (:data:`BIAS_BENCH_PREFIXES`), all at
once (the maximum is over every prefix). bias-bench itself evaluates one bias type at a time with that type's
prefix alone; choose types with the model spec.

On the command line, ``--model self-debias:SPEC`` wraps the model ``SPEC`` (any spec ``--model`` takes) with
all nine prefixes; ``--model self-debias[gender,religion]:SPEC`` with those bias types' prefixes only
(names as in :data:`BIAS_BENCH_PREFIXES`; ``race`` stands for ``race-color``). The run store records the
prefixes, ``decay_constant`` and ``epsilon`` under ``self_debias`` in the target's info.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from auditlm.errors import TargetError, choices
from auditlm.targets.base import (
    GenerationParams,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ProgressCallback,
    prompt_seeds,
)
from auditlm.targets.hf import HFTarget, _is_oom, _PerRowSampler, _StopOnStrings, pending_requests

#: bias-bench's self-debiasing prefixes (``bias_bench/benchmark/crows/crows.py``), keyed by CrowS-Pairs bias type.
#: The spelling "orientiation" is bias-bench's.
BIAS_BENCH_PREFIXES: dict[str, str] = {
    "race-color": "The following text discriminates against people because of their race/color: ",
    "gender": "The following text discriminates against people because of their gender: ",
    "socioeconomic": "The following text discriminates against people because of their socioeconomic "
    "status/occupation: ",
    "sexual-orientation": "The following text discriminates against people because of their sexual orientiation: ",
    "religion": "The following text discriminates against people because of their religion: ",
    "age": "The following text discriminates against people because of their age: ",
    "nationality": "The following text discriminates against people because of their nationality: ",
    "disability": "The following text discriminates against people because of their disability: ",
    "physical-appearance": "The following text discriminates against people because of their physical appearance: ",
}
_ALIASES = {"race": "race-color"}

#: The model-spec prefix that selects the wrapper (``self-debias:SPEC`` or ``self-debias[types]:SPEC``).
SPEC_PREFIX = "self-debias"


def prefixes_for(bias_types: Sequence[str] | None = None) -> list[str]:
    """bias-bench's prefixes for ``bias_types`` (all nine when ``None``); an unknown type raises ``TargetError``."""
    if bias_types is None:
        return list(BIAS_BENCH_PREFIXES.values())
    out = []
    for t in bias_types:
        key = _ALIASES.get(t.strip(), t.strip())
        if key not in BIAS_BENCH_PREFIXES:
            raise TargetError(f"unknown self-debias bias type {t!r}; choose from: {choices(BIAS_BENCH_PREFIXES)}")
        out.append(BIAS_BENCH_PREFIXES[key])
    return out


def parse_spec(spec: str) -> tuple[list[str], str] | None:
    """``(prefixes, inner spec)`` for ``self-debias:SPEC`` / ``self-debias[t1,t2]:SPEC``; ``None`` for other specs."""
    if not spec.startswith(SPEC_PREFIX) or spec[len(SPEC_PREFIX) : len(SPEC_PREFIX) + 1] not in (":", "["):
        return None
    rest = spec[len(SPEC_PREFIX) :]
    types: list[str] | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise TargetError(f"model spec {spec!r}: missing ']' (form: self-debias[gender,religion]:MODEL)")
        types = [t for t in rest[1:close].split(",") if t.strip()]
        if not types:
            raise TargetError(f"model spec {spec!r}: name at least one bias type inside [...]")
        rest = rest[close + 1 :]
    if not rest.startswith(":") or not rest[1:]:
        raise TargetError(f"model spec {spec!r}: expected self-debias:MODEL or self-debias[types]:MODEL")
    return prefixes_for(types), rest[1:]


def debiased_logprobs(
    regular: torch.Tensor, prefixed: torch.Tensor, decay_constant: float, epsilon: float
) -> torch.Tensor:
    """Self-debiased log-probabilities in fp32.

    ``regular`` is ``[..., vocab]`` logits of the plain input, ``prefixed`` ``[K, ..., vocab]`` those of its
    ``K`` prefixed copies at the same positions. Returns ``log q`` with ``q`` as in the module docstring
    (each row sums to 1).
    """
    p = regular.float().softmax(dim=-1)
    p_biased = prefixed.float().softmax(dim=-1).amax(dim=0)
    delta = (p - p_biased).clamp(max=0.0)
    alpha = torch.exp(decay_constant * delta).clamp(min=epsilon)
    q = alpha * p
    return (q / q.sum(dim=-1, keepdim=True)).log()


class SelfDebiasingLogitsProcessor(LogitsProcessor):
    """Replace each group's scores by the group's self-debiased log-probabilities.

    Rows come in groups of ``1 + n_prefixes``: the plain prompt, then its prefixed copies. Every row of a group
    gets ``log q`` of the group's plain row, so greedy decoding (or a shared sampling seed) emits the same token
    in all of them and the copies stay the prompt's continuation with a prefix in front.
    """

    def __init__(self, n_prefixes: int, decay_constant: float, epsilon: float) -> None:
        self.group = 1 + n_prefixes
        self.decay_constant = decay_constant
        self.epsilon = epsilon

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        g = scores.view(-1, self.group, scores.shape[-1])
        lq = debiased_logprobs(g[:, 0], g[:, 1:].transpose(0, 1), self.decay_constant, self.epsilon)
        return lq[:, None, :].expand_as(g).reshape(scores.shape).to(scores.dtype)


class SelfDebiasTarget:
    """An :class:`~auditlm.targets.hf.HFTarget` decoded with Self-Debias (see the module docstring).

    ``prefixes`` default to all of :data:`BIAS_BENCH_PREFIXES`. ``decay_constant == 0`` makes every scaling
    factor 1, so scores equal the base model's. A batch holds about ``base.batch_size`` rows, that is
    ``base.batch_size // (1 + len(prefixes))`` requests (at least one).
    """

    def __init__(
        self,
        base: HFTarget,
        prefixes: Sequence[str] | None = None,
        decay_constant: float = 50.0,
        epsilon: float = 0.01,
        name: str | None = None,
    ) -> None:
        if not isinstance(base, HFTarget):
            raise TargetError("self-debias wraps a Hugging Face model (HFTarget)")
        self.prefixes = list(prefixes_for(None) if prefixes is None else prefixes)
        if not self.prefixes or not all(isinstance(p, str) and p for p in self.prefixes):
            raise TargetError("self-debias needs at least one non-empty prefix")
        if not decay_constant >= 0:
            raise TargetError(f"decay_constant must be >= 0, not {decay_constant!r}")
        if not 0 <= epsilon <= 1:
            raise TargetError(f"epsilon must be in [0, 1], not {epsilon!r}")
        self.base = base
        self.decay_constant = float(decay_constant)
        self.epsilon = float(epsilon)
        self.name: str = name or f"{SPEC_PREFIX}:{base.name}"
        tok = base.tokenizer
        self._prefix_ids = [list(tok.encode(p, add_special_tokens=False)) for p in self.prefixes]
        self._ll_cache: dict[LoglikelihoodRequest, LoglikelihoodResult] = {}
        self._gen_cache: dict[tuple[str, GenerationParams, int | None], str] = {}

    # ------------------------------------------------------------------ delegated

    @property
    def max_length(self) -> int:
        """The base model's context length."""
        return self.base.max_length

    def split_first_token(self, text: str) -> tuple[str, str]:
        """As :meth:`HFTarget.split_first_token`."""
        return self.base.split_first_token(text)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """As :meth:`HFTarget.count_tokens`."""
        return self.base.count_tokens(texts)

    def info(self) -> dict[str, Any]:
        """The base model's info plus ``self_debias: {prefixes, decay_constant, epsilon}``."""
        out = dict(self.base.info())
        out["model"] = self.name
        out["self_debias"] = {
            "prefixes": list(self.prefixes),
            "decay_constant": self.decay_constant,
            "epsilon": self.epsilon,
        }
        return out

    # ------------------------------------------------------------------ rows

    def _prefixed(self, ids: list[int], prefix: list[int]) -> list[int]:
        """``prefix`` before ``ids`` (after its BOS, if it starts with one), left-truncated to the context length."""
        bos = self.base.tokenizer.bos_token_id
        row = ids[:1] + prefix + ids[1:] if bos is not None and ids and ids[0] == bos else prefix + ids
        return row[-self.base.max_length :]

    def _group_rows(self, ids: list[int]) -> list[list[int]]:
        return [ids] + [self._prefixed(ids, p) for p in self._prefix_ids]

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.base.tokenizer.pad_token_id or 0
        dev = self.base.device
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=dev)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=dev)
        return ids, mask

    def _requests_per_batch(self) -> int:
        return max(1, self.base.batch_size // (1 + len(self.prefixes)))

    # ------------------------------------------------------------------ loglikelihood

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: ProgressCallback | None = None
    ) -> list[LoglikelihoodResult]:
        """Score each ``(context, continuation)`` under the self-debiased next-token distributions.

        Same result type and tokenisation as :meth:`HFTarget.loglikelihood`; memoised per request.
        """
        max_len = self.base.max_length
        reqs, counts, pending = pending_requests(requests, self._ll_cache, progress, self.base._encode_request,
                                                 max_len)
        encoded = [(r, (ctx + cont)[-(max_len + 1) :][:-1], cont) for r, (ctx, cont) in pending]
        encoded.sort(key=lambda e: (-len(e[1]), e[1]))
        step = self._requests_per_batch()
        i = 0
        while i < len(encoded):
            chunk = encoded[i : i + step]
            try:
                results = self._ll_batch([(inp, cont) for _, inp, cont in chunk])
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
                if not (step > 1 and self.base._auto_batch and _is_oom(e)):
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                step = max(1, step // 2)
                continue
            for (r, _, _), res in zip(chunk, results, strict=True):
                self._ll_cache[r] = res
            if progress:
                progress(sum(counts[r] for r, _, _ in chunk))
            i += len(chunk)
        return [self._ll_cache[r] for r in reqs]

    def _ll_batch(self, chunk: list[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        """One batch: per request, its input row then its prefixed rows, all left-padded (last tokens aligned)."""
        group = 1 + len(self.prefixes)
        rows = [row for inp, _ in chunk for row in self._group_rows(inp)]
        ids, mask = self._left_padded(rows)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        width = ids.shape[1]
        keep = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        for b, (_, cont) in enumerate(chunk):
            keep[b * group : (b + 1) * group, width - len(cont) :] = True
        out: list[LoglikelihoodResult] = []
        with torch.inference_mode():
            logits = self.base._kept_logits(keep, input_ids=ids, attention_mask=mask, position_ids=position_ids)
            start = 0
            for _, cont in chunk:
                n = len(cont)
                g = logits[start : start + group * n].view(group, n, -1)
                start += group * n
                lq = debiased_logprobs(g[0], g[1:], self.decay_constant, self.epsilon)
                target = torch.tensor(cont, dtype=torch.long, device=lq.device)
                greedy = bool((lq.argmax(dim=-1) == target).all())
                out.append(LoglikelihoodResult(float(lq.gather(1, target[:, None]).double().sum()), n, greedy))
        return out

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Generate per prompt as :meth:`HFTarget.generate` does, with the self-debiased next-token scores.

        Greedy when ``temperature == 0``; when sampling, a prompt and its prefixed copies share the prompt's
        seed, so they draw the same token. Memoised per ``(prompt, params, seed)``.
        """
        prompts = [str(p) for p in prompts]
        sample = params.temperature > 0
        keys = [
            (p, s if sample else None) for p, s in zip(prompts, prompt_seeds(prompts, params, seeds), strict=True)
        ]
        todo = list(dict.fromkeys(k for k in keys if (k[0], params, k[1]) not in self._gen_cache))
        if progress and len(keys) > len(todo):
            progress(sum(1 for k in keys if k not in todo))
        encoded = [(k, self.base._prompt_ids(k[0], params)) for k in todo]
        encoded.sort(key=lambda e: (-len(e[1]), tuple(e[1]), e[0][1] or 0))
        step = self._requests_per_batch()
        for i in range(0, len(encoded), step):
            chunk = encoded[i : i + step]
            texts = self._gen_batch([(ids, k[1]) for k, ids in chunk], params)
            for (k, _), text in zip(chunk, texts, strict=True):
                self._gen_cache[(k[0], params, k[1])] = text
            if progress:
                progress(sum(1 for k in keys if k in {c[0] for c in chunk}))
        return [self._gen_cache[(p, params, s)] for p, s in keys]

    def _gen_batch(self, chunk: list[tuple[list[int], int | None]], params: GenerationParams) -> list[str]:
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        group = 1 + len(self.prefixes)
        keep = max(1, self.base.max_length - params.max_new_tokens)
        rows = [row[-keep:] for ids, _ in chunk for row in self._group_rows(ids)]
        ids, mask = self._left_padded(rows)
        width = ids.shape[1]
        eos_ids = self.base._eos_ids()
        pad = self.base.tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(eos_ids), 0)
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "pad_token_id": pad,
            "eos_token_id": sorted(eos_ids) or None,
        }
        processors = LogitsProcessorList(
            [SelfDebiasingLogitsProcessor(len(self.prefixes), self.decay_constant, self.epsilon)]
        )
        if params.temperature > 0:
            seeds = [seed or 0 for _, seed in chunk for _ in range(group)]
            processors.append(_PerRowSampler(seeds, params.temperature, params.top_p))
        stopping = StoppingCriteriaList()
        if params.stop:
            stopping.append(_StopOnStrings(self.base.tokenizer, params.stop, width))
        with torch.inference_mode():
            out = self.base.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=GenerationConfig(**gen_kwargs),
                logits_processor=processors,
                stopping_criteria=stopping,
            )
        texts = []
        for row in out[::group, width:].tolist():
            for j, tok in enumerate(row):
                if tok in eos_ids:
                    row = row[:j]
                    break
            text = self.base.tokenizer.decode(row, skip_special_tokens=True)
            cut = [text.index(s) for s in params.stop if s and s in text]
            texts.append(text[: min(cut)] if cut else text)
        return texts
