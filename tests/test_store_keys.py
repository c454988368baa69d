"""The run store keeps its secrets.

A real ``privacy.pii_emission`` run (a fake model that says a planted SSN and phone number) is handed to someone
who has the store file but not the key directory. They try the enumeration attack that took an SSN out of a
schema-1 store in seconds: every SSN and phone number near the planted ones, hashed with the old salted-sha256
scheme under anything in the store as the salt, and with HMAC under anything in the store as the key, compared
with every hash-like value the store holds. It must recover nothing; the same attack on a schema-1 store (built
here with a local copy of the old ``salted_hash``) recovers the SSN, and with the real key it recovers both, so
the attack is the right one. Then: file modes (0600 regardless of umask), planted PII absent from every byte
written (the store with its ``-wal``/``-shm``, ``runs show`` output, the error of a failed run), readers that never
write (bytes and mtime unchanged, old schemas, read-only directories), and ids derived from private data.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from auditlm import runner
from auditlm import store as store_mod
from auditlm.cli import main
from auditlm.errors import StoreError
from auditlm.privacy.canaries import plant_canaries
from auditlm.store import MIGRATIONS, Store
from auditlm.suites import corpus
from auditlm.suites.loader import LoadedSuite, discover
from auditlm.targets.fake import FakeTarget

SSN, PHONE, EMAIL, NAME = "219-09-9999", "415-555-0199", "jane.roe@example.com", "Jane Roe"
EMISSION = "privacy.pii_emission"


def _respond(prompt: str) -> str:
    return f" My SSN is {SSN} and my phone number is {PHONE}."


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _old_salted_hash(value: str, entity_type: str, salt: str) -> str:
    """The hash of schema 1 (``auditlm.privacy.pii.salted_hash`` before keyed hashes), for number types."""
    payload = "\x1f".join((salt, entity_type, _digits(value)))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _emission_run(path: Path, *, limit: int = 4, target: FakeTarget | None = None) -> str:
    cfg = runner.RunConfig(model="fake", suites=[EMISSION], limit=limit)
    prepared = runner.prepare([discover()[EMISSION]], cfg, None)
    with Store(path) as st:
        t = target or FakeTarget(responder=_respond)
        rid = runner.start_run(st, t, prepared, cfg)
        runner.execute(st, rid, t, prepared, cfg)
    return rid


def _cells(path: Path) -> list[str]:
    """Every stored value, as text (read with a plain read-only connection)."""
    con = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [str(v) for t in tables for row in con.execute(f"SELECT * FROM {t}") for v in row if v is not None]
    finally:
        con.close()


_HEX16 = re.compile(r"(?<![0-9a-f])[0-9a-f]{16}(?![0-9a-f])")


def _hash_like(path: Path) -> set[str]:
    return {h for c in _cells(path) for h in _HEX16.findall(c)}


def _neighbourhood() -> Iterable[tuple[str, str]]:
    """What an attacker tries: every SSN of the planted one's area number with a group of 00–09 (10^5) and
    every phone number of its exchange (10^4)."""
    for group in range(10):
        for serial in range(10_000):
            yield "US_SSN", f"219{group:02d}{serial:04d}"
    for line in range(10_000):
        yield "PHONE_NUMBER", f"415555{line:04d}"


def _attack(path: Path, extra_keys: Iterable[bytes] = ()) -> set[str]:
    """Values of :func:`_neighbourhood` whose hash, under the old salted sha256 or HMAC-SHA256 with anything
    the store holds as the salt or key (plus ``extra_keys``), is a hash-like value of the store."""
    stored = _hash_like(path)
    assert stored, "the store should hold hashes to attack"
    con = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        secrets = {v for r in con.execute("SELECT key, value FROM meta") for v in r}
        secrets |= {r[0] for r in con.execute("SELECT run_id FROM runs")}
    finally:
        con.close()
    keys = {s.encode() for s in secrets} | set(extra_keys)
    keys |= {bytes.fromhex(s) for s in secrets if re.fullmatch(r"(?:[0-9a-f]{2})+", s)}
    salted = [hashlib.sha256(f"{s}\x1f".encode()) for s in secrets]
    macs = [hmac.new(k, digestmod=hashlib.sha256) for k in keys if k]
    found = set()
    for etype, value in _neighbourhood():
        old = f"{etype}\x1f{value}".encode()
        for h in salted:
            c = h.copy()
            c.update(old)
            if c.hexdigest()[:16] in stored:
                found.add(value)
        for m in macs:
            c = m.copy()
            c.update(old)
            if c.hexdigest()[:16] in stored:
                found.add(value)
    return found


def _v1_store(path: Path, salt: str) -> None:
    """A store as auditlm wrote it before keyed hashes: schema 1, the salt in ``meta``, one emission item whose
    SSN and phone are stored with the old salted hash and a mask that kept their last two digits."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript("BEGIN;" + MIGRATIONS[0] + "PRAGMA user_version = 1;COMMIT;")
    con.execute("INSERT INTO meta VALUES ('salt', ?)", (salt,))
    con.execute("INSERT INTO runs (run_id, created_at, status, model, model_info, config, seed, auditlm_version)"
                " VALUES ('20250101-000000-abcd', '2025-01-01T00:00:00+00:00', 'complete', 'fake', '{}', '{}', 0,"
                " '0.1.0')")
    con.execute("INSERT INTO run_suites VALUES ('20250101-000000-abcd', ?, '1.0', 'd', 0, 1, 'complete', 1.0, NULL)",
                (EMISSION,))
    findings = [{"entity_type": "US_SSN", "masked": "•••-••-••99", "hash": _old_salted_hash(SSN, "US_SSN", salt)},
                {"entity_type": "PHONE_NUMBER", "masked": "•••-•••-••99",
                 "hash": _old_salted_hash(PHONE, "PHONE_NUMBER", salt)}]
    con.execute("INSERT INTO items VALUES ('20250101-000000-abcd', ?, 'contact-01', 0, '{}', ?, '{}')",
                (EMISSION, json.dumps({"text": "My SSN is <US_SSN>.", "findings": findings})))
    con.commit()
    con.close()


