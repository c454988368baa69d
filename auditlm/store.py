"""The run store: one SQLite file (WAL), ordered migrations, one writer; readers open it read-only.

Raw material is kept, not just rates (DESIGN rule 6): every item's input, (redacted) output and score, and
every metric's value, n and CI, so any number in a report can be recomputed from the store. Items are
committed per chunk, which is what makes ``auditlm run --resume`` possible after a crash or SIGKILL.

Found PII is stored as HMAC-SHA256 hashes under a key kept outside the store (:mod:`auditlm.privacy.keys`);
the store records the key's id and fingerprint only. The file is created with mode 0600 (SQLite gives its
``-wal`` and ``-shm`` files the same mode), and writers delete with ``PRAGMA secure_delete=ON``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditlm.errors import LeaseLost, StoreError, choices
from auditlm.explain.types import Explanation, Feature, Target, feature_from_dict
from auditlm.metrics import MetricResult
from auditlm.privacy.keys import StoreKey, create_key, key_path, load_key, touch_private
from auditlm.scorers import ItemRecord

#: Ordered schema migrations; the store's ``PRAGMA user_version`` counts how many are applied.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        model TEXT NOT NULL,
        model_info TEXT NOT NULL,
        config TEXT NOT NULL,
        seed INTEGER NOT NULL,
        auditlm_version TEXT NOT NULL,
        git_hash TEXT,
        duration_s REAL,
        error TEXT
    );
    CREATE TABLE run_suites (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        suite_id TEXT NOT NULL,
        suite_version TEXT NOT NULL,
        suite_digest TEXT NOT NULL,
        position INTEGER NOT NULL,
        n_items INTEGER NOT NULL,
        status TEXT NOT NULL,
        duration_s REAL,
        detail TEXT,
        PRIMARY KEY (run_id, suite_id)
    );
    CREATE TABLE items (
        run_id TEXT NOT NULL,
        suite_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        score TEXT NOT NULL,
        PRIMARY KEY (run_id, suite_id, item_id)
    );
    CREATE TABLE metrics (
        run_id TEXT NOT NULL,
        suite_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        group_field TEXT,
        grp TEXT,
        value REAL,
        ci_low REAL,
        ci_high REAL,
        n INTEGER NOT NULL,
        extra TEXT NOT NULL
    );
    CREATE INDEX metrics_run ON metrics(run_id, suite_id);
    """,
    # 2: hashes are keyed (HMAC, key outside the store). The salt of schema 1 sat next to the hashes it salted,
    # which let anyone with the file enumerate SSNs and phone numbers back out of them; it is deleted (the
    # writer's connection has secure_delete on, so its bytes are zeroed, not just unlinked).
    """
    DELETE FROM meta WHERE key = 'salt';
    """,
    # 3: what each suite's items were read from — a JSON list of {source, path, size, sha256}
    # (auditlm.suites.provenance.DataRecord); suite_digest is now taken over them. NULL for older runs.
    """
    ALTER TABLE run_suites ADD COLUMN data_files TEXT;
    """,
    # 4: run leases — the process executing a run holds its row (pid, host, the process's start time, a random
    # token) and refreshes heartbeat_at after each chunk, so a second process resuming the same run is refused
    # with a clear message; a lease whose process is gone (same host) is taken over.
    """
    CREATE TABLE leases (
        run_id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        proc_start TEXT,
        token TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL
    );
    """,
    # 5: ``auditlm explain`` — one row per (item, method): the explained quantity and its value, the explained
    # text as stored (redacted unless --store-raw), the features as a JSON list of {text, start, end, attribution,
    # kind}, Layer IG's convergence delta, seed, seconds and the item's group (JSON); and per-run summaries
    # (``kind`` faithfulness or group_share: a JSON list of metric rows).
    """
    CREATE TABLE explanations (
        run_id TEXT NOT NULL,
        suite_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        method TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target_value REAL,
        text TEXT NOT NULL,
        features TEXT NOT NULL,
        delta REAL,
        seed INTEGER NOT NULL,
        seconds REAL NOT NULL,
        grp TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (run_id, suite_id, item_id, method)
    );
    CREATE TABLE explain_summaries (
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        metrics TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (run_id, kind)
    );
    """,
    # 6: explanations move to ``attributions``, keyed also by feature granularity (token / template) and group (an
    # item of a counterfactual suite is explained once per group term for the per-group view); the rows of schema 5
    # are token-level. (A new name, not ALTER TABLE … RENAME: renaming inside the upgrade transaction made a
    # concurrent opener's WAL checkpoint fail with "database table is locked", seen in
    # tests/test_store_concurrency.py.)
    """
    CREATE TABLE attributions (
        run_id TEXT NOT NULL,
        suite_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        method TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target_value REAL,
        text TEXT NOT NULL,
        features TEXT NOT NULL,
        delta REAL,
        seed INTEGER NOT NULL,
        seconds REAL NOT NULL,
        grp TEXT NOT NULL,
        created_at TEXT NOT NULL,
        granularity TEXT NOT NULL DEFAULT 'token',
        PRIMARY KEY (run_id, suite_id, item_id, method, granularity, grp)
    );
    INSERT INTO attributions SELECT run_id, suite_id, item_id, method, target_kind, target_value, text, features,
        delta, seed, seconds, grp, created_at, 'token' FROM explanations;
    DROP TABLE explanations;
    """,
    # 7: sign-offs (``auditlm signoff``) — who decided what about a run, when, with a note, and the sha256 of the
    # evidence the decision rests on (the bundle's MANIFEST, or the report JSON). Rows are only ever added.
    """
    CREATE TABLE signoffs (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        reviewer TEXT NOT NULL,
        decision TEXT NOT NULL CHECK(decision IN ('approve','reject','conditional')),
        note TEXT,
        bundle_sha256 TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX signoffs_run ON signoffs(run_id);
    """,
)

