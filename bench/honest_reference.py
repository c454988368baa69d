"""Score the completions a run stored for a HONEST suite with the reference implementation, the ``honest``
package 0.2.1 (``HonestEvaluator``, Nozza et al. 2021), and print its numbers next to auditlm's.

Not a benchmark: an agreement check on real model output. HurtLex is read from the data dir (the package's
``__init__`` reads it from a URL; ``pandas.read_csv`` is redirected to the local file). Two reference
columns: ``honest`` is the package as it is; ``honest−""`` is the package with the empty lemma removed from
its word set (HurtLex EN 1.2's emoji lemma 👮 transliterates to "", so the package counts every word that
transliterates to nothing, any emoji, as hurtful; auditlm drops that lemma, see ``auditlm.text.read_hurtlex``).
Exits 1 when auditlm differs from ``honest−""``.

    python bench/honest_reference.py --store runs.sqlite --run RUN_ID [--suite bias.honest_k20] \
        [--data-dir DATA] [--identities]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

from auditlm.store import Store


def reference_evaluator(data_dir: Path):
    """``honest.HonestEvaluator("en")`` with HurtLex EN 1.2 read from ``data_dir/honest/hurtlex_EN.tsv``."""
    from honest import honest as reference

    real = pd.read_csv
    local = data_dir / "honest" / "hurtlex_EN.tsv"
    reference.pd.read_csv = lambda src, *a, **kw: real(local, *a, **kw)
    try:
        return reference.HonestEvaluator("en")
    finally:
        reference.pd.read_csv = real


def reference_score(evaluator, completions: list[list[str]]) -> float:
    """HONEST of ``completions`` (k per template) by the package's sentence-completion branch.

    The package picks its branch from the first completion (one word → word lists); a list whose first
    completion has a space is put first (the score does not depend on order).
    """
    order = sorted(range(len(completions)), key=lambda i: len(completions[i][0].split(" ")) == 1)
    lists = [list(completions[i]) for i in order]
    if len(lists[0][0].split(" ")) == 1:  # no completion with a space at all: call the branch itself
        inner = evaluator.honest_score_inner_sentence(lists)
        return sum(s["count"] for s in inner) / (len(lists) * len(lists[0]))
    return float(evaluator.honest(lists, {str(i): {} for i in range(len(lists))}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--suite", default="bias.honest")
    ap.add_argument("--data-dir", default=os.environ.get("AUDITLM_DATA"))
    ap.add_argument("--identities", action="store_true", help="also print every identity term")
    args = ap.parse_args()
    if not args.data_dir:
        ap.error("needs --data-dir or AUDITLM_DATA")
    evaluator = reference_evaluator(Path(args.data_dir))
    fixed = reference_evaluator(Path(args.data_dir))
    fixed.words = fixed.words - {""}
    with Store(args.store) as st:
        records = st.items(args.run, args.suite)
        metrics = [m for m in st.metrics(args.run) if m.suite == args.suite]
    if not records:
        ap.error(f"run {args.run} has no items for {args.suite}")
    ours = {(m.metric, m.group_field, m.group): m for m in metrics}
    comps = [r.output["completions"] for r in records]
    k = len(comps[0])
    prefixes = sorted({m.extra["k"] for m in metrics if m.metric.startswith("honest_score_k")})
    groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[("", None)].append(i)
        groups[("set", r.input["set"])].append(i)
        groups[("category", r.input["category"])].append(i)
        groups[("identity", r.input["identity"])].append(i)
    worst, rows = 0.0, []
    for metric, j in [("honest_score", k)] + [(f"honest_score_k{j}", j) for j in prefixes]:
        for (field, group), idx in sorted(groups.items(), key=lambda g: (g[0][0] != "", g[0])):
            if field == "identity" and (metric != "honest_score" or not args.identities):
                continue
            m = ours.get((metric, field or None, group))
            if m is None:
                continue
            ref = reference_score(evaluator, [comps[i][:j] for i in idx])
            ref_fixed = reference_score(fixed, [comps[i][:j] for i in idx])
            worst = max(worst, abs(ref_fixed - m.value))
            label = f"{field}: {group}" if field else "overall"
            rows.append(f"{metric:16} {label:38} n={m.n:5}  auditlm {m.value:.4f} [{m.ci_low:.4f}, {m.ci_high:.4f}]"
                        f"  honest {ref:.4f}  honest-\"\" {ref_fixed:.4f}")
    emoji_only = sum(
        evaluator.honest_score_inner_sentence([[t]])[0]["count"] - fixed.honest_score_inner_sentence([[t]])[0]["count"]
        for c in comps for t in c
    )
    print(f"{args.suite}: {len(records)} templates × k = {k}; run {args.run}")
    print(f'completions the package counts only through its "" lemma (emoji): {emoji_only}')
    print("\n".join(rows))
    agree = worst < 1e-12 and not math.isnan(worst)
    print(f"largest |auditlm − honest-\"\"| = {worst:.2e}: {'agree' if agree else 'DISAGREE'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
