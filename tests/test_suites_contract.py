"""Every suite in probes/ honours the contract: valid schema, a citation, a registered scorer, and a dry
run on a tiny random-weight model that yields metrics with n and a CI. A new suite needs no new test."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.scorers import get_scorer, scorer_kinds
from auditlm.store import Store
from auditlm.suites.datasets import has_local_data, resolve_data_dir
from auditlm.suites.loader import builtin_probes_dir, discover

SUITES = discover()
DATA_DIR = resolve_data_dir(os.environ.get("AUDITLM_DATA") or None)


def _example_inputs(tmp: Path) -> dict[str, str]:
    """Small run inputs (``--corpus``, ``--non-members``, ``--canaries``) for suites that need them."""
    import json

    from auditlm.privacy.canaries import plant_canaries

    names = ["Ada Park", "Ben Ortiz", "Cy Lund", "Dee Moss", "Eli Ford", "Fay Ng", "Gus Roy", "Hal Poe"]
    rows = [{"text": f"Contact {n} at {n.split()[0].lower()}@example.org about flat {i}.", "member": i % 2 == 0}
            for i, n in enumerate(names)]
    corpus, non_members = tmp / "corpus.jsonl", tmp / "non_members.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    non_members.write_text("".join(json.dumps(r) + "\n" for r in rows if not r["member"]))
    planted = plant_canaries(corpus, tmp / "canaries", n_canaries=2, secret_length=2, seed=0)
    return {"corpus": str(corpus), "non_members": str(non_members), "canaries": str(planted.record)}


def test_every_probe_file_is_a_suite():
    files = sorted(builtin_probes_dir().rglob("*.yaml"))
    assert len(files) == len(SUITES) >= 3


@pytest.mark.parametrize("suite_id", sorted(SUITES))
def test_schema_citation_scorer(suite_id: str):
    s = SUITES[suite_id]
    assert s.spec.id.split(".")[0] == s.spec.family
    assert s.path.parent.name == s.spec.family
    assert len(s.spec.citation) > 20 and any(ch.isdigit() for ch in s.spec.citation)  # a year
    assert s.spec.kind in scorer_kinds()
    get_scorer(s.spec).check()
    changelog = (builtin_probes_dir() / "CHANGELOG.md").read_text()
    assert f"`{suite_id}` {s.spec.version}" in changelog


@pytest.mark.parametrize("suite_id", sorted(SUITES))
def test_dry_run_on_tiny_model(suite_id: str, tiny_model_dir: Path, tmp_path: Path):
    from auditlm.targets.hf import HFTarget

    s = SUITES[suite_id]
    if not has_local_data(s.spec, DATA_DIR):
        pytest.skip("needs AUDITLM_DATA")
    inputs = _example_inputs(tmp_path) if s.spec.run_inputs else {}
    cfg = runner.RunConfig(model=str(tiny_model_dir), suites=[suite_id], limit=6, seed=1, batch_size=4,
                           inputs=inputs)
    prepared = runner.prepare([s], cfg, DATA_DIR)
    assert len(prepared[0].items) == min(6, prepared[0].total)
    target = HFTarget(str(tiny_model_dir), batch_size=4)
    with Store(tmp_path / "runs.sqlite") as st:
        run_id = runner.start_run(st, target, prepared, cfg)
        result = runner.execute(st, run_id, target, prepared, cfg)
        assert len(st.items(run_id, suite_id)) == len(prepared[0].items)
    overall = [m for m in result.metrics if m.group is None]
    assert overall, "a suite reports at least one overall metric"
    for m in result.metrics:
        assert m.suite == suite_id
        assert m.extra["ci"]["method"] and m.extra["ci"]["confidence"] == pytest.approx(0.95)
        if math.isnan(m.value) or math.isnan(m.ci_low) or math.isnan(m.ci_high):
            assert m.extra.get("note"), f"{m.metric}[{m.group}] is undefined without saying why"
            continue
        assert m.n > 0
        assert m.ci_low - 1e-9 <= m.value <= m.ci_high + 1e-9, f"{m.metric}[{m.group}] outside its interval"
