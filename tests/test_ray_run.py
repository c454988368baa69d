"""Distributed runs on a local Ray (2 CPU actors, one tiny-model replica each): the same metrics and items as a
single-process run, an actor lost mid-run costing only its chunk (retried, nothing lost or stored twice), and
``--ray`` bad input refused with one line. Skipped where Ray is not installed (the test extra installs it)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli
from dashboard_store import data_dir

ray = pytest.importorskip("ray")
SUITE = "bias.crows_pairs"
pytestmark = pytest.mark.skipif(not (data_dir() / "crows_pairs").is_dir(), reason="needs CrowS-Pairs data (AUDITLM_DATA)")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs, no dashboard); actors get one torch thread each."""
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _run(store: Path, model: Path, *, pool_kw: dict | None, limit: int = 40, chunk: int = 8) -> str:
    """A CrowS-Pairs run in ``chunk``-item chunks, single-process (``pool_kw`` None) or on a RayPool."""
    from auditlm import runner
    from auditlm.cli.run import _plan
    from auditlm.distributed import RayPool
    from auditlm.store import Store
    from auditlm.targets import registry

    cfg = runner.RunConfig(model=str(model), suites=[], limit=limit, data_dir=str(data_dir()), chunk_size=chunk,
                           dtype="float32", device="cpu", ray="local" if pool_kw is not None else None)
    _, prepared, _ = _plan(cfg, suite=[SUITE], fail_on=None, resuming=False)
    target = registry.resolve(cfg.model, device="cpu", dtype="float32")
    with Store(store) as st:
        rid = runner.start_run(st, target, prepared, cfg)
        if pool_kw is None:
            runner.execute(st, rid, target, prepared, cfg)
        else:
            with RayPool(cfg.to_dict(), **pool_kw) as pool:
                before = {r["pid"] for r in pool.replicas()}
                runner.execute(st, rid, target, prepared, cfg, pool=pool)
                _run.pids = (before, {r["pid"] for r in pool.replicas()})  # type: ignore[attr-defined]
    return rid


def _stored(store: Path, rid: str) -> tuple[list[dict], list[tuple]]:
    from auditlm.store import Store

    with Store(store, readonly=True) as st:
        metrics = [m.to_dict() for m in st.metrics(rid)]
        items = [(r.item_id, r.input, r.output, r.score) for r in st.items(rid, SUITE)]
    return metrics, items


def _copies(store: Path, rid: str) -> dict[str, int]:
    with sqlite3.connect(store) as c:
        return dict(c.execute("SELECT item_id, COUNT(*) FROM items WHERE run_id=? GROUP BY item_id", (rid,)))


@pytest.fixture(scope="module")
def single(tiny_model_dir: Path, tmp_path_factory) -> tuple[list[dict], list[tuple]]:
    store = tmp_path_factory.mktemp("single") / "runs.sqlite"
    return _stored(store, _run(store, tiny_model_dir, pool_kw=None))


def test_two_actors_give_the_single_process_metrics(local_ray, single, tiny_model_dir: Path, tmp_path: Path):
    store = tmp_path / "runs.sqlite"
    rid = _run(store, tiny_model_dir, pool_kw={"actors": 2})
    metrics, items = _stored(store, rid)
    assert len(single[1]) == 40 and len(single[0]) > 5
    assert metrics == single[0]  # every value, interval, n and test
    assert items == single[1]
    assert set(_copies(store, rid).values()) == {1}


def test_an_actor_lost_mid_run_costs_only_its_chunk(local_ray, single, tiny_model_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    """Each actor's first life ends (``os._exit``) as it starts its second chunk: Ray restarts it and sends that
    chunk again. The run completes with the single-process metrics, every item stored once; the replicas' pids
    changed, so the deaths did happen (with ``max_task_retries=0`` the run fails with RayActorError)."""
    monkeypatch.setenv("AUDITLM_RAY_TEST_DIE_AT", "2")
    store = tmp_path / "runs.sqlite"
    rid = _run(store, tiny_model_dir, pool_kw={"actors": 2})
    before, after = _run.pids  # type: ignore[attr-defined]
    assert before.isdisjoint(after)  # both actors died once and were restarted
    metrics, items = _stored(store, rid)
    assert metrics == single[0] and items == single[1]
    copies = _copies(store, rid)
    assert len(copies) == 40 and set(copies.values()) == {1}


def test_cli_ray_run_matches_and_records_it(local_ray, single, tiny_model_dir: Path, tmp_path: Path, capsys):
    """``auditlm run --ray`` (bare: the local Ray this process is connected to) with 2 actors: same metrics as
    the single-process run at the CLI's own chunking, ``ray`` recorded in the run config."""
    from auditlm.store import Store

    common = ["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "40", "--dtype", "float32",
              "--device", "cpu", "--data-dir", str(data_dir()), "--json"]
    s1, s2 = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    assert run_cli([*common, "--store", str(s1)], capsys)[0] == 0
    code, _, err = run_cli([*common, "--store", str(s2), "--ray", "--ray-actors", "2"], capsys)
    assert code == 0, err
    with Store(s1, readonly=True) as a, Store(s2, readonly=True) as b:
        ra, rb = a.list_runs()[0], b.list_runs()[0]
        assert [m.to_dict() for m in a.metrics(ra.run_id)] == [m.to_dict() for m in b.metrics(rb.run_id)]
        assert rb.config["ray"] == "local" and rb.config["ray_actors"] == 2 and ra.config["ray"] is None


@pytest.mark.parametrize("argv, needle", [
    (["--ray", "not an address"], "invalid --ray address 'not an address' (valid: nothing for a local Ray, auto"),
    (["--ray-actors", "2"], "--ray-actors"),
    (["--ray", "127.0.0.1:9"], "cannot reach the Ray cluster at '127.0.0.1:9'"),
    (["--ray", "--ray-actors", "0"], "--ray-actors"),
])
def test_bad_ray_input_is_one_line_exit_2(argv, needle, tiny_model_dir: Path, tmp_path: Path, capsys):
    code, _, err = run_cli(["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "4",
                            "--store", str(tmp_path / "s.sqlite"), *argv], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.sqlite").exists()  # refused before the store was created
