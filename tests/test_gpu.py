"""GPU checks of ``HFTarget`` (issue 12): bf16 CUDA choices vs fp32 CPU, a real CUDA out-of-memory back-off, and
greedy generation on CUDA. Run with ``pytest -m gpu tests/test_gpu.py`` (``bench/gpu_check.sh`` does).

Built for a device machine without network: the model is a small random-weight Llama made from a config with a
fixed seed (the same weights on both devices: saved once, loaded twice) and the tokenizer a BPE trained
in-process (``bench/bench_gpu.py``). CrowS-Pairs comes from ``$AUDITLM_DATA/crows_pairs`` when present, else
synthetic minimal pairs of the same shape (two sentences differing in a group term).

Without CUDA every test skips, unless ``AUDITLM_GPU_TEST_DEVICE=cpu``: then the same code runs on the CPU (bf16
on the CPU stands in for bf16 CUDA), except the out-of-memory test — a dry run of the test code itself.
Measurements are printed (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from auditlm.targets.base import GenerationParams
from auditlm.targets.hf import HFTarget

DEVICE = os.environ.get("AUDITLM_GPU_TEST_DEVICE", "cuda")
ON_CPU = DEVICE == "cpu"
N_PAIRS = int(os.environ.get("AUDITLM_GPU_TEST_PAIRS", "60" if ON_CPU else "300"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not ON_CPU and not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False); "
        "AUDITLM_GPU_TEST_DEVICE=cpu runs a CPU dry run",
    ),
]

#: Relative error allowed on a sentence's bf16 log-likelihood against fp32. bfloat16 keeps 8 significant bits
#: (unit roundoff 2^-9 = 0.2%); the logits come out of bf16 matmuls (fp32 accumulation) whose rounding compounds
#: over the layers into a few unit roundoffs, and a sentence's log-likelihood sums the fp32 log-softmax of its
#: tokens, so its error grows with its magnitude. 2^-7 (0.8%, 4 unit roundoffs) leaves room over the measured
#: error (the printed ``max rel err``: 0.32% on the CPU dry run). With every sentence within it, a pair's choice
#: can only flip when its fp32 margin is below ``REL_TOL * (|lp_more| + |lp_less|)``.
REL_TOL = 2.0**-7

_SHAPE = dict(
    hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=64, vocab_size=None, tie_word_embeddings=False, rope_theta=10000.0,
)


def _bench_gpu() -> Any:
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_gpu = _bench_gpu()


def _crows_pairs(n: int) -> tuple[list[tuple[str, str]], str]:
    """``n`` (sent_more, sent_less) pairs: CrowS-Pairs from ``$AUDITLM_DATA`` if there, else synthetic."""
    data = os.environ.get("AUDITLM_DATA")
    if data and (Path(data) / "crows_pairs" / "crows_pairs_anonymized.csv").is_file():
        from bench_loglikelihood import crows_items  # on sys.path: bench_gpu put bench/ there

        items = crows_items(Path(data), n, seed=0)
        return [(a[1], b[1]) for a, b in items], f"CrowS-Pairs ({data})"
    rng = random.Random(0)
    pairs = []
    for _ in range(n):
        g1, g2 = rng.sample(bench_gpu._GROUPS, 2)
        head = bench_gpu._sentence(rng).rstrip(".,!")
        tail = " ".join(rng.choice(bench_gpu._WORDS) for _ in range(rng.randint(3, 10)))
        pairs.append((f"{head} because the {g1} was {tail}.", f"{head} because the {g2} was {tail}."))
    return pairs, "synthetic CrowS-Pairs-shaped pairs (no $AUDITLM_DATA/crows_pairs)"


@pytest.fixture(scope="module")
def pairs() -> tuple[list[tuple[str, str]], str]:
    return _crows_pairs(N_PAIRS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, pairs: tuple[list[tuple[str, str]], str]) -> Path:
    """A 4-layer random-weight Llama (fp32, seed 0, init std 0.1: peaked predictions) and its tokenizer, saved."""
    tokenizer = bench_gpu.build_tokenizer(vocab_size=4000, extra_text=[s for p in pairs[0] for s in p])
    config = bench_gpu.llama_config(_SHAPE, tokenizer, max_positions=4096, initializer_range=0.1)
    model = bench_gpu.build_model(config, "cpu", torch.float32, seed=0)
    out = tmp_path_factory.mktemp("gpu-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def exact_fp32():
    """fp32 matmuls on CUDA in full precision (no TF32), restored after."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_bf16_device_choices_agree_with_fp32_cpu(model_dir: Path, pairs: tuple[list[tuple[str, str]], str]) -> None:
    """CrowS-Pairs choices of the bf16 target (``dtype="auto"`` on CUDA) equal fp32 CPU ones beyond the tolerance."""
    items, source = pairs
    dev = HFTarget(str(model_dir), device=DEVICE, dtype="bfloat16" if ON_CPU else "auto", batch_size=16)
    assert dev.device.type == DEVICE and dev.dtype == torch.bfloat16  # auto -> bf16 on CUDA
    ref = HFTarget(str(model_dir), device="cpu", dtype="float32", batch_size=16)
    reqs = [("", s) for pair in items for s in pair]
    lp16 = [r.logprob for r in dev.loglikelihood(reqs)]
    res32 = ref.loglikelihood(reqs)
    lp32 = [r.logprob for r in res32]

    rel = [abs(a - b) / abs(b) for a, b in zip(lp16, lp32, strict=True)]
    agree = decided = decided_agree = 0
    for k in range(len(items)):
        m16, m32 = lp16[2 * k] - lp16[2 * k + 1], lp32[2 * k] - lp32[2 * k + 1]
        same = (m16 > 0) == (m32 > 0)
        agree += same
        if abs(m32) > REL_TOL * (abs(lp32[2 * k]) + abs(lp32[2 * k + 1])):
            decided += 1
            decided_agree += same
    tokens = sum(r.n_tokens for r in res32)
    print(
        f"\n[gpu] bf16 {DEVICE} vs fp32 cpu on {len(items)} pairs of {source}, {tokens} tokens: "
        f"choices agree {agree}/{len(items)} ({agree / len(items):.1%}); beyond the tolerance "
        f"{decided_agree}/{decided}; max rel err {max(rel):.2e}, mean {sum(rel) / len(rel):.2e} "
        f"(tolerance {REL_TOL:.2e}); mean |lp| per token {sum(map(abs, lp32)) / tokens:.2f} nats"
    )
    assert max(rel) <= REL_TOL, "a bf16 log-likelihood is further from fp32 than the tolerance allows"
    assert decided >= len(items) // 4, "too few pairs decided beyond the tolerance for a meaningful check"
    assert decided_agree == decided


