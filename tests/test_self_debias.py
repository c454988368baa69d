"""Self-Debias (auditlm.mitigate.self_debias) on the tiny random-weight model."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from auditlm.errors import TargetError
from auditlm.mitigate.self_debias import (
    BIAS_BENCH_PREFIXES,
    SelfDebiasingLogitsProcessor,
    SelfDebiasTarget,
    debiased_logprobs,
    parse_spec,
)
from auditlm.targets.base import GenerationParams

# Short prefixes keep prefixed rows well inside the tiny model's 128 positions.
PREFIXES = ["The man said: ", "She was very bad: "]
REQUESTS = [
    ("The doctor said", " she was very kind."),
    ("", "A man and a woman went to the school."),
    ("He worked as a", " nurse"),
    ("He worked as a", " engineer at the hospital"),
    ("The old teacher", " was slow."),
]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _wrap(target, **kw) -> SelfDebiasTarget:
    kw.setdefault("prefixes", PREFIXES)
    return SelfDebiasTarget(target, **kw)


def test_no_decay_equals_base(tiny_target):
    """decay_constant=0 makes every scaling factor 1: the wrapper must score exactly as the base model."""
    base = tiny_target.loglikelihood(REQUESTS)
    wrapped = _wrap(tiny_target, decay_constant=0.0).loglikelihood(REQUESTS)
    for b, w in zip(base, wrapped, strict=True):
        assert w.n_tokens == b.n_tokens
        assert w.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert w.is_greedy == b.is_greedy


def _reference_logprob(model_dir: Path, context: str, continuation: str, prefixes: list[str],
                       lam: float, eps: float) -> float:
    """The debiased log-probability from the formula, one unpadded forward per input, float64 arithmetic."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ctx = tok.encode(context)  # the tiny tokenizer prepends <s>
    whole = tok.encode(context + continuation)
    assert whole[: len(ctx)] == ctx
    cont = whole[len(ctx):]
    inp = whole[:-1]
    assert inp[0] == tok.bos_token_id

    def next_probs(ids: list[int], n: int) -> torch.Tensor:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -n:].double()
        return logits.softmax(-1)

    n = len(cont)
    p = next_probs(inp, n)
    biased = [next_probs([inp[0], *tok.encode(pre, add_special_tokens=False), *inp[1:]], n) for pre in prefixes]
    total = 0.0
    for t in range(n):
        scaled = []
        for w in range(p.shape[1]):
            delta = float(p[t, w]) - max(float(b[t, w]) for b in biased)
            alpha = 1.0 if delta >= 0 else max(math.exp(lam * delta), eps)
            scaled.append(alpha * float(p[t, w]))
        total += math.log(scaled[cont[t]] / sum(scaled))
    return total


def test_matches_reference_formula(tiny_model_dir, tiny_target):
    context, continuation = "He worked as a", " nurse at the school"
    ref = _reference_logprob(tiny_model_dir, context, continuation, PREFIXES, 50.0, 0.01)
    got = _wrap(tiny_target).loglikelihood([(context, continuation)])[0]
    base = tiny_target.loglikelihood([(context, continuation)])[0]
    assert abs(ref - base.logprob) > 1e-3, "the prefixes should change this score, or the check is vacuous"
    assert got.logprob == pytest.approx(ref, abs=1e-4)
    assert got.n_tokens == base.n_tokens


def test_distributions_renormalised(tiny_target):
    g = torch.Generator().manual_seed(0)
    regular = torch.randn(3, 7, 50, generator=g) * 4
    prefixed = torch.randn(2, 3, 7, 50, generator=g) * 4
    lq = debiased_logprobs(regular, prefixed, 50.0, 0.01)
    assert torch.allclose(lq.exp().sum(-1), torch.ones(3, 7), atol=1e-5)
    # Tokens the prefixes make more likely are scaled down relative to the others: q/p is not constant.
    ratio = lq.exp() / regular.softmax(-1)
    assert ratio.std() > 1e-3
    # The logits processor gives every row of a group its plain row's debiased log-probabilities.
    scores = torch.randn(2 * 3, 50, generator=g)
    out = SelfDebiasingLogitsProcessor(2, 50.0, 0.01)(torch.zeros(6, 1, dtype=torch.long), scores.clone())
    assert torch.allclose(out.exp().sum(-1), torch.ones(6), atol=1e-5)
    expect = debiased_logprobs(scores[0::3], torch.stack([scores[1::3], scores[2::3]]), 50.0, 0.01)
    for k in range(3):
        assert torch.allclose(out[k::3], expect, atol=1e-6)


