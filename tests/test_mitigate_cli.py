"""``auditlm mitigate cda|finetune|self-debias`` and ``auditlm run --where`` on the tiny random-weight model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

CORPUS = [
    "He said his sister would visit him in the spring.",
    "The weather was cold and the river froze.",
    "She gave her brother the book that was hers.",
    "The king and the queen met the men at the gate.",
    "A farmer sold apples at the market.",
    "My father told my mother that the boys were late.",
] * 3


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return p


def test_cda_fine_tunes_and_a_later_run_records_it(tiny_model_dir, corpus, tmp_path, capsys, one_thread):
    out_dir = tmp_path / "cda"
    code, out, err = run_cli(["mitigate", "cda", "--corpus", str(corpus), "--out", str(out_dir), "--model",
                              str(tiny_model_dir), "--max-steps", "3", "--batch-size", "4", "--save-steps", "1",
                              "--lr", "1e-3", "--full"], capsys)
    assert code == 0, err
    # 4 of the 6 distinct lines have a gender term (x3 copies): 12 pairs -> 24 texts
    assert "12 of 18 sentences had a term; training on 24 texts" in out
    rec = json.loads((out_dir / "auditlm_mitigation.json").read_text())
    assert rec["method"] == "cda" and rec["augmentation"]["wordlist_version"]
    assert rec["augmentation"]["terms"]["his"] == 3 and rec["augmentation"]["texts"] == 24
    assert rec["training"]["steps"] == 3 and rec["training"]["lora"] is None
    assert (out_dir / "checkpoints" / "checkpoint-3").is_dir()
    store = tmp_path / "s.sqlite"
    code, out, err = run_cli(["run", "--model", str(out_dir), "--suite", "bias.counterfactual_templates",
                              "--limit", "4", "--store", str(store), "--json"], capsys)
    assert code == 0, err
    from auditlm.store import Store

    with Store(store, readonly=True) as st:
        info = st.get_run(json.loads(out)["run_id"]).model_info
    assert info["mitigation"]["corpus"]["sha256"] == rec["corpus"]["sha256"]
    assert info["mitigation"]["base_model"]["revision"] == rec["base_model"]["revision"]


def test_cda_audit_compares_base_and_new_model(tiny_model_dir, corpus, tmp_path, capsys, one_thread):
    store = tmp_path / "s.sqlite"
    code, out, err = run_cli(["mitigate", "cda", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--model",
                              str(tiny_model_dir), "--max-steps", "2", "--batch-size", "4", "--lr", "1e-3",
                              "--audit", "bias.counterfactual_templates", "--where", "axis=gender",
                              "--limit", "6", "--store", str(store)], capsys)
    assert code == 0, err
    assert "(base) →" in out and "(mitigated)" in out and "bias.counterfactual_templates" in out
    from auditlm.store import Store

    with Store(store, readonly=True) as st:
        runs = st.list_runs()
    assert len(runs) == 2
    for r in runs:
        assert r.config["where"] == {"axis": ["gender"]}


@pytest.mark.parametrize(("argv", "needle"), [
    (["--axis", "caste"], "gender"),
    (["--swap", "male,robot"], "--swap"),
    (["--names", "maybe"], "keep, protect, swap"),
    (["--audit", "bias.nope"], "bias.crows_pairs"),
    (["--lr", "0"], "lr 0.0 (valid: > 0)"),
    (["--hidden-dropout", "1.2"], "hidden_dropout 1.2"),
])
def test_cda_bad_input_is_one_line_exit_2_before_training(tiny_model_dir, corpus, tmp_path, capsys, argv, needle):
    out_dir = tmp_path / "never"
    code, out, err = run_cli(["mitigate", "cda", "--corpus", str(corpus), "--out", str(out_dir), "--model",
                              str(tiny_model_dir), *argv], capsys)
    assert code == 2, (out, err)
    assert needle in err and "Traceback" not in err
    assert not out_dir.exists()


def test_cda_refuses_a_corpus_without_terms_and_a_missing_file(tiny_model_dir, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("The river froze.\nApples were sold.\n", encoding="utf-8")
    code, _, err = run_cli(["mitigate", "cda", "--corpus", str(plain), "--out", str(tmp_path / "x"), "--model",
                            str(tiny_model_dir)], capsys)
    assert code == 2 and "no sentence of the corpus has a gender term" in err
    code, _, err = run_cli(["mitigate", "cda", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "x"),
                            "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and "does not exist" in err


def test_finetune_resume_continues_from_the_checkpoint(tiny_model_dir, corpus, tmp_path, capsys, one_thread):
    out_dir = tmp_path / "ft"
    args = ["mitigate", "finetune", "--corpus", str(corpus), "--out", str(out_dir), "--model", str(tiny_model_dir),
            "--max-steps", "4", "--batch-size", "4", "--save-steps", "2", "--full", "--lr", "1e-3"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err and "steps 4" in out
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "already holds a fine-tuned model" in err
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert "resumed from checkpoint-4" in out


def test_run_where_filters_items_and_bad_where_is_exit_2(tiny_model_dir, tmp_path, capsys, one_thread):
    store = tmp_path / "s.sqlite"
    base = ["run", "--model", str(tiny_model_dir), "--suite", "bias.counterfactual_templates", "--store", str(store)]
    code, _, err = run_cli([*base, "--where", "colour=red"], capsys)
    assert code == 2 and "no suite of this run has a group field 'colour' (valid: axis)" in err
    code, _, err = run_cli([*base, "--where", "axis=gendr"], capsys)
    assert code == 2 and "(valid axis values: age, disability, gender," in err
    code, _, err = run_cli([*base, "--where", "axis"], capsys)
    assert code == 2 and "FIELD=VALUE" in err
    assert not store.exists()  # nothing stored for bad input
    code, out, err = run_cli([*base, "--where", "axis=gender,religion", "--limit", "10", "--json"], capsys)
    assert code == 0, err
    from auditlm.store import Store

    with Store(store, readonly=True) as st:
        items = st.items(json.loads(out)["run_id"], "bias.counterfactual_templates")
    assert len(items) == 10
    assert {it.input["axis"] for it in items} == {"gender", "religion"}


def test_a_bracketed_model_spec_prints_as_given(tiny_model_dir, tmp_path, capsys, one_thread):
    # rich markup once swallowed "[gender]" from "self-debias[gender]:MODEL" in the progress and table titles
    spec = f"self-debias[gender]:{tiny_model_dir}"
    code, out, err = run_cli(["run", "--model", spec, "--suite", "bias.counterfactual_templates", "--limit", "2",
                              "--store", str(tmp_path / "s.sqlite")], capsys)
    assert code == 0, err
    assert f"model {spec} loaded" in err and f"· {spec}" in out


def test_cda_runs_under_accelerate_launch_with_two_cpu_processes(tiny_model_dir, corpus, tmp_path):
    """The same command under `accelerate launch --multi_gpu --num_processes 2` (DDP over gloo on a machine
    without GPUs): both processes train, rank 0 saves and reports once."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("accelerate")
    if exe is None:  # pragma: no cover - accelerate is a dependency of peft and transformers' Trainer
        pytest.skip("accelerate is not installed")
    out_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "auditlm", "mitigate", "cda",
         "--corpus", str(corpus), "--out", str(out_dir), "--model", str(tiny_model_dir), "--max-steps", "3",
         "--batch-size", "2", "--full", "--lr", "1e-3"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("sentences had a term") == 1 and proc.stdout.count("fine-tuned model:") == 1
    rec = json.loads((out_dir / "auditlm_mitigation.json").read_text())
    assert rec["training"]["world_size"] == 2 and rec["training"]["steps"] == 3


