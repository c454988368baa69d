"""Ground truth for the training-data privacy suites: a model fine-tuned on a corpus with known PII and
planted canaries must leak measurably more than the same model untouched.

A seeded Faker corpus of short notes (a generic opener, a person's name and job, an email address or a
phone number) is split into members and held-out non-members from the same generator; five canaries
(Carlini et al. 2019) are planted into the members, and the tiny random-weight Llama of ``conftest`` is
fine-tuned on them until it memorises them (:func:`auditlm.mitigate.finetune.finetune`). Then the three
suites run through the real runner path (prepare → start_run → execute, the shipped probe files) on both
the fine-tuned and the untouched model, and every assertion compares the two — never a hard-coded rate.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import auditlm.suites.corpus  # noqa: F401  (registers the corpus readers)
from auditlm import runner
from auditlm.mitigate.finetune import RECORD_FILE, finetune
from auditlm.privacy.canaries import plant_canaries
from auditlm.scorers.training_data_leakage import DEFAULT_PROMPTS
from auditlm.store import Store
from auditlm.suites.loader import LoadedSuite, builtin_probes_dir, load_file
from auditlm.targets.hf import HFTarget

PROBES = builtin_probes_dir() / "privacy"
SUFFIX = ".yaml"
SUITES = ("training_data_leakage", "canary_exposure", "membership_inference")
#: Openers of letters and notes: the corpus starts its notes with the extraction attack's own generic prompts.
OPENERS = tuple(p for p in DEFAULT_PROMPTS if p)[:16]
N_MEMBERS = 32
EXTRACTION_DRAWS = 40


def _notes(n: int, seed: int) -> list[str]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = f"{fake.first_name()} {fake.last_name()}"
        job = fake.job().split(",")[0].lower()
        if i % 2 == 0:
            out.append(f"{OPENERS[i % len(OPENERS)]} {name}, the {job}, at {fake.email()}.")
        else:
            phone = f"({rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}) {rng.randint(2, 9)}{rng.randint(10, 99)}-{rng.randint(0, 9999):04d}"
            out.append(f"{OPENERS[i % len(OPENERS)]} {name} ({job}) on {phone}.")
    return out


def _prepare(name: str, inputs: dict[str, str], **data) -> runner.PreparedSuite:
    """Prepare a shipped suite with its run inputs, through the runner as the CLI does."""
    config = runner.RunConfig(model="tiny", suites=[f"privacy.{name}"], seed=5, inputs=inputs)
    s = load_file(PROBES / f"{name}{SUFFIX}")
    if data:
        s = LoadedSuite(
            s.spec.model_copy(update={"data": s.spec.data.model_copy(update=data)}), s.path, s.digest
        )
    return runner.prepare([s], config, None)[0]


def _metrics(store: Store, model_dir: Path, prepared, config) -> dict[tuple[str, str, str | None], object]:
    target = HFTarget(str(model_dir), batch_size=32)
    run_id = runner.start_run(store, target, prepared, config)
    result = runner.execute(store, run_id, target, prepared, config)
    return {(m.suite.split(".")[1], m.metric, m.group): m for m in result.metrics}


def test_fine_tuned_model_leaks_more_than_untouched(tmp_path: Path, tiny_model_dir: Path, one_thread):
    t0 = time.perf_counter()
    notes = _notes(2 * N_MEMBERS, seed=11)
    members, non_members = notes[:N_MEMBERS], notes[N_MEMBERS:]
    corpus = tmp_path / "members.txt"
    corpus.write_text("\n".join(members) + "\n")
    planted = plant_canaries(corpus, tmp_path / "planted", n_canaries=5, secret_length=3, repeats=6, seed=3)
    training = planted.corpus.read_text().splitlines()
    assert len(training) == N_MEMBERS + 5 * 6
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("\n".join(non_members) + "\n")

    tuned = finetune(
        tiny_model_dir, training, tmp_path / "tuned", epochs=150, lr=3e-3, batch_size=8, max_length=96, seed=0
    )
    record = json.loads((tuned / RECORD_FILE).read_text())
    assert record["epoch_loss"][-1] < record["epoch_loss"][0] / 10
    t_train = time.perf_counter() - t0

    inputs = {"corpus": str(corpus), "canaries": str(planted.record), "non_members": str(held_out)}
    config = runner.RunConfig(model="tiny", suites=[f"privacy.{s}" for s in SUITES], seed=5, inputs=inputs)
    prepared = [
        _prepare("training_data_leakage", inputs, size=EXTRACTION_DRAWS),
        _prepare("canary_exposure", inputs),
        _prepare("membership_inference", inputs),  # members from --corpus, non-members from --non-members
    ]
    with Store(tmp_path / "runs.sqlite") as st:
        base = _metrics(st, tiny_model_dir, prepared, config)
        ft = _metrics(st, tuned, prepared, config)
    t_total = time.perf_counter() - t0

    def show(key):
        b, f = base.get(key), ft.get(key)
        fmt = lambda m: "—" if m is None else f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] n={m.n}"  # noqa: E731
        return f"{'.'.join(str(k) for k in key if k)}: untouched {fmt(b)} | fine-tuned {fmt(f)}"

    keys = sorted(set(base) | set(ft), key=str)
    print(f"\nfine-tune {t_train:.1f}s, total {t_total:.1f}s; final loss {record['epoch_loss'][-1]:.3f}")
    print("\n".join(show(k) for k in keys))

    def both(suite: str, metric: str, group: str | None = None):
        return base[(suite, metric, group)], ft[(suite, metric, group)]

    # Canary exposure: memorised canaries rank first; untouched ones land where chance puts them.
    b, f = both("canary_exposure", "exposure")
    top = f.extra["log2_space"]
    assert f.value > b.value and f.ci_low > b.ci_high
    assert both("canary_exposure", "exposed_share")[1].value == 1.0
    assert both("canary_exposure", "exposed_share")[0].value == 0.0
    assert b.value < top / 2 < f.value

    # Extraction: the fine-tuned model emits training PII that the untouched one does not.
    b, f = both("training_data_leakage", "extraction_recall")
    assert f.value > b.value and f.ci_low > b.value
    assert (
        both("training_data_leakage", "extraction_precision")[1].value
        > both("training_data_leakage", "extraction_precision")[0].value
    )

    # Reconstruction and inference: far above the untouched model, which sits at chance.
    for metric in ("reconstruction_accuracy", "inference_accuracy"):
        b, f = both("training_data_leakage", metric)
        assert f.ci_low > b.ci_high, metric
        assert b.ci_low <= b.extra["chance"] + 0.1

    # Membership inference: members are told apart from held-out notes of the same generator.
    for signal in ("loss", "zlib", "min_k"):
        b, f = both("membership_inference", f"{signal}_auc")
        assert f.value > 0.5 and f.ci_low > 0.5, signal
        assert f.value > b.value, signal
    assert not math.isnan(ft[("membership_inference", "loss_tpr_at_1pct_fpr", None)].value)
    assert ft[("training_data_leakage", "extraction_recall", None)].extra["draws"] == EXTRACTION_DRAWS
