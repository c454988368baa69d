"""Rows of a local corpus file, by suffix: ``.txt`` (one document per non-empty line), ``.jsonl``,
``.json`` (a list of objects) and ``.csv``. Shared by the corpus readers and by canary planting, which
writes the same formats back."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from auditlm.suites.provenance import FilesRead

DEFAULT_TEXT_FIELD = "text"


def json_line(line: str, where: str) -> Any:
    """One JSON Lines record; a malformed one is a :class:`ValueError` naming ``where`` (``line N``) and the column."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from None


def read_rows(path: Path, *, files: FilesRead | None = None) -> list[dict[str, Any]]:
    """The raw rows of a corpus file (``.txt`` lines become ``{"text": line}``), by suffix."""
    files = files or FilesRead()
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with files.open_text(path) as f:
            for ln, line in enumerate(f, 1):
                if line.strip():
                    rows.append(json_line(line, f"line {ln}"))
        return rows
    if suffix == ".json":
        data = json.loads(files.read_text(path))
        if not isinstance(data, list):
            raise ValueError("a .json corpus must be a list of objects")
        return data
    if suffix == ".csv":
        with files.open_text(path, newline="") as f:
            return list(csv.DictReader(f))
    return [
        {DEFAULT_TEXT_FIELD: line} for line in files.read_text(path).splitlines() if line.strip()
    ]