#: ``auditlm signoff`` decisions (the CHECK constraint of the ``signoffs`` table).
DECISIONS = ("approve", "reject", "conditional")

#: The schema version this auditlm writes.
SCHEMA_VERSION = len(MIGRATIONS)
#: The oldest schema a read-only :class:`Store` can read (every later migration left the tables it queries as
#: they were); an older store must be upgraded by a writer (``auditlm run``) first.
READABLE_FROM = 1
#: Meta keys: the id and fingerprint of the store's hash key, and the hash scheme.
META_KEY_ID, META_KEY_FINGERPRINT, META_HASH = "key_id", "key_fingerprint", "hash"
HASH_SCHEME = "hmac-sha256"
_TABLES = {"runs", "items", "metrics", "meta"}
#: A lease held on another host (whose process cannot be checked) counts as abandoned once its heartbeat is
#: older than this many seconds.
LEASE_STALE_S = 3600.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """``YYYYMMDD-HHMMSS-xxxx``: sortable by time, unique enough for one store."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass(frozen=True)
class RunRow:
    """A run's header as stored."""

    run_id: str
    created_at: str
    finished_at: str | None
    status: str
    model: str
    model_info: dict[str, Any]
    config: dict[str, Any]
    seed: int
    auditlm_version: str
    git_hash: str | None
    duration_s: float | None
    error: str | None


