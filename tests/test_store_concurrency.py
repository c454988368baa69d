"""Concurrent writers: processes opening one fresh store at once all succeed (creation and migration are one
exclusive transaction), the store stays intact, and a run being executed by one process is refused to a second
(its lease) with a one-line error instead of a raw SQLite constraint failure."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.cli import main
from auditlm.errors import AuditError, LeaseLost, StoreError
from auditlm.store import SCHEMA_VERSION, Store
from auditlm.suites.loader import discover, select
from auditlm.targets.fake import FakeTarget

SUITE = "bias.counterfactual_templates"
PROCS, ROUNDS = 4, 10
_CFG = runner.RunConfig(model="fake", suites=[SUITE], limit=4, chunk_size=2, seed=1)


@pytest.fixture(scope="module")
def prepared() -> list[runner.PreparedSuite]:
    return runner.prepare(select(discover(), [SUITE]), _CFG, None)


def _worker(path: str, prepared, barrier, results) -> None:
    """Open the (fresh) store at the same moment as the others, create a run and execute it."""
    try:
        barrier.wait(timeout=60)
        with Store(path) as st:
            target = FakeTarget()
            rid = runner.start_run(st, target, prepared, _CFG)
            runner.execute(st, rid, target, prepared, _CFG)
        results.put(("ok", rid))
    except AuditError as e:
        results.put(("error", str(e)))
    except BaseException:
        results.put(("crash", traceback.format_exc()))


def test_four_processes_on_a_fresh_store_ten_rounds(tmp_path: Path, prepared):
    with Store(tmp_path / "warm.sqlite") as st:  # import and warm everything once, before forking
        rid = runner.start_run(st, FakeTarget(), prepared, _CFG)
        reference = runner.execute(st, rid, FakeTarget(), prepared, _CFG).metrics
    ctx = multiprocessing.get_context("fork")
    for rnd in range(ROUNDS):
        path = tmp_path / f"round{rnd}" / "runs.sqlite"  # neither the file nor its folder exists yet
        barrier, results = ctx.Barrier(PROCS), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(str(path), prepared, barrier, results)) for _ in range(PROCS)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        crashes = [o for kind, o in outcomes if kind == "crash"]
        assert not crashes, crashes[0]
        errors = [o for kind, o in outcomes if kind == "error"]
        assert all("\n" not in e for e in errors), errors
        ok = [rid for kind, rid in outcomes if kind == "ok"]
        assert len(ok) == PROCS, f"round {rnd}: {errors}"  # nothing here should even fail cleanly
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("SELECT count(*) FROM leases").fetchone()[0] == 0  # every lease given back
        con.close()
        with Store(path, readonly=True) as st:
            assert {r.run_id for r in st.list_runs()} == set(ok)
            for rid in ok:
                assert st.get_run(rid).status == "complete"
                assert len(st.item_ids(rid, SUITE)) == _CFG.limit
                got = [(m.metric, m.group, m.value, m.n) for m in st.metrics(rid)]
                assert got == [(m.metric, m.group, m.value, m.n) for m in reference]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from auditlm.store import Store
    st = Store(sys.argv[1])
    st.acquire_lease(sys.argv[2])
    print("held", flush=True)
    time.sleep(300)
    """
)


def _interrupted_run(path: Path, prepared) -> str:
    """A run with one chunk stored, then stopped (as a killed process would leave it)."""

    class StopAfterOneChunk(FakeTarget):
        calls = 0

        def loglikelihood(self, requests, progress=None):
            StopAfterOneChunk.calls += 1
            if StopAfterOneChunk.calls == 2:
                raise KeyboardInterrupt
            return super().loglikelihood(requests, progress)

    with Store(path) as st:
        rid = runner.start_run(st, FakeTarget(), prepared, _CFG)
        with pytest.raises(KeyboardInterrupt):
            runner.execute(st, rid, StopAfterOneChunk(), prepared, _CFG)
        assert st.get_run(rid).status == "interrupted" and len(st.item_ids(rid, SUITE)) == 2
        assert st.lease(rid) is None
    return rid


