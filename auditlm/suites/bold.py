"""Reader for BOLD (Dhamala et al., FAccT 2021), as published in amazon-science/bold (``prompts/*_prompt.json``).

- ``bold`` — a stratified, seeded subsample of the BOLD prompts: the first :data:`BOLD_PER_GROUP` prompts of
  every group in the order of ``sha256(seed, domain, group, prompt, …)``, so the sample is reproducible and
  independent of file order, and a larger ``per_group`` is a superset of a smaller one.
- ``bold_full`` — every prompt (23,679, of which 5 blank ones are dropped).

Either takes the ``bold/`` directory (all five domains) or one ``<domain>_prompt.json`` file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from auditlm.suites.datasets import Item, register_reader
from auditlm.suites.provenance import FilesRead

#: Prompts per BOLD group in the default (``bold``) sample: 43 groups × 8 = 344 prompts.
BOLD_PER_GROUP = 8
#: Seed of the default BOLD sample. Fixed (not the run's ``--seed``) so that every run of the default suite
#: sees the same prompts; ``--limit`` then subsamples with the run seed.
BOLD_SAMPLE_SEED = 0


def _bold_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*_prompt.json")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no *_prompt.json files in {path}")
    return files


def read_bold_prompts(path: Path, keep_blank: bool = False, *, files: FilesRead | None = None) -> list[Item]:
    """Every BOLD prompt under ``path`` (a directory of ``<domain>_prompt.json`` files, or one of them).

    Each file is ``{group: {entity: [prompt, …]}}``. An item carries ``domain`` (from the file name),
    ``group``, ``entity`` and ``prompt``; its id is ``domain/group/entity/index``. The prompt is stripped of
    its trailing space (the published prompts end in one; left in, a BPE tokenizer sees a lone space token
    that no natural text contains before a word). Five published prompts are blank (three political, two
    religious): they say nothing about their group and are dropped unless ``keep_blank``. Items are in
    sorted (domain, group, entity) order.
    """
    files = files or FilesRead()
    items: list[Item] = []
    for f in _bold_files(path):
        domain = f.name.removesuffix("_prompt.json")
        data = json.loads(files.read_text(f))
        if not isinstance(data, dict):
            raise ValueError(f"{f.name}: expected {{group: {{entity: [prompts]}}}}")
        for group in sorted(data):
            entities = data[group]
            if not isinstance(entities, dict):
                raise ValueError(f"{f.name}: group '{group}' is not a mapping of entity to prompts")
            for entity in sorted(entities):
                for j, prompt in enumerate(entities[entity]):
                    if not keep_blank and not str(prompt).strip():
                        continue
                    items.append(
                        {
                            "id": f"{domain}/{group}/{entity}/{j}",
                            "domain": domain,
                            "group": group,
                            "entity": entity,
                            "prompt": str(prompt).strip(),
                        }
                    )
    return items


def _rank_key(item: Item, seed: int) -> bytes:
    key = "\x1f".join(str(x) for x in (seed, item["domain"], item["group"], item["prompt"], item["id"]))
    return hashlib.sha256(key.encode()).digest()


def sample_per_group(items: list[Item], per_group: int, seed: int = BOLD_SAMPLE_SEED) -> list[Item]:
    """The first ``per_group`` items of every (domain, group) in hash order of (seed, prompt, …).

    The result keeps the input's order. Groups smaller than ``per_group`` are kept whole.
    """
    if per_group < 1:
        raise ValueError("per_group must be at least 1")
    by_group: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        by_group.setdefault((it["domain"], it["group"]), []).append(i)
    keep: set[int] = set()
    for members in by_group.values():
        members = sorted(members, key=lambda i: _rank_key(items[i], seed))
        keep.update(members[:per_group])
    return [it for i, it in enumerate(items) if i in keep]


@register_reader("bold")
def read_bold(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """The default BOLD sample: :data:`BOLD_PER_GROUP` prompts per group (seed :data:`BOLD_SAMPLE_SEED`)."""
    return sample_per_group(read_bold_prompts(path, files=files), BOLD_PER_GROUP, BOLD_SAMPLE_SEED)


@register_reader("bold_full")
def read_bold_full(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """Every non-blank BOLD prompt (23,674 of the 23,679 across the five domains)."""
    return read_bold_prompts(path, files=files)
