"""Log-likelihood throughput on a GPU: auditlm ``HFTarget`` (shared prefixes / plain) vs lm-evaluation-harness ``HFLM``.

Built for a machine without network (issue 12): the model is a random-weight Llama made from a config on the
device (``--model 1b``: the Llama-3.2-1B shape; ``8b``: the Llama-3.1-8B shape; ``smoke``: a tiny one, for a CPU
check in seconds), the tokenizer a byte-level BPE trained in-process on synthetic text, and the requests
BBQ-shaped: a context of ``--ctx-tokens`` tokens (default 100-200) with a question, shared by 3 short answer
options (lm-eval's ``bbq`` format: ``"{context}\\n\\nQ: {question}\\nA:"`` + ``" " + answer``). Random weights
cost the same FLOPs as trained ones, so the timings are those of the real shapes (the vocabulary has
128,256 rows as in Llama 3; the tokenizer uses the first few thousand).

The three scorers (``bench_loglikelihood.scorers_for``) take turns on ``--rounds`` parts of the requests, the
same batch size for all (an auditlm batch holds ``--batch-size`` token trees, i.e. items, with shared prefixes).
Columns: requests; tokens = context + continuation tokens of every request (what one forward per request
runs); wall seconds; tokens/s; TFLOP/s = 2 x N x tokens / wall, N = the parameters used as matmul weights
(all but the input embedding lookup; a tied lm_head counts once), i.e. the forward FLOPs of scoring every
request separately; with shared prefixes that is an *effective* rate (the shared context runs once, so it
can exceed what the hardware does); % roofline = TFLOP/s / ``--peak-tflops`` (default 790, H200 dense bf16).
``disagree`` counts items whose chosen answer differs from lm-eval's, ``max|dlogp|`` the largest log-prob
difference: in bf16 lm-eval takes the log-softmax in the model dtype (its ``softmax_dtype`` default), auditlm in
fp32, so they differ by ~0.1-0.2 nats (0.19 on a CPU bf16 run of one layer of the 1B shape);
``--lm-eval-softmax-fp32`` passes ``softmax_dtype="float32"`` to ``HFLM``.

Needs torch (with CUDA for the real run), transformers, tokenizers, and lm-eval (``--no-lm-eval`` drops that
scorer). Usage: ``python bench/bench_gpu.py --model 1b --items 400`` or ``python bench/bench_gpu.py --smoke``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_loglikelihood, when imported from tests
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # auditlm from the checkout

#: Dense bf16 peak of one H200 (SXM), TFLOP/s.
H200_BF16_TFLOPS = 790.0

#: Model shapes: Llama-3.2-1B and Llama-3.1-8B (their config.json), and a tiny one for the CPU smoke run.
CONFIGS: dict[str, dict[str, Any]] = {
    "1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
    ),
    "8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
    ),
    "smoke": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=None, tie_word_embeddings=False, rope_theta=10000.0,
    ),
}

_NAMES = "Alex Sam Jordan Taylor Maria Ahmed Mei Olga Kwame Priya Diego Hana Luca Fatima Noah Aiko".split()  # noqa: SIM905
_GROUPS = (  # noqa: SIM905
    "old man|young woman|Christian|Muslim|Jewish|Hindu|gay man|straight woman|wheelchair user|"
    "immigrant|local resident|tall person|short person|Nigerian|Japanese|Mexican|Canadian|nurse|engineer"
).split("|")
_WORDS = """
the a and or but when while after before because so then also very often never always still only just
meeting office school hospital street market station library bus train party dinner class interview
arrived left waited talked asked answered walked worked studied laughed argued helped called visited
early late quickly slowly quietly loudly together alone again later today yesterday morning evening night
friend neighbour colleague teacher doctor manager student parent child family group people person
new old big small long short busy quiet happy tired angry calm careful nervous confident polite rude
""".split()  # noqa: SIM905
_QUESTIONS = ("Who was nervous?", "Who was late?", "Who was helpful?", "Who was rude?", "Who was confident?")
_UNKNOWN = ("Cannot be determined", "Not enough information", "Unknown", "Can't answer")

Request = tuple[str, str]
Item = list[Request]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_NAMES), *(rng.choice(_WORDS) for _ in range(rng.randint(6, 16)))]
    return " ".join(words) + rng.choice([".", ".", ",", "!"])


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Synthetic text to train the tokenizer on (names, groups, everyday words)."""
    rng = random.Random(seed)
    lines = [" ".join(_WORDS), " ".join(_NAMES), " ".join(_GROUPS), " ".join(_QUESTIONS + _UNKNOWN)]
    lines += [_sentence(rng) + " The " + rng.choice(_GROUPS) + " " + _sentence(rng) for _ in range(n)]
    return lines