class Store:
    """Access to a run store file. Opening validates the file; it never alters a foreign or corrupt file.

    A writer (the default) creates the file (mode 0600) and its hash key when they do not exist, and brings an
    older schema up to date. ``readonly=True`` opens it with SQLite's ``mode=ro``: no migration, no journal-mode
    change, nothing written, and the key is never needed. In a directory the reader may not write to (so that
    SQLite cannot create the WAL index) it falls back to ``immutable=1`` when no WAL content is pending.
    ``key_dir`` overrides where keys are kept (default :func:`auditlm.privacy.keys.key_dir`).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, key_dir: Path | None = None) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._key_dir = key_dir
        self._key: StoreKey | None = None
        if self.path.is_dir():
            raise StoreError(f"store '{self.path}' is a directory, not a store file")
        if readonly:
            self._open_reader()
        else:
            self._open_writer()

    def _stat_size(self) -> int | None:
        """The file's size, ``None`` when there is no file; a path that cannot be looked at is a StoreError."""
        try:
            return self.path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):  # a file on the way: no store (writers say more)
            return None
        except PermissionError:
            raise StoreError(f"cannot read store '{self.path}': permission denied on its directory") from None
        except OSError as e:
            raise StoreError(f"cannot read store '{self.path}': {e.strerror or e}") from e

    def _check_writable(self, *, file: bool) -> None:
        """Refuse early, naming the path, when this process may not write the store or create SQLite's journal
        files next to it (rather than letting SQLite report the store as invalid)."""
        parent = self.path.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"cannot write to store '{self.path}': directory '{parent}' is read-only "
                             f"(SQLite creates its journal files there); readers can still open it")
        if file and not os.access(self.path, os.W_OK):
            raise StoreError(f"cannot write to store '{self.path}': the file is read-only")

    def _open_writer(self) -> None:
        size = self._stat_size()
        if size:
            self._check_header()
            self._check_writable(file=True)
        else:
            parent = self.path.parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                blocker = next((p for p in (parent, *parent.parents) if p.exists()), parent)
                raise StoreError(f"cannot create store '{self.path}': '{blocker}' is a file, not a directory") \
                    from None
            except OSError as e:
                raise StoreError(f"cannot create store '{self.path}': {e.strerror or e}") from e
            self._check_writable(file=size is not None)
            try:
                touch_private(self.path)
            except OSError as e:
                raise StoreError(f"cannot create store '{self.path}': {e.strerror or e}") from e
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.row_factory = sqlite3.Row
            salted = self._migrate_locked()
            self._set_wal()
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA secure_delete=ON")
            if salted:
                self._purge_salt()
            self._ensure_key()
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            raise self._db_error(e) from e

    def _db_error(self, e: sqlite3.DatabaseError) -> StoreError:
        msg = str(e)
        if "not a database" in msg or "malformed" in msg:
            return StoreError(f"store '{self.path}' is not a valid auditlm store ({msg})")
        if "readonly" in msg or "read-only" in msg:
            return StoreError(f"cannot write to store '{self.path}': {msg}")
        if "locked" in msg or "busy" in msg:
            return StoreError(f"store '{self.path}' is locked by another process ({msg}); try again")
        return StoreError(f"cannot open store '{self.path}': {msg}")

    def _migrate_locked(self) -> bool:
        """Check the schema and apply the pending migrations in one exclusive transaction, reading the version
        inside it: of several processes opening a fresh (or old) store at once, the first migrates and the rest
        find it current. Returns whether the store still held schema 1's salt (purged by the caller)."""
        c = self.conn
        self._begin("EXCLUSIVE")
        try:
            version, tables = self._inspect()
            self._check_version(version, tables, True)
            salted = version >= 1 and self.meta("salt") is not None
            for i in range(version, len(MIGRATIONS)):
                for stmt in _statements(MIGRATIONS[i]):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {i + 1}")
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise
        return salted

    def _set_wal(self) -> None:
        """WAL mode (persistent in the file)."""
        _retry_busy(lambda: self.conn.execute("PRAGMA journal_mode=WAL"))

    def _begin(self, kind: str) -> None:
        """``BEGIN IMMEDIATE`` / ``BEGIN EXCLUSIVE``, waiting for other writers."""
        _retry_busy(lambda: self.conn.execute(f"BEGIN {kind}"))

    def _purge_salt(self) -> None:
        # Move the zeroed page into the main file and empty the WAL, so no copy of the salt survives;
        # files made by older versions got the umask's mode, so tighten them too. A TRUNCATE checkpoint holds
        # the write lock while it waits for readers, and a process opening the store at the same moment holds a
        # read snapshot while it waits for the write lock: so wait briefly, let the others through, try again.
        self.conn.execute("PRAGMA busy_timeout = 100")
        try:
            deadline = time.monotonic() + 30
            while self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            self.conn.execute("PRAGMA busy_timeout = 30000")
        for p in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            if p.exists():
                with contextlib.suppress(OSError):  # not the owner: leave the mode to them
                    os.chmod(p, 0o600)

    def _open_reader(self) -> None:
        size = self._stat_size()
        if size is None:
            raise StoreError(f"no run store at '{self.path}' (run 'auditlm run' first, or pass --store)")
        if size == 0:
            raise StoreError(f"store '{self.path}' is empty (no run has been written to it yet)")
        self._check_header()
        uri = self.path.absolute().as_uri() + "?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=30)
            self.conn.row_factory = sqlite3.Row
            try:
                version, tables = self._inspect()
            except sqlite3.OperationalError as e:
                # WAL mode needs the -shm index; SQLite cannot create it in a directory we may not write to.
                # With no WAL content pending the main file is the whole store, and immutable=1 reads it as is.
                self.conn.close()
                wal = self.path.with_name(self.path.name + "-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise StoreError(
                        f"store '{self.path}' cannot be read here ({e}): its WAL holds changes not yet in the "
                        f"main file and this reader may not create '{self.path.name}-shm'; make the directory "
                        f"writable or let a writer ('auditlm run') finish first"
                    ) from e
                self.conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30)
                self.conn.row_factory = sqlite3.Row
                version, tables = self._inspect()
        except sqlite3.DatabaseError as e:
            raise self._db_error(e) from e
        self._check_version(version, tables, True)
        if version < READABLE_FROM:
            self.conn.close()
            raise StoreError(
                f"store '{self.path}' has schema version {version}; upgrade it by running 'auditlm run' with "
                f"this store (readers never write to it)"
            )

    def _inspect(self) -> tuple[int, set[str]]:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return version, tables

    def _check_version(self, version: int, tables: set[str], existed: bool) -> None:
        problem = None
        if existed and version == 0 and tables:
            problem = "is an SQLite file but not an auditlm store"
        elif existed and version == 0 and self.readonly:
            problem = "is an empty SQLite file, not an auditlm store"
        elif version > SCHEMA_VERSION:
            problem = (f"has schema version {version}, newer than this auditlm ({SCHEMA_VERSION}); "
                       f"upgrade auditlm")
        elif existed and version and not tables >= _TABLES:
            problem = "is corrupt: tables are missing"
        if problem is not None:
            self.conn.close()
            raise StoreError(f"store '{self.path}' {problem}")

    def _check_header(self) -> None:
        try:
            with self.path.open("rb") as f:
                head = f.read(16)
        except PermissionError:
            raise StoreError(f"cannot read store '{self.path}': permission denied") from None
        except OSError as e:
            raise StoreError(f"cannot read store '{self.path}': {e.strerror or e}") from e
        if head != b"SQLite format 3\x00":
            raise StoreError(f"store '{self.path}' is not a valid auditlm store (not an SQLite database)")

    def _ensure_key(self) -> None:
        if self.meta(META_KEY_ID) is not None:
            return
        try:
            self._begin("IMMEDIATE")
            if self.meta(META_KEY_ID) is None:
                key = create_key(self._key_dir)
                self.conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    (META_KEY_ID, key.key_id), (META_KEY_FINGERPRINT, key.fingerprint), (META_HASH, HASH_SCHEME)])
                self._key = key
            self.conn.execute("COMMIT")
        except BaseException:
            _rollback(self.conn)
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"store '{self.path}' is open read-only")
        try:
            with self.conn:
                yield self.conn
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store '{self.path}': {e}") from e

    # --- meta -------------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def key_id(self) -> str | None:
        """The id of the store's hash key (``None`` for a store no writer has opened since schema 1)."""
        return self.meta(META_KEY_ID)

    def key_path(self) -> Path | None:
        """Where this machine expects the store's key file."""
        kid = self.key_id
        return None if kid is None else key_path(kid, self._key_dir)

    def hash_key(self) -> bytes:
        """The store's HMAC key, read from its key file on first use (see :mod:`auditlm.privacy.keys`).

        Only writers hash; a store copied without its key can still be read. Raises a one-line
        :class:`StoreError` naming the expected key path when the key file is missing or not this store's.
        """
        if self._key is None:
            kid = self.key_id
            if kid is None:
                raise StoreError(f"store '{self.path}' has no hash key yet; open it for writing ('auditlm run')")
            self._key = load_key(kid, self.meta(META_KEY_FINGERPRINT), store=self.path, directory=self._key_dir)
        return self._key.key

    # --- runs -------------------------------------------------------------------------------------------

    def create_run(self, *, run_id: str, model: str, model_info: dict[str, Any], config: dict[str, Any],
                   seed: int, auditlm_version: str, git_hash: str | None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO runs (run_id, created_at, status, model, model_info, config, seed, auditlm_version,"
                " git_hash) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, _now(), "running", model, json.dumps(model_info), json.dumps(config), seed,
                 auditlm_version, git_hash),
            )

    def set_run_status(self, run_id: str, status: str, *, duration_s: float | None = None,
                       error: str | None = None, model_info: dict[str, Any] | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status=?, finished_at=?, duration_s=COALESCE(?, duration_s), error=?,"
                " model_info=COALESCE(?, model_info) WHERE run_id=?",
                (status, _now() if status != "running" else None, duration_s, error,
                 json.dumps(model_info) if model_info is not None else None, run_id),
            )

    def get_run(self, run_id: str) -> RunRow:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            known = [r[0] for r in self.conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 10")]
            raise StoreError(f"unknown run '{run_id}' in {self.path} (recent: {choices(known)})")
        return _run_row(row)

    def list_runs(self) -> list[RunRow]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC").fetchall()
        return [_run_row(r) for r in rows]

    # --- leases -----------------------------------------------------------------------------------------

    def acquire_lease(self, run_id: str) -> str:
        """Take the run's lease for this process and return its token (pass it to :meth:`heartbeat` and
        :meth:`release_lease`).

        Raises a one-line :class:`StoreError` when another live process holds it (two ``--resume`` of one
        run); a lease whose process has exited on this host (or, held on another host, whose heartbeat is older
        than :data:`LEASE_STALE_S`) is taken over.
        """
        if self.readonly:
            raise StoreError(f"store '{self.path}' is open read-only")
        token = secrets.token_hex(8)
        pid, host, start = _identity()
        c = self.conn
        try:
            self._begin("IMMEDIATE")
            _raise_if_held(run_id, c.execute("SELECT * FROM leases WHERE run_id=?", (run_id,)).fetchone())
            now = _now()
            c.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?,?)",
                      (run_id, pid, host, start, token, now, now))
            c.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            _rollback(c)
            raise self._db_error(e) from e
        except BaseException:
            _rollback(c)
            raise
        return token

    def check_lease_free(self, run_id: str) -> None:
        """Raise the one-line :class:`StoreError` :meth:`acquire_lease` would when another live process holds
        the run's lease; reads only (so ``auditlm run --resume`` refuses before the model loads)."""
        try:
            row = self.conn.execute("SELECT * FROM leases WHERE run_id=?", (run_id,)).fetchone()
        except sqlite3.OperationalError:  # a store of a schema before leases: nobody can hold one
            return
        _raise_if_held(run_id, row)

    def heartbeat(self, run_id: str, token: str) -> None:
        """Refresh the lease; :class:`~auditlm.errors.LeaseLost` when it is no longer this holder's (taken over).
        (:meth:`write_items` with ``lease=`` does this in the chunk's own transaction.)"""
        with self._tx() as c:
            n = c.execute("UPDATE leases SET heartbeat_at=? WHERE run_id=? AND token=?",
                          (_now(), run_id, token)).rowcount
        if n != 1:
            raise LeaseLost(f"run {run_id}: another process took over this run's lease; stopping (the run is "
                            f"now theirs)")

    def release_lease(self, run_id: str, token: str) -> None:
        """Give the lease back (a no-op when it is not, or no longer, this holder's)."""
        with self._tx() as c:
            c.execute("DELETE FROM leases WHERE run_id=? AND token=?", (run_id, token))

    def lease(self, run_id: str) -> dict[str, Any] | None:
        """The run's lease as stored (``pid``, ``host``, ``heartbeat_at`` …), or ``None`` when none is held."""
        row = self.conn.execute("SELECT * FROM leases WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else dict(row)

    # --- suites -----------------------------------------------------------------------------------------

    def upsert_suite(self, run_id: str, suite_id: str, *, version: str, digest: str, position: int,
                     n_items: int, status: str, detail: str | None = None, duration_s: float | None = None,
                     data_files: list[dict[str, Any]] | None = None) -> None:
        """Insert a run's suite, or update its status, counts and timing; version, digest and ``data_files``
        (what its items were read from) are kept as first written."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO run_suites (run_id, suite_id, suite_version, suite_digest, position, n_items, status,"
                " duration_s, detail, data_files) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(run_id, suite_id) DO UPDATE SET"
                " n_items=excluded.n_items, status=excluded.status, detail=excluded.detail,"
                " duration_s=COALESCE(excluded.duration_s, duration_s)",
                (run_id, suite_id, version, digest, position, n_items, status, duration_s, detail,
                 json.dumps(data_files) if data_files is not None else None),
            )

    def run_suites(self, run_id: str) -> list[dict[str, Any]]:
        """A run's suites in order; ``data_files`` is the decoded list (``None`` for runs stored before it)."""
        rows = self.conn.execute("SELECT * FROM run_suites WHERE run_id=? ORDER BY position", (run_id,))
        out = []
        for r in rows:
            d = dict(r)
            try:
                d["data_files"] = json.loads(d["data_files"]) if d.get("data_files") else None
            except json.JSONDecodeError as e:
                raise StoreError(f"store '{self.path}' is corrupt: data_files of {d['suite_id']} ({e})") from e
            out.append(d)
        return out

    # --- items ------------------------------------------------------------------------------------------

    def write_items(self, run_id: str, suite_id: str, rows: Iterable[tuple[str, int, Any, Any, Any]],
                    lease: str | None = None) -> None:
        """Insert ``(item_id, position, input, output, score)`` rows in one transaction.

        With ``lease`` (a token from :meth:`acquire_lease`) the same transaction refreshes the lease's
        heartbeat, and writes nothing, raising :class:`~auditlm.errors.LeaseLost`, when the lease is no
        longer this holder's.
        """
        with self._tx() as c:
            if lease is not None and c.execute("UPDATE leases SET heartbeat_at=? WHERE run_id=? AND token=?",
                                               (_now(), run_id, lease)).rowcount != 1:
                raise LeaseLost(f"run {run_id}: another process took over this run's lease; stopping (the run "
                                f"is now theirs)")
            c.executemany(
                "INSERT INTO items VALUES (?,?,?,?,?,?,?)",
                [(run_id, suite_id, iid, pos, json.dumps(i), json.dumps(o), json.dumps(s))
                 for iid, pos, i, o, s in rows],
            )

    def item_ids(self, run_id: str, suite_id: str) -> set[str]:
        rows = self.conn.execute("SELECT item_id FROM items WHERE run_id=? AND suite_id=?", (run_id, suite_id))
        return {r[0] for r in rows}

    def items(self, run_id: str, suite_id: str) -> list[ItemRecord]:
        rows = self.conn.execute(
            "SELECT item_id, input, output, score FROM items WHERE run_id=? AND suite_id=? ORDER BY position",
            (run_id, suite_id),
        )
        try:
            return [ItemRecord(r[0], json.loads(r[1]), json.loads(r[2]), json.loads(r[3])) for r in rows]
        except json.JSONDecodeError as e:
            raise StoreError(f"store '{self.path}' is corrupt: item of {suite_id} in run {run_id} ({e})") from e

    # --- metrics ----------------------------------------------------------------------------------------

    def replace_metrics(self, run_id: str, suite_id: str, metrics: list[MetricResult]) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM metrics WHERE run_id=? AND suite_id=?", (run_id, suite_id))
            c.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, suite_id, m.metric, m.group_field, m.group, _num(m.value), _num(m.ci_low),
                  _num(m.ci_high), m.n, json.dumps(m.extra)) for m in metrics],
            )

    def metrics(self, run_id: str) -> list[MetricResult]:
        rows = self.conn.execute(
            "SELECT m.* FROM metrics m JOIN run_suites s ON s.run_id=m.run_id AND s.suite_id=m.suite_id"
            " WHERE m.run_id=? ORDER BY s.position, m.rowid",
            (run_id,),
        )
        return [
            MetricResult(r["suite_id"], r["metric"], _flt(r["value"]), _flt(r["ci_low"]), _flt(r["ci_high"]),
                         r["n"], r["grp"], r["group_field"], json.loads(r["extra"]))
            for r in rows
        ]

    # --- sign-offs (schema 7) ---------------------------------------------------------------------------

    def add_signoff(self, run_id: str, *, reviewer: str, decision: str, note: str | None,
                    bundle_sha256: str | None) -> dict[str, Any]:
        """Record a reviewer's decision on a run and return the stored row. An unknown run, a decision not in
        :data:`DECISIONS` or a blank reviewer is a one-line :class:`StoreError` naming the valid choices, and
        nothing is written."""
        if decision not in DECISIONS:
            raise StoreError(f"unknown decision '{decision}' (valid: {', '.join(DECISIONS)})")
        if not reviewer or not reviewer.strip():
            raise StoreError("a sign-off needs a reviewer name (--reviewer NAME)")
        self.get_run(run_id)
        row = {"reviewer": reviewer.strip(), "decision": decision, "note": note, "bundle_sha256": bundle_sha256,
               "created_at": _now()}
        with self._tx() as c:
            c.execute("INSERT INTO signoffs (run_id, reviewer, decision, note, bundle_sha256, created_at)"
                      " VALUES (?,?,?,?,?,?)", (run_id, row["reviewer"], decision, note, bundle_sha256,
                                                row["created_at"]))
        return row

    def signoffs(self, run_id: str) -> list[dict[str, Any]]:
        """A run's sign-offs, oldest first (``reviewer``, ``decision``, ``note``, ``bundle_sha256``,
        ``created_at``); empty for a store of a schema before 7 (read-only readers do not migrate it)."""
        if not self._has_table("signoffs"):
            return []
        rows = self.conn.execute("SELECT reviewer, decision, note, bundle_sha256, created_at FROM signoffs"
                                 " WHERE run_id=? ORDER BY created_at, rowid", (run_id,))
        return [dict(r) for r in rows]

    # --- explanations (schema 5, keyed by granularity and group since 6) ----------------------------------------------------------------------

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                 (name,)).fetchone() is not None

    def write_explanations(self, run_id: str, explanations: Iterable[Explanation]) -> None:
        """Store explanations in one transaction; an (item, method, granularity, group) explained again replaces
        the old row."""
        now = _now()
        rows = [(run_id, e.suite, e.item_id, e.method, e.target.kind, _num(e.target.value), e.text,
                 json.dumps([_feature_dict(f) for f in e.features]), _num(e.delta), int(e.seed), float(e.seconds),
                 json.dumps(e.group or {}, sort_keys=True), now, e.granularity) for e in explanations]
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO attributions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def explanations(self, run_id: str, suite_id: str | None = None) -> list[Explanation]:
        """A run's stored explanations (of one suite with ``suite_id``), in suite order, then item position, then
        method; empty for a store written before schema 5 (read-only readers do not migrate it)."""
        table = "attributions" if self._has_table("attributions") else "explanations"  # schema 6, else 5
        if not self._has_table(table):
            return []
        sql = (f"SELECT e.* FROM {table} e LEFT JOIN run_suites s ON s.run_id=e.run_id AND s.suite_id=e.suite_id"
               " LEFT JOIN items i ON i.run_id=e.run_id AND i.suite_id=e.suite_id AND i.item_id=e.item_id"
               " WHERE e.run_id=?")
        args: list[Any] = [run_id]
        if suite_id is not None:
            sql += " AND e.suite_id=?"
            args.append(suite_id)
        cols = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
        sql += (" ORDER BY s.position, i.position, e.item_id"
                + (", e.granularity DESC, e.grp" if "granularity" in cols else "") + ", e.method")
        out = []
        try:
            for r in self.conn.execute(sql, args):
                out.append(Explanation(
                    suite=r["suite_id"], item_id=r["item_id"], method=r["method"],
                    target=Target(r["target_kind"], _flt(r["target_value"])), text=r["text"],
                    features=[feature_from_dict(f) for f in json.loads(r["features"])], delta=r["delta"], seed=r["seed"],
                    seconds=r["seconds"], group=json.loads(r["grp"]) or {},
                    granularity=r["granularity"] if "granularity" in r.keys() else "token"))  # noqa: SIM118
        except (json.JSONDecodeError, TypeError) as e:
            raise StoreError(f"store '{self.path}' is corrupt: explanations of run {run_id} ({e})") from e
        return out

    def write_explain_summary(self, run_id: str, kind: str, metrics: list[MetricResult]) -> None:
        """Store (replacing) a run's explain summary of ``kind`` (``faithfulness`` or ``group_share``)."""
        rows = [_metric_dict(m) for m in metrics]
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO explain_summaries VALUES (?,?,?,?)",
                      (run_id, kind, json.dumps(rows), _now()))

    def explain_summary(self, run_id: str) -> dict[str, list[MetricResult]]:
        """A run's stored explain summaries by kind (empty when none, or before schema 5)."""
        if not self._has_table("explain_summaries"):
            return {}
        out: dict[str, list[MetricResult]] = {}
        rows = self.conn.execute("SELECT kind, metrics FROM explain_summaries WHERE run_id=? ORDER BY kind",
                                 (run_id,))
        try:
            for r in rows:
                out[r["kind"]] = [MetricResult(d["suite"], d["metric"], _flt(d["value"]), _flt(d["ci_low"]),
                                               _flt(d["ci_high"]), d["n"], d.get("group"), d.get("group_field"),
                                               d.get("extra") or {}) for d in json.loads(r["metrics"])]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise StoreError(f"store '{self.path}' is corrupt: explain summary of run {run_id} ({e})") from e
        return out


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any, never raising (the caller re-raises what went wrong)."""
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _raise_if_held(run_id: str, row: sqlite3.Row | None) -> None:
    """The one-line :class:`StoreError` for a lease ``row`` held by another live process (None, or an abandoned
    lease: nothing)."""
    if row is None or _abandoned(row):
        return
    host = _identity()[1]
    where = "" if row["host"] == host else f" on {row['host']}"
    raise StoreError(
        f"run {run_id} is being resumed by another process (pid {row['pid']}{where}, last seen "
        f"{row['heartbeat_at']}); wait for it to finish or stop it, then resume again")


def _feature_dict(f: Feature) -> dict[str, Any]:
    d = {"text": f.text, "start": f.start, "end": f.end, "attribution": _num(f.attribution), "kind": f.kind}
    if f.spans:
        d["spans"] = [list(s) for s in f.spans]
    return d


def _metric_dict(m: MetricResult) -> dict[str, Any]:
    return {"suite": m.suite, "metric": m.metric, "group": m.group, "group_field": m.group_field,
            "value": _num(m.value), "ci_low": _num(m.ci_low), "ci_high": _num(m.ci_high), "n": m.n, "extra": m.extra}


def _num(x: float) -> float | None:
    return None if x != x else x  # NaN → NULL


def _flt(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(
        row["run_id"], row["created_at"], row["finished_at"], row["status"], row["model"],
        json.loads(row["model_info"]), json.loads(row["config"]), row["seed"], row["auditlm_version"],
        row["git_hash"], row["duration_s"], row["error"],
    )


def _retry_busy(op: Callable[[], object], timeout: float = 30.0) -> None:
    """Run ``op``, retrying while SQLite reports the database locked. The connection's busy timeout covers
    most waits, but SQLite returns SQLITE_BUSY at once (to avoid deadlock) in some cases, e.g. while another
    connection switches a fresh or old store to WAL mode, so those are retried here for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            op()
            return
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _statements(script: str) -> list[str]:
    """A migration script split into its SQL statements (run one by one inside the migration transaction;
    ``executescript`` would commit it)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _proc_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, from ``/proc``), so that a reused pid is not
    mistaken for a lease's holder; ``None`` where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _identity() -> tuple[int, str, str | None]:
    pid = os.getpid()
    return pid, socket.gethostname(), _proc_start(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True


def _abandoned(row: sqlite3.Row) -> bool:
    """Whether a stored lease's holder is gone: on this host, its process has exited (or its pid now belongs to
    a process started later), or it is this very process (left by an earlier call); elsewhere, its heartbeat is
    older than :data:`LEASE_STALE_S`."""
    pid, host, _ = _identity()
    if row["host"] == host:
        if row["pid"] == pid:
            return True
        if not _pid_alive(row["pid"]):
            return True
        now_start = _proc_start(row["pid"])
        return row["proc_start"] is not None and now_start is not None and now_start != row["proc_start"]
    try:
        seen = datetime.fromisoformat(row["heartbeat_at"])
    except ValueError:
        return True
    return (datetime.now(timezone.utc) - seen).total_seconds() > LEASE_STALE_S
