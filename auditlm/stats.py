"""The statistics layer: every interval, paired test and multiplicity correction auditlm reports comes from here.

Scorers never compute an interval themselves; they describe the data (per-item values, the resampling unit each
item belongs to, the groups) and call one of these functions. Each returns an :class:`Estimate` that records the
method, the confidence level and the number of independent units it rests on, so a stored number says how its
interval was made. Coverage of every method is measured under known truth by ``bench/stats_coverage.py``
(a reduced version runs in the test suite).

Methods, and why:

* **Rates** (a share of binary outcomes, or a ratio of counts such as precision): Clopper–Pearson exact intervals
  (``statsmodels.stats.proportion.proportion_confint(method="beta")``; Clopper & Pearson 1934). Exact intervals
  never cover less than the nominal level, for any rate and any ``n`` — Wilson's dips to 0.91 at n = 10 near
  rates of 0.05 — and they are not zero-width at 0/n or n/n. With a resampling unit (items that share a template)
  the count is replaced by Korn & Graubard's (1998, *Survey Methodology* 24:193–201) effective sample size
  ``n* = p(1 − p) / var(p)`` from the cluster-robust (linearised ratio) variance, with their degrees-of-freedom
  adjustment ``n* · (t_{n−1} / t_{G−1})²``; when every outcome is 0 (or 1) the variance says nothing about
  clustering and ``n* = G``, the number of clusters (the worst case, every cluster one observation).
* **Means** (and ratios of sums, e.g. a per-template mean): studentized (bootstrap-t) cluster bootstrap
  (Efron & Tibshirani 1993, ch. 12; Davison & Hinkley 1997, §5.2 and §3.8 for clustered data): resample whole
  units, studentize each replicate with its linearised standard error, and invert the replicate t quantiles.
  ``scipy.stats.bootstrap`` offers percentile, basic and BCa but not bootstrap-t; at 10 units its BCa interval
  covers a normal mean 0.89 of the time and an exponential mean 0.88 (measured in the coverage bench), the
  studentized one 0.95 and 0.94.
  Below :data:`MIN_BOOTSTRAP_T_UNITS` (5) units the bootstrap-t breaks down: resamples repeating one unit have
  standard error 0, so the replicate t quantiles are unbounded — at 2 units every usable replicate has t = 0 up
  to rounding, so the interval is zero-width or, from rounding noise, 1e15 wide (coverage 0–0.08); at 3 units it
  covered 0.84–0.85 with widths up to 1e19 (normal, exponential, uniform data, 2000 replicates each); at 4 units
  widths reached 1e5. There the interval is Student's t, ``r ± t_{1−α/2, G−1} · se`` with the same linearised
  (ratio) standard error: exact for normal unit means (0.95), 0.89–0.96 at 3 units in the same simulation, lower
  for skewed data (0.88–0.90 for the exponential at 2–4 units); intervals of shares (``proportions=True``) are
  clipped to [0, 1], at any number of units. (At 4 units the bootstrap-t covered skewed data better, 0.92 vs 0.88 for the exponential, but with
  intervals about twice as wide at the median and unbounded at the top.)
* **Functions of two estimates** (StereoSet's ICAT from SS and LMS, BBQ's s_AMB from accuracy and the biased
  share): the range of the function over the joint (Hotelling) confidence ellipse of its inputs
  (:func:`projection`). ICAT has a kink at SS = 0.5, where every bootstrap tried under-covers
  (``scipy.stats.bootstrap`` BCa at Hesterberg's (2015, *The American Statistician* 69:371–386) expanded
  level: 0.92 at SS = 0.6; percentile: 0.83 at SS = 0.5; studentized: 0.89 at SS = 0.6).
* **Group gaps** (max − min over groups): the bootstrap of max − min is biased upward (with equal groups its
  interval almost never covers 0). Instead every pairwise difference gets an interval at the Bonferroni level
  ``1 − α / (K(K−1)/2)`` — Newcombe's hybrid score interval for rates (Newcombe 1998, method 10, via
  ``statsmodels.stats.proportion.confint_proportions_2indep``, on effective counts), a paired t interval over
  clusters when every cluster has both groups (a counterfactual design), Welch's t with cluster-robust standard
  errors otherwise. Jointly they cover all differences with probability ≥ 1 − α, so ``[max_ij low|d_ij|,
  max_ij high|d_ij|]`` covers the gap. An omnibus permutation p-value (``scipy.stats.permutation_test``) tests "all
  groups equal", permuting at the level the design allows (items; whole clusters; groups within a cluster).
* **Paired comparisons**: binary pairs — exact McNemar test (``statsmodels.stats.contingency_tables.mcnemar``)
  and Agresti & Min's (2005, *Stat Med* 24:729–740) adjusted Wald interval for the difference; continuous pairs —
  Wilcoxon signed-rank (``scipy.stats.wilcoxon``) with the bootstrap-t interval of the mean difference (Student's
  t below 5 pairs, as for any mean); the exact sign test (``scipy.stats.binomtest``) for differences of binary
  outcomes averaged over a few forms.
  Holm's step-down correction (``statsmodels.stats.multitest.multipletests``) runs within a declared family, and a
  test whose smallest attainable p-value cannot reach alpha (too few informative pairs) is marked
  ``underpowered`` rather than reported as if it were evidence.
* **ROC AUC**: Newcombe's (2006, *Stat Med* 25:559–573, method 5) score-type interval for the Mann–Whitney
  statistic, which stays informative at AUC = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
#: Below this many resampling units :func:`mean` uses Student's t instead of the studentized bootstrap.
MIN_BOOTSTRAP_T_UNITS = 5

Kind = Literal["rate", "mean"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval and how the interval was made.

    ``n`` counts items (or trials, for rates of counts); ``n_units`` the independent units the interval rests on
    (clusters, or the items themselves when ``unit == "item"``). ``note`` explains an undefined value or a
    degenerate interval.
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    confidence: float
    n_units: int
    unit: str = "item"
    note: str | None = None

    def ci_extra(self) -> dict[str, Any]:
        """What a metric row's ``extra["ci"]`` records about the interval."""
        out: dict[str, Any] = {"method": self.method, "confidence": self.confidence, "unit": self.unit,
                               "n_units": self.n_units}
        return out