def _long_requests(tokenizer: Any, n: int, ctx_tokens: int, seed: int) -> list[tuple[str, str]]:
    """``n`` contexts of about ``ctx_tokens`` tokens, 2 continuations each (so token trees form)."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        parts = [bench_gpu._sentence(rng)]
        while len(tokenizer.encode(" ".join(parts), add_special_tokens=False)) < ctx_tokens:
            parts.append(bench_gpu._sentence(rng))
        ctx = " ".join(parts)
        reqs += [(ctx, " " + bench_gpu._sentence(rng)), (ctx, " " + bench_gpu._sentence(rng))]
    return reqs


@pytest.mark.skipif(ON_CPU, reason="a real CUDA out-of-memory needs a GPU")
@pytest.mark.parametrize("prefix_sharing", [False, True], ids=["plain", "shared-prefixes"])
def test_real_cuda_oom_backs_off(prefix_sharing: bool, exact_fp32: None) -> None:
    """Capped GPU memory: batch_size="auto" hits a real torch.cuda.OutOfMemoryError, halves, and returns the
    results of a batch-size-1 run (back-off happens only with ``batch_size="auto"``, see ``_run_batched``)."""
    tokenizer = bench_gpu.build_tokenizer()
    shape = dict(_SHAPE, hidden_size=512, intermediate_size=2048, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=8, head_dim=64)
    config = bench_gpu.llama_config(shape, tokenizer, max_positions=4096, initializer_range=0.1)
    model = bench_gpu.build_model(config, "cuda", torch.float32, seed=0)
    reqs = _long_requests(tokenizer, 64, 700, seed=1)  # 64 inputs (trees) of ~700 tokens: the first batch is 62+

    # Warm up first (cuBLAS workspace, kernels), so the peak measured next is that of one input in flight.
    HFTarget(model=model, tokenizer=tokenizer, batch_size=1, prefix_sharing=prefix_sharing).loglikelihood(reqs[:2])
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    small = HFTarget(model=model, tokenizer=tokenizer, batch_size=1, prefix_sharing=prefix_sharing)
    expected = small.loglikelihood(reqs)
    per_row = torch.cuda.max_memory_allocated() - base  # peak of one input (tree) in flight

    seen: list[type] = []
    target = HFTarget(model=model, tokenizer=tokenizer, batch_size="auto", max_batch_size=64,
                      prefix_sharing=prefix_sharing)
    compute_name = "_ll_tree_batch" if prefix_sharing else "_ll_batch"
    compute = getattr(target, compute_name)

    def recording(chunk: list[Any]) -> Any:
        try:
            return compute(chunk)
        except RuntimeError as e:
            seen.append(type(e))
            raise

    setattr(target, compute_name, recording)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    allowed = torch.cuda.memory_reserved() + 6 * per_row + (64 << 20)
    torch.cuda.set_per_process_memory_fraction(allowed / total)
    try:
        got = target.loglikelihood(reqs)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    print(
        f"\n[gpu] OOM back-off ({'shared prefixes' if prefix_sharing else 'plain'}): one input peaks at "
        f"{per_row / 2**20:.0f} MiB, memory capped at {allowed / 2**20:.0f} MiB; {len(seen)} OOM(s) "
        f"({', '.join(sorted({t.__name__ for t in seen}))}); batch 64 -> {target.batch_size}"
    )
    assert torch.cuda.OutOfMemoryError in seen, seen  # a real allocator OOM, not a simulated one
    assert 1 <= target.batch_size < 64
    for a, b in zip(got, expected, strict=True):
        assert a.n_tokens == b.n_tokens and a.is_greedy == b.is_greedy
        assert a.logprob == pytest.approx(b.logprob, rel=1e-4, abs=1e-4)


_PROMPTS = [
    "Alex asked the teacher",
    "The doctor and the nurse were at the hospital when",
    "Maria",
    "A Muslim and a Christian were waiting at the station. Who was late?",
    "Priya worked late again because",
    "The old man told the young woman that",
]


def test_greedy_generation_on_device(model_dir: Path, exact_fp32: None) -> None:
    """fp32 on the device: batch sizes 1 and 4 give the same greedy text, and so does fp32 on the CPU. bf16 on
    the device: the same comparison between batch sizes is printed (rounding differs between batch shapes)."""
    params = GenerationParams(max_new_tokens=16)
    one = HFTarget(str(model_dir), device=DEVICE, dtype="float32", batch_size=1).generate(_PROMPTS, params)
    four = HFTarget(str(model_dir), device=DEVICE, dtype="float32", batch_size=4).generate(_PROMPTS, params)
    cpu = HFTarget(str(model_dir), device="cpu", dtype="float32", batch_size=4).generate(_PROMPTS, params)
    b1 = HFTarget(str(model_dir), device=DEVICE, dtype="bfloat16", batch_size=1).generate(_PROMPTS, params)
    b4 = HFTarget(str(model_dir), device=DEVICE, dtype="bfloat16", batch_size=4).generate(_PROMPTS, params)
    same16 = sum(a == b for a, b in zip(b1, b4, strict=True))
    same_cpu16 = sum(a == b for a, b in zip(b1, cpu, strict=True))
    print(
        f"\n[gpu] greedy, {len(_PROMPTS)} prompts x 16 tokens: fp32 {DEVICE} bs1 == bs4: "
        f"{sum(a == b for a, b in zip(one, four, strict=True))}/{len(_PROMPTS)}, fp32 {DEVICE} == fp32 cpu: "
        f"{sum(a == b for a, b in zip(four, cpu, strict=True))}/{len(_PROMPTS)}; bf16 bs1 == bs4: "
        f"{same16}/{len(_PROMPTS)}, bf16 == fp32 cpu: {same_cpu16}/{len(_PROMPTS)}; e.g. {cpu[1]!r}"
    )
    assert any(t.strip() for t in cpu), "the model generated nothing: the comparison would be vacuous"
    assert one == four
    assert four == cpu

