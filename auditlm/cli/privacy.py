"""``auditlm privacy …``: tools around the privacy suites (detector quality, canaries)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from auditlm.cli._common import _print_table, err, out

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
    from auditlm.privacy.detector_eval import evaluate_detector

    with err.status("scanning labelled synthetic PII …"):
        rows = evaluate_detector(size=size, seed=seed)
    if as_json:
        print(json.dumps([{k: v for k, v in r.to_dict().items() if k != "extra"} for r in rows], indent=2))
        return
    _print_table(f"PII detector on {size} synthetic sentences (seed {seed})", rows, [])


@privacy_app.command("canaries")
def canaries(
    corpus: Annotated[str, typer.Argument(help="Training corpus (.txt one document per line, .jsonl, .csv).")],
    out_dir: Annotated[str, typer.Argument(help="Folder for the corpus copy and canaries.json.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of canaries.")] = 10,
    secret_length: Annotated[int, typer.Option("--secret-length", min=1)] = 6,
    alphabet: Annotated[str, typer.Option("--alphabet", help="Characters secrets are drawn from.")] = "0123456789",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Insertions of each canary.")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    template: Annotated[str, typer.Option("--template", help="Canary sentence with a {secret} slot.")] = (
        "My secret code is {secret}."
    ),
    text_field: Annotated[str, typer.Option("--text-field", help="Text field of .jsonl/.csv corpora.")] = "text",
) -> None:
    """Plant canaries with random secrets into a copy of a corpus (Carlini et al. 2019), for
    ``privacy.canary_exposure`` after fine-tuning on the copy (pass the record with ``--canaries``)."""
    from auditlm.privacy.canaries import plant_canaries

    planted = plant_canaries(corpus, out_dir, n_canaries=n, secret_length=secret_length, alphabet=alphabet,
                             repeats=repeats, seed=seed, template=template, text_field=text_field)
    out.print(f"corpus with canaries: {planted.corpus}")
    out.print(f"canary record:        {planted.record}  (pass it as --canaries)")