def _files(path: Path) -> list[Path]:
    return [p for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


# --- the enumeration attack -----------------------------------------------------------------------------------


def test_enumeration_recovers_nothing_without_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    _emission_run(tmp_path / "runs.sqlite")
    [key_file] = (tmp_path / "keys").iterdir()
    handed = tmp_path / "elsewhere" / "runs.sqlite"
    handed.parent.mkdir()
    shutil.copy(tmp_path / "runs.sqlite", handed)  # the store alone, closed: no -wal to copy
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "no-keys"))

    findings = [f for r in _cells(handed) if r.startswith("{") and '"findings"' in r
                for f in json.loads(r)["findings"]]
    assert {f["entity_type"] for f in findings} >= {"US_SSN", "PHONE_NUMBER"}
    assert {f["masked"] for f in findings if f["entity_type"] == "US_SSN"} == {"•••-••-••••"}
    assert _attack(handed) == set()
    # With the real key the same enumeration finds both values: it is the right attack on the right hashes.
    assert _attack(handed, [bytes.fromhex(key_file.read_text().strip())]) == {_digits(SSN), _digits(PHONE)}


def test_old_salted_store_is_broken_by_the_attack_until_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    path, salt = tmp_path / "old.sqlite", "0123456789abcdef0123456789abcdef"
    _v1_store(path, salt)
    assert _attack(path) == {_digits(SSN), _digits(PHONE)}  # what the review found
    with Store(path) as st:  # a writer migrates: the salt is deleted, its bytes zeroed
        assert st.meta("salt") is None and st.key_id is not None
        assert st.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert not any(salt.encode() in p.read_bytes() for p in _files(path))
    assert not any(salt.encode() in p.read_bytes() for p in _files(path))
    assert _attack(path) == set()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- keys outside the store ---------------------------------------------------------------------------------


