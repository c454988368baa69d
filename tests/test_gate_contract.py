"""Every scorer declares the metric names (and group values) its ``aggregate`` can emit, which ``auditlm run``
checks ``--fail-on`` gates against before the model loads: a dry run of every suite with a FakeTarget emits
nothing undeclared (an undeclared name would make a valid gate be refused)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.store import Store
from auditlm.suites.loader import discover
from auditlm.targets.fake import FakeTarget


def _suites_with_data() -> list[str]:
    from auditlm.suites.datasets import has_local_data, resolve_data_dir

    ddir = resolve_data_dir(os.environ.get("AUDITLM_DATA") or None)
    return sorted(sid for sid, s in discover().items() if has_local_data(s.spec, ddir))


@pytest.mark.parametrize("suite_id", _suites_with_data())
def test_declared_metrics_cover_what_aggregate_emits(suite_id: str, tmp_path: Path):
    """Dry run of every suite (FakeTarget, 6 items): each metric name it emits is in the scorer's
    ``metric_names()``, and each group (field, value) in its ``group_values(items)`` where those are known;
    an undeclared name would make ``--fail-on`` refuse a gate on a metric the suite does report."""
    from test_suites_contract import _example_inputs

    from auditlm.scorers import get_scorer
    from auditlm.suites.datasets import resolve_data_dir

    ddir = resolve_data_dir(os.environ.get("AUDITLM_DATA") or None)
    s = discover()[suite_id]
    scorer = get_scorer(s.spec)
    if scorer.missing_data(ddir):
        pytest.skip(scorer.missing_data(ddir))
    inputs = _example_inputs(tmp_path) if s.spec.run_inputs else {}
    cfg = runner.RunConfig(model="fake", suites=[suite_id], limit=6, seed=1, inputs=inputs)
    prepared = runner.prepare([s], cfg, ddir)
    with Store(tmp_path / "runs.sqlite") as st:
        t = FakeTarget()
        result = runner.execute(st, runner.start_run(st, t, prepared, cfg), t, prepared, cfg)
    emitted = {m.metric for m in result.metrics}
    assert emitted, "the dry run reported nothing"
    declared = scorer.metric_names()
    assert emitted <= declared, f"undeclared metrics: {sorted(emitted - declared)}"
    only = scorer.group_only()
    assert only <= declared
    overall = {m.metric for m in result.metrics if m.group is None}
    assert not (overall & only), f"declared per-group only, but reported overall: {sorted(overall & only)}"
    groups = scorer.group_values([it for _, it in prepared[0].items])
    if groups is not None:
        for m in result.metrics:
            if m.group is not None:
                assert m.group in groups.get(m.group_field, set()), (m.metric, m.group_field, m.group)
