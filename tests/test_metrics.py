import numpy as np
import pandas as pd
import pytest

from auditlm.metrics import SMALL_N, stable_seed, stratified_subset, summarize


def test_summarize_groups_match_pandas():
    rng = np.random.default_rng(3)
    x = rng.random(300)
    g = rng.choice(["a", "b", "c"], 300).tolist()
    g[:5] = ["d"] * 5
    res = summarize(x, g, suite="s", metric="m", kind="mean", group_field="f", n_boot=200, random_state=1)
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
    assert gap.ci_low <= gap.value <= gap.ci_high and "permutation" in gap.extra["test"]["name"]
    assert overall.extra["ci"] == {"method": "bootstrap-t", "confidence": 0.95, "unit": "item", "n_units": 300}


def test_summarize_rate_rows_record_method_and_honour_confidence():
    x = [1.0] * 17 + [0.0] * 3
    r95 = summarize(x, suite="s", metric="r", kind="rate")[0]
    r99 = summarize(x, suite="s", metric="r", kind="rate", confidence=0.99)[0]
    assert r95.extra["ci"]["method"] == "clopper-pearson" and r99.extra["ci"]["confidence"] == 0.99
    assert r99.ci_low < r95.ci_low < r95.value < r95.ci_high < r99.ci_high
    assert r95.extra["small_n"] is True


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
