"""A Hugging Face ``transformers`` causal LM as an audit target, on CUDA or the CPU.

Log-likelihoods follow lm-evaluation-harness 0.4.x ``HFLM`` exactly (tokenisation of the context/continuation
pair, the BOS/EOS prefix for an empty context, left truncation, ``is_greedy``), so scores are comparable with
published lm-eval numbers on the same model. Both primitives batch longest-first, back off on CUDA
out-of-memory when the batch size is ``"auto"``, and memoise results on the instance.

Requests whose token inputs share a prefix (the answers of a multiple-choice item, the two sentences of a
CrowS-Pairs pair) are scored with the shared tokens computed once: their inputs are merged into a token tree
(a trie) that runs as one sequence, each token attending to its ancestors only (a custom 4D attention mask) at
the position it has in its own sequence. That is the same computation as one forward pass per request, up to
floating-point summation order.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import LogitsProcessor, StoppingCriteria

from auditlm.errors import TargetError, choices
from auditlm.targets.base import (
    GenerationParams,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ProgressCallback,
    prompt_seeds,
)

#: lm-eval's fallback context length when neither config nor tokenizer names one.
DEFAULT_MAX_LENGTH = 2048
#: ``tokenizer.model_max_length`` when the tokenizer sets no limit (transformers' VERY_LARGE_INTEGER).
_TOKENIZER_INFINITY = int(1e30)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}

#: Requests are merged into one token tree only when their inputs share at least this many leading tokens:
#: a BOS and a word or two in common (CrowS-Pairs sentences that differ early) save little and lengthen rows.
MIN_SHARED_TOKENS = 5
#: A token tree may grow this many tokens beyond its longest member (bounds attention and mask size).
PACK_EXTRA_TOKENS = 64
#: Log-softmax over the vocabulary runs on slabs of about this many logits (16 MB in fp32).
_SOFTMAX_SLAB = 1 << 22
#: A batch of token trees holds at most this many attention-mask entries (batch x width x width): the mask is
#: materialised, unlike the causal mask of the plain path.
_MASK_ELEMENTS = 1 << 25
#: Attention implementations that apply a custom additive 4D mask as given.
_TREE_ATTENTION = ("sdpa", "eager")

_T = TypeVar("_T")
_R = TypeVar("_R")

# A tokenised loglikelihood request: (context tokens, continuation tokens).
_Encoded = tuple[list[int], list[int]]


@dataclass
class _TokenTree:
    """Model inputs of several requests merged on their common prefixes, nodes in depth-first pre-order.

    A node is one input token at ``depth`` (its position id); it sees itself and its ancestors. ``members`` holds,
    per request, its index, the nodes whose logits score its continuation, and the continuation tokens.
    """

    tokens: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    members: list[tuple[int, list[int], list[int]]] = field(default_factory=list)
    longest: int = 0

    def add(self, x: list[int], shared: int, shared_path: list[int]) -> list[int]:
        """Append input ``x`` whose first ``shared`` tokens are the nodes ``shared_path``; return its path."""
        path = shared_path[:shared]
        for d in range(shared, len(x)):
            self.parent.append(path[-1] if path else -1)
            path.append(len(self.tokens))
            self.tokens.append(x[d])
            self.depth.append(d)
        self.longest = max(self.longest, len(x))
        return path

    def visibility(self) -> torch.Tensor:
        """``[n, n]`` bool: node ``i`` may attend to node ``j`` (``j`` is ``i`` or one of its ancestors).

        In pre-order a node's subtree is the contiguous range ``[j, end[j])``.
        """
        n = len(self.tokens)
        end = list(range(1, n + 1))
        for k in range(n - 1, -1, -1):
            p = self.parent[k]
            if p >= 0:
                end[p] = max(end[p], end[k])
        ar = torch.arange(n)
        end_t = torch.tensor(end)
        return (ar[None, :] <= ar[:, None]) & (ar[:, None] < end_t[None, :])


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pending_requests(
    requests: Sequence[LoglikelihoodRequest],
    cache: dict[LoglikelihoodRequest, LoglikelihoodResult],
    progress: ProgressCallback | None,
    encode: Callable[[str, str], _Encoded],
    max_length: int,
) -> tuple[list[LoglikelihoodRequest], dict[LoglikelihoodRequest, int], list[tuple[LoglikelihoodRequest, _Encoded]]]:
    """The bookkeeping before scoring log-likelihood requests: ``(requests as str pairs, how often each occurs,
    the encoded requests still to score)``. Requests already in ``cache`` are reported to ``progress`` at once; a
    continuation that tokenises to nothing is cached as ``0.0`` with ``n_tokens == 0``; one longer than
    ``max_length`` is a :class:`TargetError`. Shared by :class:`HFTarget` and the targets that wrap it."""
    reqs = [(str(c), str(x)) for c, x in requests]
    counts: dict[LoglikelihoodRequest, int] = {}
    for r in reqs:
        counts[r] = counts.get(r, 0) + 1
    todo = [r for r in counts if r not in cache]
    cached = len(reqs) - sum(counts[r] for r in todo)
    if progress and cached:
        progress(cached)
    encoded: list[tuple[LoglikelihoodRequest, _Encoded]] = []
    for r in todo:
        ctx, cont = encode(*r)
        if not cont:
            cache[r] = LoglikelihoodResult(0.0, 0, True)
            if progress:
                progress(counts[r])
            continue
        if len(cont) > max_length:
            raise TargetError(f"continuation of {len(cont)} tokens exceeds the model's context length {max_length}")
        encoded.append((r, (ctx, cont)))
    return reqs, counts, encoded


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e)
    )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise TargetError(f"invalid device {device!r}: {e}") from e


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError as e:
        raise TargetError(f"unknown dtype {dtype!r}; choose one of: auto, {choices(_DTYPES)}") from e


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


class _StopOnStrings(StoppingCriteria):
    """Stop each sequence of a batch once its new text contains one of ``stops`` (a transformers StoppingCriteria)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len :].tolist()
        done = [
            any(s in self.tokenizer.decode(row, skip_special_tokens=True) for s in self.stops) for row in new
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _PerRowSampler(LogitsProcessor):
    """Multinomial sampling with one random stream per row, as a logits processor for greedy ``generate``.

    transformers' sampling draws every row of a batch from the global torch RNG (``torch.multinomial`` in
    ``GenerationMixin._sample``), so a row's draw depends on the rows sampled with it. Here each row warps its
    scores exactly as transformers' sampling would (temperature, then top-p, with transformers' warpers), draws
    one token by inverting the cumulative distribution at a uniform number from its own CPU
    ``torch.Generator`` (the same stream on every device), and returns scores that make that token the argmax,
    so ``generate(do_sample=False)`` emits it.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = self.warpers(input_ids, scores.float()).softmax(dim=-1)
        u = torch.stack([torch.rand((), dtype=torch.float64, generator=g) for g in self.generators])
        cdf = probs.double().cumsum(dim=-1)
        point = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
        token = torch.searchsorted(cdf, point, right=True).clamp_(max=probs.shape[-1] - 1)
        # Rounding can land past the last token with probability > 0: take the most likely token instead.
        token = torch.where(probs.gather(1, token) > 0, token, probs.argmax(dim=-1, keepdim=True))
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)


class HFTarget:
    """A local or Hub causal language model loaded with ``transformers``.

    Either load ``model_name_or_path`` (a local directory or a Hub id; ``HF_HUB_OFFLINE=1`` is honoured by
    transformers) or wrap a preloaded ``model`` and ``tokenizer``. ``device="auto"`` picks CUDA when present;
    ``dtype="auto"`` is bfloat16 on CUDA and float32 on the CPU (a preloaded model keeps its dtype unless one
    is named). ``batch_size="auto"`` starts at ``max_batch_size`` and halves on CUDA out-of-memory.

    With ``prefix_sharing`` (the default) requests whose inputs share at least :data:`MIN_SHARED_TOKENS` leading
    tokens are scored as one token tree, the shared tokens computed once; a batch then holds ``batch_size``
    trees. It needs a model whose attention takes a custom 4D mask (transformers' ``sdpa`` or ``eager``
    attention); other models, and inputs longer than a sliding attention window, use the plain path, one
    sequence per request, as ``prefix_sharing=False`` does everywhere.

    ``model``, ``tokenizer`` and ``device`` are public so that attribution and fine-tuning code can reuse the
    loaded model.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | str = "auto",
        max_batch_size: int = 64,
        trust_remote_code: bool = False,
        model: Any = None,
        tokenizer: Any = None,
        name: str | None = None,
        revision_hash: str | None = None,
        prefix_sharing: bool = True,
    ) -> None:
        if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
            raise TargetError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
        if max_batch_size < 1:
            raise TargetError(f"max_batch_size must be a positive integer, not {max_batch_size!r}")
        self.device: torch.device = _resolve_device(device)
        self._auto_batch = batch_size == "auto"
        self._batch_size: int = max_batch_size if batch_size == "auto" else int(batch_size)
        self._model_path = model_name_or_path
        self._revision_hash = revision_hash
        self._commit_hash: str | None = None
        self._content_hash: str | None = None

        if model is not None:
            if tokenizer is None:
                raise TargetError("a preloaded model needs its tokenizer too")
            if dtype != "auto":
                model = model.to(_resolve_dtype(dtype, self.device))
            model = model.to(self.device)
        else:
            if not model_name_or_path:
                raise TargetError("HFTarget needs a model name or path, or a preloaded model and tokenizer")
            model, tokenizer = self._load(model_name_or_path, revision, dtype, trust_remote_code, tokenizer)

        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name: str = (
            name or model_name_or_path or str(getattr(model.config, "_name_or_path", "") or "model")
        )
        self.prefix_sharing = bool(prefix_sharing)
        self._ll_cache: dict[LoglikelihoodRequest, LoglikelihoodResult] = {}
        self._gen_cache: dict[tuple[str, GenerationParams, int | None], str] = {}

    def _load(
        self, spec: str, revision: str | None, dtype: str, trust_remote_code: bool, tokenizer: Any
    ) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = _resolve_dtype(dtype, self.device)
        kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        try:
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(spec, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(spec, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError, ImportError, KeyError, RuntimeError) as e:
            raise TargetError(f"cannot load model {spec!r}: {_one_line(e)}") from e
        model = model.to(self.device)
        if not Path(spec).is_dir():
            self._commit_hash = self._hub_commit_hash(spec, revision)
        return model, tokenizer

    @staticmethod
    def _hub_commit_hash(spec: str, revision: str | None) -> str | None:
        """The commit a Hub id resolved to, read from the path of its cached config file."""
        from transformers.utils.hub import cached_file, extract_commit_hash

        try:
            path = cached_file(
                spec, "config.json", revision=revision, _raise_exceptions_for_missing_entries=False
            )
        except (OSError, ValueError):
            return None
        return extract_commit_hash(path, None) if path else None

    @property
    def batch_size(self) -> int:
        """The current batch size (with ``"auto"``, the largest that has fit so far)."""
        return self._batch_size

    # ------------------------------------------------------------------ provenance

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    def _weights_hash(self) -> str | None:
        """sha256 over a local model directory's weight files, or over the in-memory weights; computed once."""
        if self._content_hash is not None:
            return self._content_hash
        h = hashlib.sha256()
        path = Path(self._model_path) if self._model_path else None
        files = (
            sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
            if path is not None and path.is_dir()
            else []
        )
        if files:
            for f in files:
                h.update(f.name.encode() + b"\0")
                with f.open("rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(block)
        else:
            for key, t in sorted(self.model.state_dict().items()):
                h.update(key.encode() + b"\0")
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        self._content_hash = "sha256:" + h.hexdigest()
        return self._content_hash

    def info(self) -> dict[str, Any]:
        """Backend, model, resolved revision (Hub commit, given hash, or weights sha256), dtype, device, size, and
        the ``auditlm_mitigation.json`` record of a model directory an auditlm mitigation wrote."""
        revision = self._commit_hash or self._revision_hash or self._weights_hash()
        info: dict[str, Any] = {
            "backend": "hf",
            "model": self.name,
            "revision": revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "n_params": sum(p.numel() for p in self.model.parameters()),
        }
        path = Path(self._model_path) if self._model_path else None
        if path is not None and path.is_dir():
            from auditlm.mitigate.train import read_record

            record = read_record(path)  # written by auditlm mitigate: what the model was made from, and how
            if record is not None:
                info["mitigation"] = record
        return info

    # ------------------------------------------------------------------ tokenisation (lm-eval HFLM)

    @property
    def max_length(self) -> int:
        """The model's context length, resolved as lm-evaluation-harness does."""
        config = self.model.config
        cfg = getattr(config, "text_config", None) or config
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None)
            if value is not None:
                return int(value)
        mml = getattr(self.tokenizer, "model_max_length", None)
        if mml is not None and mml != _TOKENIZER_INFINITY:
            return int(mml)
        return DEFAULT_MAX_LENGTH

    @property
    def prefix_token_id(self) -> int:
        """The token that conditions an empty context: BOS, else EOS."""
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    def _tok_encode(self, string: str, add_special_tokens: bool | None = None) -> list[int]:
        kwargs: dict[str, Any] = (
            {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        )
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(string, **kwargs))

    def split_first_token(self, text: str) -> tuple[str, str]:
        """``(head, rest)`` with ``head + rest == text`` and ``head`` the text of ``text``'s first token.

        Tokens are those of ``text`` encoded without special tokens. ``head`` grows by whole tokens until it
        re-encodes to the same tokens (a token holding part of a multi-byte character cannot stand alone), so
        ``loglikelihood([("", head), (head, rest)])`` scores the tokens of ``text`` (plus the tokenizer's own
        special tokens in the second context, if it adds any), the first from the start token alone.
        """
        ids = self._tok_encode(text, add_special_tokens=False)
        for k in range(1, len(ids)):
            head = self.tokenizer.decode(ids[:k])
            if text.startswith(head) and self._tok_encode(head, add_special_tokens=False) == ids[:k]:
                return head, text[len(head) :]
        return text, ""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The number of tokens of each text, encoded without special tokens."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def _encode_request(self, context: str, continuation: str) -> _Encoded:
        if context == "":
            cont = self._tok_encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self._tok_encode(context + continuation)
        ctx = self._tok_encode(context)
        return ctx, whole[len(ctx) :]

    # ------------------------------------------------------------------ batching

    def _run_batched(
        self,
        items: list[_T],
        weights: list[int],
        compute: Callable[[list[_T]], list[_R]],
        progress: ProgressCallback | None,
        cap: Callable[[_T], int] | None = None,
    ) -> list[_R]:
        """Run ``compute`` over ``items`` (already sorted) in batches, halving the batch on CUDA OOM when auto.

        ``cap(first item of a batch)``, if given, bounds that batch's size below the batch size.
        """
        out: list[_R] = []
        i = 0
        while i < len(items):
            bs = self._batch_size
            if cap is not None:
                bs = max(1, min(bs, cap(items[i])))
            chunk = items[i : i + bs]
            try:
                out.extend(compute(chunk))
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
                if not (_is_oom(e) and self._auto_batch and bs > 1):
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._batch_size = max(1, bs // 2)
                continue
            if progress:
                progress(sum(weights[i : i + len(chunk)]))
            i += len(chunk)
        return out

    # ------------------------------------------------------------------ loglikelihood

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: ProgressCallback | None = None
    ) -> list[LoglikelihoodResult]:
        """Score each ``(context, continuation)`` with lm-evaluation-harness ``HFLM`` semantics.

        The result is the summed natural-log probability of the continuation tokens (log-softmax in fp32),
        their number, and whether greedy decoding reproduces them. A continuation that tokenises to nothing
        scores ``0.0`` with ``n_tokens == 0``.
        """
        reqs, counts, encoded = pending_requests(requests, self._ll_cache, progress, self._encode_request,
                                                 self.max_length)
        plain = encoded
        if self.prefix_sharing and self._takes_tree_attention():
            limit = self._attention_window()
            max_len = self.max_length

            def fits(e: tuple[LoglikelihoodRequest, _Encoded]) -> bool:
                return limit is None or min(len(e[1][0]) + len(e[1][1]), max_len + 1) - 1 <= limit

            packed = [e for e in encoded if fits(e)]
            plain = [e for e in encoded if not fits(e)]
            trees = self._token_trees([e[1] for e in packed])
            tree_results = self._run_batched(
                trees,
                [sum(counts[packed[m[0]][0]] for m in t.members) for t in trees],
                self._ll_tree_batch,
                progress,
                cap=lambda tree: _MASK_ELEMENTS // len(tree.tokens) ** 2,
            )
            for tree, results in zip(trees, tree_results, strict=True):
                for (i, _, _), res in zip(tree.members, results, strict=True):
                    self._ll_cache[packed[i][0]] = res

        plain.sort(key=lambda e: (-(len(e[1][0]) + len(e[1][1])), tuple(e[1][0] + e[1][1])))
        results = self._run_batched(
            [e[1] for e in plain], [counts[e[0]] for e in plain], self._ll_batch, progress
        )
        for (r, _), res in zip(plain, results, strict=True):
            self._ll_cache[r] = res
        return [self._ll_cache[r] for r in reqs]

    def _model_inputs(self, chunk: list[_Encoded]) -> list[list[int]]:
        """The model input per request: ``(ctx + cont)`` left-truncated to ``max_length + 1``, last token dropped."""
        max_len = self.max_length
        return [(ctx + cont)[-(max_len + 1) :][:-1] for ctx, cont in chunk]

    def _ll_batch(self, chunk: list[_Encoded]) -> list[LoglikelihoodResult]:
        """Plain path: one right-padded row per request, causal attention, as lm-eval's ``HFLM`` runs it."""
        inps = self._model_inputs(chunk)
        width = max(len(x) for x in inps)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.tensor(
            [x + [pad] * (width - len(x)) for x in inps], dtype=torch.long, device=self.device
        )
        keep = torch.zeros(batch.shape, dtype=torch.bool)
        for b, (inp, (_, cont)) in enumerate(zip(inps, chunk, strict=True)):
            keep[b, len(inp) - len(cont) : len(inp)] = True
        out: list[LoglikelihoodResult] = []
        with torch.inference_mode():
            logits = self._kept_logits(keep.to(self.device), input_ids=batch)
            start = 0
            for _, cont in chunk:
                contlen = len(cont)
                logprobs = logits[start : start + contlen].float().log_softmax(dim=-1)
                start += contlen
                target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
                greedy = bool((logprobs.argmax(dim=-1) == target).all())
                lp = float(logprobs.gather(1, target.unsqueeze(-1)).sum())
                out.append(LoglikelihoodResult(lp, contlen, greedy))
        return out

    # ------------------------------------------------------------------ shared prefixes

    def _takes_tree_attention(self) -> bool:
        """Whether the model honours a custom 4D attention mask and explicit position ids."""
        config = self.model.config
        return (
            not getattr(config, "is_encoder_decoder", False)
            and getattr(self.model, "_supports_attention_backend", False) is True
            and getattr(config, "_attn_implementation", None) in _TREE_ATTENTION
        )

    def _attention_window(self) -> int | None:
        """The smallest sliding / chunked attention window, if any: longer inputs take the plain path."""
        config = self.model.config
        cfg = getattr(config, "text_config", None) or config
        windows = [
            w
            for attr in ("sliding_window", "attention_chunk_size")
            if isinstance(w := getattr(cfg, attr, None), int) and w > 0
        ]
        return min(windows) if windows else None

    def _token_trees(self, chunk: list[_Encoded]) -> list[_TokenTree]:
        """Merge requests into token trees, longest first.

        Sorting the inputs lexicographically puts inputs with a common prefix next to each other, and the longest
        prefix an input shares with any earlier one is the one it shares with its predecessor; appending them in
        that order builds each tree in depth-first pre-order. A tree takes the next input while that shares at
        least :data:`MIN_SHARED_TOKENS` tokens with its predecessor and the tree stays within
        :data:`PACK_EXTRA_TOKENS` of its longest member.
        """
        inps = self._model_inputs(chunk)
        trees: list[_TokenTree] = []
        tree: _TokenTree | None = None
        prev: list[int] = []
        prev_path: list[int] = []
        for i in sorted(range(len(inps)), key=lambda i: inps[i]):
            x, cont = inps[i], chunk[i][1]
            shared = _common_prefix_len(prev, x)
            new = len(x) - shared
            if (
                tree is None
                or shared < MIN_SHARED_TOKENS
                or len(tree.tokens) + new > max(tree.longest, len(x)) + PACK_EXTRA_TOKENS
            ):
                tree = _TokenTree()
                trees.append(tree)
                shared = 0
            path = tree.add(x, shared, prev_path)
            tree.members.append((i, path[len(x) - len(cont) :], cont))
            prev, prev_path = x, path
        trees.sort(key=lambda t: (-len(t.tokens), t.tokens))
        return trees

    def _ll_tree_batch(self, chunk: list[_TokenTree]) -> list[list[LoglikelihoodResult]]:
        """Score a batch of token trees: one right-padded row per tree; a padding token sees only itself."""
        width = max(len(t.tokens) for t in chunk)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        positions = torch.zeros((len(chunk), width), dtype=torch.long)
        visible = torch.eye(width, dtype=torch.bool).repeat(len(chunk), 1, 1)
        keep = torch.zeros((len(chunk), width), dtype=torch.bool)
        for b, tree in enumerate(chunk):
            n = len(tree.tokens)
            ids[b, :n] = torch.tensor(tree.tokens)
            positions[b, :n] = torch.tensor(tree.depth)
            visible[b, :n, :n] = tree.visibility()
            for _, nodes, _ in tree.members:
                keep[b, nodes] = True
        # Row of the kept logits for each (tree, node); then one flat list of (request, row, target) triples.
        flat = (keep.flatten().cumsum(0) - 1).view(keep.shape)
        req_of, rows, targets = [], [], []
        k = 0
        for b, tree in enumerate(chunk):
            for _, nodes, cont in tree.members:
                req_of.extend([k] * len(cont))
                rows.extend(flat[b, nodes].tolist())
                targets.extend(cont)
                k += 1

        # An additive float mask works for both sdpa and eager attention (a bool one only for sdpa).
        mask = torch.zeros((len(chunk), 1, width, width), dtype=self.dtype).masked_fill_(
            ~visible[:, None], torch.finfo(self.dtype).min
        )
        with torch.inference_mode():
            logits = self._kept_logits(
                keep.to(self.device),
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
            )
            dev = logits.device
            rows_t = torch.tensor(rows, dtype=torch.long, device=dev)
            targets_t = torch.tensor(targets, dtype=torch.long, device=dev)
            req_t = torch.tensor(req_of, dtype=torch.long, device=dev)
            # fp32 log-softmax over the vocabulary a slab of rows at a time: a slab stays in cache, and no
            # second [n_kept, vocab] tensor is allocated.
            token_lp = torch.empty(len(rows), dtype=torch.float32, device=dev)
            best = torch.empty(logits.shape[0], dtype=torch.long, device=dev)
            step = max(1, _SOFTMAX_SLAB // logits.shape[-1])
            for s0 in range(0, logits.shape[0], step):
                slab = logits[s0 : s0 + step].float().log_softmax(dim=-1)
                best[s0 : s0 + step] = slab.argmax(dim=-1)
                sel = (rows_t >= s0) & (rows_t < s0 + step)
                token_lp[sel] = slab[rows_t[sel] - s0, targets_t[sel]]
            missed = best[rows_t] != targets_t
            lp = torch.zeros(k, dtype=torch.float64, device=logits.device).index_add_(
                0, req_t, token_lp.double()
            )
            n_missed = torch.zeros(k, dtype=torch.long, device=logits.device).index_add_(
                0, req_t, missed.long()
            )
        lps, misses = lp.tolist(), n_missed.tolist()
        out: list[list[LoglikelihoodResult]] = []
        k = 0
        for tree in chunk:
            res = []
            for _, _, cont in tree.members:
                res.append(LoglikelihoodResult(lps[k], len(cont), misses[k] == 0))
                k += 1
            out.append(res)
        return out

    def _kept_logits(self, keep: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """Logits at the ``True`` positions of ``keep`` (``[batch, seq]``), as ``[n_kept, vocab]`` in row order.

        Models whose forward slices with transformers' ``slice_logits_to_keep`` project only those positions onto
        the vocabulary; others compute all logits and are sliced after.
        """
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if self._slices_logits() else {}
        logits = self.model(**inputs, use_cache=False, **kwargs).logits
        return logits if logits.ndim == 2 else logits[keep]

    def _slices_logits(self) -> bool:
        """Whether the model's forward takes a boolean ``logits_to_keep`` (its module uses the transformers helper)."""
        module = sys.modules.get(getattr(type(self.model).forward, "__module__", ""), None)
        return getattr(module, "slice_logits_to_keep", None) is not None

    # ------------------------------------------------------------------ generation

    def _prompt_ids(self, prompt: str, params: GenerationParams) -> list[int]:
        if params.chat_template and getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        else:
            bos = self.tokenizer.bos_token
            kwargs = {"add_special_tokens": False} if bos and prompt.startswith(bos) else {}
            ids = list(self.tokenizer.encode(prompt, **kwargs))
        keep = max(1, self.max_length - params.max_new_tokens)
        return ids[-keep:] or [self.prefix_token_id]

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Generate a continuation per prompt: greedy when ``temperature == 0``, else sampled per prompt.

        Prompts are left-padded and batched longest first; the returned text holds only the new tokens
        (special tokens skipped), cut before the first stop string. A sampled prompt draws from its own random
        stream seeded by its seed (:class:`_PerRowSampler`; seeds from
        :func:`~auditlm.targets.base.prompt_seeds` when not given), so its text does not depend on the batch
        size, the order of the prompts, an out-of-memory back-off or the rest of the call, up to floating-point
        differences in the logits between batch shapes. Results are memoised per ``(prompt, params, seed)``
        (greedy: per ``(prompt, params)``).
        """
        prompts = [str(p) for p in prompts]
        sample = params.temperature > 0
        keys = [
            (p, s if sample else None) for p, s in zip(prompts, prompt_seeds(prompts, params, seeds), strict=True)
        ]
        counts: dict[tuple[str, int | None], int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        todo = [k for k in counts if (k[0], params, k[1]) not in self._gen_cache]
        cached = len(keys) - sum(counts[k] for k in todo)
        if progress and cached:
            progress(cached)

        encoded = [(k, self._prompt_ids(k[0], params)) for k in todo]
        encoded.sort(key=lambda e: (-len(e[1]), tuple(e[1]), e[0][1] or 0))
        results = self._run_batched(
            [(ids, k[1]) for k, ids in encoded],
            [counts[k] for k, _ in encoded],
            lambda chunk: self._gen_batch(chunk, params),
            progress,
        )
        for (k, _), text in zip(encoded, results, strict=True):
            self._gen_cache[(k[0], params, k[1])] = text
        return [self._gen_cache[(p, params, s)] for p, s in keys]

    def _eos_ids(self) -> set[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}

    def _gen_batch(self, chunk: list[tuple[list[int], int | None]], params: GenerationParams) -> list[str]:
        """Generate for a batch of ``(prompt ids, seed)``; the seed is ``None`` for greedy decoding."""
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        rows = [ids for ids, _ in chunk]
        width = max(len(x) for x in rows)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self._eos_ids()), 0)
        ids = torch.tensor(
            [[pad] * (width - len(x)) + x for x in rows], dtype=torch.long, device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(x)) + [1] * len(x) for x in rows], dtype=torch.long, device=self.device
        )
        eos_ids = self._eos_ids()
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "pad_token_id": pad,
            "eos_token_id": sorted(eos_ids) or None,
        }
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(_PerRowSampler([seed or 0 for _, seed in chunk], params.temperature, params.top_p))
        stopping = StoppingCriteriaList()
        if params.stop:
            stopping.append(_StopOnStrings(self.tokenizer, params.stop, width))
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=GenerationConfig(**gen_kwargs),
                logits_processor=processors,
                stopping_criteria=stopping,
            )
        texts = []
        for row in out[:, width:].tolist():
            for j, tok in enumerate(row):
                if tok in eos_ids:
                    row = row[:j]
                    break
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            cut = [text.index(s) for s in params.stop if s and s in text]
            texts.append(text[: min(cut)] if cut else text)
        return texts
