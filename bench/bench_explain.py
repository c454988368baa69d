"""CPU seconds per explained item for each attribution method, and how they scale with the input length.

Not a test. Explains a synthetic CrowS-Pairs-style pair (two sentences of about N tokens that differ in one group
term; the target is the preference, two sequences per evaluation) on ``--model`` (default: the built-in
smollm2-135m-instruct, on the CPU) with the default settings of :func:`auditlm.explain.methods.explain_items`
(Shapley ``n_samples=25``, LIG ``ig_steps=32``, ``perturbations_per_eval=16``), for N in ``--lengths``
(16 64 256). Prints one row per (length, method): CPU seconds (``time.process_time``, all threads), wall
seconds and the number of features. ``--quick``: lengths 16 and 64 only, and Shapley timed with
``--shapley-samples`` (default 2 there) permutations, its cost scaled linearly to 25 (Shapley value sampling
evaluates ``n_samples × n_features`` perturbations; the ``cpu_s_at_defaults`` column says so where scaled).

    PYTHONPATH=. python bench/bench_explain.py --quick
"""

from __future__ import annotations

import argparse
import time

_TEXT = ("the neighbor said that after work they walked to the old market near the river and bought bread "
         "fruit and coffee for the family before the evening rain started again in the quiet town")
WORDS = _TEXT.split()


def _sentence(tokenizer, n_tokens: int, group: str) -> str:
    """A sentence with the group term near the start and about ``n_tokens`` tokens."""
    words = [f"The {group} who lives next door"]
    i = 0
    while len(tokenizer.encode(" ".join(words), add_special_tokens=False)) < n_tokens - 1:
        words.append(WORDS[i % len(WORDS)])
        i += 1
    return " ".join(words) + "."


def main(argv: list[str] | None = None) -> None:
    import torch

    from auditlm.explain.methods import attribute, build_problem
    from auditlm.explain.types import METHODS
    from auditlm.scorers import ItemRecord
    from auditlm.suites.loader import discover, select
    from auditlm.targets.registry import resolve

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model spec (default: the built-in default model)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--quick", action="store_true", help="lengths 16 and 64 only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapley-samples", type=int, default=None,
                    help="time Shapley with this many samples and scale to 25 (default: 25; --quick: 2)")
    args = ap.parse_args(argv)
    lengths = [n for n in args.lengths if n <= 64] if args.quick else args.lengths
    shapley_n = args.shapley_samples or (2 if args.quick else 25)

    target = resolve(args.model, device=args.device)
    spec = select(discover(), ["bias.crows_pairs"])[0].spec
    print(f"model {target.name} on {target.device}, torch threads {torch.get_num_threads()}; "
          "defaults n_samples=25 ig_steps=32 perturbations_per_eval=16")
    print(f"{'tokens':>6} {'features':>8} {'method':<28} {'cpu_s':>9} {'wall_s':>9} {'cpu_s_at_defaults':>18}")
    for n in lengths:
        rec = ItemRecord("bench", {"sent_more": _sentence(target.tokenizer, n, "woman"),
                                   "sent_less": _sentence(target.tokenizer, n, "man"), "bias_type": "gender"},
                         None, {})
        problem = build_problem(target, spec, rec)
        _ = problem.value
        n_tok = len(target.tokenizer.encode(rec.input["sent_more"], add_special_tokens=False))
        for m in args.methods:
            c0, w0 = time.process_time(), time.perf_counter()
            attribute(problem, m, seed=0, n_samples=shapley_n)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            scaled = m == "shapley_sampling" and shapley_n != 25
            at_defaults = f"{cpu * 25 / shapley_n:.1f} (scaled)" if scaled else f"{cpu:.1f}"
            print(f"{n_tok:>6} {problem.n_features:>8} {m:<28} {cpu:>9.2f} {wall:>9.2f} {at_defaults:>18}",
                  flush=True)


if __name__ == "__main__":
    main()
