"""``auditlm privacy …``: tools around the privacy suites (detector quality, canaries)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

privacy_app = typer.Typer(no_args_is_help=True, help="Privacy tools: detector quality, canaries.")


@privacy_app.command("detector-eval")
def detector_eval(
    size: Annotated[int, typer.Option("--size", min=10, help="Labelled synthetic sentences (Faker).")] = 300,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
) -> None:
    """Precision and recall of auditlm's PII detector (Presidio as configured for the privacy suites) per
    entity type, on Faker-made sentences with known spans. The same rows are stored with every run that
    includes ``privacy.pii_detector``."""
    from auditlm.cli import _print_table, err
    from auditlm.pii_eval import evaluate_detector

    with err.status("scanning labelled synthetic PII …"):
        rows = evaluate_detector(size=size, seed=seed)
    if as_json:
        print(json.dumps([{k: v for k, v in r.to_dict().items() if k != "extra"} for r in rows], indent=2))
        return
    _print_table(f"PII detector on {size} synthetic sentences (seed {seed})", rows, [])
