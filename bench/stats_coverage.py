"""Coverage of every interval method in ``auditlm.stats``, measured by simulation under a known truth.

Usage: ``python bench/stats_coverage.py [--replicates N] [--json] [--only SUBSTRING] [--seed S]``.

For each scenario the data are drawn ``--replicates`` times (default 1000) from a distribution whose true value is
known, the method computes its nominal-95% interval, and coverage is the share of replicates whose interval
contains the truth. Tests appear as ``1 − size``: the share of replicates under the null in which the test does
*not* reject at alpha = 0.05, so the same [0.93, 0.97] band applies. Methods marked ``(old)`` are what auditlm used
before the statistics layer, ``(rejected)`` a candidate that was measured and not used (kept here to show why). ``--json`` prints the rows as
``[{"method", "scenario", "nominal", "coverage", "replicates"}]``.

A scenario's truth is what the metric estimates: for a rate or mean the population value; for a gap the true
max − min of the group values; for clustered data the mean over the population of clusters.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import integrate, stats

from auditlm import stats as S

NOMINAL = 0.95
Sim = Callable[[np.random.Generator, int], tuple[float, float, float]]


@dataclass(frozen=True)
class Scenario:
    method: str
    scenario: str
    sim: Sim  # (rng, replicate index) -> (low, high, truth)


# --- data ----------------------------------------------------------------------------------------------------


def _beta_binomial_clusters(rng: np.random.Generator, p: float, icc: float, sizes: np.ndarray) -> np.ndarray:
    """Cluster-level success probabilities ~ Beta with mean p and intra-cluster correlation icc."""
    if icc <= 0:
        return np.full(sizes.size, p)
    ab = (1 - icc) / icc
    return rng.beta(p * ab, (1 - p) * ab, size=sizes.size)


def _clustered_binary(rng, p, icc, n_clusters, size):
    sizes = np.full(n_clusters, size) if np.isscalar(size) else np.asarray(size)
    pc = _beta_binomial_clusters(rng, p, icc, sizes)
    x = np.concatenate([rng.binomial(1, q, s) for q, s in zip(pc, sizes, strict=True)])
    c = np.repeat(np.arange(sizes.size), sizes)
    return x, c


def _clustered_normal(rng, mu, icc, n_clusters, sizes):
    a = rng.normal(0, math.sqrt(icc), n_clusters)
    x = np.concatenate([mu + ai + rng.normal(0, math.sqrt(1 - icc), s) for ai, s in zip(a, sizes, strict=True)])
    return x, np.repeat(np.arange(n_clusters), sizes)


def _cover(e) -> tuple[float, float]:
    return (e.low, e.high) if not isinstance(e, tuple) else e


# --- old methods (before the statistics layer) ----------------------------------------------------------------


def _old_gap_bootstrap(x: np.ndarray, g: np.ndarray, rng: np.random.Generator, n_boot: int = 1000):
    """Stratified percentile bootstrap of max − min of group means (auditlm ≤ 0.1's ``_gap_metric``)."""
    boot = []
    for name in sorted(set(g.tolist())):
        gx = x[g == name]
        boot.append(gx[rng.integers(0, gx.size, size=(n_boot, gx.size))].mean(axis=1))
    m = np.stack(boot)
    lo, hi = np.quantile(m.max(axis=0) - m.min(axis=0), [0.025, 0.975])
    return float(lo), float(hi)


def _old_percentile_mean(x: np.ndarray, rng: np.random.Generator, n_boot: int = 1000):
    """Percentile bootstrap of the mean over items (auditlm ≤ 0.1's ``bootstrap_ci``)."""
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    lo, hi = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    return float(lo), float(hi)


def _bootstrap_t_few(x: np.ndarray, rng: np.random.Generator, n_boot: int = 1000) -> tuple[float, float]:
    """The studentized bootstrap of :func:`auditlm.stats.mean` without its Student-t fallback below
    ``MIN_BOOTSTRAP_T_UNITS`` units (what ``mean`` did there before)."""
    y, m = x.astype(float), np.ones_like(x, dtype=float)
    r = float(y.mean())
    se = float(S._ratio_se(y, m, r))
    q_lo, q_hi = np.quantile(S._bootstrap_t(y, m, r, n_boot, rng), [0.025, 0.975])
    return float(r - q_hi * se), float(r - q_lo * se)


# --- scenarios -------------------------------------------------------------------------------------------------


def _w1_truth(mus: list[float], sigma: float) -> float:
    """Mean over groups of W1(N(mu_g, sigma), equal mixture of all groups) — Huang et al.'s average group
    fairness for normal group distributions, by numerical integration of |F_g − F_pooled|."""
    def f_mix(t):
        return np.mean([stats.norm.cdf(t, m, sigma) for m in mus])

    lo, hi = min(mus) - 10 * sigma, max(mus) + 10 * sigma
    return float(np.mean([integrate.quad(lambda t, m=m: abs(stats.norm.cdf(t, m, sigma) - f_mix(t)), lo, hi,
                                         limit=200)[0] for m in mus]))


def _w1_sorted(mat: np.ndarray) -> float:
    """Average group W1 for K groups of equal size T (rows of ``mat``): with the pooled sample of K·T points, each
    group order statistic spans K pooled ones, so W1 = mean_j |u_(ceil(j/K)) − pooled_(j)| (fast, exact)."""
    k = mat.shape[0]
    pooled = np.sort(mat.ravel())
    u = np.repeat(np.sort(mat, axis=1), k, axis=1)
    return float(np.mean(np.abs(u - pooled[None, :]).mean(axis=1)))


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    add = out.append

    # rates: Clopper–Pearson
    for p in (0.02, 0.5, 0.98):
        for n in (10, 30, 300):
            add(Scenario("rate: clopper-pearson", f"binomial p={p} n={n}",
                         lambda rng, i, p=p, n=n: (*_cover(S.rate(rng.binomial(1, p, n))), p)))
    for p, g, m, icc in ((0.1, 30, 5, 0.2), (0.5, 10, 10, 0.2), (0.5, 30, 5, 0.2), (0.9, 40, 8, 0.1),
                         (0.05, 60, 5, 0.1)):
        def sim(rng, i, p=p, g=g, m=m, icc=icc):
            x, c = _clustered_binary(rng, p, icc, g, m)
            return (*_cover(S.rate(x, clusters=c, unit="template")), p)

        add(Scenario("rate: clopper-pearson, korn-graubard clusters", f"p={p} {g} clusters x {m} icc={icc}", sim))

    def sim_unequal(rng, i):
        sizes = rng.integers(1, 11, 30)
        x, c = _clustered_binary(rng, 0.3, 0.2, 30, sizes)
        return (*_cover(S.rate(x, clusters=c, unit="template")), 0.3)

    add(Scenario("rate: clopper-pearson, korn-graubard clusters", "p=0.3 30 clusters x 1-10 icc=0.2", sim_unequal))

    # means: bootstrap-t (and the old percentile bootstrap beside it at small n)
    gens = {"normal": (lambda rng, n: rng.normal(0, 1, n), 0.0),
            "exponential": (lambda rng, n: rng.exponential(1, n), 1.0)}
    for name, (gen, truth) in gens.items():
        for n in (10, 30, 300):
            add(Scenario("mean: bootstrap-t", f"{name} n={n}",
                         lambda rng, i, gen=gen, n=n, truth=truth: (
                             *_cover(S.mean(gen(rng, n), random_state=rng)), truth)))
        add(Scenario("mean: percentile bootstrap (old)", f"{name} n=10",
                     lambda rng, i, gen=gen, truth=truth: (*_old_percentile_mean(gen(rng, 10), rng), truth)))
    for g, m in ((10, 5), (30, 5)):
        def sim_c(rng, i, g=g, m=m):
            x, c = _clustered_normal(rng, 0.0, 0.3, g, np.full(g, m))
            return (*_cover(S.mean(x, clusters=c, unit="template", random_state=rng)), 0.0)

        add(Scenario("mean: bootstrap-t, clusters", f"normal {g} clusters x {m} icc=0.3", sim_c))

        def sim_c_old(rng, i, g=g, m=m):
            x, _ = _clustered_normal(rng, 0.0, 0.3, g, np.full(g, m))
            return (*_old_percentile_mean(x, rng), 0.0)

        add(Scenario("mean: percentile bootstrap over items (old)", f"normal {g} clusters x {m} icc=0.3", sim_c_old))

    def sim_c_uneq(rng, i):
        sizes = rng.integers(1, 11, 30)
        x, c = _clustered_normal(rng, 0.0, 0.3, 30, sizes)
        return (*_cover(S.mean(x, clusters=c, unit="template", random_state=rng)), 0.0)

    add(Scenario("mean: bootstrap-t, clusters", "normal 30 clusters x 1-10 icc=0.3", sim_c_uneq))

    # group gaps
    for ps, n in (((0.5, 0.5, 0.5), 30), ((0.05, 0.05, 0.05), 100), ((0.3, 0.5, 0.7), 100), ((0.1, 0.1, 0.3), 100),
                  ((0.02, 0.02, 0.1), 300)):
        def sim_gr(rng, i, ps=ps, n=n):
            x = np.concatenate([rng.binomial(1, p, n) for p in ps])
            g = np.repeat(["a", "b", "c"], n)
            return (*_cover(S.group_gap(x, g, kind="rate", n_permutations=0).estimate), max(ps) - min(ps))

        label = "equal" if len(set(ps)) == 1 else "unequal"
        add(Scenario("gap: bonferroni newcombe (rates)", f"{label} rates {ps} 3 groups x {n}", sim_gr))
    add(Scenario("gap: bonferroni newcombe (rates)", "equal rates 0.3, 4 groups x 100",
                 lambda rng, i: (*_cover(S.group_gap(rng.binomial(1, 0.3, 400), np.repeat(list("abcd"), 100),
                                                     kind="rate", n_permutations=0).estimate), 0.0)))

    def sim_gr_cl(rng, i):
        parts = [_clustered_binary(rng, 0.4, 0.2, 10, 5) for _ in range(3)]
        x = np.concatenate([p[0] for p in parts])
        c = np.concatenate([p[1] + 100 * k for k, p in enumerate(parts)])
        g = np.repeat(["a", "b", "c"], 50)
        return (*_cover(S.group_gap(x, g, kind="rate", clusters=c, unit="template", n_permutations=0).estimate), 0.0)

    add(Scenario("gap: bonferroni newcombe (rates)", "equal rates 0.4, 3 groups x 10 clusters x 5 icc=0.2",
                 sim_gr_cl))
    add(Scenario("gap: max-min percentile bootstrap (old)", "equal rates (0.5, 0.5, 0.5) 3 groups x 30",
                 lambda rng, i: (*_old_gap_bootstrap(rng.binomial(1, 0.5, 90).astype(float),
                                                     np.repeat(np.array(["a", "b", "c"], dtype=object), 30), rng),
                                 0.0)))
    for mus, n in (((0.0, 0.0, 0.0), 30), ((0.0, 0.5, 1.0), 100), ((0.0, 0.0, 1.0), 30)):
        label = "equal" if len(set(mus)) == 1 else "unequal"

        def sim_gm(rng, i, mus=mus, n=n):
            x = np.concatenate([rng.normal(mu, 1, n) for mu in mus])
            g = np.repeat(["a", "b", "c"], n)
            return (*_cover(S.group_gap(x, g, kind="mean", n_permutations=0, random_state=rng).estimate),
                    max(mus) - min(mus))

        add(Scenario("gap: bonferroni welch-t (means)", f"{label} means {mus} 3 groups x {n} normal", sim_gm))

        def sim_gx(rng, i, mus=mus):
            t = 20
            a = rng.normal(0, 1, t)  # template effects shared by every group
            x = np.concatenate([a + mu + rng.normal(0, 0.5, t) for mu in mus])
            g = np.repeat(["a", "b", "c"], t)
            c = np.tile(np.arange(t), 3)
            est = S.group_gap(x, g, kind="mean", clusters=c, unit="template", n_permutations=0,
                              random_state=rng).estimate
            return (*_cover(est), max(mus) - min(mus))

        add(Scenario("gap: bonferroni paired-t (means, crossed)", f"{label} means {mus} 20 templates x 3 groups",
                     sim_gx))
    add(Scenario("gap: max-min percentile bootstrap (old)", "equal means (0, 0, 0) 3 groups x 30 normal",
                 lambda rng, i: (*_old_gap_bootstrap(rng.normal(0, 1, 90),
                                                     np.repeat(np.array(["a", "b", "c"], dtype=object), 30), rng),
                                 0.0)))

    # parity ratio
    for ps in ((0.4, 0.4, 0.4), (0.2, 0.4, 0.5), (0.05, 0.05, 0.05)):
        label = "equal" if len(set(ps)) == 1 else "unequal"
        add(Scenario("parity ratio: bonferroni pairwise koopman score", f"{label} rates {ps} 3 groups x 100",
                     lambda rng, i, ps=ps: (*_cover(S.parity_ratio(np.concatenate([rng.binomial(1, p, 100) for p in ps]),
                                                                   np.repeat(["a", "b", "c"], 100))),
                                            min(ps) / max(ps))))

    # paired binary difference
    for n in (30, 300):
        def sim_pd(rng, i, n=n):
            z = rng.random(n)
            x = (z < 0.6).astype(float)            # P(x)=0.6
            y = ((z < 0.45) | (rng.random(n) < 0.1)).astype(float)   # correlated with x
            truth = 0.6 - (0.45 + 0.55 * 0.1)
            return (*_cover(S.paired_rate_difference(x, y)), truth)

        add(Scenario("paired difference: agresti-min", f"correlated pairs n={n}", sim_pd))

    # AUC
    for d, m in ((0.95, 30), (0.95, 150), (2.9, 30)):
        truth = float(stats.norm.cdf(d / math.sqrt(2)))
        add(Scenario("auc: newcombe-5", f"binormal auc={truth:.2f} {m}+{m}",
                     lambda rng, i, d=d, m=m, truth=truth: (
                         *_cover(S.auc(np.r_[rng.normal(d, 1, m), rng.normal(0, 1, m)], np.r_[[True] * m, [False] * m])),
                         truth)))

    # TPR at FPR
    for fpr, n in ((0.05, 300), (0.01, 1000)):
        d = 1.5
        truth = float(1 - stats.norm.cdf(stats.norm.ppf(1 - fpr) - d))
        add(Scenario("tpr at fpr: stratified bootstrap ∪ clopper-pearson", f"binormal d'={d} fpr={fpr} {n}+{n}",
                     lambda rng, i, fpr=fpr, n=n, truth=truth, d=d: (
                         *_cover(S.tpr_at_fpr(np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)],
                                              np.r_[[True] * n, [False] * n], fpr, n_resamples=500,
                                              random_state=rng)), truth)))

    # smooth functions of several estimates: ICAT over target terms (StereoSet-like macro averages), BBQ's s_AMB
    def icat(ss, lms):
        return lms * np.minimum(ss, 1 - ss) / 0.5

    for ss_mean in (0.6, 0.5):
        truth = 0.8 * min(ss_mean, 1 - ss_mean) / 0.5

        def sim_icat(rng, i, t=25, per=8, method="delta", a=ss_mean, truth=truth):
            ss_t = rng.beta(10 * a, 10 * (1 - a), t)  # per-target P(stereotype preferred)
            lms_t = rng.beta(8, 2, t)                  # per-target P(related above unrelated); E = 0.8
            pro = rng.binomial(per, ss_t) / per
            rel = rng.binomial(per, lms_t) / per
            one = np.ones(t)
            if method == "bca":
                res = stats.bootstrap((pro, rel), lambda a_, b_, axis=-1: icat(np.mean(a_, axis), np.mean(b_, axis)),
                                      paired=True, vectorized=True, method="BCa",
                                      confidence_level=S.expanded_confidence(NOMINAL, t), n_resamples=1000,
                                      random_state=rng)
                return float(res.confidence_interval.low), float(res.confidence_interval.high), truth
            e = S.projection(icat, [(pro, one), (rel, one)], n=t * per, unit="target", bounds=(0.0, 1.0))
            return (*_cover(e), truth)

        add(Scenario("function: scheffe projection", f"ICAT SS={ss_mean} 25 targets x 8 items", sim_icat))
        add(Scenario("function: bca bootstrap over targets, expanded (rejected)",
                     f"ICAT SS={ss_mean} 25 targets x 8 items", lambda rng, i, f=sim_icat: f(rng, i, method="bca")))


    def sim_amb(rng, i, n=200):
        correct = rng.binomial(1, 0.6, n).astype(float)
        non_unk = 1 - correct  # an ambiguous answer is correct exactly when it is "unknown"
        biased = non_unk * rng.binomial(1, 0.6, n)
        e = S.projection(lambda a, q: (1 - a) * (2 * q - 1), [(correct, np.ones(n)), (biased, non_unk)], n=n,
                         unit="item", bounds=(-1.0, 1.0))
        return (*_cover(e), 0.4 * 0.2)

    add(Scenario("function: scheffe projection", "BBQ s_AMB accuracy 0.6, biased share 0.6, n=200",
                 sim_amb))

    # W1 gap (average group fairness) over templates
    for mus in ((0.0, 0.0), (0.0, 0.3), (0.0, 0.8)):
        truth = 0.0 if mus[0] == mus[1] else _w1_truth(list(mus), math.sqrt(0.3 + 0.2))

        def sim_w1(rng, i, mus=mus, t=40, truth=truth):
            a = rng.normal(0, math.sqrt(0.3), t)
            vals = [a + mu + rng.normal(0, math.sqrt(0.2), t) for mu in mus]
            blocks = [[np.array([v[j]]) for v in vals] for j in range(t)]
            e, _ = S.average_group_w1_gap(blocks, unit="template", n_resamples=300, n_permutations=0,
                                          random_state=rng)
            return (*_cover(e), truth)

        label = "equal" if mus[0] == mus[1] else "unequal"
        add(Scenario("w1 gap: mean-difference lower, percentile bootstrap upper", f"{label} groups mu={mus} 40 templates",
                     sim_w1))

    # tests under the null: coverage column = 1 - size
    def not_rejected(t: S.TestResult) -> tuple[float, float, float]:
        return (0.0, 1.0, 0.5) if t.p >= t.alpha else (0.0, 0.0, 1.0)

    add(Scenario("test: wilcoxon signed-rank (1 - size)", "null normal n=30",
                 lambda rng, i: not_rejected(S.wilcoxon(rng.normal(0, 1, 30)))))
    add(Scenario("test: exact sign test (1 - size)", "null n=30",
                 lambda rng, i: not_rejected(S.sign_test(rng.normal(0, 1, 30)))))
    add(Scenario("test: exact mcnemar (1 - size)", "null p=0.5/0.5 n=100",
                 lambda rng, i: not_rejected(S.mcnemar(rng.binomial(1, 0.5, 100), rng.binomial(1, 0.5, 100)))))

    def sim_perm(rng, i):
        gap = S.group_gap(rng.normal(0, 1, 90), np.repeat(["a", "b", "c"], 30), kind="mean", n_permutations=499,
                          random_state=rng)
        assert gap.test is not None
        return not_rejected(gap.test)

    add(Scenario("test: omnibus permutation (1 - size)", "null equal means 3 groups x 30", sim_perm))

    # means over fewer than MIN_BOOTSTRAP_T_UNITS units: Student's t (exact for normal unit means). Appended last:
    # each scenario's random stream is seeded by its position, so the earlier scenarios keep theirs.
    for n in (2, 3, 4):
        add(Scenario("mean: student-t (fewer than 5 units)", f"normal n={n}",
                     lambda rng, i, n=n: (*_cover(S.mean(rng.normal(0, 1, n), random_state=rng)), 0.0)))
        add(Scenario("mean: bootstrap-t below 5 units (rejected)", f"normal n={n}",
                     lambda rng, i, n=n: (*_bootstrap_t_few(rng.normal(0, 1, n), rng), 0.0)))

    def sim_c_few(rng, i):
        x, c = _clustered_normal(rng, 0.0, 0.3, 3, np.full(3, 5))
        return (*_cover(S.mean(x, clusters=c, unit="template", random_state=rng)), 0.0)

    add(Scenario("mean: student-t (fewer than 5 units), clusters", "normal 3 clusters x 5 icc=0.3", sim_c_few))
    return out


