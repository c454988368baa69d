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

``--convergence``: Layer Integrated Gradients' convergence on ``--items`` (8) real CrowS-Pairs pairs (evenly
spaced rows of ``crows_pairs_anonymized.csv`` under ``--data-dir`` / ``AUDITLM_DATA``, built as the suite builds
them): per (Captum ``method``, ``n_steps``) in ``--ig-methods`` × ``--steps`` (16 32 64 128 256), the median and
largest |delta| (Captum's convergence delta: sum of attributions minus ``F(input) − F(baseline)``), the median
|delta| relative to ``|F(input) − F(baseline)|``, and the median CPU seconds per item; per item ``F`` at the
input and the baseline and each sentence's log-likelihood change. ``--trace`` also prints, for the first item,
``F``, both sentences' log-likelihoods and the integrand ``dF/dalpha`` at 21 points of the straight path from
the baseline embeddings (alpha 0) to the input's (alpha 1).

    PYTHONPATH=. python bench/bench_explain.py --convergence --trace
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

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


def _lig_delta(problem, steps: int, method: str, ppe: int = 16) -> float:
    """Captum's LIG convergence delta on ``problem`` with ``steps`` steps of ``method``."""
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(problem.forward_ids, problem.layer)
    _, delta = lig.attribute(problem.input_ids, baselines=problem.baseline_ids, n_steps=int(steps),
                             method=method, internal_batch_size=ppe, return_convergence_delta=True)
    return float(delta.detach().reshape(-1)[0])


def path_trace(problem, alphas: list[float]) -> list[tuple[float, float, float, float, float]]:
    """``(alpha, F, LL(first), LL(second), dF/dalpha)`` along LIG's straight path in embedding space from the
    baseline (alpha 0) to the input (alpha 1); ``F = LL(first) − LL(second)`` with the input's tokens scored."""
    import torch

    layer, fwd = problem.layer, problem.ids_forward
    with torch.no_grad():
        e_in, e_base = layer(problem.input_ids), layer(problem.baseline_ids)
    direction = e_in - e_base
    signs = fwd.signs.clone()
    out = []
    try:
        for a in alphas:
            e = (e_base + a * direction).detach().requires_grad_(True)
            hook = layer.register_forward_hook(lambda _m, _i, _o, e=e: e)
            try:
                fwd.signs = signs
                y = problem.forward_ids(problem.input_ids)
                (g,) = torch.autograd.grad(y.sum(), e)
                with torch.no_grad():
                    fwd.signs = torch.tensor([1.0, 0.0], dtype=torch.float64)
                    ll_a = float(problem.forward_ids(problem.input_ids))
                    fwd.signs = torch.tensor([0.0, 1.0], dtype=torch.float64)
                    ll_b = float(problem.forward_ids(problem.input_ids))
            finally:
                hook.remove()
            out.append((a, float(y.detach()), ll_a, ll_b, float((g * direction).sum())))
    finally:
        fwd.signs = signs
    return out


def _crows_items(data_dir: str | None, k: int) -> list[dict[str, str]]:
    """``k`` evenly spaced rows of the CrowS-Pairs CSV (as the suite reads them)."""
    from auditlm.suites.crows_pairs import read_crows_pairs

    root = Path(data_dir or os.environ.get("AUDITLM_DATA") or "/work/shared/data")
    rows = read_crows_pairs(root / "crows_pairs" / "crows_pairs_anonymized.csv")
    return [rows[i * len(rows) // k] for i in range(k)]


def convergence(target: Any, args: argparse.Namespace) -> None:
    """Print LIG's |delta| versus ``n_steps`` and Captum ``method`` on real CrowS-Pairs pairs."""
    from auditlm.explain.targets import crows_pairs_problem

    items = _crows_items(args.data_dir, args.items)
    problems = [crows_pairs_problem(target, "bias.crows_pairs", str(it["id"]), it) for it in items]
    print(f"{'item':>6} {'slots':>5} {'F(input)':>9} {'F(base)':>9} {'dF':>8} {'dLL(more)':>10} {'dLL(less)':>10}")
    change = []
    for it, p in zip(items, problems, strict=True):
        tr = path_trace(p, [0.0, 1.0])
        (_, f0, a0, b0, _), (_, f1, a1, b1, _) = tr
        change.append(abs(f1 - f0))
        print(f"{it['id']:>6} {p.input_ids.shape[1]:>5} {f1:>9.2f} {f0:>9.2f} {f1 - f0:>8.2f} {a1 - a0:>10.2f} "
              f"{b1 - b0:>10.2f}", flush=True)
    if args.trace:
        p = problems[0]
        alphas = [i / 20 for i in range(21)]
        tr = path_trace(p, alphas)
        print(f"\npath of item {p.item_id}: {'alpha':>5} {'F':>9} {'LL(more)':>9} {'LL(less)':>9} {'dF/dalpha':>10}")
        for a, f, la, lb, g in tr:
            print(f"{'':>{len(p.item_id) + 14}}{a:>5.2f} {f:>9.3f} {la:>9.2f} {lb:>9.2f} {g:>10.3f}")
        g = [t[4] for t in tr]
        trap = sum((g[i] + g[i + 1]) / 2 * (alphas[i + 1] - alphas[i]) for i in range(len(g) - 1))
        print(f"trapezoid of dF/dalpha over these 21 points {trap:.3f}; F(1) - F(0) {tr[-1][1] - tr[0][1]:.3f}")

    print(f"\n{'method':<18} {'steps':>5} {'med|delta|':>10} {'max|delta|':>10} {'med rel':>8} {'max rel':>8} "
          f"{'cpu_s/item':>10}")
    for method in args.ig_methods:
        for steps in args.steps:
            deltas, cpus = [], []
            for p in problems:
                c0 = time.process_time()
                deltas.append(abs(_lig_delta(p, steps, method)))
                cpus.append(time.process_time() - c0)
            rel = [d / max(c, 1e-12) for d, c in zip(deltas, change, strict=True)]
            print(f"{method:<18} {steps:>5} {statistics.median(deltas):>10.3f} {max(deltas):>10.3f} "
                  f"{statistics.median(rel):>8.3f} {max(rel):>8.3f} {statistics.median(cpus):>10.2f}", flush=True)


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
    ap.add_argument("--convergence", action="store_true", help="LIG |delta| versus steps on real CrowS-Pairs")
    ap.add_argument("--items", type=int, default=8, help="--convergence: CrowS-Pairs items (default 8)")
    ap.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="--convergence: n_steps")
    ap.add_argument("--ig-methods", nargs="+", default=["gausslegendre", "riemann_trapezoid"],
                    help="--convergence: Captum integration methods")
    ap.add_argument("--trace", action="store_true", help="--convergence: print the path of the first item")
    ap.add_argument("--data-dir", default=None, help="--convergence: data dir (default: AUDITLM_DATA)")
    ap.add_argument("--float64", action="store_true", help="--convergence: run the model in float64")
    args = ap.parse_args(argv)
    lengths = [n for n in args.lengths if n <= 64] if args.quick else args.lengths
    shapley_n = args.shapley_samples or (2 if args.quick else 25)

    target = resolve(args.model, device=args.device)
    if args.convergence:
        if args.float64:
            target.model.to(torch.float64)
        print(f"model {target.name} on {target.device} ({next(target.model.parameters()).dtype}), "
              f"torch threads {torch.get_num_threads()}; LIG internal_batch_size 16")
        convergence(target, args)
        return
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
