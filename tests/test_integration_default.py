"""Integration tests on the real default model (SmolLM2-135M-Instruct, pulled once from PyPI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditlm.cli import main
from auditlm.store import Store

pytestmark = pytest.mark.integration
DATA = os.environ.get("AUDITLM_DATA")


@pytest.fixture(scope="module")
def default_target():
    from auditlm.targets.registry import resolve

    return resolve(None)


def _cli_json(argv: list[str], capsys) -> dict:
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not DATA, reason="needs AUDITLM_DATA")
def test_crows_pairs_matches_lm_eval_definition(tmp_path: Path, capsys, default_target):
    """The stored metrics equal an independent re-implementation of lm-evaluation-harness's
    crows_pairs_english formula over the stored per-sentence log-likelihoods, and those log-likelihoods
    equal a plain unbatched forward pass of the model (BOS-conditioned, as lm-eval does)."""
    import torch

    store = tmp_path / "runs.sqlite"
    summary = _cli_json(["run", "--suite", "bias.crows_pairs", "--store", str(store), "--limit", "300"], capsys)
    with Store(store) as st:
        items = st.items(summary["run_id"], "bias.crows_pairs")
    assert len(items) == 300
    rows = pd.DataFrame(
        {
            "bias_type": [r.input["bias_type"] for r in items],
            "ll_more": [r.output[0]["logprob"] for r in items],
            "ll_less": [r.output[1]["logprob"] for r in items],
        }
    )
    # lm-eval utils.process_results: acc = 1.0 if ll1 > ll2 else 0.0; diff = abs(ll1 - ll2); both averaged.
    rows["pct"] = np.where(rows.ll_more > rows.ll_less, 1.0, 0.0)
    rows["diff"] = (rows.ll_more - rows.ll_less).abs()
    got = {(m["metric"], m["group"]): m for m in summary["metrics"]}
    assert got[("pct_stereotype", None)]["value"] == pytest.approx(rows.pct.mean(), abs=1e-12)
    assert got[("likelihood_diff", None)]["value"] == pytest.approx(rows["diff"].mean(), rel=1e-9)
    assert got[("pct_stereotype", None)]["n"] == 300
    for bt, g in rows.groupby("bias_type"):
        assert got[("pct_stereotype", bt)]["value"] == pytest.approx(g.pct.mean(), abs=1e-12)
        assert got[("pct_stereotype", bt)]["n"] == len(g)
    # The stored log-likelihoods are the model's: recompute five sentences one at a time.
    tok, model = default_target.tokenizer, default_target.model
    for r in items[:5]:
        for k, sent in enumerate((r.input["sent_more"], r.input["sent_less"])):
            ids = [tok.bos_token_id, *tok(sent, add_special_tokens=False).input_ids]
            with torch.inference_mode():
                logits = model(torch.tensor([ids])).logits[0].float()
            lp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
            assert r.output[k]["logprob"] == pytest.approx(lp, abs=1e-3)


def test_default_audit_offline_suites(tmp_path: Path, capsys, monkeypatch):
    """`auditlm run` with no model flag audits the default model and stores a complete run."""
    monkeypatch.delenv("AUDITLM_DATA", raising=False)
    store = tmp_path / "runs.sqlite"
    summary = _cli_json(["run", "--store", str(store), "--limit", "24"], capsys)
    assert summary["schema"] == "auditlm.run/1"
    assert summary["model"] == "smollm2-135m-instruct"
    assert summary["status"] == "complete"
    assert summary["model_info"]["revision"].startswith("b179c952")
    ids = {s["id"]: s["status"] for s in summary["suites"]}
    assert ids == {"bias.counterfactual_templates": "complete", "privacy.pii_emission": "complete",
                   "privacy.pii_detector": "complete", "bias.crows_pairs": "skipped"}
    for m in summary["metrics"]:
        if m["value"] is None or m["ci_low"] is None:  # undefined (0/0) rows carry the reason
            assert m["extra"].get("note"), m
            continue
        assert m["n"] > 0 and m["ci_low"] <= m["value"] <= m["ci_high"]
        if m["metric"] in ("emission_rate", "copy_rate"):
            assert 0.0 <= m["value"] <= 1.0
    # copied-from-prompt PII is told apart from produced PII: prompts that contain PII get copies back
    with Store(store) as st:
        items = st.items(summary["run_id"], "privacy.pii_emission")
    assert items and all(r.output["redacted"] for r in items)
    for r in items:
        for f in r.output["findings"]:
            assert "value" not in f and len(f["hash"]) == 16
    # gates: exit 1 when a gate fails, 0 when it passes
    with pytest.raises(SystemExit) as e:
        main(["run", "--store", str(store), "--limit", "6", "--suite", "bias.counterfactual_templates",
              "--fail-on", "bias.counterfactual_templates.negativity_spread>=0"])
    assert e.value.code == 1
    capsys.readouterr()
    main(["run", "--store", str(store), "--limit", "6", "--suite", "bias.counterfactual_templates",
          "--fail-on", "bias.counterfactual_templates.negativity_spread>1000"])
    assert "pass" in capsys.readouterr().out
    with Store(store) as st:
        assert len(st.list_runs()) == 3
