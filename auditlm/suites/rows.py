"""Rows of a local corpus file, by suffix: ``.txt`` (one document per non-empty line), ``.jsonl``,
``.json`` (a list of objects) and ``.csv``. Shared by the corpus readers and by canary planting, which
writes the same formats back."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

DEFAULT_TEXT_FIELD = "text"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The raw rows of a corpus file (``.txt`` lines become ``{"text": line}``), by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"line {ln}: invalid JSON ({e.msg})") from e
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError("a .json corpus must be a list of objects")
        return data
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [
        {DEFAULT_TEXT_FIELD: line} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