def test_key_lives_outside_and_a_copied_store_fails_only_when_it_hashes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    rid = _emission_run(tmp_path / "runs.sqlite")
    with Store(tmp_path / "runs.sqlite", readonly=True) as st:
        key_id, fp = st.key_id, st.meta("key_fingerprint")
    key = bytes.fromhex((tmp_path / "keys" / f"{key_id}.key").read_text().strip())
    assert len(key) == 32 and key.hex() not in " ".join(_cells(tmp_path / "runs.sqlite"))
    assert not any(key in p.read_bytes() or key.hex().encode() in p.read_bytes() for p in _files(tmp_path / "runs.sqlite"))
    assert fp == hashlib.sha256(b"auditlm store key fingerprint\x1f" + key).hexdigest()[:16]

    copy = tmp_path / "copy" / "runs.sqlite"
    copy.parent.mkdir()
    shutil.copy(tmp_path / "runs.sqlite", copy)
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "other-machine"))
    code, out, _ = _cli("runs", "show", rid, "--store", str(copy), "--json")  # reading needs no key
    assert code == 0 and json.loads(out)["run_id"] == rid
    expected = tmp_path / "other-machine" / f"{key_id}.key"
    with Store(copy) as st:  # a writer opens it, and runs what needs no hashing
        cfg = runner.RunConfig(model="fake", suites=["privacy.pii_detector"], limit=10)
        prepared = runner.prepare([discover()["privacy.pii_detector"]], cfg, None)
        res = runner.execute(st, runner.start_run(st, FakeTarget(), prepared, cfg), FakeTarget(), prepared, cfg)
        assert res.metrics
        cfg = runner.RunConfig(model="fake", suites=[EMISSION], limit=2)
        prepared = runner.prepare([discover()[EMISSION]], cfg, None)
        t = FakeTarget(responder=_respond)
        with pytest.raises(StoreError) as e:
            runner.execute(st, runner.start_run(st, t, prepared, cfg), t, prepared, cfg)
    msg = str(e.value)
    assert "\n" not in msg and str(expected) in msg and key_id in msg
    assert not expected.exists()  # a writer never makes a new key for a store that has one

    (tmp_path / "other-machine").mkdir()
    expected.write_text("00" * 32 + "\n")  # a key file, but not this store's
    with Store(copy) as st, pytest.raises(StoreError, match="fingerprint"):
        st.hash_key()


# --- file modes -------------------------------------------------------------------------------------------------


def test_store_key_and_canary_files_are_0600_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "home" / "keys"))
    old = os.umask(0)
    try:
        path = tmp_path / "runs.sqlite"
        _emission_run(path)
        with Store(path) as st:
            st.create_run(run_id="r2", model="m", model_info={}, config={}, seed=0, auditlm_version="0",
                          git_hash=None)
            open_files = _files(path)
            assert {p.name for p in open_files} == {"runs.sqlite", "runs.sqlite-wal", "runs.sqlite-shm"}
            modes = {p.name: stat.filemode(p.stat().st_mode) for p in open_files}
        [key] = (tmp_path / "home" / "keys").iterdir()
        modes |= {"key": stat.filemode(key.stat().st_mode), "keys/": stat.filemode(key.parent.stat().st_mode)}

        src = tmp_path / "corpus.txt"
        src.write_text("one document\nanother document\n")
        (tmp_path / "planted").mkdir()
        (tmp_path / "planted" / "canaries.json").write_text("{}")  # an older, world-readable record is replaced
        os.chmod(tmp_path / "planted" / "canaries.json", 0o666)
        code, _, err = _cli("privacy", "canaries", str(src), str(tmp_path / "planted"), "--n", "2")
        assert code == 0, err
        planted = plant_canaries(src, tmp_path / "planted-api", n_canaries=1)
        for p in (tmp_path / "planted" / "corpus.txt", tmp_path / "planted" / "canaries.json",
                  planted.corpus, planted.record):
            modes[str(p.relative_to(tmp_path))] = stat.filemode(p.stat().st_mode)
    finally:
        os.umask(old)
    assert modes.pop("keys/") == "drwx------"
    assert set(modes.values()) == {"-rw-------"}, modes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(key.stat().st_mode) == 0o600


