"""``auditlm mitigate …``: data-side mitigations that write a transformed training corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditlm.cli._common import err, out

mitigate_app = typer.Typer(no_args_is_help=True, help="Mitigations: transform a training corpus before fine-tuning.")


def _read_key(path: Path) -> bytes:
    from auditlm.errors import DataError

    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise DataError(f"cannot read hash key '{path}': {e.strerror or e}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise DataError(f"hash key '{path}' is not hex (an auditlm key file: 64 hex digits)") from None
    if len(key) < 16:
        raise DataError(f"hash key '{path}' is shorter than 16 bytes")
    return key


@mitigate_app.command("scrub")
def scrub(
    corpus: Annotated[Path, typer.Argument(help="Training corpus (.txt one document per line, .jsonl, .json, .csv).")],
    out_path: Annotated[Path, typer.Option("--out", help="Scrubbed corpus to write (same format); "
                                           "scrub_record.json is written beside it.")],
    operator: Annotated[list[str] | None, typer.Option(
        "--operator", help="ENTITY=replace|mask|hash|redact|keep (repeatable).")] = None,
    default_operator: Annotated[str, typer.Option(
        "--default-operator", help="Operator for entity types without --operator.")] = "replace",
    entities: Annotated[list[str] | None, typer.Option(
        "--entities", help="Entity types to scrub (repeatable or comma-separated; default: auditlm's list).")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Text field of .jsonl/.json/.csv corpora.")] = "text",
    hash_key: Annotated[Path | None, typer.Option(
        "--hash-key", help="Key file (hex) for the hash operator; default: a random key, never stored.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out and its scrub_record.json.")] = False,
) -> None:
    """Rewrite the PII in a training corpus (auditlm's detector, presidio-anonymizer operators per entity type):
    replace (``<ENTITY_TYPE>``), mask (``*`` per character), hash (keyed HMAC-SHA256 token), redact (delete), keep.
    Prints the findings per entity type; values are never printed or recorded."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from auditlm.mitigate.scrub import check_paths, parse_operators, resolve_operators, scrub_corpus
    from auditlm.privacy.pii import DEFAULT_ENTITIES

    wanted = None
    if entities:
        wanted = [e.strip().upper() for spec in entities for e in spec.split(",") if e.strip()]
    ops = parse_operators(operator or [])
    # Cheap checks first, before the detector loads (a few seconds).
    check_paths(corpus, out_path, force=force)
    resolve_operators(tuple(wanted or DEFAULT_ENTITIES), ops, default_operator)
    key = _read_key(hash_key) if hash_key is not None else None

    with err.status("loading the PII detector …"):
        from auditlm.privacy.pii import PiiScanner

        scanner = PiiScanner(wanted) if wanted else PiiScanner()
        scanner._get_engine()  # an unknown entity type fails here, with the valid ones listed
    with Progress(TextColumn("scrubbing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("scrub", total=None)
        result = scrub_corpus(
            corpus, out_path, operators=ops, default_operator=default_operator, text_field=text_field,
            hash_key=key, force=force, scanner=scanner,
            start=lambda n: progress.update(task, total=n),
            progress=lambda k: progress.advance(task, k),
        )
    rec = result.record
    table = Table(title=f"PII scrubbed: {rec['documents_changed']} of {rec['documents']} documents changed",
                  title_justify="left")
    table.add_column("entity type")
    table.add_column("found", justify="right")
    table.add_column("operator")
    for entity, n in rec["counts"].items():
        table.add_row(entity, str(n), rec["operators"][entity]["operator"])
    out.print(table)
    out.print(f"scrubbed corpus: {result.out}")
    out.print(f"scrub record:    {result.record_path}")
