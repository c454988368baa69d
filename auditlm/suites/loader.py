"""Suite discovery: every ``*.yaml`` under the built-in ``probes/`` and any extra probe directories.

There is one registration point — the files themselves (DESIGN rule 2). Extra directories come from
``--probes DIR`` and the ``AUDITLM_PROBES`` environment variable (``os.pathsep``-separated) and are
validated exactly like the built-in ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from auditlm.errors import SuiteSpecError, choices
from auditlm.suites.provenance import SUITE_SOURCE, DataRecord
from auditlm.suites.spec import SuiteSpec


@dataclass(frozen=True)
class LoadedSuite:
    """A validated suite and where it came from; ``digest`` is the first 16 hex digits of ``sha256``, the
    sha256 of the file's bytes (``size`` of them)."""

    spec: SuiteSpec
    path: Path
    digest: str
    sha256: str | None = None
    size: int | None = None

    def record(self) -> DataRecord:
        """The probe file as a :class:`DataRecord` (hashed now when this suite was not loaded from it)."""
        if self.sha256 is None or self.size is None:
            raw = self.path.read_bytes() if self.path.is_file() else b""
            return DataRecord(SUITE_SOURCE, str(self.path), len(raw), hashlib.sha256(raw).hexdigest())
        return DataRecord(SUITE_SOURCE, str(self.path), self.size, self.sha256)


def builtin_probes_dir() -> Path:
    """The probe directory shipped with auditlm (the repo's ``probes/``, or its copy inside the wheel)."""
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg.parent / "probes", pkg / "_probes"):
        if cand.is_dir():
            return cand
    raise SuiteSpecError(
        f"auditlm's built-in probes directory is missing (looked in {pkg.parent / 'probes'})"
    )


def probe_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """Built-in directory first, then ``AUDITLM_PROBES`` entries, then ``extra``; each must exist."""
    dirs = [builtin_probes_dir()]
    env = os.environ.get("AUDITLM_PROBES", "")
    for raw in [*(p for p in env.split(os.pathsep) if p), *(extra or [])]:
        p = Path(raw).expanduser()
        if not p.is_dir():
            raise SuiteSpecError(f"probe directory '{raw}' does not exist")
        dirs.append(p)
    return dirs


def load_file(path: Path) -> LoadedSuite:
    """Parse and validate one probe file; every problem becomes a one-line :class:`SuiteSpecError`."""
    from auditlm.scorers import scorer_kinds

    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SuiteSpecError(f"malformed probe file {path}:{where}: {problem}") from e
    if not isinstance(data, dict):
        raise SuiteSpecError(f"malformed probe file {path}: expected a mapping at the top level")
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise SuiteSpecError(f"invalid probe file {path}: {loc}: {err['msg']}{more}") from e
    kinds = scorer_kinds()
    if spec.kind not in kinds:
        raise SuiteSpecError(
            f"invalid probe file {path}: unknown kind '{spec.kind}' (valid: {choices(kinds)})"
        )
    sha = hashlib.sha256(raw).hexdigest()
    return LoadedSuite(spec, path, sha[:16], sha, len(raw))


def discover(extra: list[str | Path] | None = None) -> dict[str, LoadedSuite]:
    """All suites by id. Two files declaring the same id is an error."""
    found: dict[str, LoadedSuite] = {}
    for d in probe_dirs(extra):
        for path in sorted(d.rglob("*.yaml")):
            suite = load_file(path)
            if suite.spec.id in found:
                raise SuiteSpecError(
                    f"suite id '{suite.spec.id}' is declared twice: {found[suite.spec.id].path} and {path}"
                )
            found[suite.spec.id] = suite
    return found


def select(available: dict[str, LoadedSuite], ids: list[str]) -> list[LoadedSuite]:
    """The suites named by ``ids`` (exact ids, or a family prefix such as ``bias``), in the order given."""
    out: list[LoadedSuite] = []
    for sid in ids:
        if sid in available:
            matches = [available[sid]]
        else:
            matches = [s for k, s in sorted(available.items()) if k.startswith(sid + ".")]
        if not matches:
            raise SuiteSpecError(f"unknown suite '{sid}' (valid: {choices(available)})")
        out.extend(m for m in matches if m not in out)
    return out