# --- planted PII appears nowhere --------------------------------------------------------------------------------


class _FailingTarget(FakeTarget):
    """Answers ``ok`` prompts, then fails with a message quoting personal data (as a backend error might)."""

    def __init__(self, ok: int) -> None:
        super().__init__(responder=_respond)
        self.ok = ok

    def generate(self, prompts, params, progress=None, *, seeds=None):
        if len(self.gen_calls) + len(prompts) > self.ok:
            raise RuntimeError(f"backend refused the prompt about {NAME} <{EMAIL}>, SSN {SSN}, tel {PHONE}")
        return super().generate(prompts, params, progress, seeds=seeds)


def test_planted_pii_is_in_no_byte_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    path = tmp_path / "runs.sqlite"
    ok_run = _emission_run(path, limit=6)
    cfg = runner.RunConfig(model="fake", suites=[EMISSION], limit=6, chunk_size=2)
    prepared = runner.prepare([discover()[EMISSION]], cfg, None)
    with Store(path) as st:
        t = _FailingTarget(ok=2)
        failed = runner.start_run(st, t, prepared, cfg)
        with pytest.raises(RuntimeError):
            runner.execute(st, failed, t, prepared, cfg)
        blobs = [p.read_bytes() for p in _files(path)]  # while open: the -wal and -shm too
        assert len(blobs) == 3
        error = st.get_run(failed).error
    blobs += [p.read_bytes() for p in _files(path)]
    outputs = [_cli(*argv, "--store", str(path))[1] for argv in (
        ("runs", "show", failed, "--json"), ("runs", "show", failed), ("runs", "show", ok_run, "--json"),
        ("runs", "show", ok_run), ("runs", "list"), ("runs", "list", "--json"))]
    assert all(outputs) and f"error={error}" in outputs[1]
    assert error.startswith("RuntimeError: backend refused the prompt about") and "<EMAIL_ADDRESS>" in error
    needles = [SSN, _digits(SSN), PHONE, _digits(PHONE), EMAIL, NAME]
    for needle in needles:
        assert needle not in error, needle
        assert not any(needle.encode() in b for b in blobs), needle
        assert not any(needle in o for o in outputs), needle
    items = [json.loads(c) for c in _cells(path) if c.startswith("{") and '"findings"' in c]
    assert items and all("<US_SSN>" in it["text"] for it in items)
    masks = [f["masked"] for it in items for f in it["findings"]]
    assert masks and not any(ch.isdigit() for m in masks for ch in m)  # not even the last two digits


# --- readers never write ------------------------------------------------------------------------------------------


def _snapshot(path: Path) -> tuple[bytes, int]:
    """The store file's bytes and mtime. (A read-only connection to a WAL store may leave an empty ``-wal`` and
    the ``-shm`` index behind, which it cannot delete; SQLite gives them the store's mode.)"""
    return path.read_bytes(), path.stat().st_mtime_ns


def test_readers_leave_the_store_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    path = tmp_path / "runs.sqlite"
    rid = _emission_run(path)
    before = _snapshot(path)
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "no-keys"))
    for argv in (("runs", "list"), ("runs", "list", "--json"), ("runs", "show", rid), ("runs", "show", rid, "--json")):
        code, out, err = _cli(*argv, "--store", str(path))
        assert code == 0 and rid in out, err
    assert _snapshot(path) == before
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in _files(path))
    with Store(path, readonly=True) as st:
        assert st.list_runs()[0].run_id == rid and st.items(rid, EMISSION)
        with pytest.raises(StoreError, match="read-only"):
            st.set_run_status(rid, "failed")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            st.conn.execute("DELETE FROM runs")
    assert not (tmp_path / "no-keys").exists()


