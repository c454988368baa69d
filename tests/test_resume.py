"""A run killed with SIGKILL mid-suite resumes to exactly the metrics of an uninterrupted run, and the
resume recomputes none of the stored items."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.cli import main
from auditlm.store import Store
from auditlm.suites.loader import discover, select

SUITES = ["bias.counterfactual_templates"]
LIMIT = 70  # three chunks of ≤32 items


class CountingTarget:
    def __init__(self, inner):
        self.inner, self.name, self.requests = inner, inner.name, []

    def info(self):
        return self.inner.info()

    def loglikelihood(self, reqs, progress=None):
        self.requests.extend(reqs)
        return self.inner.loglikelihood(reqs, progress)

    def generate(self, prompts, params, progress=None, *, seeds=None):
        self.requests.extend(prompts)
        return self.inner.generate(prompts, params, progress, seeds=seeds)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from auditlm import runner
    from auditlm.store import Store
    from auditlm.suites.loader import discover, select
    from auditlm.targets.hf import HFTarget

    model_dir, store_path, id_file = sys.argv[1:4]
    inner = HFTarget(model_dir, batch_size=4)

    class KillAfterTwoChunks:
        name = inner.name
        calls = 0
        def info(self):
            return inner.info()
        def loglikelihood(self, reqs, progress=None):
            KillAfterTwoChunks.calls += 1
            if KillAfterTwoChunks.calls == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return inner.loglikelihood(reqs, progress)

    cfg = runner.RunConfig(model=model_dir, suites={suites!r}, limit={limit}, seed=3, batch_size=4, chunk_size=32)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    store = Store(store_path)
    run_id = runner.start_run(store, KillAfterTwoChunks(), prepared, cfg)
    open(id_file, "w").write(run_id)
    runner.execute(store, run_id, KillAfterTwoChunks(), prepared, cfg)
    """
).format(suites=SUITES, limit=LIMIT)


def _killed_run(tmp_path: Path, model_dir: Path) -> tuple[Path, str]:
    store_path, id_file = tmp_path / "killed.sqlite", tmp_path / "run_id"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(script), str(model_dir), str(store_path), str(id_file)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return store_path, id_file.read_text()


def _metric_tuples(metrics):
    return [(m.suite, m.metric, m.group, m.value, m.ci_low, m.ci_high, m.n) for m in metrics]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, tiny_model_dir: Path):
    from auditlm.targets.hf import HFTarget

    store_path, run_id = _killed_run(tmp_path, tiny_model_dir)
    with Store(store_path) as st:
        assert st.get_run(run_id).status == "running"  # killed: never marked finished
        stored = st.item_ids(run_id, SUITES[0])
        assert 0 < len(stored) < LIMIT
        cfg = runner.RunConfig.from_dict(st.get_run(run_id).config)
        prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
        target = CountingTarget(HFTarget(str(tiny_model_dir), batch_size=4))
        resumed = runner.execute(st, run_id, target, prepared, cfg)
        assert st.get_run(run_id).status == "complete"
        assert len(st.item_ids(run_id, SUITES[0])) == LIMIT

    # Nothing stored was recomputed: every request belongs to an item that was not stored.
    scorer_items = {it["id"]: it for _, it in prepared[0].items}
    from auditlm.scorers import get_scorer

    sc = get_scorer(prepared[0].suite.spec)
    expected = [(r.context, r.continuation) for iid, it in scorer_items.items() if iid not in stored
                for r in sc.requests(it)]
    assert target.requests == expected

    # Exactly the metrics of an uninterrupted run with the same seed.
    with Store(tmp_path / "clean.sqlite") as st2:
        t2 = HFTarget(str(tiny_model_dir), batch_size=4)
        rid2 = runner.start_run(st2, t2, prepared, cfg)
        clean = runner.execute(st2, rid2, t2, prepared, cfg)
    assert _metric_tuples(resumed.metrics) == _metric_tuples(clean.metrics)
    assert len(resumed.metrics) > 5


def test_cli_resume_of_killed_run(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]):
    store_path, run_id = _killed_run(tmp_path, tiny_model_dir)
    main(["run", "--resume", run_id, "--store", str(store_path), "--json"])  # exits only on failure
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == run_id and summary["status"] == "complete"
    assert summary["suites"][0]["n_items"] == LIMIT
    assert all(m["n"] > 0 for m in summary["metrics"])
