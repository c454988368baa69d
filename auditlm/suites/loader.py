"""Suite discovery: every ``*.yaml`` under the built-in ``probes/`` and any extra probe directories.

There is one registration point — the files themselves (DESIGN rule 2). Extra directories come from
``--probes DIR`` and the ``AUDITLM_PROBES`` environment variable (``os.pathsep``-separated) and are
validated exactly like the built-in ones.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from auditlm.errors import SuiteSpecError, choices
from auditlm.suites.provenance import SUITE_SOURCE, DataRecord
from auditlm.suites.spec import SuiteSpec

#: A probe file larger than this is refused before it is read (the largest built-in one is ~30 kB).
MAX_PROBE_BYTES = 5 * 1024 * 1024
#: YAML nodes (scalars, lists, mappings) one probe file may hold, as written.
MAX_YAML_NODES = 100_000
#: Nodes a probe file may hold once every alias (``*name``) is expanded in place: bounds "billion laughs"
#: files, whose few written nodes expand exponentially, before anything expands them.
MAX_YAML_EXPANDED = 1_000_000
#: How deeply lists and mappings may nest.
MAX_YAML_DEPTH = 64


class _YamlLimit(Exception):
    """A probe file breaks a limit of :class:`_LimitedComposer` (the message says which, and where)."""


class _LimitedComposer(Composer):
    """PyYAML's composer with limits, checked while the node graph is built (before anything is constructed):
    written nodes (:data:`MAX_YAML_NODES`), nodes after alias expansion (:data:`MAX_YAML_EXPANDED`), nesting depth
    (:data:`MAX_YAML_DEPTH`), duplicate keys in a mapping, and no alias inside the collection it names (a
    recursive anchor such as ``&x [1, *x]``, which has no finite value)."""

    def __init__(self) -> None:
        super().__init__()
        self._n_nodes = 0
        self._depth = 0
        self._open: list[str | None] = []  # anchors of the collections being composed, outermost first
        self._weight: dict[int, int] = {}  # id(collection node) -> its size with aliases expanded

    def _size(self, node: Node) -> int:
        return self._weight.get(id(node), 1)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        line = lambda ev: ev.start_mark.line + 1 if ev.start_mark is not None else "?"  # noqa: E731
        if self.check_event(AliasEvent):
            ev = self.peek_event()
            if ev.anchor in self._open:
                raise _YamlLimit(f"line {line(ev)}: alias *{ev.anchor} refers to the collection that contains it "
                                 "(a recursive anchor has no finite value)")
            return super().compose_node(parent, index)
        ev = self.peek_event()
        self._n_nodes += 1
        if self._n_nodes > MAX_YAML_NODES:
            raise _YamlLimit(f"line {line(ev)}: more than {MAX_YAML_NODES:,} YAML nodes")
        collection = isinstance(ev, SequenceStartEvent | MappingStartEvent)
        if not collection:
            return super().compose_node(parent, index)
        if self._depth >= MAX_YAML_DEPTH:
            raise _YamlLimit(f"line {line(ev)}: lists/mappings nested more than {MAX_YAML_DEPTH} deep")
        self._depth += 1
        self._open.append(ev.anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.pop()
        if isinstance(node, SequenceNode):
            size = 1 + sum(self._size(c) for c in node.value)
        else:
            size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            seen: set[str] = set()
            for k, _ in node.value:
                if isinstance(k, ScalarNode) and k.value != "<<":
                    if k.value in seen:
                        raise _YamlLimit(f"line {line(k)}: key '{k.value}' appears twice in one mapping")
                    seen.add(k.value)
        if size > MAX_YAML_EXPANDED:
            raise _YamlLimit(f"line {line(ev)}: expands to more than {MAX_YAML_EXPANDED:,} YAML nodes through "
                             "aliases (*name)")
        self._weight[id(node)] = size
        return node


class _CheckedConstructor(SafeConstructor):
    """PyYAML's safe constructor, with a scalar it cannot build (``!!int abc``, the timestamp ``2024-13-45``, an
    integer of more than 4300 digits) reported as a :class:`_YamlLimit` naming its line instead of a raw error."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            line = node.start_mark.line + 1 if node.start_mark is not None else "?"
            tag = node.tag.rpartition(":")[2]
            text = str(node.value) if isinstance(node, ScalarNode) else ""
            value = f" {text if len(text) <= 40 else text[:40] + '…'!r}" if text else ""
            raise _YamlLimit(f"line {line}: cannot read{value} as {tag} ({' '.join(str(e).split())[:120]})") from None


class _PyProbeLoader(Reader, Scanner, Parser, _LimitedComposer, _CheckedConstructor, Resolver):
    """Safe YAML loading with the limits of :class:`_LimitedComposer`, on PyYAML's pure-Python parser."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _LimitedComposer.__init__(self)
        _CheckedConstructor.__init__(self)
        Resolver.__init__(self)


_ProbeLoader: type = _PyProbeLoader
try:  # libyaml's parser (fast) under the limited composer, where PyYAML was built with it
    from yaml._yaml import CParser as _Parser

    class _CProbeLoader(_LimitedComposer, _Parser, _CheckedConstructor, Resolver):  # type: ignore[misc, valid-type]
        """Safe YAML loading with the limits of :class:`_LimitedComposer`, on libyaml's parser."""

        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _LimitedComposer.__init__(self)
            _CheckedConstructor.__init__(self)
            Resolver.__init__(self)

    _ProbeLoader = _CProbeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass


