"""A model behind an OpenAI-compatible HTTP server as an audit target: ``openai:BASE_URL#MODEL``.

Generation uses ``/v1/completions`` (``/v1/chat/completions`` when the suite asks for the chat template); greedy
decoding is ``temperature=0``, a sampled prompt sends its own ``seed``. Log-likelihoods use *prompt
log-probabilities*: ``/v1/completions`` with ``prompt=context+continuation, echo=True, logprobs=1,
max_tokens=1``; the continuation's tokens are those whose ``text_offset`` lies at or after the character where
the continuation starts. vLLM's server returns them. ``transformers serve`` (5.x) ignores ``echo``/``logprobs``;
llama-cpp-python's server (0.3.36) echoes them misaligned (without the generated token, each prompt token given
the log-probability of the *next* position, for models that add no BOS, and the first token after a BOS is
nulled); hosted OpenAI models no longer echo. One probe request (:meth:`OpenAITarget.check_loglikelihood`) finds
all three before any suite request is sent, and the run stops with a one-line :class:`TargetError`.

Semantics follow lm-evaluation-harness as :class:`~auditlm.targets.hf.HFTarget` does, with the server's own
tokenizer: trailing whitespace of a context moves into the continuation; when the server's tokens straddle the
context/continuation boundary (rare: a continuation starting mid-word), the context is tokenised alone (one more
echo request) and the continuation is ``tokens(context + continuation)[len(tokens(context)):]``, as ``HFLM``
takes it, but scored after the whole text's own first tokens (``HFLM`` feeds ``tokens(context)``, which a text
prompt cannot carry), so such a request can differ from :class:`HFTarget`. An empty context is conditioned on
the start token: on the one the server prepends itself (llama.cpp for models whose GGUF says ``add_bos_token``)
when it does, else on ``bos_token`` (its text, which the server must parse as the special token, as vLLM and
llama.cpp do), else it is a :class:`TargetError`. ``is_greedy`` compares each continuation token with the top-1
entry of ``top_logprobs``.

Retries (429, 5xx, dropped connections) and timeouts are the ``openai`` SDK's (``max_retries``, ``timeout``).
Requests run on a thread pool of ``max_concurrency``; identical requests in a call are sent once and results are
memoised on the instance. The API key is read from the environment variable the caller names, is never stored,
and is scrubbed from every error message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar
from urllib.parse import urlsplit

from auditlm.errors import TargetError
from auditlm.targets.base import (
    GenerationParams,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ProgressCallback,
    prompt_seeds,
)

#: ``--model openai:BASE_URL#MODEL``.
PREFIX = "openai:"
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_REQUEST_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 5
#: The key sent when no ``--api-key-env`` is named (local servers ignore it; the SDK requires one).
DUMMY_KEY = "EMPTY"
#: The probe text of :meth:`OpenAITarget.check_loglikelihood` (mid-sentence: the next token is no end token).
_PROBE = "The cat sat on the"
LOGPROB_SERVERS = "vLLM's OpenAI-compatible server (echo with logprobs on /v1/completions)"

_K = TypeVar("_K")
_R = TypeVar("_R")


def parse_spec(spec: str) -> tuple[str, str]:
    """``openai:BASE_URL#MODEL`` -> ``(base_url, model)``; a malformed spec is a one-line :class:`TargetError`."""
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    url, sep, model = body.rpartition("#")
    form = "openai:BASE_URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#smollm2"
    if not sep or not url or not model.strip():
        raise TargetError(f"malformed model spec {spec!r} (valid: {form})")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"malformed model spec {spec!r}: {url!r} is not an http(s) URL (valid: {form})")
    if parts.username or parts.password:
        raise TargetError("credentials in the server URL are refused (they would be stored with the run); "
                          "put the key in an environment variable and pass --api-key-env NAME")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as e:
        raise TargetError(f"malformed model spec {spec!r}: {e} (valid: {form})") from e
    return url.rstrip("/"), model.strip()


def read_api_key(api_key_env: str | None) -> str:
    """The key in environment variable ``api_key_env`` (``DUMMY_KEY`` when none is named)."""
    if not api_key_env:
        return DUMMY_KEY
    key = os.environ.get(api_key_env)
    if not key:
        raise TargetError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    return key


