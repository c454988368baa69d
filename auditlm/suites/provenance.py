"""What a suite's items were made from, recorded with a run.

Every local file a reader opens goes through a :class:`FilesRead` the reader is handed, which hashes the very
bytes the reader parses (no second read that could see a different file). Hub rows, generated items and
inline items get a record too. A run stores the records of each suite (``run_suites.data_files``) and a
digest over them (``run_suites.suite_digest``), so a reviewer can see which bytes produced its numbers and
``auditlm run --resume`` can refuse when any of them changed (:func:`first_change`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

#: ``DataRecord.source`` of the probe (YAML) file itself.
SUITE_SOURCE = "suite"
#: ``DataRecord.source`` of a file under the data directory (``--data-dir`` / ``AUDITLM_DATA``).
DATA_SOURCE = "data"


@dataclass(frozen=True)
class DataRecord:
    """One input of a suite.

    ``source`` is ``suite`` (the probe file), ``data`` (a file under the data directory; ``path`` relative to
    it), a run input's flag (``--corpus``, ``--non-members``, ``--canaries``: ``path`` as given on the command
    line, plus ``/name`` for a file inside a given directory), ``hub`` (``path`` is
    ``hf:ORG/NAME[:config]/split``), ``generator``, ``inline``, or a file a scorer reads (``hurtlex``).
    ``size`` is the file's size in bytes, or the number of rows/items for the non-file sources; ``sha256`` is
    of the file's bytes, or of the canonical JSON of the rows/items.
    """

    source: str
    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataRecord:
        return cls(str(d["source"]), str(d["path"]), int(d["size"]), str(d["sha256"]))

    def describe(self) -> str:
        """How an error message names this input."""
        if self.source == SUITE_SOURCE:
            return f"suite file {self.path}"
        if self.source == DATA_SOURCE:
            return f"data file '{self.path}' (in the data dir)"
        if self.source in ("hub", "generator", "inline"):
            return f"{self.source} data {self.path}"
        return f"{self.source} file '{self.path}'"


@dataclass
class FilesRead:
    """Records every file a reader opens, hashing the bytes it hands the reader.

    ``root`` is the path the reader was given and ``label`` how that path is shown in a record: ``""`` shows
    paths relative to ``root`` (the data directory), anything else replaces ``root`` (a run input as typed).
    """

    root: Path | None = None
    label: str = ""
    source: str = DATA_SOURCE
    records: list[DataRecord] = field(default_factory=list)
    #: The file opened last (what an error while parsing it is about).
    last: Path | None = None

    def read_bytes(self, path: Path) -> bytes:
        """The file's bytes, recorded."""
        self.last = Path(path)
        data = Path(path).read_bytes()
        shown = self._shown(Path(path))
        if all(r.path != shown for r in self.records):
            self.records.append(DataRecord(self.source, shown, len(data), hashlib.sha256(data).hexdigest()))
        return data

    def open_text(self, path: Path, *, encoding: str = "utf-8", newline: str | None = None) -> IO[str]:
        """A text stream over the recorded bytes, decoded as ``open(path, encoding=…, newline=…)`` would."""
        return io.TextIOWrapper(io.BytesIO(self.read_bytes(path)), encoding=encoding, newline=newline)

    def read_text(self, path: Path, *, encoding: str = "utf-8") -> str:
        """The file's text (universal newlines, like :meth:`pathlib.Path.read_text`), recorded."""
        with self.open_text(path, encoding=encoding) as f:
            return f.read()

    def _shown(self, path: Path) -> str:
        if self.root is None:
            return str(path)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return str(path)
        if not self.label:
            return rel.as_posix()
        return self.label if rel == Path(".") else f"{self.label.rstrip('/')}/{rel.as_posix()}"


def json_record(source: str, path: str, rows: Sequence[Any]) -> DataRecord:
    """A record of rows or items that are not a file: sha256 of their canonical JSON (sorted keys)."""
    text = json.dumps(list(rows), sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return DataRecord(source, path, len(rows), hashlib.sha256(text.encode("utf-8")).hexdigest())


def combined_digest(records: Sequence[DataRecord]) -> str:
    """16 hex digits of sha256 over every record's source, path and sha256, in order.

    The probe file's path is left out (the same YAML read from another checkout is the same suite); the data
    files' paths are relative to the data directory, so moving the data directory keeps the digest.
    """
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.source}\x1f{'' if r.source == SUITE_SOURCE else r.path}\x1f{r.sha256}\n".encode())
    return h.hexdigest()[:16]


def first_change(stored: Sequence[DataRecord], current: Sequence[DataRecord]) -> str | None:
    """What differs between the records a run stored and the ones read now (``None`` when nothing does):
    a changed file first, then a file read now but not then, then one read then but not now."""
    key = lambda r: (r.source, "" if r.source == SUITE_SOURCE else r.path)  # noqa: E731
    old = {key(r): r for r in stored}
    new = {key(r): r for r in current}
    for k, r in new.items():
        if k in old and old[k].sha256 != r.sha256:
            return f"{r.describe()} changed (sha256 {old[k].sha256[:12]}… then, {r.sha256[:12]}… now)"
    for k, r in new.items():
        if k not in old:
            return f"{r.describe()} is new (the run did not read it)"
    for k, r in old.items():
        if k not in new:
            return f"{r.describe()} is no longer read"
    return None
