"""Reader for CrowS-Pairs (Nangia et al., EMNLP 2020): ``crows_pairs_anonymized.csv`` or its Hub copy."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from auditlm.suites.datasets import Item, register_reader
from auditlm.suites.provenance import FilesRead

CROWS_FIELDS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


def _crows_row(row: dict[str, Any], i: int) -> Item:
    missing = [f for f in CROWS_FIELDS if f not in row]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    rid = row.get("") or row.get("Unnamed: 0") or row.get("id") or i
    return {"id": str(rid), **{f: str(row[f]) for f in CROWS_FIELDS}}


@register_reader("crows_pairs", hub_row=_crows_row)
def read_crows_pairs(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """``crows_pairs_anonymized.csv`` (Nangia et al. 2020): one row per sentence pair."""
    with (files or FilesRead()).open_text(path, newline="") as f:
        return [_crows_row(row, i) for i, row in enumerate(csv.DictReader(f))]
