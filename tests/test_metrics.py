import numpy as np
import pandas as pd
import pytest

from auditlm.metrics import SMALL_N, bootstrap_ci, stable_seed, stratified_subset, summarize


def _loop_bootstrap(x, n_boot, seed):
    """Independent (slow) percentile bootstrap with the same RNG stream."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = [float(np.mean([x[j] for j in row])) for row in idx]
    return tuple(np.quantile(means, [0.025, 0.975]))


def test_bootstrap_matches_loop_and_is_seeded():
    x = np.random.default_rng(1).random(50)
    assert bootstrap_ci(x, n_boot=300, random_state=7) == pytest.approx(_loop_bootstrap(x, 300, 7))
    assert bootstrap_ci(x, n_boot=300, random_state=7) == bootstrap_ci(x, n_boot=300, random_state=7)
    assert bootstrap_ci(x, n_boot=300, random_state=7) != bootstrap_ci(x, n_boot=300, random_state=8)


@pytest.mark.parametrize(
    "values, expected",
    [([], (None, None)), ([0.3], (0.3, 0.3)), ([1.0] * 10, (1.0, 1.0))],
)
def test_bootstrap_degenerate(values, expected):
    lo, hi = bootstrap_ci(values)
    if expected[0] is None:
        assert np.isnan(lo) and np.isnan(hi)
    else:
        assert (lo, hi) == expected


def test_bootstrap_ci_covers_true_mean_mostly():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        x = rng.binomial(1, 0.3, size=200)
        lo, hi = bootstrap_ci(x, n_boot=400, random_state=i)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_summarize_groups_match_pandas():
    rng = np.random.default_rng(3)
    x = rng.random(300)
    g = rng.choice(["a", "b", "c"], 300).tolist()
    g[:5] = ["d"] * 5
    res = summarize(x, g, suite="s", metric="m", group_field="f", n_boot=200, random_state=1)
    overall = res[0]
    assert overall.group is None and overall.n == 300 and overall.value == pytest.approx(x.mean())
    ref = pd.Series(x).groupby(pd.Series(g)).agg(["mean", "size"])
    by = {m.group: m for m in res if m.metric == "m" and m.group}
    assert set(by) == set(ref.index)
    for name, row in ref.iterrows():
        assert by[name].value == pytest.approx(row["mean"])
        assert by[name].n == row["size"]
        assert by[name].ci_low <= by[name].value <= by[name].ci_high
        assert by[name].extra.get("small_n", False) == (row["size"] < SMALL_N)
    gap = next(m for m in res if m.metric == "m_group_gap")
    assert gap.value == pytest.approx(ref["mean"].max() - ref["mean"].min())


def test_stable_seed_is_order_free():
    assert stable_seed(1, "a") == stable_seed(1, "a") != stable_seed(1, "b")


def test_stratified_subset_properties():
    keys = [f"k{i}" for i in range(100)]
    groups = ["a"] * 70 + ["b"] * 25 + ["c"] * 5
    sub = stratified_subset(keys, groups, 20, seed=0)
    assert len(sub) == 20 and sub == sorted(sub)
    counts = pd.Series([groups[i] for i in sub]).value_counts().to_dict()
    assert counts == {"a": 14, "b": 5, "c": 1}
    assert stratified_subset(keys, groups, 20, seed=0) == sub
    assert stratified_subset(keys, groups, 20, seed=1) != sub
    # depends on keys, not on file order
    perm = np.random.default_rng(0).permutation(100)
    sub_p = stratified_subset([keys[i] for i in perm], [groups[i] for i in perm], 20, seed=0)
    assert sorted(keys[perm[i]] for i in sub_p) == sorted(keys[i] for i in sub)
    assert stratified_subset(keys, groups, 500, seed=0) == list(range(100))
    # every group present keeps one item while the limit allows
    assert {groups[i] for i in stratified_subset(keys, groups, 3, seed=0)} == {"a", "b", "c"}