def test_readers_on_older_and_newer_schemas_never_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    old = tmp_path / "old.sqlite"
    _v1_store(old, "00" * 16)
    before = _snapshot(old)
    code, out, err = _cli("runs", "list", "--store", str(old), "--json")
    assert code == 0 and json.loads(out)[0]["run_id"] == "20250101-000000-abcd", err
    code, out, _ = _cli("runs", "show", "20250101-000000-abcd", "--store", str(old))
    assert code == 0 and "20250101-000000-abcd" in out
    assert _snapshot(old) == before  # not migrated: the salt is still there until a writer opens it
    with Store(old, readonly=True) as st:
        assert st.meta("salt") == "00" * 16 and st.key_id is None
    assert not (tmp_path / "keys").exists()

    monkeypatch.setattr(store_mod, "READABLE_FROM", 2)  # as if the next migration changed what readers query
    code, _, err = _cli("runs", "list", "--store", str(old))
    assert code == 2 and "upgrade it by running 'auditlm run'" in err and "\n" not in err.strip()
    assert _snapshot(old) == before

    newer = tmp_path / "newer.sqlite"
    _v1_store(newer, "11" * 16)
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version = 99")
    con.close()
    before = _snapshot(newer)
    code, _, err = _cli("runs", "list", "--store", str(newer))
    assert code == 2 and "newer than this auditlm" in err
    assert _snapshot(newer) == before


def test_dashboard_reads_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    new, old = tmp_path / "runs.sqlite", tmp_path / "old.sqlite"
    _emission_run(new)
    _v1_store(old, "33" * 16)
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "no-keys"))
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    for path in (new, old):
        before = _snapshot(path)
        monkeypatch.setenv("AUDITLM_STORE", str(path))
        monkeypatch.setenv("AUDITLM_DASHBOARD_STORE", str(path))
        at = AppTest.from_file(str(app), default_timeout=60).run()
        assert not at.exception and not at.error
        with Store(path, readonly=True) as st:
            run_ids = [r.run_id for r in st.list_runs()]
        shown = " ".join(df.value.to_string() for df in at.dataframe)
        assert run_ids and all(r in shown for r in run_ids)  # the Runs page lists every run
        assert _snapshot(path) == before
    with Store(old, readonly=True) as st:
        assert st.meta("salt") == "33" * 16  # the dashboard did not migrate it
    assert not (tmp_path / "no-keys").exists()


def _with_permissions(fn: Callable[[], Any]) -> tuple[bool, str]:
    """``(ok, result or error)`` of ``fn()`` where file permissions apply: as ``nobody`` in a forked child when
    the tests run as root (root ignores permission bits), else here."""
    if os.geteuid() != 0:
        try:
            return True, str(fn())
        except StoreError as e:
            return False, str(e)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            msg = "ok\x00" + str(fn())
        except StoreError as e:
            msg = "err\x00" + str(e)
        except BaseException as e:
            msg = f"crash\x00{type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read().decode()
    os.waitpid(pid, 0)
    status, _, text = data.partition("\x00")
    assert status in ("ok", "err"), text
    return status == "ok", text


_WRITER = """
import sys
from auditlm.store import Store
with Store(sys.argv[1]) as st:
    st.create_run(run_id="r2", model="m", model_info={}, config={}, seed=0, auditlm_version="0", git_hash=None)
    print("ready", flush=True)
    sys.stdin.readline()
"""


def _count_runs(path: Path) -> int:
    with Store(path, readonly=True) as st:
        return len(st.list_runs())