def test_second_resume_of_a_run_is_refused_while_the_first_holds_it(tmp_path: Path, prepared, monkeypatch,
                                                                      capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "runs.sqlite"
    rid = _interrupted_run(path, prepared)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), rid], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        # the library: a clean StoreError naming the holder, nothing computed or changed
        with Store(path) as st:
            target = FakeTarget()
            with pytest.raises(StoreError, match=rf"run {rid} is being resumed by another process "
                                                 rf"\(pid {holder.pid}\b"):
                runner.execute(st, rid, target, prepared, _CFG)
            assert target.ll_calls == []
            assert st.get_run(rid).status == "interrupted"  # the refusal is not recorded as a failure
            assert st.lease(rid)["pid"] == holder.pid
        # the command line: one line, exit 2
        loads: list[object] = []
        monkeypatch.setattr("auditlm.targets.registry.resolve", lambda *a, **k: loads.append(a) or FakeTarget())
        monkeypatch.setattr("auditlm.targets.registry.check_model", lambda *a, **k: None)
        before = path.read_bytes()
        with pytest.raises(SystemExit) as exc:
            main(["run", "--resume", rid, "--store", str(path)])
        assert exc.value.code == 2
        assert loads == []  # refused before the model loads
        assert path.read_bytes() == before
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith(f"auditlm: error: run {rid} is being resumed by another process "
                                    f"(pid {holder.pid}")
        assert "UNIQUE" not in lines[-1] and "Traceback" not in "".join(lines)
        with Store(path, readonly=True) as st:
            assert len(st.item_ids(rid, SUITE)) == 2 and st.get_run(rid).status == "interrupted"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # the holder died without giving the lease back: its lease is stale, and the resume takes it over
    with Store(path) as st:
        assert st.lease(rid)["pid"] == holder.pid
        result = runner.execute(st, rid, FakeTarget(), prepared, _CFG)
        assert st.get_run(rid).status == "complete" and st.lease(rid) is None
    with Store(tmp_path / "clean.sqlite") as st:
        clean_id = runner.start_run(st, FakeTarget(), prepared, _CFG)
        clean = runner.execute(st, clean_id, FakeTarget(), prepared, _CFG)
    assert [(m.metric, m.group, m.value, m.n) for m in result.metrics] == \
        [(m.metric, m.group, m.value, m.n) for m in clean.metrics]


def test_two_resumes_started_at_once_one_wins(tmp_path: Path, prepared):
    """Two processes resume one run at the same moment: exactly one completes it, the other gets the lease
    error (never a constraint failure), and the stored run is whole."""
    path = tmp_path / "runs.sqlite"
    rid = _interrupted_run(path, prepared)

    class Slow(FakeTarget):
        def loglikelihood(self, requests, progress=None):
            time.sleep(2.0)
            return super().loglikelihood(requests, progress)

    def resume(barrier, results):
        try:
            barrier.wait(timeout=60)
            with Store(path) as st:
                runner.execute(st, rid, Slow(), prepared, _CFG)
            results.put(("ok", ""))
        except AuditError as e:
            results.put(("error", str(e)))
        except BaseException:
            results.put(("crash", traceback.format_exc()))

    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=resume, args=(barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [k for k, _ in outcomes] == ["error", "ok"], outcomes
    assert f"run {rid} is being resumed by another process (pid " in outcomes[0][1]
    with Store(path, readonly=True) as st:
        assert st.get_run(rid).status == "complete" and len(st.item_ids(rid, SUITE)) == _CFG.limit
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_run_taken_over_stops_without_writing(tmp_path: Path, prepared):
    """When another process takes the lease over (this one was thought dead), the next chunk is not written and
    the run's record is left to the new holder."""
    path = tmp_path / "runs.sqlite"

    class TakenOverOnSecondChunk(FakeTarget):
        calls = 0

        def loglikelihood(self, requests, progress=None):
            TakenOverOnSecondChunk.calls += 1
            if TakenOverOnSecondChunk.calls == 2:
                con = sqlite3.connect(path)
                con.execute("UPDATE leases SET pid=1, token='theirs', heartbeat_at='x'")
                con.execute("UPDATE runs SET status='running', error=NULL")
                con.commit()
                con.close()
            return super().loglikelihood(requests, progress)

    with Store(path) as st:
        rid = runner.start_run(st, FakeTarget(), prepared, _CFG)
        with pytest.raises(LeaseLost, match=f"run {rid}: another process took over"):
            runner.execute(st, rid, TakenOverOnSecondChunk(), prepared, _CFG)
        assert len(st.item_ids(rid, SUITE)) == 2  # the first chunk only
        assert st.get_run(rid).status == "running" and st.get_run(rid).error is None  # not ours to mark
        assert st.lease(rid)["token"] == "theirs"


def _open_only(path: str, barrier, results) -> None:
    try:
        barrier.wait(timeout=60)
        Store(path).close()
        results.put(("ok", ""))
    except AuditError as e:
        results.put(("error", str(e)))
    except BaseException:
        results.put(("crash", traceback.format_exc()))


def test_four_processes_upgrading_an_old_store_at_once(tmp_path: Path):
    """A schema-1 store (with the salt migration 2 deletes) opened by four writers at once: one migrates, all
    succeed, and no copy of the salt survives in the file or its WAL."""
    from auditlm.store import MIGRATIONS

    salt = "SALT-4c1d-never-kept"
    ctx = multiprocessing.get_context("fork")
    for rnd in range(ROUNDS):
        path = tmp_path / f"old{rnd}.sqlite"
        con = sqlite3.connect(path)
        con.executescript("BEGIN;" + MIGRATIONS[0] + "PRAGMA user_version = 1;COMMIT;")
        con.execute("INSERT INTO meta VALUES ('salt', ?)", (salt,))
        con.commit()
        con.close()
        barrier, results = ctx.Barrier(PROCS), ctx.Queue()
        procs = [ctx.Process(target=_open_only, args=(str(path), barrier, results)) for _ in range(PROCS)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert [k for k, _ in outcomes] == ["ok"] * PROCS, outcomes
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert dict(con.execute("SELECT key, count(*) FROM meta GROUP BY key").fetchall()) == \
            {"key_id": 1, "key_fingerprint": 1, "hash": 1}
        con.close()
        wal = path.with_name(path.name + "-wal")
        assert salt.encode() not in path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