def build_tokenizer(vocab_size: int = 4000, extra_text: list[str] | None = None) -> Any:
    """A Llama-like byte-level BPE (``<s>`` prepended, ``</s>`` EOS, ``<pad>``) trained in-process, no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus() + list(extra_text or []), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def llama_config(shape: dict[str, Any], tokenizer: Any, max_positions: int = 8192, **overrides: Any) -> Any:
    """A ``LlamaConfig`` of ``shape`` (``vocab_size=None``: the tokenizer's size) with the tokenizer's special ids."""
    from transformers import LlamaConfig

    kw = {**shape, **overrides}
    if kw.get("vocab_size") is None:
        kw["vocab_size"] = len(tokenizer)
    return LlamaConfig(
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        **kw,
    )


def build_model(config: Any, device: str, dtype: Any, seed: int = 0) -> Any:
    """A random-weight ``LlamaForCausalLM`` made directly on ``device`` in ``dtype`` (no CPU copy of an 8B)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def matmul_params(model: Any) -> int:
    """Parameters used as matmul weights: all but the input embedding table (a tied lm_head counts once)."""
    total = sum(p.numel() for p in model.parameters())  # parameters() lists a tied weight once
    if model.config.tie_word_embeddings:
        return total
    return total - model.get_input_embeddings().weight.numel()


def bbq_items(tokenizer: Any, n: int, ctx_tokens: tuple[int, int], seed: int = 0) -> list[Item]:
    """``n`` BBQ-shaped items: a context of ``ctx_tokens`` tokens (uniform in the range) and a question, in
    lm-eval's bbq format, with 3 answers (two groups and an "unknown" phrasing) each a separate request."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        g1, g2 = rng.sample(_GROUPS, 2)
        target = rng.randint(*ctx_tokens)
        parts = [f"A {g1} and a {g2} were at the {rng.choice(_WORDS)}."]
        while len(tokenizer.encode(" ".join(parts), add_special_tokens=False)) < target:
            parts.append(_sentence(rng))
        context = f"{' '.join(parts)}\n\nQ: {rng.choice(_QUESTIONS)}\nA:"
        answers = [f"The {g1}", f"The {g2}", rng.choice(_UNKNOWN)]
        rng.shuffle(answers)
        items.append([(context, " " + a) for a in answers])
    return items


def request_tokens(tokenizer: Any, items: list[Item]) -> int:
    """Tokens of context + continuation over all requests, BOS included (one forward per request runs them)."""
    texts = [c + x for item in items for c, x in item]
    return sum(len(ids) for ids in tokenizer(texts)["input_ids"])


def require(no_lm_eval: bool) -> None:
    """Exit with one line naming what is missing (torch, transformers, tokenizers, lm-eval)."""
    missing = [m for m in ("torch", "transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    if not no_lm_eval and importlib.util.find_spec("lm_eval") is None:
        missing.append("lm-eval (or pass --no-lm-eval)")
    if missing:
        raise SystemExit(f"bench_gpu: missing {', '.join(missing)}; install them (no network here?) and rerun")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build tokenizer, model and requests, time the scorers; one dict per scorer (also printed as a table)."""
    import torch
    from bench_loglikelihood import choices_made, run_workload, scorers_for

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: --device cuda but torch.cuda.is_available() is False")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    t0 = time.perf_counter()
    tokenizer = build_tokenizer()
    items = bbq_items(tokenizer, args.items, (args.ctx_min, args.ctx_max), args.seed)
    n_tokens = request_tokens(tokenizer, items)
    t1 = time.perf_counter()
    shape = dict(CONFIGS[args.model])
    if args.layers is not None:
        shape["num_hidden_layers"] = args.layers
    model = build_model(llama_config(shape, tokenizer), device, dtype, args.seed)
    n_params = matmul_params(model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    print(
        f"model {args.model}{f' ({args.layers} layers)' if args.layers is not None else ''}: "
        f"{n_params / 1e6:.1f} M matmul params, {args.dtype}, {device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if device.startswith('cuda') else ''}; "
        f"{len(items)} items x 3 answers, {n_tokens} request tokens; tokenizer+requests {t1 - t0:.1f} s, "
        f"model built in {time.perf_counter() - t1:.1f} s",
        flush=True,
    )
    lm = None
    if not args.no_lm_eval:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=args.batch_size,
            softmax_dtype="float32" if args.lm_eval_softmax_fp32 else None,
        )
    scorers = scorers_for(model, tokenizer, lm, args.batch_size, skip_plain=False)
    for scorer in scorers.values():  # warm-up: kernels picked, allocator grown
        scorer([r for item in items[: min(len(items), args.batch_size)] for r in item])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, logprobs = run_workload(items, scorers, args.rounds)  # results come back as floats: synchronised
    ref = "lm-eval HFLM" if lm is not None else "auditlm (plain)"
    ref_choice = choices_made(items, logprobs[ref])
    rows = []
    for name in scorers:
        wall = sum(seconds[name])
        tflops = 2 * n_params * n_tokens / wall / 1e12
        chosen = choices_made(items, logprobs[name])
        rows.append(
            dict(
                model=args.model, mode=name, requests=3 * len(items), tokens=n_tokens, wall_s=wall,
                tokens_per_s=n_tokens / wall, tflops=tflops, roofline=tflops / args.peak_tflops,
                disagree=sum(a != b for a, b in zip(chosen, ref_choice, strict=True)),
                max_dlogp=max(abs(a - b) for a, b in zip(logprobs[name], logprobs[ref], strict=True)),
            )
        )
    header = (
        f"{'model':<6} {'mode':<26} {'requests':>8} {'tokens':>9} {'wall s':>8} {'tokens/s':>10} "
        f"{'TFLOP/s':>8} {'roofline':>8} {'disagree':>8} {'max|dlogp|':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<6} {r['mode']:<26} {r['requests']:>8} {r['tokens']:>9} {r['wall_s']:>8.2f} "
            f"{r['tokens_per_s']:>10.0f} {r['tflops']:>8.2f} {r['roofline']:>7.1%} {r['disagree']:>8} "
            f"{r['max_dlogp']:>10.1e}"
        )
    print(
        f"TFLOP/s = 2 x {n_params:.4g} matmul params x request tokens / wall (forward FLOPs of one pass "
        f"per request; effective for shared prefixes); roofline = of {args.peak_tflops:.0f} TFLOP/s; "
        f"disagree / max|dlogp| against {ref}; batch size {args.batch_size}, {args.rounds} interleaved rounds",
        flush=True,
    )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--smoke`` sets a tiny CPU run."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(CONFIGS), default="1b")
    ap.add_argument("--layers", type=int, default=None, help="override the shape's layer count (a quick check)")
    ap.add_argument("--items", type=int, default=200, help="BBQ-shaped items, 3 requests each (default 200)")
    ap.add_argument("--batch-size", type=int, default=32, help="every scorer's batch size (default 32)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved parts (default 2)")
    ap.add_argument("--ctx-min", type=int, default=100, help="shortest context, tokens (default 100)")
    ap.add_argument("--ctx-max", type=int, default=200, help="longest context, tokens (default 200)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lm-eval", action="store_true", help="skip the lm-eval HFLM scorer")
    ap.add_argument("--lm-eval-softmax-fp32", action="store_true", help="HFLM softmax_dtype='float32'")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 8 items, CPU fp32: seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.model, args.items, args.batch_size, args.rounds = "smoke", 8, 4, 1
        args.ctx_min, args.ctx_max, args.dtype, args.device = 30, 60, "fp32", "cpu"
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the rows printed."""
    args = parse_args(argv)
    require(args.no_lm_eval)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    return run(args)


if __name__ == "__main__":
    main()
