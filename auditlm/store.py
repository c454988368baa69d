"""The run store: one SQLite file (WAL), ordered migrations, one writer.

Raw material is kept, not just rates (DESIGN rule 6): every item's input, (redacted) output and score, and
every metric's value, n and CI, so any number in a report can be recomputed from the store. Items are
committed per chunk, which is what makes ``auditlm run --resume`` possible after a crash or SIGKILL.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditlm.errors import StoreError, choices
from auditlm.metrics import MetricResult
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
    # 2: what each suite's items were read from — a JSON list of {source, path, size, sha256}
    # (auditlm.suites.provenance.DataRecord); suite_digest is now taken over them. NULL for older runs.
    """
    ALTER TABLE run_suites ADD COLUMN data_files TEXT;
    """,
)


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
    """Read/write access to a run store file. Opening validates the file; it never alters a foreign or
    corrupt file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise StoreError(f"store '{self.path}' is a directory, not a store file")
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            self._check_header()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.row_factory = sqlite3.Row
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store '{self.path}' is not a valid auditlm store ({e})") from e
        if existed and version == 0 and tables:
            self.conn.close()
            raise StoreError(f"store '{self.path}' is an SQLite file but not an auditlm store")
        if version > len(MIGRATIONS):
            self.conn.close()
            raise StoreError(
                f"store '{self.path}' has schema version {version}, newer than this auditlm "
                f"({len(MIGRATIONS)}); upgrade auditlm"
            )
        if existed and version and not {"runs", "items", "metrics", "meta"} <= tables:
            self.conn.close()
            raise StoreError(f"store '{self.path}' is corrupt: tables are missing")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate(version)

    def _check_header(self) -> None:
        with self.path.open("rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":
            raise StoreError(f"store '{self.path}' is not a valid auditlm store (not an SQLite database)")

    def _migrate(self, version: int) -> None:
        for i in range(version, len(MIGRATIONS)):
            with self.conn:
                self.conn.executescript("BEGIN;" + MIGRATIONS[i] + f"PRAGMA user_version = {i + 1};COMMIT;")
        if self.meta("salt") is None:
            with self.conn:
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (secrets.token_hex(16),))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
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
    def salt(self) -> str:
        """Per-store secret salt for hashing found PII (so hashes match within a store, not across)."""
        s = self.meta("salt")
        assert s is not None
        return s

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

    def write_items(self, run_id: str, suite_id: str, rows: Iterable[tuple[str, int, Any, Any, Any]]) -> None:
        """Insert ``(item_id, position, input, output, score)`` rows in one transaction."""
        with self._tx() as c:
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