def check_server(base_url: str, api_key: str = DUMMY_KEY, timeout: float = 5.0) -> list[str]:
    """The model ids a server lists at ``GET {base_url}/models`` (a short timeout, no retries); an unreachable
    or failing server is a one-line :class:`TargetError` naming the URL."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
    try:
        return [m.id for m in client.models.list()]
    except openai.APIError as e:
        raise TargetError(f"cannot list models at {base_url}/models: {_describe(e, api_key)}") from None
    finally:
        client.close()


def _describe(e: BaseException, secret: str | None) -> str:
    """A one-line description of an ``openai`` SDK error, with ``secret`` (the API key) scrubbed out."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        text = "the request timed out"
    elif isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        text = f"server unreachable ({type(cause).__name__ if cause else 'connection error'})"
    elif isinstance(e, openai.APIStatusError):
        body = e.body if isinstance(e.body, dict) else {}
        msg = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
        msg = msg or body.get("detail") or body.get("message") or e.message
        text = f"HTTP {e.status_code}: {msg}"
    else:
        text = f"{type(e).__name__}: {e}"
    text = " ".join(str(text).split())[:300]
    if secret and secret != DUMMY_KEY:
        text = text.replace(secret, "***")
    return text


class OpenAITarget:
    """A model served by an OpenAI-compatible server (vLLM, llama.cpp, llama-cpp-python, ``transformers serve``).

    ``base_url`` ends in ``/v1``; ``model`` is the name requests carry. ``api_key_env`` names the environment
    variable holding the key (none: a dummy key). ``max_concurrency`` requests are in flight at once, each with
    ``request_timeout`` seconds and ``max_retries`` SDK retries. ``bos_token`` is the text of the start token an
    empty context is conditioned on when the server does not prepend one itself.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        bos_token: str | None = None,
        name: str | None = None,
    ) -> None:
        import openai

        if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
            raise TargetError(f"--max-concurrency must be a positive integer, not {max_concurrency!r}")
        if not request_timeout > 0:
            raise TargetError(f"--request-timeout must be positive, not {request_timeout!r}")
        self.base_url, self.model = parse_spec(f"{base_url}#{model}")
        self.name: str = name or f"{PREFIX}{self.base_url}#{self.model}"
        self.max_concurrency = max_concurrency
        self.request_timeout = float(request_timeout)
        self.bos_token = bos_token
        self._key = read_api_key(api_key_env)
        self._client = openai.OpenAI(base_url=self.base_url, api_key=self._key, max_retries=max_retries,
                                     timeout=self.request_timeout)
        self._server_entry: dict[str, Any] | None = None
        self._server_bos: bool | None = None  # whether the server prepends a start token (probe)
        self._checked = False
        self._lock = threading.Lock()
        self._ll_cache: dict[LoglikelihoodRequest, LoglikelihoodResult] = {}
        self._gen_cache: dict[tuple[str, GenerationParams, int | None], str] = {}

    # ------------------------------------------------------------------ provenance

    def _listed(self) -> dict[str, Any]:
        """The server's ``GET /models`` entry for this model (the only one, if the name is not listed), as a
        dict with the server's extra fields; ``{}`` when it cannot be had. Fetched once."""
        if self._server_entry is None:
            try:
                listed = list(self._client.with_options(max_retries=0, timeout=10).models.list())
            except Exception:  # provenance is best effort; the requests themselves report failures
                listed = []
            mine = [m for m in listed if m.id == self.model] or (listed if len(listed) == 1 else [])
            self._server_entry = mine[0].model_dump() if mine else {}
        return self._server_entry

    @property
    def max_length(self) -> int | None:
        """The model's context length in tokens when the server lists it (vLLM's ``max_model_len`` in
        ``GET /models``); ``utility.perplexity`` sizes its windows by it. ``None`` otherwise."""
        n = self._listed().get("max_model_len")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    def info(self) -> dict[str, Any]:
        """Backend, server URL, requested and server-reported model id (never the API key)."""
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "server_model": self._listed().get("id") or None,
            "prompt_logprobs": self._checked or None,
            "max_concurrency": self.max_concurrency,
            "request_timeout": self.request_timeout,
            "max_model_len": self.max_length,
        }

    # ------------------------------------------------------------------ requests

    def _call(self, what: str, fn: Callable[[], _R]) -> _R:
        """Run one SDK call; its failure (after the SDK's retries) is a one-line :class:`TargetError`."""
        import openai

        try:
            return fn()
        except openai.APIError as e:
            raise TargetError(f"{what} at {self.base_url} failed: {_describe(e, self._key)}") from None

    def _map(self, keys: list[_K], weights: list[int], fn: Callable[[_K], _R],
             progress: ProgressCallback | None) -> list[_R]:
        """``fn`` over ``keys`` with at most ``max_concurrency`` in flight; results in key order. ``progress``
        is called (in this thread) with each finished key's weight."""
        if not keys:
            return []
        out: list[Any] = [None] * len(keys)
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(keys))) as pool:
            futures = {pool.submit(fn, k): i for i, k in enumerate(keys)}
            try:
                for f in as_completed(futures):
                    i = futures[f]
                    out[i] = f.result()
                    if progress:
                        progress(weights[i])
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out

    def _echo(self, prompt: str) -> Any:
        """The ``logprobs`` object of an echo request for ``prompt`` (prompt tokens plus one generated token)."""
        resp = self._call("a log-likelihood request", lambda: self._client.completions.create(
            model=self.model, prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0.0))
        lp = resp.choices[0].logprobs if resp.choices else None
        if (lp is None or not lp.tokens or lp.token_logprobs is None or lp.text_offset is None
                or len(lp.text_offset) != len(lp.tokens) or len(lp.token_logprobs) != len(lp.tokens)):
            raise TargetError(
                f"the server at {self.base_url} (model {self.model}) returns no prompt log-probabilities "
                f"(/v1/completions with echo=true, logprobs=1), so it cannot score log-likelihood suites; servers "
                f"that can: {LOGPROB_SERVERS}"
            )
        return lp

    def check_loglikelihood(self) -> None:
        """Probe once whether the server returns prompt log-probabilities; a one-line :class:`TargetError`
        when it does not. Also learns whether it prepends a start token. Called by the CLI before any suite
        request when the run has log-likelihood suites, and by the first :meth:`loglikelihood` call."""
        with self._lock:
            if self._checked:
                return
            lp = self._echo(_PROBE)
            offsets = [int(o) for o in lp.text_offset]
            if sum(o >= len(_PROBE) for o in offsets) != 1 or lp.token_logprobs[0] is not None:
                # The echo of a prompt is its tokens (the first one unscored) and then the one generated token.
                # llama-cpp-python's server (0.3.x) drops the generated token and shifts every prompt token's
                # log-probability by one position for models that add no BOS, so its numbers are wrong.
                raise TargetError(
                    f"the server at {self.base_url} (model {self.model}) returns prompt log-probabilities that are "
                    "not aligned with the prompt tokens (the echo lacks the generated token, as llama-cpp-python's "
                    f"server does), so it cannot score log-likelihood suites; servers that can: {LOGPROB_SERVERS}"
                )
            # A prepended start token spans none of the prompt's characters: the next token starts at 0 too.
            self._server_bos = len(offsets) > 1 and offsets[0] == 0 and offsets[1] == 0
            self._checked = True

    def _prompt_of(self, context: str, continuation: str) -> tuple[str, int, str]:
        """``(prompt, character where the continuation starts, context for a straddle re-count)``."""
        if context == "":
            if self._server_bos:
                return continuation, 0, ""
            if self.bos_token:
                return self.bos_token + continuation, len(self.bos_token), self.bos_token
            raise TargetError(
                f"the server at {self.base_url} prepends no start token, so a request with an empty context "
                "cannot be scored (lm-eval conditions it on BOS): pass --bos-token TEXT, the text of the model's "
                "start token (e.g. '<|im_start|>' for SmolLM2), which the server must parse as that token"
            )
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        return context + continuation, len(context), context

    def _score(self, req: LoglikelihoodRequest) -> LoglikelihoodResult:
        prompt, start, context = self._prompt_of(*req)
        lp = self._echo(prompt)
        offsets = [int(o) for o in lp.text_offset]
        end = len(prompt)
        in_prompt = [i for i, o in enumerate(offsets) if o < end]
        if start and start not in offsets:
            # The server's tokens straddle the boundary: lm-eval's split, tokens(whole)[len(tokens(context)):].
            n_ctx = len([o for o in self._echo(context).text_offset if int(o) < len(context)])
            idx = in_prompt[n_ctx:]
        else:
            idx = [i for i in in_prompt if offsets[i] >= start]
            if req[0] == "" and self._server_bos:
                idx = idx[1:]  # the start token the server prepended (it spans no characters)
            elif req[0] == "" and sum(1 for i in in_prompt if offsets[i] < start) != 1:
                raise TargetError(f"the server at {self.base_url} did not read --bos-token {self.bos_token!r} as "
                                  "one special token")
        if not idx:
            return LoglikelihoodResult(0.0, 0, True)
        if any(lp.token_logprobs[i] is None for i in idx):
            raise TargetError(f"the server at {self.base_url} returned no log-probability for the first prompt "
                              "token of a continuation (nothing precedes it)")
        greedy = True
        for i in idx:
            top = (lp.top_logprobs or [None] * len(lp.tokens))[i]
            if not top:
                raise TargetError(f"the server at {self.base_url} returned no top_logprobs for prompt tokens")
            if max(top, key=top.get) != lp.tokens[i]:
                greedy = False
                break
        return LoglikelihoodResult(float(sum(lp.token_logprobs[i] for i in idx)), len(idx), greedy)

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: ProgressCallback | None = None
    ) -> list[LoglikelihoodResult]:
        """Score each ``(context, continuation)`` from the server's prompt log-probabilities (lm-eval semantics,
        the server's tokenizer); results in request order, each distinct request sent once."""
        reqs = [(str(c), str(x)) for c, x in requests]
        if not reqs:
            return []
        self.check_loglikelihood()
        counts: dict[LoglikelihoodRequest, int] = {}
        for r in reqs:
            counts[r] = counts.get(r, 0) + 1
        todo = [r for r in counts if r not in self._ll_cache]
        cached = len(reqs) - sum(counts[r] for r in todo)
        if progress and cached:
            progress(cached)
        for r, res in zip(todo, self._map(todo, [counts[r] for r in todo], self._score, progress), strict=True):
            self._ll_cache[r] = res
        return [self._ll_cache[r] for r in reqs]

    def _generate_one(self, key: tuple[str, int | None], params: GenerationParams) -> str:
        prompt, seed = key
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens,
                                  "temperature": params.temperature}
        if params.temperature > 0:
            kwargs.update(top_p=params.top_p, seed=seed)
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.chat_template:
            resp = self._call("a chat completion", lambda: self._client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **kwargs))
            text = (resp.choices[0].message.content if resp.choices else None) or ""
        else:
            resp = self._call("a completion", lambda: self._client.completions.create(prompt=prompt, **kwargs))
            text = resp.choices[0].text if resp.choices else ""
        cut = [text.index(s) for s in params.stop if s and s in text]  # servers that return the stop string
        return text[: min(cut)] if cut else text

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        progress: ProgressCallback | None = None,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """One continuation per prompt (greedy: ``temperature=0``; sampled: the prompt's seed is sent as
        ``seed``, which vLLM and llama.cpp honour); results in prompt order, each distinct request sent once."""
        prompts = [str(p) for p in prompts]
        sample = params.temperature > 0
        keys = [(p, s if sample else None) for p, s in zip(prompts, prompt_seeds(prompts, params, seeds), strict=True)]
        counts: dict[tuple[str, int | None], int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        todo = [k for k in counts if (k[0], params, k[1]) not in self._gen_cache]
        cached = len(keys) - sum(counts[k] for k in todo)
        if progress and cached:
            progress(cached)
        texts = self._map(todo, [counts[k] for k in todo], lambda k: self._generate_one(k, params), progress)
        for k, text in zip(todo, texts, strict=True):
            self._gen_cache[(k[0], params, k[1])] = text
        return [self._gen_cache[(p, params, s)] for p, s in keys]

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
