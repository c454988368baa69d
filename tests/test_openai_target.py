"""OpenAITarget against an in-process fake OpenAI-compatible server backed by the tiny random-weight model.

The fake server computes echo log-probabilities with the tiny model (one forward pass per request, the model's
own fast tokenizer for tokens and character offsets) and generates with an :class:`HFTarget`, so scores and
texts through the HTTP path can be compared with the local target. It counts requests and requests in flight,
and can inject 429 / 500 answers and dropped connections.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dashboard_store import data_dir

from auditlm.errors import TargetError
from auditlm.targets.base import GenerationParams
from auditlm.targets.openai import OpenAITarget, parse_spec
from tests.conftest import run_cli

SECRET = "sk-test-SECRET-0123456789"


class FakeServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) speaking enough of the OpenAI API for OpenAITarget."""

    def __init__(self, model_dir: Path, *, logprobs: bool = True, delay: float = 0.0, add_bos: bool = True,
                 shifted: bool = False, max_model_len: int | None = None) -> None:
        import torch

        from auditlm.targets.hf import HFTarget

        torch.set_num_threads(1)
        self.hf = HFTarget(str(model_dir), batch_size=1, prefix_sharing=False)
        self.logprobs = logprobs
        self.add_bos = add_bos
        self.shifted = shifted  # echo like llama-cpp-python's server: no generated token, logprobs one off
        self.max_model_len = max_model_len  # listed in GET /models, as vLLM does
        self.delay = delay
        self.faults: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    entry = {"id": "tiny-server", "object": "model", "created": 0, "owned_by": "test"}
                    if srv.max_model_len is not None:
                        entry["max_model_len"] = srv.max_model_len
                    self._send(200, {"object": "list", "data": [entry]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with srv.lock:
                    srv.bodies.append(body)
                    srv.auth.append(self.headers.get("Authorization", ""))
                    fault = srv.faults.pop(0) if srv.faults else None
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if fault in ("429", "500"):
                        self._send(int(fault), {"error": {"message": f"injected {fault}"}}, {"retry-after-ms": "10"})
                        return
                    if fault == "401":
                        self._send(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
                        return
                    time.sleep(srv.delay)
                    with srv.model_lock:
                        self._send(200, srv.answer(self.path, body))
                finally:
                    with srv.lock:
                        srv.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def echo(self, prompt: str) -> dict[str, Any]:
        import torch

        tok, model = self.hf.tokenizer, self.hf.model
        enc = tok(prompt, return_offsets_mapping=True, add_special_tokens=self.add_bos)
        ids, offsets = enc["input_ids"], [s for s, _ in enc["offset_mapping"]]
        with torch.inference_mode():
            logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        texts = [tok.decode([i]) for i in ids]
        token_lps: list[float | None] = [None]
        tops: list[dict[str, float] | None] = [None]
        for pos in range(1, len(ids)):
            row = logp[pos - 1]
            best = int(row.argmax())
            token_lps.append(float(row[ids[pos]]))
            tops.append({tok.decode([best]): float(row[best]), texts[pos]: float(row[ids[pos]])})
        nxt = int(logp[-1].argmax())  # the one generated token (max_tokens=1)
        texts.append(tok.decode([nxt]))
        token_lps.append(float(logp[-1][nxt]))
        tops.append({texts[-1]: float(logp[-1][nxt])})
        offsets.append(len(prompt))
        return {"tokens": texts, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        base = {"id": "x", "created": 0, "model": body["model"]}
        if path.endswith("/chat/completions"):
            text = self._generate(body["messages"][0]["content"], body, chat=True)
            return base | {"object": "chat.completion", "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}
        if body.get("echo") and body.get("logprobs") is not None:
            if not self.logprobs:  # like `transformers serve`: echo and logprobs ignored
                return base | {"object": "text_completion", "choices": [
                    {"index": 0, "finish_reason": "length", "text": "x", "logprobs": None}]}
            lp = self.echo(body["prompt"])
            if self.shifted:
                lp = {k: v[:-1] for k, v in lp.items()}
                lp["token_logprobs"] = [None, *lp["token_logprobs"][2:], -1.0]
            return base | {"object": "text_completion", "choices": [
                {"index": 0, "finish_reason": "length", "text": body["prompt"] + lp["tokens"][-1], "logprobs": lp}]}
        text = self._generate(body["prompt"], body, chat=False)
        return base | {"object": "text_completion", "choices": [
            {"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}]}

    def _generate(self, prompt: str, body: dict[str, Any], chat: bool) -> str:
        params = GenerationParams(max_new_tokens=body["max_tokens"], temperature=body.get("temperature", 1.0),
                                  top_p=body.get("top_p", 1.0), stop=tuple(body.get("stop") or ()),
                                  chat_template=chat)
        return self.hf.generate([prompt], params, seeds=[body.get("seed") or 0])[0]

    def posts(self) -> int:
        return len(self.bodies)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    s = FakeServer(tiny_model_dir, delay=0.02)
    yield s
    s.close()


@pytest.fixture
def fresh(server: FakeServer) -> FakeServer:
    """The module's server with its counters and faults reset."""
    server.faults, server.bodies, server.auth, server.max_in_flight = [], [], [], 0
    return server


def _target(server: FakeServer, **kw: Any) -> OpenAITarget:
    return OpenAITarget(server.url, "tiny", **kw)


REQUESTS = [
    ("The man was", " a doctor"),
    ("The woman was", " a doctor"),
    ("", "The nurse is kind."),
    ("she said ", "hello there"),  # trailing whitespace moves into the continuation
    ("Thenurse", "worked"),  # the server's tokens may straddle the boundary
    ("the", " the the the"),
    ("a", "b"),
]


def test_parse_spec() -> None:
    assert parse_spec("openai:http://127.0.0.1:8000/v1#smollm2") == ("http://127.0.0.1:8000/v1", "smollm2")
    assert parse_spec("openai:https://h.example/v1/#org/m") == ("https://h.example/v1", "org/m")
    for bad in ("openai:http://h/v1", "openai:#m", "openai:ftp://h/v1#m", "openai:http://u:p@h/v1#m",
                "openai:http://h:99999/v1#m"):
        with pytest.raises(TargetError) as e:
            parse_spec(bad)
        assert "\n" not in str(e.value)


def test_loglikelihood_matches_hf(fresh: FakeServer, tiny_target, one_thread) -> None:
    t = _target(fresh)
    got = t.loglikelihood(REQUESTS)
    want = tiny_target.loglikelihood(REQUESTS)
    for g, w in zip(got, want, strict=True):
        assert g.n_tokens == w.n_tokens
        assert g.logprob == pytest.approx(w.logprob, abs=1e-4)
        assert g.is_greedy == w.is_greedy


def test_is_greedy_true_case(fresh: FakeServer, tiny_target, one_thread) -> None:
    """A continuation built from the model's own greedy tokens is greedy through the server too."""
    text = tiny_target.generate(["The man was"], GenerationParams(max_new_tokens=3))[0]
    assert text
    req = [("The man was", text)]
    want = tiny_target.loglikelihood(req)[0]
    got = _target(fresh).loglikelihood(req)[0]
    assert got.is_greedy == want.is_greedy
    assert got.logprob == pytest.approx(want.logprob, abs=1e-4)


def test_generation_matches_hf(fresh: FakeServer, tiny_target, one_thread) -> None:
    t = _target(fresh)
    prompts = ["The man was", "The doctor said", "she is"]
    for params in (GenerationParams(max_new_tokens=6), GenerationParams(max_new_tokens=6, chat_template=True),
                   GenerationParams(max_new_tokens=6, temperature=0.8, seed=3),
                   GenerationParams(max_new_tokens=6, stop=(" ",))):
        seeds = [11, 12, 13]
        assert t.generate(prompts, params, seeds=seeds) == tiny_target.generate(prompts, params, seeds=seeds)
    sampled = [b for b in fresh.bodies if b.get("temperature", 0) > 0]
    assert sorted(b["seed"] for b in sampled) == [11, 12, 13]
    assert all("seed" not in b for b in fresh.bodies if b.get("temperature") == 0)
    assert sum("messages" in b for b in fresh.bodies) == 3
    assert all(b["stop"] == [" "] for b in fresh.bodies if "stop" in b)


def test_retries_on_429_500_and_dropped_connection(fresh: FakeServer) -> None:
    t = _target(fresh, max_concurrency=1)
    fresh.faults = ["429", "500", "drop"]
    out = t.generate(["The man was"], GenerationParams(max_new_tokens=2))
    assert isinstance(out[0], str)
    assert fresh.posts() == 4  # three failures, then the answer


def test_retries_exhausted_is_one_line(fresh: FakeServer) -> None:
    t = _target(fresh, max_retries=1)
    fresh.faults = ["500", "500"]
    with pytest.raises(TargetError) as e:
        t.generate(["x"], GenerationParams(max_new_tokens=2))
    assert "HTTP 500" in str(e.value) and fresh.url in str(e.value) and "\n" not in str(e.value)


def test_concurrency_bound_and_order(fresh: FakeServer, tiny_target, one_thread) -> None:
    reqs = [("The man was", f" {w}") for w in ["good", "bad", "kind", "smart", "strong", "weak", "rich", "poor", "young", "old"]]
    t = _target(fresh, max_concurrency=3)
    fresh.delay = 0.05
    try:
        seen: list[int] = []
        got = t.loglikelihood(reqs, progress=seen.append)
    finally:
        fresh.delay = 0.02
    assert fresh.max_in_flight == 3  # bounded, and the bound is reached
    assert sum(seen) == len(reqs)
    want = tiny_target.loglikelihood(reqs)
    assert [round(g.logprob, 3) for g in got] == [round(w.logprob, 3) for w in want]


def test_identical_requests_sent_once(fresh: FakeServer) -> None:
    t = _target(fresh)
    reqs = [("The man was", " a doctor")] * 5 + [("The woman was", " a doctor")] * 3
    seen: list[int] = []
    out = t.loglikelihood(reqs, progress=seen.append)
    assert fresh.posts() == 1 + 2  # the capability probe, then one request per distinct pair
    assert len(out) == 8 and out[0] == out[4] and out[5] == out[7] and sum(seen) == 8
    t.loglikelihood(reqs)  # memoised
    assert fresh.posts() == 3
    t.generate(["a", "a", "b"], GenerationParams(max_new_tokens=2))
    assert fresh.posts() == 5


def test_api_key_never_leaks(fresh: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    t = _target(fresh, api_key_env="MY_KEY")
    t.generate(["a"], GenerationParams(max_new_tokens=1))
    assert fresh.auth[-1] == f"Bearer {SECRET}"  # the key is sent ...
    assert SECRET not in json.dumps(t.info())  # ... but never reported
    assert t.info()["server_model"] == "tiny-server"
    fresh.faults = ["401"]  # a server that quotes the key back in its error
    with pytest.raises(TargetError) as e:
        t.generate(["b"], GenerationParams(max_new_tokens=1))
    assert SECRET not in str(e.value) and "***" in str(e.value)
    # a whole run through the CLI: the key is in neither the store nor the output
    store = tmp_path / "s.db"
    code, out, err = run_cli(["run", "--model", f"openai:{fresh.url}#tiny", "--api-key-env", "MY_KEY",
                              "--suite", "bias.counterfactual_templates", "--limit", "2", "--store", str(store),
                              "--max-concurrency", "2", "--request-timeout", "30"], capsys)
    assert code == 0, err
    assert SECRET not in out + err
    for f in tmp_path.iterdir():
        assert SECRET.encode() not in f.read_bytes()
    from auditlm.store import Store

    with Store(store) as st:
        (run,) = st.list_runs()
        assert run.config["api_key_env"] == "MY_KEY" and run.config["max_concurrency"] == 2
        assert run.model_info["backend"] == "openai" and run.status == "complete"


def test_unset_key_env_is_one_line(fresh: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TargetError, match="NO_SUCH_KEY_VAR"):
        _target(fresh, api_key_env="NO_SUCH_KEY_VAR")


def test_server_without_logprobs_stops_before_suite_requests(tiny_model_dir: Path, tmp_path: Path,
                                                             capsys) -> None:
    srv = FakeServer(tiny_model_dir, logprobs=False)
    try:
        t = OpenAITarget(srv.url, "tiny")
        with pytest.raises(TargetError, match="no prompt log-probabilities") as e:
            t.loglikelihood(REQUESTS)
        assert srv.posts() == 1 and "vLLM" in str(e.value)  # the probe only, not the batch
        srv.bodies.clear()
        store = tmp_path / "s.db"
        code, _out, err = run_cli(["run", "--model", f"openai:{srv.url}#tiny", "--suite",
                                  "bias.counterfactual_templates", "--limit", "2", "--store", str(store)], capsys)
        assert code == 2
        line = err.strip()
        assert "\n" not in line and "no prompt log-probabilities" in line and "Traceback" not in err
        assert srv.posts() == 1 and srv.bodies[0]["prompt"] != ""  # the probe, nothing of the suite
        assert not store.exists()
    finally:
        srv.close()


def test_generation_only_run_on_server_without_logprobs(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """A run of generation suites only needs no prompt log-probabilities."""
    srv = FakeServer(tiny_model_dir, logprobs=False)
    try:
        code, _out, err = run_cli(["run", "--model", f"openai:{srv.url}#tiny", "--suite",
                                  "bias.counterfactual_generation", "--limit", "2", "--store",
                                  str(tmp_path / "s.db")], capsys)
        assert code == 0, err
        assert all(not b.get("echo") for b in srv.bodies)
    finally:
        srv.close()


@pytest.mark.parametrize("spec", ["openai:http://127.0.0.1:9/v1#m", "openai:not-a-url#m", "openai:http://h/v1"])
def test_bad_spec_or_unreachable_exits_2(spec: str, tmp_path: Path, capsys) -> None:
    store = tmp_path / "s.db"
    t0 = time.perf_counter()
    code, _out, err = run_cli(["run", "--model", spec, "--suite", "bias.counterfactual_templates", "--limit", "2",
                              "--store", str(store)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if "127.0.0.1:9" in spec:
        assert "http://127.0.0.1:9/v1" in err and "unreachable" in err
    assert time.perf_counter() - t0 < 30
    assert not store.exists()


def test_empty_context_without_server_bos(tiny_model_dir: Path, tiny_target, one_thread) -> None:
    """A server that prepends no start token: an empty context needs bos_token, then matches HFTarget."""
    srv = FakeServer(tiny_model_dir, add_bos=False)
    try:
        reqs = [("", "The nurse is kind."), ("", "he")]
        with pytest.raises(TargetError, match="--bos-token"):
            OpenAITarget(srv.url, "tiny").loglikelihood(reqs)
        got = OpenAITarget(srv.url, "tiny", bos_token="<s>").loglikelihood(reqs)
        for g, w in zip(got, tiny_target.loglikelihood(reqs), strict=True):
            assert (g.n_tokens, g.is_greedy) == (w.n_tokens, w.is_greedy)
            assert g.logprob == pytest.approx(w.logprob, abs=1e-4)
        with pytest.raises(TargetError, match="one special token"):
            OpenAITarget(srv.url, "tiny", bos_token="<s").loglikelihood(reqs)
    finally:
        srv.close()


def test_straddling_boundary_uses_context_token_count(fresh: FakeServer, tiny_target, one_thread) -> None:
    """When the server's tokens straddle len(context), the context is counted alone (one more request) and the
    continuation is ``tokens(whole)[len(tokens(context)):]``, as in lm-eval, scored after ``tokens(whole)``'s
    own first tokens (lm-eval feeds ``tokens(context)`` instead, which a text API cannot send)."""
    import torch

    tok = tiny_target.tokenizer

    def straddles(c: str, x: str) -> bool:
        starts = {s for s, _ in tok(c + x, return_offsets_mapping=True)["offset_mapping"]}
        return len(c) not in starts and len(tok(c + x).input_ids) > len(tok(c).input_ids)

    words = ["nurse", "doctor", "teacher", "morning", "worker", "hospital", "children", "engineer"]
    ctx, cont = next((c, x) for w in words for k in range(1, len(w))
                     for c, x in [(f"the {w[:k]}", f"{w[k:]} is here")] if straddles(c, x))
    got = _target(fresh).loglikelihood([(ctx, cont)])[0]
    assert fresh.posts() == 3  # probe, the pair, the context alone
    whole, n_ctx = tok(ctx + cont).input_ids, len(tok(ctx).input_ids)
    with torch.inference_mode():
        logp = tiny_target.model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    want = sum(float(logp[i - 1, whole[i]]) for i in range(n_ctx, len(whole)))
    assert got.n_tokens == len(whole) - n_ctx == tiny_target.loglikelihood([(ctx, cont)])[0].n_tokens
    assert got.logprob == pytest.approx(want, abs=1e-4)


def test_misaligned_echo_is_refused(tiny_model_dir: Path) -> None:
    """An echo without the generated token (llama-cpp-python's server, whose log-probabilities are shifted by
    one position) is refused by the probe, before the batch."""
    srv = FakeServer(tiny_model_dir, shifted=True)
    try:
        with pytest.raises(TargetError, match="not aligned") as e:
            OpenAITarget(srv.url, "tiny").loglikelihood(REQUESTS)
        assert srv.posts() == 1 and "\n" not in str(e.value)
    finally:
        srv.close()


@pytest.mark.skipif(not (data_dir() / "wikitext2").is_dir(), reason="needs WikiText-2 (AUDITLM_DATA)")
def test_context_length_from_the_server_listing(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """vLLM lists ``max_model_len`` in ``GET /models``: the target reports it as ``max_length``, and a
    perplexity run through the server sizes its windows by it (a server that lists none: ``None``)."""
    from auditlm.store import Store

    srv = FakeServer(tiny_model_dir, max_model_len=48)
    try:
        t = _target(srv)
        assert t.max_length == 48 and t.info()["max_model_len"] == 48 and t.info()["server_model"] == "tiny-server"
        store = tmp_path / "s.db"
        code, _out, err = run_cli(["run", "--model", f"openai:{srv.url}#tiny", "--suite", "utility.perplexity",
                                  "--limit", "1", "--data-dir", str(data_dir()), "--store", str(store)], capsys)
        assert code == 0, err
        with Store(store, readonly=True) as st:
            (row,) = st.items(st.list_runs()[0].run_id, "utility.perplexity")
        assert row.score["window"] == 48 and row.score["windows"] > 1
    finally:
        srv.close()
    srv = FakeServer(tiny_model_dir)
    try:
        assert _target(srv).max_length is None
    finally:
        srv.close()