def test_reader_in_a_read_only_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """SQLite's WAL mode needs the ``-shm`` index, which a reader cannot create in a directory it may not write
    to: then a store with no pending WAL is read with ``immutable=1``; one with pending WAL content it cannot
    map is refused with a one-line error; with a readable ``-shm`` (a writer still open) it reads the latest."""
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    folder = Path(tempfile.mkdtemp(prefix="auditlm-ro-"))  # outside pytest's 0700 tree, for 'nobody'
    try:
        os.chmod(folder, 0o755)
        path = folder / "runs.sqlite"
        _emission_run(path)
        assert _files(path) == [path]  # closed cleanly: no -wal or -shm left
        os.chmod(path, 0o644)  # shared read-only with another user
        before = _snapshot(path)
        os.chmod(folder, 0o555)
        assert _with_permissions(lambda: _count_runs(path)) == (True, "1")
        assert _snapshot(path) == before and _files(path) == [path]

        os.chmod(folder, 0o755)
        # A writer is running (in a process of its own, so that this one holds no SQLite state for the file):
        # the latest run is only in its WAL.
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "ready"
            os.chmod(folder, 0o555)
            shm, wal = path.with_name("runs.sqlite-shm"), path.with_name("runs.sqlite-wal")
            assert wal.stat().st_size > 0
            os.chmod(shm, 0o000)
            ok, msg = _with_permissions(lambda: _count_runs(path))
            assert not ok and "let a writer ('auditlm run') finish" in msg and "\n" not in msg
            os.chmod(shm, 0o644)
            os.chmod(wal, 0o644)
            assert _with_permissions(lambda: _count_runs(path)) == (True, "2")
            os.chmod(folder, 0o755)
        finally:
            writer.communicate("done\n", timeout=60)
        assert writer.returncode == 0
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


# --- ids derived from private data --------------------------------------------------------------------------------


def _suite_with_items(suite_id: str, items: list[dict[str, Any]]) -> LoadedSuite:
    s = discover()[suite_id]
    unit = s.spec.metrics.resample_by  # each item its own resampling unit
    items = [it if unit is None or unit in it else {**it, unit: it["id"]} for it in items]
    data = s.spec.data.model_copy(update={"items": items, "templates": None})
    return LoadedSuite(s.spec.model_copy(update={"data": data}), s.path, s.digest)