def os_problem(e: OSError) -> str:
    """What an OS error says about a path, in a few words."""
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a file"
    if e.errno == errno.ELOOP:
        return "is a symlink loop"
    return (e.strerror or str(e)).lower()


def read_probe_bytes(path: Path) -> bytes:
    """The bytes of a probe file, refused (one-line :class:`SuiteSpecError`) when it is not a readable regular
    file or is larger than :data:`MAX_PROBE_BYTES` (checked before reading)."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise SuiteSpecError(f"probe path {path} is a directory, not a probe file (rename it: every *.yaml "
                                 "under a probe directory must be a file)")
        if not stat.S_ISREG(st.st_mode):
            raise SuiteSpecError(f"probe path {path} is not a regular file")
        if st.st_size > MAX_PROBE_BYTES:
            raise SuiteSpecError(f"probe file {path} is {st.st_size:,} bytes, over the limit of "
                                 f"{MAX_PROBE_BYTES:,} bytes for a probe file (put large data in a data file)")
        with path.open("rb") as f:
            raw = f.read(MAX_PROBE_BYTES + 1)
    except FileNotFoundError as e:
        what = "is a broken symlink" if path.is_symlink() else "does not exist"
        raise SuiteSpecError(f"probe file {path} {what}") from e
    except OSError as e:
        raise SuiteSpecError(f"cannot read probe file {path}: {os_problem(e)}") from e
    if len(raw) > MAX_PROBE_BYTES:
        raise SuiteSpecError(f"probe file {path} is over the limit of {MAX_PROBE_BYTES:,} bytes for a probe file")
    return raw


def parse_probe_yaml(raw: bytes, path: Path, *, loader: type | None = None) -> Any:
    """A probe file's YAML, safely and within the limits of :class:`_LimitedComposer` (UTF-8 text only);
    ``loader`` replaces the default (libyaml-backed where available) loader class."""
    if b"\x00" in raw:
        raise SuiteSpecError(f"probe file {path} is a binary file (it holds NUL bytes), not YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SuiteSpecError(f"probe file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                             f"{e.start})") from e
    loader = (loader or _ProbeLoader)(text)
    try:
        return loader.get_single_data()
    except _YamlLimit as e:
        raise SuiteSpecError(f"probe file {path} refused: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SuiteSpecError(f"malformed probe file {path}:{where}: {problem}") from e
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise SuiteSpecError(f"probe file {path} refused: nested too deeply") from None
    finally:
        loader.dispose()


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
        try:
            st = p.stat()
        except FileNotFoundError:
            what = "is a broken symlink" if p.is_symlink() else "does not exist"
            raise SuiteSpecError(f"probe directory '{raw}' {what}") from None
        except OSError as e:
            raise SuiteSpecError(f"probe directory '{raw}': {os_problem(e)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SuiteSpecError(f"probe directory '{raw}' is a file, not a directory (pass the directory that "
                                 "holds the probe files)")
        dirs.append(p)
    return dirs


def probe_files(root: Path) -> list[Path]:
    """Every ``*.yaml`` under ``root``, in sorted order, following symlinks; a symlink loop, a broken symlink
    named ``*.yaml``, a directory named ``*.yaml`` or a directory that cannot be listed is a one-line
    :class:`SuiteSpecError` naming the path."""
    found: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}

    def walk(d: Path) -> None:
        try:
            st = d.stat()
        except OSError as e:
            raise SuiteSpecError(f"probe directory {d}: {os_problem(e)}") from None
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise SuiteSpecError(f"symlink loop in the probe directory: {d} leads back to {seen[key]}")
        seen[key] = d
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise SuiteSpecError(f"cannot list probe directory {d}: {os_problem(e)}") from None
        for entry in entries:
            p = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError as e:
                problem = os_problem(e)
                raise SuiteSpecError(f"probe path {p} {problem}" if e.errno == errno.ELOOP else
                                     f"probe path {p}: {problem}") from None
            if entry.is_symlink() and not is_dir:
                try:
                    p.stat()
                except OSError as e:
                    if e.errno == errno.ELOOP:
                        raise SuiteSpecError(f"probe path {p} is a symlink loop") from None
                    if entry.name.endswith(".yaml"):
                        raise SuiteSpecError(f"probe file {p} is a broken symlink") from None
                    continue
            if entry.name.endswith(".yaml"):
                if is_dir:
                    raise SuiteSpecError(f"probe path {p} is a directory, not a probe file (every *.yaml under "
                                         "a probe directory must be a file)")
                found.append(p)
            elif is_dir:
                walk(p)
        del seen[key]

    walk(root)
    return found


def load_file(path: Path) -> LoadedSuite:
    """Parse and validate one probe file; every problem becomes a one-line :class:`SuiteSpecError`."""
    from auditlm.scorers import scorer_kinds

    raw = read_probe_bytes(path)
    data = parse_probe_yaml(raw, path)
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
        for path in probe_files(d):
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
