"""Store paths that cannot be used: one line naming the path and what is wrong with it, exit 2, nothing changed.

Permission cases need an unprivileged process: as root they run in a subprocess with the capabilities that
override file permissions dropped (``setpriv``), and are skipped where that is not possible.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.cli import main
from auditlm.errors import StoreError
from auditlm.store import MIGRATIONS, SCHEMA_VERSION, Store
from auditlm.suites.loader import discover, select
from auditlm.targets.fake import FakeTarget

SUITE = "bias.counterfactual_templates"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    return exc.value.code, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``auditlm run`` gets a FakeTarget; the list records every model it was asked to load."""
    loaded: list[str] = []

    def resolve(spec=None, **kw):
        loaded.append(spec)
        return FakeTarget()

    monkeypatch.setattr("auditlm.targets.registry.resolve", resolve)
    monkeypatch.setattr("auditlm.targets.registry.check_model", lambda *a, **k: None)
    return loaded


def test_parent_is_a_file(tmp_path: Path, capsys, no_model):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder\n")
    for path in (blocker / "runs.sqlite", blocker / "deeper" / "runs.sqlite"):
        with pytest.raises(StoreError, match=rf"cannot create store '{path}': '{blocker}' is a file, not a directory"):
            Store(path)
        with pytest.raises(StoreError, match="no run store at"):
            Store(path, readonly=True)
        code, err = _cli(["run", "--model", "fake", "--suite", SUITE, "--limit", "2", "--store", str(path)], capsys)
        assert code == 2
        line = _one_line(err)
        assert line.startswith("auditlm: error: ") and str(blocker) in line
        code, err = _cli(["runs", "list", "--store", str(path)], capsys)
        assert code == 2 and str(path) in _one_line(err)
    assert blocker.read_text() == "not a folder\n" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_store_path_is_a_directory(tmp_path: Path, capsys, no_model):
    folder = tmp_path / "runs.sqlite"
    folder.mkdir()
    for readonly in (False, True):
        with pytest.raises(StoreError, match=rf"store '{folder}' is a directory, not a store file"):
            Store(folder, readonly=readonly)
    for argv in (["runs", "list"], ["run", "--model", "fake", "--suite", SUITE, "--limit", "2"]):
        code, err = _cli([*argv, "--store", str(folder)], capsys)
        assert code == 2 and f"'{folder}' is a directory" in _one_line(err)
    assert list(folder.iterdir()) == []


# --- permissions ------------------------------------------------------------------------------------------------

PERMISSIONS = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    from auditlm import runner
    from auditlm.cli import main
    from auditlm.errors import StoreError
    from auditlm.store import Store
    from auditlm.suites.loader import discover, select
    from auditlm.targets.fake import FakeTarget
    import auditlm.targets.registry as registry
    registry.resolve = lambda *a, **k: FakeTarget()
    registry.check_model = lambda *a, **k: None

    base, suite = sys.argv[1], sys.argv[2]
    out = {}

    def cli(argv):
        buf_err, buf_out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(buf_err), contextlib.redirect_stdout(buf_out):
            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code
        return [code, buf_err.getvalue(), buf_out.getvalue()]

    def store_error(path, readonly):
        try:
            Store(path, readonly=readonly).close()
            return None
        except StoreError as e:
            return str(e)

    # a healthy store in a directory this process may not write to
    folder = os.path.join(base, "ro")
    os.mkdir(folder)
    path = os.path.join(folder, "runs.sqlite")
    cfg = runner.RunConfig(model="fake", suites=[suite], limit=2, chunk_size=2)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    with Store(path) as st:
        rid = runner.start_run(st, FakeTarget(), prepared, cfg)
        runner.execute(st, rid, FakeTarget(), prepared, cfg)
    os.chmod(folder, 0o555)
    before = open(path, "rb").read()
    try:
        with Store(path, readonly=True) as st:
            out["reader"] = [st.get_run(rid).status, len(st.metrics(rid))]
        out["writer"] = store_error(path, False)
        out["runs_list"] = cli(["runs", "list", "--store", path, "--json"])
        out["runs_show"] = cli(["runs", "show", rid, "--store", path, "--json"])
        out["run"] = cli(["run", "--model", "fake", "--suite", suite, "--limit", "2", "--store", path])
        out["new_store_in_ro_dir"] = store_error(os.path.join(folder, "other.sqlite"), False)
        out["unchanged"] = before == open(path, "rb").read() and sorted(os.listdir(folder)) == ["runs.sqlite"]
    finally:
        os.chmod(folder, 0o755)

    # an unreadable store file
    os.chmod(path, 0)
    try:
        out["unreadable_reader"] = store_error(path, True)
        out["unreadable_writer"] = store_error(path, False)
        out["unreadable_cli"] = cli(["runs", "list", "--store", path])
    finally:
        os.chmod(path, 0o600)
    out["unchanged_after_unreadable"] = before == open(path, "rb").read()
    print(json.dumps(out))
    """
)


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("permission checks need a non-root user (or setpriv to drop root's file capabilities)")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def test_read_only_directory_and_unreadable_file(tmp_path: Path):
    prefix = _unprivileged()
    script = tmp_path / "permissions.py"
    script.write_text(PERMISSIONS)
    base = tmp_path / "base"
    base.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AUDITLM_HOME": str(tmp_path / "home")}
    proc = subprocess.run([*prefix, sys.executable, str(script), str(base), SUITE], capture_output=True, text=True,
                          env=env, timeout=240)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr and prefix:
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    path = str(base / "ro" / "runs.sqlite")
    folder = str(base / "ro")

    # readers open a healthy store in a read-only directory as it is
    assert out["reader"][0] == "complete" and out["reader"][1] > 0
    code, err, stdout = out["runs_list"]
    assert code == 0 and err == "" and json.loads(stdout)
    code, err, stdout = out["runs_show"]
    assert code == 0 and json.loads(stdout)["status"] == "complete"
    # writers are told why they cannot write, never that the store is invalid
    assert out["writer"] == (f"cannot write to store '{path}': directory '{folder}' is read-only (SQLite creates "
                             f"its journal files there); readers can still open it")
    code, err, _ = out["run"]
    assert code == 2
    line = _one_line(err)
    assert line.startswith(f"auditlm: error: cannot write to store '{path}': directory '{folder}' is read-only")
    assert "not a valid" not in line
    assert out["new_store_in_ro_dir"].startswith(f"cannot write to store '{folder}/other.sqlite': directory ")
    assert out["unchanged"]
    # an unreadable file
    for key in ("unreadable_reader", "unreadable_writer"):
        assert out[key] == f"cannot read store '{path}': permission denied"
    code, err, _ = out["unreadable_cli"]
    line = _one_line(err)
    assert code == 2 and line.startswith("auditlm: error: ") and path in line
    assert "permission denied" in line or "not readable" in line  # the option's own check may answer first
    assert out["unchanged_after_unreadable"]


def test_writer_still_migrates_and_readers_need_no_lease_table(tmp_path: Path):
    """A schema-3 store (before leases) is readable as it is and upgraded by the first writer."""
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    for i, m in enumerate(MIGRATIONS[:3]):
        con.executescript("BEGIN;" + m + f"PRAGMA user_version = {i + 1};COMMIT;")
    con.close()
    with Store(path, readonly=True) as st:
        assert st.list_runs() == []
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    cfg = runner.RunConfig(model="fake", suites=[SUITE], limit=2, chunk_size=2)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    with Store(path) as st:
        rid = runner.start_run(st, FakeTarget(), prepared, cfg)
        runner.execute(st, rid, FakeTarget(), prepared, cfg)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert con.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