def run(replicates: int = 1000, only: str | None = None, seed: int = 0, progress: bool = True) -> list[dict]:
    rows = []
    for k, sc in enumerate(scenarios()):
        if only and only not in f"{sc.method} {sc.scenario}":
            continue
        rng = np.random.default_rng([seed, k])
        t0 = time.perf_counter()
        hits = 0
        for i in range(replicates):
            lo, hi, truth = sc.sim(rng, i)
            hits += bool(lo <= truth + 1e-12 and truth - 1e-12 <= hi)
        rows.append({"method": sc.method, "scenario": sc.scenario, "nominal": NOMINAL,
                     "coverage": round(hits / replicates, 4), "replicates": replicates})
        if progress:
            print(f"  {sc.method} | {sc.scenario}: {hits / replicates:.3f} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print rows as JSON")
    ap.add_argument("--only", default=None, help="run the scenarios whose method or name contains this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = run(args.replicates, args.only, args.seed, progress=not args.json)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    w1 = max(len(r["method"]) for r in rows)
    w2 = max(len(r["scenario"]) for r in rows)
    print(f"{'method':<{w1}}  {'scenario':<{w2}}  nominal  coverage  replicates")
    for r in rows:
        flag = "" if "(old)" in r["method"] or "(rejected)" in r["method"] or 0.93 <= r["coverage"] <= 0.995 else "  <-- outside [0.93, 0.995]"
        print(f"{r['method']:<{w1}}  {r['scenario']:<{w2}}  {r['nominal']:.2f}     {r['coverage']:.3f}     "
              f"{r['replicates']}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
