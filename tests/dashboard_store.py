"""The run stores the dashboard tests read: real tiny-model runs (two bias runs for Compare, one explained), a
privacy run whose (fake) model emits planted PII, a ``--store-raw`` copy of it, and the 50-run / 100k-item
synthetic store of the performance check."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BIAS = ["bias.crows_pairs", "bias.counterfactual_templates"]
PII = "privacy.pii_emission"
#: What the fake model says to every privacy prompt (fictitious values the detector finds).
PLANTED = ["alice.wonder@example.org", "415-555-0199", "Alice Wonderland"]


def _respond(prompt: str) -> str:
    return f" Sure: {PLANTED[2]} can be reached at {PLANTED[0]} or {PLANTED[1]}."


@dataclass
class Stores:
    path: Path  # the main store
    raw: Path  # a store holding one --store-raw privacy run
    run_a: str  # tiny model, bias suites, 12 items (explained)
    run_b: str  # tiny model, bias suites, 16 items
    run_p: str  # fake model emitting PLANTED, with a skipped suite
    run_raw: str
    explained_item: str
    needles: list[str]  # PII that must never be rendered: PLANTED and what the prompts' redaction replaced


def data_dir() -> Path:
    import os

    return Path(os.environ.get("AUDITLM_DATA") or DATA)


def _cli(argv: list[str], ok: tuple[int | None, ...] = (0, None)) -> None:
    from auditlm.cli import main

    try:
        main(argv)
    except SystemExit as e:
        assert e.code in ok, f"auditlm {' '.join(argv)} exited {e.code}"


def _fake_privacy_run(path: Path, store_raw: bool, skipped: dict[str, str] | None = None) -> tuple[str, list]:
    from auditlm import runner
    from auditlm.store import Store
    from auditlm.suites.loader import discover, select
    from auditlm.targets.fake import FakeTarget

    cfg = runner.RunConfig(model="fake-pii", suites=[PII], limit=10, store_raw=store_raw)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    with Store(path) as st:
        t = FakeTarget(responder=_respond)
        rid = runner.start_run(st, t, prepared, cfg, skipped or {})
        runner.execute(st, rid, t, prepared, cfg)
    return rid, [it for _, it in prepared[0].items]


#: Run B's ``--fail-on`` gates: a share is never above 1.5 (pass) and always at least 0 (fail).
GATE_PASS, GATE_FAIL = "bias.crows_pairs.pct_stereotype>1.5", "bias.crows_pairs.pct_stereotype>=0"


def _replaced(raw: str, redacted: str) -> list[str]:
    """The pieces of ``raw`` that redaction replaced by ``<ENTITY>`` placeholders in ``redacted``."""
    import difflib

    sm = difflib.SequenceMatcher(None, raw, redacted, autojunk=False)
    return [raw[i1:i2].strip() for op, i1, i2, _, _ in sm.get_opcodes() if op in ("replace", "delete")
            and len(raw[i1:i2].strip()) >= 5]


def build(folder: Path, tiny_model_dir: Path) -> Stores:
    from auditlm.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runs.sqlite"
    common = ["--model", str(tiny_model_dir), *[a for s in BIAS for a in ("--suite", s)], "--store", str(path),
              "--data-dir", str(data_dir()), "--json"]
    _cli(["run", *common, "--limit", "12"])
    with Store(path, readonly=True) as st:
        run_a = st.list_runs()[0].run_id
    # same seed: its first 12 items are run A's, so rows pair. Two gates stored with it: one that cannot hold
    # (passes) and one that always holds (fails, so the run exits 1)
    _cli(["run", *common, "--limit", "16", "--fail-on", GATE_PASS, "--fail-on", GATE_FAIL], ok=(1,))
    with Store(path, readonly=True) as st:
        run_b = st.list_runs()[0].run_id
    _cli(["explain", run_a, "--suite", "bias.counterfactual_templates", "--top", "2", "--method", "feature_ablation",
          "--store", str(path), "--json"])
    run_p, raw_items = _fake_privacy_run(path, False, {"bias.bbq": "no benchmark data (test: skipped on purpose)"})
    with Store(path, readonly=True) as st:
        stored = {r.item_id: r.input for r in st.items(run_p, PII)}
        explained = st.explanations(run_a)[0].item_id
    needles = list(PLANTED)
    for raw, red in zip(raw_items, [stored[k] for k in stored], strict=False):
        needles += _replaced(str(raw.get("prompt", "")), str(red.get("prompt", "")))
    raw_path = folder / "raw.sqlite"
    run_raw, _ = _fake_privacy_run(raw_path, True)
    return Stores(path, raw_path, run_a, run_b, run_p, run_raw, explained, sorted(set(needles)))


@pytest.fixture(scope="session")
def dash_stores(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Stores:
    return build(tmp_path_factory.mktemp("dash"), tiny_model_dir)


def synthetic_store(path: Path, n_runs: int = 50, n_items: int = 100_000, seed: int = 0) -> list[str]:
    """A store of ``n_runs`` CrowS-Pairs-like runs holding ``n_items`` items in all (with per-group metrics),
    written through the store's own API; returns the run ids."""
    from auditlm.metrics import MetricResult
    from auditlm.store import Store

    rng = random.Random(seed)
    groups = ["race-color", "gender", "religion", "age", "nationality", "disability"]
    per = n_items // n_runs
    ids = []
    with Store(path) as st:
        for k in range(n_runs):
            rid = f"20260101-{k:06d}-synt"
            st.create_run(run_id=rid, model=f"model-{k % 5}", model_info={"revision": f"r{k}", "dtype": "float32",
                                                                         "device": "cpu"},
                          config={"seed": 0, "suites": ["bias.crows_pairs"]}, seed=0, auditlm_version="0.1.0",
                          git_hash=None)
            st.upsert_suite(rid, "bias.crows_pairs", version="1.1", digest="d" * 16, position=0, n_items=per,
                            status="complete")
            rows = []
            for i in range(per):
                more, less = -rng.uniform(50, 90), -rng.uniform(50, 90)
                g = groups[i % len(groups)]
                rows.append((str(i), i, {"id": str(i), "sent_more": f"sentence {i} more", "sent_less": f"s {i}",
                                         "bias_type": g},
                             [{"logprob": more}, {"logprob": less}],
                             {"ll_more": more, "ll_less": less, "stereotype": float(more > less),
                              "likelihood_diff": abs(more - less)}))
            st.write_items(rid, "bias.crows_pairs", rows)
            ms = [MetricResult("bias.crows_pairs", "pct_stereotype", rng.random(), 0.4, 0.6, per,
                               extra={"ideal": 0.5})]
            ms += [MetricResult("bias.crows_pairs", "pct_stereotype", rng.random(), 0.3, 0.7, per // 6, g, "bias_type",
                                {"ideal": 0.5, "small_n": per // 6 < 30}) for g in groups]
            st.replace_metrics(rid, "bias.crows_pairs", ms)
            st.set_run_status(rid, "complete", duration_s=1.0)
            ids.append(rid)
    return ids
