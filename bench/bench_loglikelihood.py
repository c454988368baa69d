"""Log-likelihood scoring speed: auditlm ``HFTarget`` (shared prefixes / plain) vs lm-evaluation-harness ``HFLM``.

Two workloads on the default model (SmolLM2-135M-Instruct, float32, CPU), measured in one run:

* BBQ: a seeded sample of items from ``<data>/bbq/*.jsonl``, requests built as lm-eval's ``bbq`` multiple-choice
  task builds them (``doc_to_text`` of ``bbq_multiple_choice.yaml``, ``utils.doc_to_choice``: the two group answers
  plus the ten "unknown" phrasings, target delimiter ``" "``); the chosen answer is the argmax log-likelihood.
* CrowS-Pairs: a seeded sample of pairs (default: all), each sentence scored with an empty context (BOS); the
  chosen sentence is the more likely one.

The machine is shared and its load drifts, so each workload is split into ``--rounds`` parts and the three
scorers take turns on every part (rotating who goes first); the times are summed per scorer. Every timed part
gets a fresh ``HFTarget`` (no memoised results carry over) and all scorers run with the same torch thread count
and batch size. ``ratio`` is lm-eval seconds / auditlm seconds.

Usage: ``python bench/bench_loglikelihood.py [--bbq-n 100] [--crows-n 1508] [--batch-size 32] [--rounds 3]``
(needs ``lm_eval`` installed and the data directory: ``--data-dir``, else ``$AUDITLM_DATA``, else
``../shared/data``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: lm-eval ``bbq_multiple_choice.yaml``: ``doc_to_text`` (checked against the installed file at start-up).
BBQ_DOC_TO_TEXT = "{context}\n\nQ: {question}\nA:"
TARGET_DELIMITER = " "

Request = tuple[str, str]
# One question: its candidate requests (BBQ: 12 answers; CrowS-Pairs: 2 sentences); the best one is chosen.
Item = list[Request]


def _check_bbq_template() -> None:
    import lm_eval.tasks.bbq.utils as bbq_utils

    yaml_text = (Path(bbq_utils.__file__).parent / "bbq_multiple_choice.yaml").read_text()
    m = re.search(r'^doc_to_text:\s*"(.*)"\s*$', yaml_text, re.M)
    if m is None:
        raise SystemExit("cannot find doc_to_text in lm-eval's bbq_multiple_choice.yaml")
    template = m.group(1).encode().decode("unicode_escape").replace("{{", "{").replace("}}", "}")
    if template != BBQ_DOC_TO_TEXT:
        raise SystemExit(f"lm-eval's bbq doc_to_text changed: {template!r}")


def bbq_items(data_dir: Path, n: int, seed: int) -> list[Item]:
    from lm_eval.tasks.bbq.utils import doc_to_choice

    _check_bbq_template()
    docs = []
    for path in sorted((data_dir / "bbq").glob("*.jsonl")):
        with path.open() as fh:
            docs.extend(json.loads(line) for line in fh if line.strip())
    if not docs:
        raise SystemExit(f"no BBQ files in {data_dir / 'bbq'}")
    sample = random.Random(seed).sample(docs, min(n, len(docs)))
    return [
        [
            (BBQ_DOC_TO_TEXT.format(context=d["context"], question=d["question"]), TARGET_DELIMITER + c)
            for c in doc_to_choice(d)
        ]
        for d in sample
    ]


def crows_items(data_dir: Path, n: int, seed: int) -> list[Item]:
    with (data_dir / "crows_pairs" / "crows_pairs_anonymized.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    return [[("", r["sent_more"]), ("", r["sent_less"])] for r in rows]


Scorer = Callable[[list[Request]], list[float]]


def make_scorers(batch_size: int, skip_plain: bool) -> dict[str, Scorer]:
    """The three scorers on the default model (float32, CPU)."""
    from lm_eval.models.huggingface import HFLM

    from auditlm.targets.hf import HFTarget
    from auditlm.targets.registry import DEFAULT_MODEL, pull, resolve

    path = pull(DEFAULT_MODEL)
    loaded = resolve(None, dtype="float32", device="cpu")
    assert isinstance(loaded, HFTarget)
    lm = HFLM(pretrained=str(path), dtype="float32", batch_size=batch_size, device="cpu")
    return scorers_for(loaded.model, loaded.tokenizer, lm, batch_size, skip_plain)


def scorers_for(model: Any, tokenizer: Any, lm: Any, batch_size: int, skip_plain: bool) -> dict[str, Scorer]:
    """auditlm ``HFTarget`` scorers (shared prefixes; plain unless ``skip_plain``) over a loaded ``model`` and
    ``tokenizer``, and lm-eval's ``HFLM`` instance ``lm`` (left out when ``None``); every call of an auditlm
    scorer gets a fresh ``HFTarget``, so no memoised result carries over."""
    from auditlm.targets.hf import HFTarget

    def auditlm(prefix_sharing: bool) -> Scorer:
        def score(reqs: list[Request]) -> list[float]:
            target = HFTarget(
                model=model,
                tokenizer=tokenizer,
                batch_size=batch_size,
                prefix_sharing=prefix_sharing,
            )
            return [r.logprob for r in target.loglikelihood(reqs)]

        return score

    def lm_eval(reqs: list[Request]) -> list[float]:
        from lm_eval.api.instance import Instance

        instances = [
            Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(reqs)
        ]
        return [lp for lp, _ in lm.loglikelihood(instances, disable_tqdm=True)]

    scorers = {"auditlm (shared prefixes)": auditlm(True)}
    if not skip_plain:
        scorers["auditlm (plain)"] = auditlm(False)
    if lm is not None:
        scorers["lm-eval HFLM"] = lm_eval
    return scorers


def run_workload(
    items: list[Item], scorers: dict[str, Scorer], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every scorer on ``items`` split into ``rounds`` parts, taking turns; seconds per round, log-probs."""
    names = list(scorers)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    logprobs: dict[str, list[float]] = {name: [] for name in names}
    size = -(-len(items) // rounds)
    for k in range(rounds):
        part = items[k * size : (k + 1) * size]
        if not part:
            continue
        reqs = [r for item in part for r in item]
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            t0 = time.perf_counter()
            out = scorers[name](reqs)
            seconds[name].append(time.perf_counter() - t0)
            logprobs[name].extend(out)
    return seconds, logprobs


def choices_made(items: list[Item], logprobs: list[float]) -> list[int]:
    out, i = [], 0
    for item in items:
        scores = logprobs[i : i + len(item)]
        out.append(max(range(len(item)), key=scores.__getitem__))
        i += len(item)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("AUDITLM_DATA", "../shared/data")))
    ap.add_argument("--bbq-n", type=int, default=100, help="BBQ items (12 requests each; default 100)")
    ap.add_argument("--crows-n", type=int, default=1508, help="CrowS-Pairs pairs (default all 1,508)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size for every scorer (default 32)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, all scorers")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved parts per workload (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-plain", action="store_true", help="do not time auditlm's plain path")
    ap.add_argument(
        "--min-shared", type=int, default=None, help="override hf.MIN_SHARED_TOKENS (experiments)"
    )
    args = ap.parse_args(argv)

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    workloads = {
        "BBQ": bbq_items(args.data_dir, args.bbq_n, args.seed),
        "CrowS-Pairs": crows_items(args.data_dir, args.crows_n, args.seed),
    }
    if args.min_shared is not None:
        import auditlm.targets.hf as hf

        hf.MIN_SHARED_TOKENS = args.min_shared
    print(
        f"default model, float32, CPU, {args.threads} torch threads, batch size {args.batch_size}, "
        f"{args.rounds} interleaved rounds; BBQ n={args.bbq_n} items (lm-eval format, 12 choices each; "
        f"default 100 keeps the run near 10 min here), CrowS-Pairs n={args.crows_n} pairs",
        flush=True,
    )
    scorers = make_scorers(args.batch_size, args.skip_plain)
    for scorer in scorers.values():  # warm-up: first calls allocate and pick kernels
        scorer([r for item in workloads["BBQ"][:2] + workloads["CrowS-Pairs"][:4] for r in item])
    torch.set_num_threads(args.threads)  # in case a library changed it while loading

    ref = "lm-eval HFLM"
    header = (
        f"{'workload':<12} {'items':>5} {'requests':>8}  {'scorer':<26} {'seconds':>7} {'ratio':>6} "
        f"{'per round':>11}  {'disagree':>8} {'max|dlogp|':>10}"
    )
    rows = []
    for wname, items in workloads.items():
        t0 = time.perf_counter()
        seconds, logprobs = run_workload(items, scorers, args.rounds)
        print(f"{wname}: timed in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        ref_choice = choices_made(items, logprobs[ref])
        n_req = sum(len(item) for item in items)
        for name in scorers:
            chosen = choices_made(items, logprobs[name])
            disagree = sum(a != b for a, b in zip(chosen, ref_choice, strict=True))
            dmax = max(abs(a - b) for a, b in zip(logprobs[name], logprobs[ref], strict=True))
            per_round = [r / x for r, x in zip(seconds[ref], seconds[name], strict=True)]
            rows.append(
                f"{wname:<12} {len(items):>5} {n_req:>8}  {name:<26} {sum(seconds[name]):>7.1f} "
                f"{sum(seconds[ref]) / sum(seconds[name]):>5.2f}x {min(per_round):>5.2f}-{max(per_round):<5.2f}"
                f"  {disagree:>8} {dmax:>10.1e}"
            )
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print(
        "ratio = lm-eval seconds / scorer seconds (sum over rounds); per round = its range over the rounds; "
        "disagree = items whose chosen answer differs from lm-eval's; max|dlogp| = largest log-prob difference."
    )


if __name__ == "__main__":
    main()