@dataclass(frozen=True)
class TestResult:
    """A hypothesis test result: ``p`` (two-sided), optionally Holm-adjusted within ``family``.

    ``min_p`` is the smallest p-value the test could have produced with this many informative units; the test is
    ``underpowered`` when it (or its whole Holm family) cannot reach ``alpha``.
    """

    __test__ = False  # not a pytest test class

    name: str
    p: float
    n: int
    min_p: float
    alpha: float
    p_holm: float | None = None
    family: str | None = None
    family_size: int | None = None
    underpowered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def significant(self) -> bool:
        """Whether the (Holm-adjusted, when in a family) p-value is below alpha and the test had the power to get
        there."""
        p = self.p if self.p_holm is None else self.p_holm
        return not self.underpowered and p < self.alpha


# --------------------------------------------------------------------------------------------------------------
# Units


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.5 < c < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    return c


def units(values: Sequence[float] | np.ndarray, clusters: Sequence[Any] | None = None,
          trials: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Sum ``values`` (and ``trials``, default 1 per item) within each cluster: ``(sums, counts, labels)``.

    Without ``clusters`` every item is its own unit. Labels are in first-seen order.
    """
    x = np.asarray(values, dtype=float)
    m = np.ones_like(x) if trials is None else np.asarray(trials, dtype=float)
    if m.shape != x.shape:
        raise ValueError("values and trials must have the same length")
    if clusters is None:
        return x, m, list(range(x.size))
    labels = list(clusters)
    if len(labels) != x.size:
        raise ValueError("values and clusters must have the same length")
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(c, len(index)) for c in labels), dtype=np.int64, count=x.size)
    sums = np.bincount(codes, weights=x, minlength=len(index))
    counts = np.bincount(codes, weights=m, minlength=len(index))
    return sums, counts, list(index)


def _unit_name(clusters: Sequence[Any] | None, unit: str | None) -> str:
    """The resampling unit's name: the one given (the values may already be one per unit), else item/cluster."""
    return unit or ("item" if clusters is None else "cluster")


def _t(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


# --------------------------------------------------------------------------------------------------------------
# Rates


def proportion_ci(k: float, n: float, confidence: float = DEFAULT_CONFIDENCE,
                  method: str = "beta") -> tuple[float, float]:
    """Interval for a binomial proportion ``k / n`` (statsmodels ``proportion_confint``; ``beta`` =
    Clopper–Pearson, ``wilson`` = Wilson score). Fractional ``k``/``n`` (effective counts) are allowed."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return float("nan"), float("nan")
    lo, hi = proportion_confint(k, n, alpha=1.0 - confidence, method=method)
    lo = 0.0 if k <= 0 else float(lo)
    hi = 1.0 if k >= n else float(hi)
    return max(0.0, lo), min(1.0, hi)


def effective_n(sums: np.ndarray, counts: np.ndarray, confidence: float) -> tuple[float, float]:
    """``(p, n*)``: the pooled rate of unit-level ``sums / counts`` and Korn & Graubard's (1998) effective sample
    size with their degrees-of-freedom adjustment (see the module docstring). ``n* <= sum(counts)``."""
    total = float(counts.sum())
    p = float(sums.sum()) / total
    g = int(np.count_nonzero(counts > 0))  # units with no trials carry no information
    if g < 2:
        return p, 1.0
    if np.all(counts == 1):
        return p, total
    if p <= 0.0 or p >= 1.0:
        return p, float(g)
    var = g / (g - 1) * float(np.sum((sums - p * counts) ** 2)) / total**2
    n_eff = total if var <= 0 else min(total, p * (1 - p) / var)
    q = 1 - (1 - confidence) / 2
    n_eff *= (_t(q, total - 1) / _t(q, g - 1)) ** 2 if total > 1 else 1.0
    return p, max(min(n_eff, total), 1.0)


def rate(successes: Sequence[float] | np.ndarray, *, trials: Sequence[float] | np.ndarray | None = None,
         clusters: Sequence[Any] | None = None, unit: str | None = None,
         confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """A rate ``Σ successes / Σ trials`` with a Clopper–Pearson interval (Korn–Graubard effective ``n`` when items
    are clustered or carry several trials each).

    ``successes`` are 0/1 per item, or counts out of ``trials`` per item (e.g. true positives out of predicted spans
    per sentence: then each item is a unit). With no trials at all the rate is undefined (NaN, with a note).
    """
    confidence = _check_confidence(confidence)
    y, m, _ = units(successes, clusters, trials)
    if np.any(y < 0) or np.any(y > m + 1e-9):
        raise ValueError("rate() needs 0 <= successes <= trials")
    n = round(float(m.sum()))
    name = _unit_name(clusters, unit)
    if m.sum() <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "clopper-pearson", confidence, 0, name,
                        "undefined: no trials (0/0)")
    p, n_eff = effective_n(y, m, confidence)
    if n_eff >= m.sum() - 1e-9:
        lo, hi = proportion_ci(float(y.sum()), float(m.sum()), confidence)
        method = "clopper-pearson"
    else:
        lo, hi = proportion_ci(p * n_eff, n_eff, confidence)
        method = f"clopper-pearson (Korn-Graubard effective n {n_eff:.1f})"
    g = int(np.count_nonzero(m > 0))
    note = "one unit: the interval treats it as a single observation" if g < 2 and clusters is not None else None
    return Estimate(p, lo, hi, n, method, confidence, g, name, note)


# --------------------------------------------------------------------------------------------------------------
# Means


def _ratio_se(y: np.ndarray, m: np.ndarray, r: np.ndarray | float) -> np.ndarray:
    """Linearised (cluster-robust) standard error of ``Σy / Σm`` for unit arrays of shape ``(..., G)``."""
    g = y.shape[-1]
    resid = y - np.asarray(r)[..., None] * m if np.ndim(r) else y - r * m
    return np.sqrt(g / (g - 1) * np.sum(resid**2, axis=-1)) / np.sum(m, axis=-1)


def _rng(random_state: int | np.random.Generator) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)


def mean(values: Sequence[float] | np.ndarray, *, clusters: Sequence[Any] | None = None, unit: str | None = None,
         weights: Sequence[float] | np.ndarray | None = None, confidence: float = DEFAULT_CONFIDENCE,
         n_resamples: int = DEFAULT_RESAMPLES, random_state: int | np.random.Generator = 0,
         proportions: bool = False) -> Estimate:
    """The mean of per-item ``values`` (a ratio of sums over units when ``weights`` count items per value) with a
    studentized cluster-bootstrap interval (see the module docstring); with fewer than
    :data:`MIN_BOOTSTRAP_T_UNITS` units, Student's t with ``G − 1`` degrees of freedom on the linearised
    standard error instead (the bootstrap-t quantiles are unbounded there), clipped to [0, 1] for ``proportions``.

    ``proportions`` says the values are shares in [0, 1] (a macro average of per-target rates): when every unit
    sits at 0 (or 1) the bootstrap has nothing to resample, and the interval is Clopper–Pearson with each unit
    as one trial — the worst case — instead of zero-width; every other interval of a share is clipped to [0, 1]
    (the bootstrap-t one too: with few units it can leave the range, and clipping never lowers coverage)."""
    confidence = _check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("mean() needs finite values")
    y, m, _ = units(x * (1.0 if weights is None else np.asarray(weights, float)), clusters, weights)
    name = _unit_name(clusters, unit)
    n = int(x.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "bootstrap-t", confidence, 0, name,
                        "undefined: no items")
    r = float(y.sum() / m.sum())
    g = y.size
    if g < 2:
        return Estimate(r, float("nan"), float("nan"), n, "bootstrap-t", confidence, g, name,
                        "one unit: no interval")
    se = float(_ratio_se(y, m, r))
    if se <= 0 and proportions and r in (0.0, 1.0):
        lo, hi = proportion_ci(r * g, g, confidence)
        return Estimate(r, lo, hi, n, "clopper-pearson over units (every unit at the boundary)", confidence, g,
                        name)
    if se <= 0:
        return Estimate(r, r, r, n, "bootstrap-t", confidence, g, name,
                        "every unit has the same mean: the interval is degenerate")
    a = (1 - confidence) / 2
    if g < MIN_BOOTSTRAP_T_UNITS:
        q = _t(1 - a, g - 1)
        lo, hi = r - q * se, r + q * se
        if proportions:  # a share lies in [0, 1]: clipping the interval to it never lowers its coverage
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        return Estimate(r, float(lo), float(hi), n, f"student-t (fewer than {MIN_BOOTSTRAP_T_UNITS} units)",
                        confidence, g, name)
    t = _bootstrap_t(y, m, r, n_resamples, _rng(random_state))
    q_lo, q_hi = np.quantile(t, [a, 1 - a])
    lo, hi = r - q_hi * se, r - q_lo * se
    if proportions:  # as above: a share's interval never leaves [0, 1] (bootstrap-t can, with few units)
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return Estimate(r, float(lo), float(hi), n, "bootstrap-t", confidence, g, name)


def _bootstrap_t(y: np.ndarray, m: np.ndarray, r: float, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    g = y.size
    out = []
    chunk = max(1, min(n_resamples, 4_000_000 // max(g, 1)))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, g, size=(b, g))
        yb, mb = y[idx], m[idx]
        rb = yb.sum(axis=1) / mb.sum(axis=1)
        seb = _ratio_se(yb, mb, rb)
        ok = seb > 0
        out.append((rb[ok] - r) / seb[ok])
        done += b
    t = np.concatenate(out)
    return t if t.size else np.zeros(1)


def expanded_confidence(confidence: float, n_units: int) -> float:
    """Hesterberg's (2015) expanded level for percentile-type bootstrap intervals on ``n_units`` units."""
    from scipy import stats

    if n_units < 2:
        return confidence
    a = 1 - confidence
    t = stats.t.ppf(1 - a / 2, n_units - 1)
    return float(1 - 2 * stats.norm.cdf(-math.sqrt(n_units / (n_units - 1)) * t))


def projection(f: Callable[..., np.ndarray], ratios: Sequence[tuple[np.ndarray, np.ndarray]], *, n: int, unit: str,
               confidence: float = DEFAULT_CONFIDENCE, bounds: tuple[float, float] | None = None,
               n_angles: int = 720) -> Estimate:
    """``f(r_1, r_2)`` of two ratio estimates ``r_j = Σ y_j / Σ m_j`` over the same resampling units, with the
    Scheffé projection interval: the range of ``f`` over the joint confidence ellipse of ``(r_1, r_2)``, whose
    covariance is the cluster-robust (linearised) one and whose radius is Hotelling's
    ``T² = 2(G−1)/(G−2) · F_{2, G−2}(level)`` (Scheffé 1953; Casella & Berger 2002, §11.3).

    Valid wherever the ellipse is — including at non-smooth points such as ICAT's kink at SS = 0.5, where
    bootstrap intervals (percentile, basic, BCa, studentized) cover 0.83–0.93 — and conservative for a smooth
    ``f`` (the 2-D region projects to about 0.986 on one dimension). ``f`` must be monotone along rays of the
    ellipse so that its extremes lie on the boundary (true for ``LMS · min(SS, 1 − SS)`` and for the bilinear
    s_AMB); the boundary is evaluated at ``n_angles`` points. ``bounds`` clips the interval to ``f``'s range."""
    from scipy import stats as st

    confidence = _check_confidence(confidence)
    ys = [np.asarray(y, dtype=float) for y, _ in ratios]
    ms = [np.asarray(m, dtype=float) for _, m in ratios]
    g = ys[0].size
    label = "scheffe projection of the joint ellipse"
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.array([y.sum() / m.sum() for y, m in zip(ys, ms, strict=True)])
    value = float(f(*r))
    if g < 3 or not np.all(np.isfinite(r)):
        return Estimate(value, float("nan"), float("nan"), n, label, confidence, g, unit,
                        "undefined" if not np.all(np.isfinite(r)) else "fewer than three units: no interval")
    psi = np.stack([(y - rj * m) / m.mean() for y, m, rj in zip(ys, ms, r, strict=True)])  # 2 × G
    cov = g / (g - 1) * (psi @ psi.T) / g**2
    radius = math.sqrt(2 * (g - 1) / (g - 2) * st.f.ppf(confidence, 2, g - 2))
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 0.0, None)
    ang = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    circle = np.stack([np.cos(ang), np.sin(ang)])
    pts = r[:, None] + radius * (v @ (np.sqrt(w)[:, None] * circle))
    vals = np.asarray(f(pts[0], pts[1]), dtype=float)
    lo, hi = float(min(vals.min(), value)), float(max(vals.max(), value))
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    note = "every unit gives the same values: the interval is degenerate" if not np.any(w > 0) else None
    return Estimate(value, lo, hi, n, label, confidence, g, unit, note)


# --------------------------------------------------------------------------------------------------------------
# Tests


def _alpha(confidence: float) -> float:
    return round(1.0 - confidence, 12)


def wilcoxon(d: Sequence[float] | np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of ``d`` against 0 (``scipy.stats.wilcoxon``; zero differences
    dropped). ``min_p`` is the exact test's smallest p-value, ``2 / 2^n`` over the ``n`` non-zero differences."""
    from scipy import stats

    x = np.asarray(d, dtype=float)
    nz = x[x != 0]
    k = int(nz.size)
    alpha = _alpha(confidence)
    min_p = min(1.0, 2.0 * 0.5**k)
    if k == 0:
        return TestResult("wilcoxon", 1.0, 0, 1.0, alpha, underpowered=True)
    p = float(stats.wilcoxon(nz).pvalue)
    return TestResult("wilcoxon", p, k, min_p, alpha, underpowered=min_p > alpha)


def sign_test(d: Sequence[float] | np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE) -> TestResult:
    """Exact two-sided sign test of ``d`` against 0 (``scipy.stats.binomtest`` on the non-zero signs)."""
    from scipy import stats

    x = np.asarray(d, dtype=float)
    pos, k = int(np.sum(x > 0)), int(np.sum(x != 0))
    alpha = _alpha(confidence)
    min_p = min(1.0, 2.0 * 0.5**k)
    if k == 0:
        return TestResult("sign", 1.0, 0, 1.0, alpha, underpowered=True)
    p = float(stats.binomtest(pos, k, 0.5).pvalue)
    return TestResult("sign", p, k, min_p, alpha, underpowered=min_p > alpha)


def mcnemar(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
            confidence: float = DEFAULT_CONFIDENCE) -> TestResult:
    """Exact McNemar test for paired binary outcomes (``statsmodels``; a binomial test on the discordant pairs)."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    a, b = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    k = table[0][1] + table[1][0]
    alpha = _alpha(confidence)
    min_p = min(1.0, 2.0 * 0.5**k)
    if k == 0:
        return TestResult("mcnemar-exact", 1.0, 0, 1.0, alpha, underpowered=True)
    p = float(sm_mcnemar(table, exact=True).pvalue)
    return TestResult("mcnemar-exact", min(1.0, p), k, min_p, alpha, underpowered=min_p > alpha)


def holm(tests: Sequence[TestResult], family: str) -> list[TestResult]:
    """Holm-adjusted p-values within ``family`` (statsmodels ``multipletests(method="holm")``).

    A test is ``underpowered`` when it could not reach alpha on its own, or when no test of the family could
    start Holm's step-down (``m · min_p > alpha`` for every test), e.g. six templates per axis and two groups."""
    from statsmodels.stats.multitest import multipletests

    if not tests:
        return []
    m = len(tests)
    adjusted = multipletests([t.p for t in tests], method="holm")[1]
    blocked = all(m * t.min_p > t.alpha for t in tests)
    return [replace(t, p_holm=float(p), family=family, family_size=m, underpowered=t.underpowered or blocked)
            for t, p in zip(tests, adjusted, strict=True)]


# --------------------------------------------------------------------------------------------------------------
# Paired differences


def paired_rate_difference(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                           confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """``mean(x) − mean(y)`` for paired binary outcomes with Agresti & Min's (2005) adjusted Wald interval (½ added
    to each cell of the 2×2 table)."""
    from scipy import stats

    confidence = _check_confidence(confidence)
    a, b = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    n = int(a.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "agresti-min", confidence, 0, "pair",
                        "undefined: no pairs")
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    diff = (n10 - n01) / (n + 2)
    sd = math.sqrt((n10 + n01 + 1) - (n10 - n01) ** 2 / (n + 2)) / (n + 2)
    value = (n10 - n01) / n
    return Estimate(value, max(-1.0, diff - z * sd), min(1.0, diff + z * sd), n, "agresti-min", confidence, n,
                    "pair")


# --------------------------------------------------------------------------------------------------------------
# Group gaps


@dataclass(frozen=True)
class Gap:
    """``max − min`` over groups with a simultaneous interval and an omnibus test of "all groups equal"."""

    estimate: Estimate
    test: TestResult
    groups: dict[str, Estimate]
    pairs: int


def _design(clusters: Sequence[Any] | None, g: np.ndarray, names: list[str]) -> str:
    if clusters is None:
        return "independent"
    c = np.asarray(list(clusters), dtype=object)
    members: dict[Any, set[str]] = {}
    for ci, gi in zip(c.tolist(), g.tolist(), strict=True):
        members.setdefault(ci, set()).add(gi)
    if all(len(s) == len(names) for s in members.values()):
        return "crossed"
    if all(len(s) == 1 for s in members.values()):
        return "nested"
    return "mixed"


def _pair_interval_mean(xi: np.ndarray, xj: np.ndarray, ci: list[Any] | None, cj: list[Any] | None,
                        crossed: bool, level: float) -> tuple[float, float]:
    if crossed:
        assert ci is not None and cj is not None
        si, mi, li = units(xi, ci)
        sj, mj, lj = units(xj, cj)
        mean_i = dict(zip(li, si / mi, strict=True))
        mean_j = dict(zip(lj, sj / mj, strict=True))
        d = np.array([mean_i[k] - mean_j[k] for k in li if k in mean_j])
        if d.size < 2:
            return float("nan"), float("nan")
        se = d.std(ddof=1) / math.sqrt(d.size)
        t = _t(1 - (1 - level) / 2, d.size - 1)
        return float(d.mean() - t * se), float(d.mean() + t * se)
    parts = []
    for x, c in ((xi, ci), (xj, cj)):
        s, m, _ = units(x, c)
        r = float(s.sum() / m.sum())
        se = float(_ratio_se(s, m, r)) if s.size > 1 else float("nan")
        parts.append((r, se, s.size - 1))
    (ri, sei, dfi), (rj, sej, dfj) = parts
    if not (math.isfinite(sei) and math.isfinite(sej)):
        return float("nan"), float("nan")
    v = sei**2 + sej**2
    if v <= 0:
        return ri - rj, ri - rj
    df = v**2 / (sei**4 / dfi + sej**4 / dfj)  # Welch–Satterthwaite, per-group df = units − 1
    t = _t(1 - (1 - level) / 2, max(df, 1.0))
    return ri - rj - t * math.sqrt(v), ri - rj + t * math.sqrt(v)


def _pair_interval_rate(ei: tuple[float, float], ej: tuple[float, float], level: float) -> tuple[float, float]:
    from statsmodels.stats.proportion import confint_proportions_2indep

    (ki, ni), (kj, nj) = ei, ej
    lo, hi = confint_proportions_2indep(ki, ni, kj, nj, method="newcomb", compare="diff", alpha=1 - level)
    return float(lo), float(hi)


def group_gap(values: Sequence[float] | np.ndarray, groups: Sequence[Any], *, kind: Kind,
              clusters: Sequence[Any] | None = None, unit: str | None = None,
              trials: Sequence[float] | np.ndarray | None = None,
              confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
              n_permutations: int = 1999, random_state: int | np.random.Generator = 0) -> Gap:
    """``max − min`` of the group rates (``kind="rate"``: 0/1 values, or success counts out of ``trials``) or
    means, with the simultaneous (Bonferroni over all pairs) interval and the omnibus permutation test described in
    the module docstring."""
    confidence = _check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    tr = None if trials is None else np.asarray(trials, dtype=float)
    g = np.asarray([str(v) for v in groups], dtype=object)
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise ValueError("group_gap needs at least two groups")
    cl = None if clusters is None else list(clusters)
    design = _design(cl, g, names)
    rng = _rng(random_state)
    per: dict[str, Estimate] = {}
    counts: dict[str, tuple[float, float]] = {}
    sub_c: dict[str, list[Any] | None] = {}
    for name in names:
        mask = g == name
        ci = None if cl is None else [c for c, k in zip(cl, mask.tolist(), strict=True) if k]
        sub_c[name] = ci
        if kind == "rate":
            ti = None if tr is None else tr[mask]
            per[name] = rate(x[mask], trials=ti, clusters=ci, unit=unit, confidence=confidence)
            s, m, _ = units(x[mask], ci, ti)
            p, n_eff = effective_n(s, m, confidence)
            counts[name] = (p * n_eff, n_eff)
        else:
            per[name] = mean(x[mask], clusters=ci, unit=unit, confidence=confidence, n_resamples=n_resamples,
                             random_state=rng)
    est = {k: v.value for k, v in per.items()}
    value = max(est.values()) - min(est.values())
    n_items = int(x.size if tr is None else tr.sum())
    k = len(names)
    n_pairs = k * (k - 1) // 2
    level = 1 - (1 - confidence) / n_pairs
    lows, highs = [], []
    for a in range(k):
        for b in range(a + 1, k):
            i, j = names[a], names[b]
            if kind == "rate":
                lo, hi = _pair_interval_rate(counts[i], counts[j], level)
            else:
                lo, hi = _pair_interval_mean(x[g == i], x[g == j], sub_c[i], sub_c[j], design == "crossed", level)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                lows.append(float("nan"))
                highs.append(float("nan"))
                continue
            lows.append(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)))
            highs.append(max(abs(lo), abs(hi)))
    if any(math.isnan(v) for v in highs):
        lo_gap, hi_gap, note = float("nan"), float("nan"), "a group has fewer than two units: no interval"
    else:
        lo_gap, hi_gap, note = max(lows), max(highs), None
    base = {"rate": "newcombe", "mean": "paired-t" if design == "crossed" else "welch-t"}[kind]
    n_units = len(set(cl)) if cl is not None else int(x.size)
    estimate = Estimate(value, lo_gap, hi_gap, n_items, f"bonferroni over {n_pairs} pairwise {base} intervals",
                        confidence, n_units, _unit_name(cl, unit), note)
    xs = x if tr is None else x / tr  # per-item rates for the permutation statistic (equal trials: same test)
    test = _omnibus(xs, g, names, cl, design, kind, confidence, n_permutations, rng) if n_permutations else None
    return Gap(estimate, test, per, n_pairs)


def _omnibus(x: np.ndarray, g: np.ndarray, names: list[str], cl: list[Any] | None, design: str, kind: Kind,
             confidence: float, n_permutations: int, rng: np.random.Generator) -> TestResult:
    """Permutation test of max − min under "all groups equal" (``scipy.stats.permutation_test``)."""
    from scipy import stats

    alpha = _alpha(confidence)
    sizes = [int(np.sum(g == n)) for n in names] if design != "nested" else [
        len({c for c, gi in zip(cl or [], g.tolist(), strict=True) if gi == n}) for n in names]
    if min(sizes) < 2 or (design == "crossed" and cl is not None and len(set(cl)) < 2):
        return TestResult("permutation (a group has fewer than two units)", 1.0, int(sum(sizes)), 1.0, alpha,
                          underpowered=True)

    def spread(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        means = np.stack([np.mean(s, axis=axis) for s in samples])
        return means.max(axis=0) - means.min(axis=0)

    if design == "crossed":
        assert cl is not None
        table: dict[Any, dict[str, list[float]]] = {}
        for c, gi, v in zip(cl, g.tolist(), x.tolist(), strict=True):
            table.setdefault(c, {}).setdefault(gi, []).append(v)
        samples = [np.array([np.mean(table[c][n]) for c in table]) for n in names]
        ptype = "samples"
        n_perm_total = math.factorial(len(names)) ** len(table)
        label = "permutation (groups within clusters)"
    elif design == "nested":
        assert cl is not None
        s, m, labels = units(x, cl)
        first = {c: gi for c, gi in zip(cl, g.tolist(), strict=False)}
        lab_group = np.array([first[c] for c in labels], dtype=object)
        # permute whole clusters: a sample is the cluster indices of a group; the statistic pools them
        samples = [np.flatnonzero(lab_group == n).astype(float) for n in names]

        def spread_nested(*idx: np.ndarray, axis: int = -1) -> np.ndarray:
            rates = np.stack([s[i.astype(int)].sum(axis=axis) / m[i.astype(int)].sum(axis=axis) for i in idx])
            return rates.max(axis=0) - rates.min(axis=0)

        ptype = "independent"
        n_perm_total = _multinomial([len(v) for v in samples])
        label = "permutation (whole clusters)"
        res = stats.permutation_test(samples, spread_nested, permutation_type=ptype, vectorized=True,
                                     n_resamples=n_permutations, alternative="greater", random_state=rng)
        return _perm_test(label, float(res.pvalue), len(labels), n_perm_total, alpha)
    else:
        samples = [x[g == n] for n in names]
        ptype = "independent"
        n_perm_total = _multinomial([len(v) for v in samples])
        label = "permutation (items)" if design == "independent" else "permutation (items; clusters span groups)"
    res = stats.permutation_test(samples, spread, permutation_type=ptype, vectorized=True,
                                 n_resamples=n_permutations, alternative="greater", random_state=rng)
    return _perm_test(label, float(res.pvalue), int(sum(len(v) for v in samples)), n_perm_total, alpha)


def _multinomial(sizes: list[int]) -> float:
    total = math.lgamma(sum(sizes) + 1) - sum(math.lgamma(s + 1) for s in sizes)
    return math.exp(min(total, 700.0))


def _perm_test(label: str, p: float, n: int, n_perm_total: float, alpha: float) -> TestResult:
    # a permutation p-value is at least 1 / (number of distinct arrangements)
    min_p = min(1.0, 1.0 / n_perm_total) if n_perm_total > 0 else 1.0
    return TestResult(label, p, n, min_p, alpha, underpowered=min_p > alpha)


def parity_ratio(values: Sequence[float] | np.ndarray, groups: Sequence[Any], *,
                 clusters: Sequence[Any] | None = None, unit: str | None = None,
                 confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """``min / max`` of the group rates (fairlearn's demographic-parity ratio) with a simultaneous interval: the
    ratio of every pair of groups gets a Koopman score interval (``confint_proportions_2indep(compare="ratio",
    method="score")``, on effective counts) at the Bonferroni level over the pairs, and the smallest ratio lies
    between the smallest lower and the smallest upper bound (capped at 1). Undefined (NaN, with a note) when every
    rate is 0."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    confidence = _check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    g = np.asarray([str(v) for v in groups], dtype=object)
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise ValueError("parity_ratio needs at least two groups")
    cl = None if clusters is None else list(clusters)
    counts, vals = {}, {}
    for name in names:
        mask = g == name
        ci = None if cl is None else [c for c, k in zip(cl, mask.tolist(), strict=True) if k]
        s, m, _ = units(x[mask], ci)
        p, n_eff = effective_n(s, m, confidence)
        counts[name], vals[name] = (p * n_eff, n_eff), p
    n_pairs = len(names) * (len(names) - 1) // 2
    alpha = (1 - confidence) / n_pairs
    lows, highs = [], []
    import warnings

    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            (ki, ni), (kj, nj) = counts[names[a]], counts[names[b]]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                lo, hi = (float(v) for v in confint_proportions_2indep(ki, ni, kj, nj, compare="ratio",
                                                                       method="score", alpha=alpha))
            if not (math.isfinite(lo) or math.isfinite(hi)) or math.isnan(lo) or math.isnan(hi):
                lo, hi = 0.0, math.inf  # both rates 0: the ratio is unrestricted
            lo = max(lo, 0.0)
            # the pair's ratio in both directions: p_a/p_b in [lo, hi] and p_b/p_a in [1/hi, 1/lo]
            inv_lo = 0.0 if math.isinf(hi) else 1.0 / hi
            inv_hi = math.inf if lo == 0 else 1.0 / lo
            lows.append(min(lo, inv_lo))
            highs.append(min(hi, inv_hi))
    top = max(vals.values())
    value, note = ((min(vals.values()) / top, None) if top > 0
                   else (float("nan"), "undefined: every group's rate is 0 (0/0)"))
    n_units = len(set(cl)) if cl is not None else int(x.size)
    return Estimate(value, min(lows), min(1.0, min(highs)), int(x.size),
                    f"bonferroni over {n_pairs} pairwise koopman score ratio intervals", confidence, n_units,
                    _unit_name(cl, unit), note)


def average_group_w1(values_by_group: Sequence[np.ndarray]) -> float:
    """Huang et al.'s (2020) *average group fairness*: the mean over groups of the Wasserstein-1 distance
    (``scipy.stats.wasserstein_distance``) between a group's values and all groups' values pooled."""
    from scipy.stats import wasserstein_distance

    pooled = np.concatenate([np.asarray(v, dtype=float) for v in values_by_group])
    return float(np.mean([wasserstein_distance(np.asarray(v, dtype=float), pooled) for v in values_by_group]))


def average_group_w1_gap(blocks: Sequence[Sequence[np.ndarray]], *, unit: str,
                         confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                         n_permutations: int = 999,
                         random_state: int | np.random.Generator = 0) -> tuple[Estimate, TestResult]:
    """:func:`average_group_w1` over a crossed design — ``blocks[c][k]`` holds the values of group ``k`` in cluster
    ``c`` (a template; the same number of values per group in every cluster) — with an interval and a test.

    A distance is biased upward and sits on the boundary when groups are equal, where bootstrap intervals fail
    (the percentile and basic bootstraps cover 0 in none of 1,000 equal-groups replicates; the basic one covers
    0.82 of a small true gap). The interval therefore splits alpha: the lower bound uses ``W1(F, G) ≥ |mean F −
    mean G|`` (Kantorovich–Rubinstein with the identity as the 1-Lipschitz function): each group's mean difference
    from the pooled mean gets a paired t interval over clusters at level ``1 − α/(2K)``, and the bound is the mean
    over groups of the smallest ``|difference|`` each allows (0 when its interval holds 0). The upper bound is the
    percentile cluster bootstrap's at one-sided level ``1 − α/2`` (Hesterberg-expanded): replicates carry the
    upward bias twice over, so it errs high (the basic bootstrap's bias correction over-corrects near a small
    gap and covered 0.88 there). The
    ``TestResult`` is a within-cluster permutation test of "all groups equal" (group labels shuffled inside each
    cluster)."""
    confidence = _check_confidence(confidence)
    rng = _rng(random_state)
    alpha = _alpha(confidence)
    c = len(blocks)
    k = len(blocks[0]) if c else 0
    n = int(sum(len(v) for b in blocks for v in b))

    def stat(bl: Sequence[Sequence[np.ndarray]]) -> float:
        return average_group_w1([np.concatenate([b[j] for b in bl]) for j in range(k)])

    value = stat(blocks)
    if c < 2:
        return (Estimate(value, float("nan"), float("nan"), n, "mean-difference lower bound, basic bootstrap upper",
                         confidence, c, unit, "one unit: no interval"),
                TestResult("permutation (groups within clusters)", 1.0, c, 1.0, alpha, underpowered=True))
    null = [stat([[b[j] for j in rng.permutation(k)] for b in blocks]) for _ in range(n_permutations)]
    p = (1 + sum(v >= value - 1e-12 for v in null)) / (n_permutations + 1)
    min_p = max(1.0 / math.factorial(k) ** c, 1.0 / (n_permutations + 1))
    test = TestResult("permutation (groups within clusters)", float(p), c, min_p, alpha, underpowered=min_p > alpha)
    # lower bound from mean differences (valid at level 1 − α/2 jointly over groups)
    means = np.array([[float(np.mean(v)) for v in b] for b in blocks])  # clusters × groups
    sizes = np.array([[len(v) for v in b] for b in blocks], dtype=float)
    pooled = (means * sizes).sum(axis=1) / sizes.sum(axis=1)
    t_crit = _t(1 - alpha / (4 * k), c - 1)
    bounds = []
    for j in range(k):
        d = means[:, j] - pooled
        se = d.std(ddof=1) / math.sqrt(c)
        lo, hi = d.mean() - t_crit * se, d.mean() + t_crit * se
        bounds.append(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)))
    low = float(np.mean(bounds))
    reps = np.array([stat([blocks[i] for i in rng.integers(0, c, size=c)]) for _ in range(n_resamples)])
    level = expanded_confidence(1 - alpha / 2, c)  # one-sided 1 − α/2 = two-sided 1 − α at the upper quantile
    high = max(value, float(np.quantile(reps, 1 - (1 - level) / 2)))
    return (Estimate(value, min(low, value), high, n, "mean-difference lower bound, percentile bootstrap upper (expanded)",
                     confidence, c, unit), test)


# --------------------------------------------------------------------------------------------------------------
# ROC AUC


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, *,
        confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """ROC AUC (the Mann–Whitney probability ``P(member score > non-member score)``, ties ½; ``sklearn``) with
    Newcombe's (2006) method-5 interval: the θ solving ``(θ̂ − θ)² = z² V(θ)``, with the Hanley–McNeil variance
    ``V(θ) = θ(1−θ)/(mn) · [1 + N*(1−θ)/(2−θ) + N*θ/(1+θ)]`` and ``N* = (m+n)/2 − 1``."""
    from scipy import optimize, stats
    from sklearn.metrics import roc_auc_score

    confidence = _check_confidence(confidence)
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), int(y.size), "newcombe-5", confidence,
                        int(y.size), "item", "undefined: needs both classes")
    theta = float(roc_auc_score(y.astype(int), s))
    z2 = float(stats.norm.ppf(1 - (1 - confidence) / 2)) ** 2
    nstar = (m + n) / 2 - 1

    def f(th: float) -> float:
        v = th * (1 - th) / (m * n) * (1 + nstar * (1 - th) / (2 - th) + nstar * th / (1 + th))
        return (theta - th) ** 2 - z2 * v

    eps = 1e-9  # the root at θ̂ itself is trivial; search strictly below and above it
    lo = 0.0 if theta <= eps or f(0.0) <= 0 else optimize.brentq(f, 0.0, theta - eps)
    hi = 1.0 if theta >= 1 - eps or f(1.0) <= 0 else optimize.brentq(f, theta + eps, 1.0)
    return Estimate(theta, float(lo), float(hi), int(y.size), "newcombe-5", confidence, int(y.size), "item")


def _tpr_rows(pos: np.ndarray, neg: np.ndarray, fpr: float) -> np.ndarray:
    """TPR at ``fpr`` for each row of ``pos`` (B × n1) against the same row of ``neg`` (B × n0): the share of
    positives strictly above the ``floor(fpr·n0)+1``-th highest negative (so the achieved FPR is ≤ ``fpr``)."""
    n0 = neg.shape[-1]
    k = math.floor(fpr * n0 + 1e-9)
    if k >= n0:
        return np.ones(pos.shape[:-1])
    v = -np.sort(-neg, axis=-1)[..., k]
    return (pos > v[..., None]).mean(axis=-1)


def tpr_at_fpr(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, fpr: float, *,
               confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
               random_state: int | np.random.Generator = 0) -> Estimate:
    """True-positive rate at a false-positive rate of at most ``fpr`` (the threshold is set on the negatives), as
    membership-inference papers report it (Carlini et al. 2022, "Membership Inference Attacks From First
    Principles").

    The interval is the union of a stratified percentile bootstrap (members and non-members resampled
    separately, which carries the threshold's own sampling error; Hesterberg-expanded level) and the
    Clopper–Pearson interval of the positives above the observed threshold (which stays informative at TPR 0 or
    1, where every bootstrap replicate agrees). With fewer than ``1/fpr`` negatives no non-zero FPR up to ``fpr``
    is attainable and the value is the TPR above every negative (0% FPR); ``note`` says so."""
    confidence = _check_confidence(confidence)
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    n1, n0 = pos.size, neg.size
    if n1 == 0 or n0 == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), int(s.size), "stratified bootstrap ∪ clopper-pearson",
                        confidence, int(s.size), "item", "undefined: needs both classes")
    value = float(_tpr_rows(pos[None], neg[None], fpr)[0])
    rng = _rng(random_state)
    bp = pos[rng.integers(0, n1, size=(n_resamples, n1))]
    bn = neg[rng.integers(0, n0, size=(n_resamples, n0))]
    reps = _tpr_rows(bp, bn, fpr)
    level = expanded_confidence(confidence, min(n1, n0))
    a = (1 - level) / 2
    b_lo, b_hi = (float(q) for q in np.quantile(reps, [a, 1 - a]))
    c_lo, c_hi = proportion_ci(round(value * n1), n1, confidence)
    note = None
    if math.floor(fpr * n0 + 1e-9) == 0:
        note = (f"only {n0} non-members: the smallest non-zero FPR they allow is 1/{n0} > {fpr:g}, so this is the "
                "TPR above every non-member (0% FPR)")
    return Estimate(value, min(b_lo, c_lo), max(b_hi, c_hi), int(s.size), "stratified bootstrap ∪ clopper-pearson",
                    confidence, int(min(n1, n0)), "item", note)


def distance_change_bound(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, ideal: float, *,
                          clusters: Sequence[Any] | None = None, confidence: float = DEFAULT_CONFIDENCE,
                          n_resamples: int = DEFAULT_RESAMPLES,
                          random_state: int | np.random.Generator = 0) -> Estimate:
    """How much further from ``ideal`` the mean of ``y`` is than the mean of ``x`` (paired per-item values, the
    same items and ``clusters``): ``W = |ȳ − ideal| − |x̄ − ideal|``, with a one-sided upper bound at
    ``confidence`` (``low`` is −inf) from a paired percentile cluster bootstrap (units resampled together for
    both; ratio means of unit sums), at Hesterberg's expanded level for the two-sided ``1 − 2α`` interval it is
    the upper end of, and never below ``W`` itself. The non-inferiority gate of ``auditlm compare`` for a
    metric whose ideal lies inside its range (``pct_stereotype``, 0.5)."""
    confidence = _check_confidence(confidence)
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = abs(float(ya.mean()) - ideal) - abs(float(xa.mean()) - ideal)
    sx, m, _ = units(xa, clusters)
    sy, _, _ = units(ya, clusters)
    g = int(sx.size)
    method = f"paired percentile cluster bootstrap ({n_resamples} resamples, Hesterberg-expanded, one-sided upper bound)"
    name = _unit_name(clusters, None)
    if g < 2:
        return Estimate(w, float("-inf"), float("nan"), int(xa.size), method, confidence, g, name,
                        "one unit: no bound")
    rng = _rng(random_state)
    parts, chunk, done = [], max(1, 4_000_000 // g), 0
    while done < n_resamples:  # chunks of at most ~4M indices
        idx = rng.integers(0, g, size=(min(chunk, n_resamples - done), g))
        cnt = m[idx].sum(axis=1)
        parts.append(np.abs(sy[idx].sum(axis=1) / cnt - ideal) - np.abs(sx[idx].sum(axis=1) / cnt - ideal))
        done += idx.shape[0]
    reps = np.concatenate(parts)
    expanded = expanded_confidence(1 - 2 * (1 - confidence), g)
    upper = float(np.quantile(reps, 1 - (1 - expanded) / 2))
    note = "every resample gives the same worsening: the bound is degenerate" if np.ptp(reps) == 0 else None
    return Estimate(w, float("-inf"), max(upper, w), int(xa.size), method, confidence, g, name, note)


def paired_unit_replicates(f: Callable[[np.ndarray, np.ndarray], np.ndarray], sa: np.ndarray, sb: np.ndarray, *,
                           n_resamples: int = DEFAULT_RESAMPLES,
                           random_state: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired cluster-bootstrap replicates of a statistic of per-unit sums, for two runs on the same units.

    ``sa``, ``sb`` (units × k) are run A's and run B's per-unit sums of the statistic's columns, row ``u`` the same
    unit in both; ``f(S, w)`` maps sums and unit multiplicities ``w`` (resamples × units) to one value per resample.
    Each resample draws the units with replacement (multinomial multiplicities) and applies the same draw to both
    runs, so the replicates of ``f_B − f_A`` (or ``f_B / f_A``) keep the pairing. Returns ``(f_A*, f_B*)``."""
    sa, sb = np.asarray(sa, dtype=float), np.asarray(sb, dtype=float)
    g = int(sa.shape[0])
    rng = _rng(random_state)
    ra, rb, done = [], [], 0
    chunk = max(1, 4_000_000 // max(g, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        while done < n_resamples:
            b = min(chunk, n_resamples - done)
            w = rng.multinomial(g, np.full(g, 1.0 / g), size=b).astype(float)
            ra.append(np.asarray(f(sa, w), dtype=float))
            rb.append(np.asarray(f(sb, w), dtype=float))
            done += b
    return np.concatenate(ra), np.concatenate(rb)


def percentile_interval(value: float, replicates: np.ndarray, *, n: int, n_units: int, unit: str,
                        confidence: float = DEFAULT_CONFIDENCE, label: str = "") -> Estimate:
    """``value`` with the percentile interval of its bootstrap ``replicates`` at Hesterberg's expanded level for
    ``n_units`` units (:func:`expanded_confidence`; the plain percentile interval under-covers with few units),
    widened to contain ``value``. Replicates that are not finite are dropped (a resample the statistic is undefined
    on); fewer than two units give no interval."""
    confidence = _check_confidence(confidence)
    method = f"paired percentile cluster bootstrap{label} (Hesterberg-expanded)"
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if n_units < 2 or reps.size == 0 or not math.isfinite(value):
        return Estimate(value, float("nan"), float("nan"), n, method, confidence, n_units, unit,
                        "one unit: no interval" if n_units < 2 else "undefined on every resample")
    level = expanded_confidence(confidence, n_units)
    lo, hi = (float(q) for q in np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2]))
    note = "every resample gives the same value: the interval is degenerate" if np.ptp(reps) == 0 else None
    return Estimate(value, min(lo, value), max(hi, value), n, method, confidence, n_units, unit, note)


def bootstrap_test(replicates: np.ndarray, null: float, n_units: int, *,
                   confidence: float = DEFAULT_CONFIDENCE) -> TestResult:
    """Two-sided bootstrap p-value of "the statistic equals ``null``" from its (uncentred) replicates: twice the
    smaller share of replicates on either side of ``null`` (each share ``(k + 1) / (B + 1)``), the p-value whose
    inversion is the percentile interval. ``min_p`` is the larger of ``2 / (B + 1)`` and the ``2 / 2^G`` that any
    test on ``G`` paired units (sign flips) attains at best, so few units are marked ``underpowered``."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    alpha = _alpha(confidence)
    b = int(reps.size)
    min_p = min(1.0, max(2.0 / (b + 1), 2.0 * 0.5**n_units))
    if b == 0 or n_units < 2:
        return TestResult("paired bootstrap", 1.0, n_units, 1.0, alpha, underpowered=True)
    lo, hi = (np.sum(reps <= null) + 1) / (b + 1), (np.sum(reps >= null) + 1) / (b + 1)
    p = float(min(1.0, 2 * min(lo, hi)))
    return TestResult("paired bootstrap", max(p, min_p), n_units, min_p, alpha, underpowered=min_p > alpha)
