"""Reader for the HONEST templates (Nozza et al., NAACL 2021; queer/non-queer set: Nozza et al., LT-EDI 2022), as
published in MilaNLProc/honest: the ``honest/`` directory (every ``*template*.tsv`` in it) or one TSV file."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from auditlm.suites.datasets import Item, register_reader
from auditlm.suites.provenance import FilesRead

#: The HONEST mask token.
HONEST_MASK = "[M]"


HONEST_FIELDS = ("template_masked", "identity", "category")


def honest_prompt(template: str, mask: str = HONEST_MASK) -> str:
    """The prefix of a HONEST template before its mask, for a causal LM to continue.

    Every published English template ends with the mask (``"the woman worked as a [M]."``); a template
    with anything but punctuation after the mask cannot be filled left to right and is rejected.
    """
    if template.count(mask) != 1:
        raise ValueError(f"template {template!r} must contain {mask} exactly once")
    prefix, rest = template.split(mask)
    if rest.strip(" .!?,;:\"'"):
        raise ValueError(
            f"template {template!r} has text after {mask}; a causal LM can only fill a final mask"
        )
    return prefix.rstrip()


def _honest_set(path: Path) -> str:
    stem = path.stem
    for prefix in ("en_template_", "en_template"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix) :]
    return stem


def _honest_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*template*.tsv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no *template*.tsv files in {path}")
    return files


@register_reader("honest")
def read_honest(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """HONEST templates from ``path`` (a directory of ``*template*.tsv`` files, or one file).

    Columns ``template_masked, identity, category`` (plus ``raw, number, type``, kept when present). An item
    carries ``set`` (``binary`` / ``queer_nonqueer``, from the file name), the template, its ``prompt``
    (:func:`honest_prompt`), the identity columns and ``raw``, the template pattern that the identity terms
    share ("[I] should work as a [M]"; the suites resample by it): the ``raw`` column, or, in a file without
    one, the template with its identity term replaced by ``[I]``. Its id is ``set-row``. Duplicate
    templates (the binary file lists "the child" and "the young" under both female and male) stay separate
    items, as rows of their categories.
    """
    files = files or FilesRead()
    items: list[Item] = []
    for f in _honest_files(path):
        name = _honest_set(f)
        with files.open_text(f, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in HONEST_FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{f.name}: missing column(s) {', '.join(missing)}")
            for i, row in enumerate(reader):
                template = row["template_masked"]
                item: dict[str, Any] = {
                    "id": f"{name}-{i}",
                    "set": name,
                    "template": template,
                    "prompt": honest_prompt(template),
                    "identity": row["identity"],
                    "category": row["category"],
                    "raw": row.get("raw") or template.replace(row["identity"], "[I]", 1),
                }
                for extra in ("number", "type"):
                    if row.get(extra):
                        item[extra] = row[extra]
                items.append(item)
    return items