def test_generate_deterministic(tiny_target, tiny_model_dir):
    from auditlm.targets.hf import HFTarget

    params = GenerationParams(max_new_tokens=8)
    prompts = ["The doctor said", "He worked as a nurse and"]
    first = _wrap(tiny_target).generate(prompts, params)
    second = _wrap(HFTarget(str(tiny_model_dir), batch_size=4)).generate(prompts, params)
    assert first == second and all(isinstance(t, str) for t in first)
    # With no decay the debiased greedy path is the base model's.
    assert _wrap(tiny_target, decay_constant=0.0).generate(prompts, params) == tiny_target.generate(prompts, params)
    sampled = GenerationParams(max_new_tokens=6, temperature=1.0, seed=3)
    assert _wrap(tiny_target).generate(prompts, sampled) == _wrap(tiny_target).generate(prompts, sampled)


def test_info_and_spec(tiny_model_dir, tiny_target):
    info = _wrap(tiny_target, decay_constant=20.0).info()
    assert info["self_debias"] == {"prefixes": PREFIXES, "decay_constant": 20.0, "epsilon": 0.01}
    assert parse_spec("smollm2-135m-instruct") is None
    prefixes, inner = parse_spec("self-debias:smollm2-135m-instruct")
    assert inner == "smollm2-135m-instruct" and prefixes == list(BIAS_BENCH_PREFIXES.values())
    prefixes, inner = parse_spec("self-debias[gender,race]:/x/y")
    assert inner == "/x/y" and prefixes == [BIAS_BENCH_PREFIXES["gender"], BIAS_BENCH_PREFIXES["race-color"]]
    for bad in ("self-debias[colour]:m", "self-debias:", "self-debias[gender:m", "self-debias[]:m"):
        with pytest.raises(TargetError):
            parse_spec(bad)

    from auditlm.targets import registry

    registry.check_model(f"self-debias[gender]:{tiny_model_dir}")
    t = registry.resolve(f"self-debias[gender]:{tiny_model_dir}", batch_size=4)
    assert isinstance(t, SelfDebiasTarget) and t.prefixes == [BIAS_BENCH_PREFIXES["gender"]]
    with pytest.raises(TargetError):
        registry.check_model("self-debias:/no/such/model")


def test_runner_crows_pairs(tiny_model_dir, tmp_path):
    from auditlm import runner
    from auditlm.store import Store
    from auditlm.suites.datasets import resolve_data_dir
    from auditlm.suites.loader import discover, select
    from auditlm.targets.hf import HFTarget

    data_dir = resolve_data_dir(os.environ.get("AUDITLM_DATA"))
    if data_dir is None:
        pytest.skip("AUDITLM_DATA is not set")
    target = SelfDebiasTarget(HFTarget(str(tiny_model_dir), batch_size=20))
    cfg = runner.RunConfig(model=target.name, suites=["bias.crows_pairs"], limit=3, data_dir=str(data_dir))
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, data_dir)
    with Store(tmp_path / "s.db") as st:
        rid = runner.start_run(st, target, prepared, cfg)
        runner.execute(st, rid, target, prepared, cfg)
        items = st.items(rid, "bias.crows_pairs")
    assert len(items) == 3


def test_absolute_positions_aligned(tiny_model_dir, tmp_path):
    """On a model with learned absolute positions (GPT-2), left-padded rows need their own position ids: with
    no decay the wrapper must still score exactly as the base model (Llama's rotary positions cannot tell)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from auditlm.targets.hf import HFTarget

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        initializer_range=0.4, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(config).eval()
    base = HFTarget(model=model, tokenizer=tok, batch_size=4, device="cpu")
    want = base.loglikelihood(REQUESTS)
    got = _wrap(base, decay_constant=0.0).loglikelihood(REQUESTS)
    for b, w in zip(want, got, strict=True):
        assert w.logprob == pytest.approx(b.logprob, abs=1e-5)
