"""Ctrl-C (SIGINT) and SIGTERM on a real ``auditlm run`` subprocess: the chunks already computed stay stored,
the run is marked ``interrupted`` (never left ``running``), stderr gives the exact resume command, the exit
code is 130 / 143, and running that command ends with exactly the metrics of an uninterrupted run."""

from __future__ import annotations

import math
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.store import Store
from auditlm.suites.loader import discover, select
from auditlm.targets.fake import FakeTarget

SUITE = "bias.counterfactual_templates"
LIMIT, CHUNK = 40, 8

# The real CLI (main()) in a subprocess, with a slow deterministic target in place of a model and small chunks,
# so that the signal lands mid-run with some chunks stored. AUDITLM_TEST_DELAY: seconds per batch;
# AUDITLM_TEST_DELAY_AFTER: seconds per batch after the first (long, so that a run on a loaded machine cannot
# finish before the test's poller has seen the first chunk and sent the signal; the signal interrupts the sleep).
DRIVER = textwrap.dedent(
    f"""
    import os, signal, sys, time
    from dataclasses import dataclass

    # a process started in the background by a non-interactive shell (nohup CMD &, as some CI runners do) inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: restore what a terminal gives
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from auditlm import runner
    import auditlm.targets.registry as registry
    from auditlm.targets.fake import FakeTarget

    DELAY = float(os.environ.get("AUDITLM_TEST_DELAY", "0"))
    AFTER = float(os.environ.get("AUDITLM_TEST_DELAY_AFTER", str(DELAY)))

    class SlowTarget(FakeTarget):
        calls = 0

        def loglikelihood(self, requests, progress=None):
            SlowTarget.calls += 1
            time.sleep(DELAY if SlowTarget.calls == 1 else AFTER)
            return super().loglikelihood(requests, progress)

    registry.resolve = lambda *a, **k: SlowTarget()
    registry.check_model = lambda *a, **k: None  # no model files: the slow fake stands in for one

    @dataclass
    class SmallChunks(runner.RunConfig):
        chunk_size: int = {CHUNK}

    runner.RunConfig = SmallChunks
    from auditlm.cli import main
    main(sys.argv[1:])
    """
)


def _env(tmp_path: Path, delay: float, after: float | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AUDITLM_TEST_DELAY": str(delay),
            "AUDITLM_TEST_DELAY_AFTER": str(delay if after is None else after),
            "AUDITLM_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _stored_items(path: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM items").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created (or not migrated) yet


def _metric_rows(metrics) -> list[tuple]:
    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    return [(m.suite, m.metric, m.group_field, m.group, num(m.value), num(m.ci_low), num(m.ci_high), m.n)
            for m in metrics]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_marks_run_interrupted_and_resume_matches_uninterrupted(tmp_path: Path, signum: int, code: int):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    store = tmp_path / "runs.sqlite"
    cmd = [sys.executable, str(driver), "run", "--model", "fake-slow", "--suite", SUITE, "--limit", str(LIMIT),
           "--seed", "5", "--store", str(store)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(tmp_path, 0.6, after=20.0))
    deadline = time.monotonic() + 90
    while _stored_items(store) < CHUNK:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no chunk was stored in time"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "is stored as interrupted" in last, err
    resume_cmd = last.split("resume with: ", 1)[1]
    argv = shlex.split(resume_cmd)
    assert argv[:3] == ["auditlm", "run", "--resume"] and argv[4:] == ["--store", str(store.absolute())]
    run_id = argv[3]

    with Store(store, readonly=True) as st:
        row = st.get_run(run_id)
        assert row.status == "interrupted"
        assert row.error.startswith("KeyboardInterrupt" if signum == signal.SIGINT else "Terminated")
        done = len(st.item_ids(run_id, SUITE))
        assert CHUNK <= done < LIMIT and done % CHUNK == 0  # whole chunks only
        assert st.lease(run_id) is None  # given back on the way out
        cfg = runner.RunConfig.from_dict(row.config)
    assert cfg.chunk_size == CHUNK

    # the printed command, run as printed (through the same driver in place of the 'auditlm' script)
    resumed = subprocess.run([sys.executable, str(driver), *argv[1:]], capture_output=True, text=True,
                             env=_env(tmp_path, 0), timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    with Store(store, readonly=True) as st:
        assert st.get_run(run_id).status == "complete"
        assert len(st.item_ids(run_id, SUITE)) == LIMIT
        got = _metric_rows(st.metrics(run_id))

    # an uninterrupted run of the same stored configuration
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    with Store(tmp_path / "clean.sqlite") as st:
        rid = runner.start_run(st, FakeTarget(), prepared, cfg)
        clean = runner.execute(st, rid, FakeTarget(), prepared, cfg)
    assert len(got) > 5
    assert got == _metric_rows(clean.metrics)


def test_sigterm_before_any_run_exits_143_with_one_line(tmp_path: Path):
    """SIGTERM while no run exists yet (here: the command is still starting up) stops with 143 and a line."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        import auditlm.targets.registry as registry
        def slow_resolve(*a, **k):
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the "model" loads
            raise AssertionError("SIGTERM did not stop the command")
        registry.resolve = slow_resolve
        registry.check_model = lambda *a, **k: None
        from auditlm.cli import main
        main(sys.argv[1:])
        """
    )
    store = tmp_path / "runs.sqlite"
    proc = subprocess.run([sys.executable, "-c", code, "run", "--model", "x", "--suite", SUITE, "--limit", "4",
                           "--store", str(store)], capture_output=True, text=True, env=_env(tmp_path, 0),
                          timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "auditlm: stopped by SIGTERM (no run had started)"
    assert "Traceback" not in proc.stderr