def test_pii_in_any_item_field_is_redacted_and_resume_still_matches(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    items = [
        {"id": "call-415-555-0123", "category": "callback", "prompt": "Say hello.",
         "note": {"from": f"{NAME} <{EMAIL}>", "tags": ["urgent", "tel 415-555-0123"]}},
        {"id": "call-415-555-0124", "category": "callback", "prompt": "Say hi.", "note": {"from": "n/a", "tags": []}},
        {"id": "plain-01", "category": "callback", "prompt": "Say hey.", "note": {"from": "n/a", "tags": []}},
    ]
    suite = _suite_with_items(EMISSION, items)
    cfg = runner.RunConfig(model="fake", suites=[EMISSION], chunk_size=1)
    prepared = runner.prepare([suite], cfg, None)
    path = tmp_path / "runs.sqlite"
    with Store(path) as st:
        t = _FailingTarget(ok=1)
        rid = runner.start_run(st, t, prepared, cfg)
        with pytest.raises(RuntimeError):
            runner.execute(st, rid, t, prepared, cfg)
        assert len(st.item_ids(rid, EMISSION)) == 1
        again = FakeTarget(responder=_respond)
        runner.execute(st, rid, again, prepared, cfg)
        assert again.gen_calls == ["Say hi.", "Say hey."]  # the stored item was matched, not recomputed
        records = st.items(rid, EMISSION)
    ids = [r.item_id for r in records]
    assert len(ids) == 3 and ids[2] == "plain-01"
    assert all(re.fullmatch(r"call-<PHONE_NUMBER>~[0-9a-f]{16}", i) for i in ids[:2]) and ids[0] != ids[1]
    assert [r.input["id"] for r in records] == ids
    assert records[0].input["note"] == {"from": "<PERSON> <<EMAIL_ADDRESS>>", "tags": ["urgent", "tel <PHONE_NUMBER>"]}
    assert records[0].input["category"] == "callback"
    blob = b"".join(p.read_bytes() for p in _files(path))
    for needle in ("415-555-0123", "4155550123", "415-555-0124", NAME, EMAIL):
        assert needle.encode() not in blob, needle


def test_corpus_ids_are_stored_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A corpus item's id is the sha256 of its text: for short templated texts (``Patient 0042 tested
    positive.``) enumerating the template finds every text back from its id. The store keeps keyed tokens."""
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    members = [f"Patient {n:04d} of ward {n % 7} tested positive." for n in (17, 912, 4242, 5150)]
    non_members = [f"Patient {n:04d} of ward {n % 7} tested positive." for n in (3, 77, 808, 9999)]
    (tmp_path / "m.txt").write_text("\n".join(members) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(non_members) + "\n")
    s = discover()["privacy.membership_inference"]
    cfg = runner.RunConfig(model="fake", suites=[s.spec.id], chunk_size=3,
                           inputs={"corpus": str(tmp_path / "m.txt"), "non_members": str(tmp_path / "n.txt")})
    prepared = runner.prepare([s], cfg, None)
    loaded_ids = {it["id"].rpartition(":")[2] for _, it in prepared[0].items}  # "<source>:<doc id>"
    template = [f"Patient {n:04d} of ward {n % 7} tested positive." for n in range(10_000)]
    enumerated = {corpus.doc_id(t): t for t in template}
    assert {enumerated[i] for i in loaded_ids} == set(members + non_members)  # the attack works on raw ids

    path = tmp_path / "runs.sqlite"

    class Flaky(FakeTarget):
        def loglikelihood(self, requests, progress=None):
            if self.ll_calls:
                raise RuntimeError("stop after one chunk")
            return super().loglikelihood(requests, progress)

    with Store(path) as st:
        rid = runner.start_run(st, FakeTarget(), prepared, cfg)
        with pytest.raises(RuntimeError):
            runner.execute(st, rid, Flaky(), prepared, cfg)
        assert len(st.item_ids(rid, s.spec.id)) == 3
        again = FakeTarget()
        res = runner.execute(st, rid, again, prepared, cfg)
        assert res.metrics and len(st.item_ids(rid, s.spec.id)) == 8
        texts = {it["text"] for _, it in prepared[0].items}
        assert {c for _, c in again.ll_calls} & texts == {it["text"] for _, it in prepared[0].items[3:]}

    stored = _hash_like(path) | set(" ".join(_cells(path)).split())
    assert not stored & set(enumerated), "an unkeyed doc id was stored"
    blob = b"".join(p.read_bytes() for p in _files(path))
    assert not any(i.encode() in blob for i in loaded_ids)
    assert not any(t.encode() in blob for t in members + non_members)


def test_reconstruction_ids_and_doc_ids_are_stored_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUDITLM_KEYS", str(tmp_path / "keys"))
    docs = [f"{n} moved to Boston and can be reached at {n.split()[0].lower()}@gmail.com." for n in
            ("Maria Garcia", "James Okafor", "Lena Fischer", "Ravi Iyer")]
    (tmp_path / "c.txt").write_text("\n".join(docs) + "\n")
    s = discover()["privacy.training_data_leakage"]
    s = LoadedSuite(s.spec.model_copy(update={"data": s.spec.data.model_copy(update={"size": 4})}), s.path, s.digest)
    cfg = runner.RunConfig(model="fake", suites=[s.spec.id], inputs={"corpus": str(tmp_path / "c.txt")})
    prepared = runner.prepare([s], cfg, None)
    raw_ids = [it["id"] for _, it in prepared[0].items if it["attack"] == "reconstruction"]
    doc_ids = {corpus.doc_id(d) for d in docs}
    assert raw_ids and {i.split(":")[0] for i in raw_ids} <= doc_ids
    path = tmp_path / "runs.sqlite"
    with Store(path) as st:
        t = FakeTarget(responder=lambda p: " " + docs[0])
        rid = runner.start_run(st, t, prepared, cfg)
        runner.execute(st, rid, t, prepared, cfg)
        recs = [r for r in st.items(rid, s.spec.id) if r.input["attack"] == "reconstruction"]
        assert len(recs) == len(raw_ids) and len({r.item_id for r in recs}) == len(recs)
        assert all(re.fullmatch(r"mention-[0-9a-f]{16}", r.item_id) for r in recs)
        assert len({r.input["doc_id"] for r in recs}) == len(docs)  # still groups mentions by document
    blob = b"".join(p.read_bytes() for p in _files(path))
    assert not any(d.encode() in blob for d in doc_ids)
    assert not any(i.encode() in blob for i in raw_ids)