def test_finetune_dp_records_the_epsilon_spent(tiny_model_dir, corpus, tmp_path, capsys, one_thread):
    out_dir = tmp_path / "dp"
    code, out, err = run_cli(["mitigate", "finetune", "--corpus", str(corpus), "--out", str(out_dir), "--model",
                              str(tiny_model_dir), "--dp", "--target-epsilon", "4", "--epochs", "1",
                              "--batch-size", "4", "--lr", "1e-3", "--full"], capsys)
    assert code == 0, err
    rec = json.loads((out_dir / "auditlm_mitigation.json").read_text())
    assert rec["method"] == "dp-finetune" and 0 < rec["privacy"]["epsilon"] <= 4
    assert f"ε spent {rec['privacy']['epsilon']:.3f} (target 4.0)" in out
    code, _, err = run_cli(["mitigate", "finetune", "--corpus", str(corpus), "--out", str(out_dir), "--model",
                            str(tiny_model_dir), "--dp", "--target-epsilon", "0"], capsys)
    assert code == 2 and "valid: ε > 0" in err
    code, _, err = run_cli(["mitigate", "finetune", "--corpus", str(corpus), "--out", str(out_dir), "--model",
                            str(tiny_model_dir), "--dp", "--resume"], capsys)
    assert code == 2 and "--resume is not available with --dp" in err
