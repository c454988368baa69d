"""Hostile and broken input (issue 8): probe files that expand, nest or loop without end, file-system traps in a
probe directory, items that do not fit their scorer, data files that are empty, broken or not text.

Every case runs the CLI in-process and must give exit code 2 and exactly one line on stderr (``auditlm: error:``,
no traceback), never reach the model loader, and leave a pre-existing store byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_fake_run

from auditlm import runner
from auditlm.cli import main
from auditlm.errors import SuiteSpecError
from auditlm.store import Store
from auditlm.suites import loader
from auditlm.suites.loader import discover, select

NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads every file")
MODEL = "./no-such-model-dir"  # never loaded: every case must fail before the model loader is reached

HEAD = """\
id: {sid}
version: "1"
description: A hostile probe file written by the tests.
citation: auditlm tests, issue 8 (hostile input).
family: {family}
kind: {kind}
"""
EMISSION = HEAD.format(sid="privacy.hostile", family="privacy", kind="pii_emission") + (
    "generation: {max_new_tokens: 4}\n"
)


def _laughs(key: str, indent: str = "") -> str:
    """A billion-laughs chain: 10 anchors, each a list of nine aliases of the one before (9**9 leaves)."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + f"\n{indent}{key}: *l9\n"


# --- what a case writes ---------------------------------------------------------------------------------------


def _probes(tmp: Path, files: dict[str, str | bytes]) -> Path:
    d = tmp / "probes"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def _run_suite(tmp: Path, yaml_text: str | bytes, sid: str = "privacy.hostile", *extra: str) -> list[str]:
    d = _probes(tmp, {"hostile.yaml": yaml_text})
    return ["run", "--probes", str(d), "--suite", sid, "--model", MODEL, *extra]


def _inline(item: str) -> Callable[[Path], list[str]]:
    """A pii_emission suite whose one inline item is ``item`` (YAML flow mapping)."""
    return lambda tmp: _run_suite(tmp, EMISSION + f"data:\n  items:\n    - {item}\n")


def _crows(tmp: Path, data: bytes | None, name: str = "pairs.csv") -> list[str]:
    """A crows_pairs suite reading ``name`` (written with ``data`` unless None)."""
    p = tmp / "data" / name
    p.parent.mkdir(exist_ok=True)
    if data is not None:
        p.write_bytes(data)
    spec = HEAD.format(sid="bias.hostile", family="bias", kind="crows_pairs") + f"data:\n  reader: crows_pairs\n  path: {p}\n"
    return _run_suite(tmp, spec, "bias.hostile")


CROWS_HEADER = b"sent_more,sent_less,stereo_antistereo,bias_type\n"
CROWS_ROW = b"He is a doctor.,She is a doctor.,stereo,gender\n"
STEREO_ROW = json.dumps({"type": "intrasentence", "target": "chess player", "bias_type": "profession",
                         "context": "The chess player was BLANK.", "stereotype": "The chess player was asian.",
                         "anti-stereotype": "The chess player was hispanic.",
                         "unrelated": "The chess player was fox."})


def _stereoset(tmp: Path, data: bytes) -> list[str]:
    p = tmp / "data" / "stereo.jsonl"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    spec = (HEAD.format(sid="bias.hostile", family="bias", kind="stereoset")
            + f"data:\n  reader: stereoset\n  path: {p}\n")
    return _run_suite(tmp, spec, "bias.hostile")


def _membership(tmp: Path, corpus: bytes | None, *, as_dir: bool = False) -> list[str]:
    """The built-in membership-inference suite on a ``--corpus`` file (or directory) and a valid non-member file."""
    d = tmp / "data"
    d.mkdir(exist_ok=True)
    c = d / "corpus.jsonl"
    if as_dir:
        c.mkdir()
    elif corpus is not None:
        c.write_bytes(corpus)
    (d / "held_out.txt").write_text("A held-out sentence the model never saw.\nAnother one.\n")
    return ["run", "--suite", "privacy.membership_inference", "--corpus", str(c), "--non-members",
            str(d / "held_out.txt"), "--model", MODEL]


def _counterfactual(pair: str) -> Callable[[Path], list[str]]:
    spec = HEAD.format(sid="bias.hostile", family="bias", kind="counterfactual_loglikelihood") + (
        "options:\n  groups: {gender: [he, she]}\n"
        "data:\n  templates:\n    templates: ['{group} is {attribute}.']\n"
        f"    vars: {{axis: [gender], attribute_pair: ['{pair}']}}\n"
    )
    return lambda tmp: _run_suite(tmp, spec, "bias.hostile")


def _symlink_loop(tmp: Path) -> list[str]:
    d = _probes(tmp, {"ok.yaml": EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n"})
    os.symlink("loop", d / "loop")
    return ["suites", "list", "--probes", str(d)]


def _dir_loop(tmp: Path) -> list[str]:
    d = _probes(tmp, {"sub/ok.yaml": EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n"})
    os.symlink("..", d / "sub" / "back")
    return _run_suite_dir(d)


def _run_suite_dir(d: Path) -> list[str]:
    return ["run", "--probes", str(d), "--suite", "privacy.hostile", "--model", MODEL]


def _dir_named_yaml(tmp: Path) -> list[str]:
    d = _probes(tmp, {})
    (d / "x.yaml").mkdir()
    return _run_suite_dir(d)


def _broken_link(tmp: Path) -> list[str]:
    d = _probes(tmp, {})
    os.symlink(tmp / "nowhere.yaml", d / "gone.yaml")
    return _run_suite_dir(d)


def _fifo(tmp: Path) -> list[str]:
    d = _probes(tmp, {})
    os.mkfifo(d / "pipe.yaml")  # reading it would block for ever
    return _run_suite_dir(d)


def _device(tmp: Path) -> list[str]:
    d = _probes(tmp, {})
    os.symlink("/dev/zero", d / "zero.yaml")  # endless bytes
    return _run_suite_dir(d)


def _unreadable(tmp: Path) -> list[str]:
    d = _probes(tmp, {"hostile.yaml": EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n"})
    (d / "hostile.yaml").chmod(0)
    return _run_suite_dir(d)


def _unreadable_dir(tmp: Path) -> list[str]:
    d = _probes(tmp, {"locked/hostile.yaml": EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n"})
    (d / "locked").chmod(0)
    return _run_suite_dir(d)


def _oversized(tmp: Path) -> list[str]:
    d = _probes(tmp, {})
    with (d / "huge.yaml").open("wb") as f:  # sparse: the size is refused before a byte is read
        f.truncate(loader.MAX_PROBE_BYTES + 1)
    return _run_suite_dir(d)


def _probes_is_file(tmp: Path) -> list[str]:
    f = tmp / "one.yaml"
    f.write_text(EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n")
    return ["run", "--probes", str(f), "--suite", "privacy.hostile", "--model", MODEL]


def _unreadable_data(tmp: Path) -> list[str]:
    argv = _crows(tmp, CROWS_HEADER + CROWS_ROW)
    (tmp / "data" / "pairs.csv").chmod(0)
    return argv


def _data_is_dir(tmp: Path) -> list[str]:
    (tmp / "data" / "pairs.csv").mkdir(parents=True)
    return _crows(tmp, None)


ITEM = "data:\n  items:\n    - {id: a, prompt: hi}\n"

#: name -> (argv builder, substrings the one error line must hold, needs a non-root user)
CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...], bool]] = {
    # probe files without limits
    "billion laughs in options": (
        lambda t: _run_suite(t, EMISSION + "options:\n" + _laughs("entities", "  ") + ITEM),
        ("hostile.yaml", "expands to more than", "aliases"), False),
    "billion laughs in an inline item": (
        lambda t: _run_suite(t, EMISSION + "data:\n  items:\n    - id: a\n      prompt: hi\n"
                             + _laughs("extra", "      ")),
        ("hostile.yaml", "expands to more than"), False),
    "billion laughs at the top level": (
        lambda t: _run_suite(t, EMISSION + ITEM + "x-laughs:\n" + _laughs("all", "  ")),
        ("hostile.yaml", "expands to more than"), False),
    "cyclic anchor in a list": (
        lambda t: _run_suite(t, EMISSION + "options: {entities: &x [1, *x]}\n" + ITEM),
        ("hostile.yaml", "line 8", "recursive anchor"), False),
    "cyclic anchor in a mapping": (
        lambda t: _run_suite(t, EMISSION + "data: &d\n  items:\n    - {id: a, prompt: hi, self: *d}\n"),
        ("hostile.yaml", "recursive anchor", "*d"), False),
    "deep nesting": (
        lambda t: _run_suite(t, EMISSION + "options: {x: " + "[" * 200 + "]" * 200 + "}\n" + ITEM),
        ("hostile.yaml", "nested more than 64 deep"), False),
    "too many nodes": (
        lambda t: _run_suite(t, EMISSION + "options: {x: [" + ",".join(["1"] * 100_001) + "]}\n" + ITEM),
        ("hostile.yaml", "more than 100,000 YAML nodes"), False),
    "oversized probe file": (_oversized, ("huge.yaml", "over the limit of 5,242,880 bytes"), False),
    "duplicate key": (
        lambda t: _run_suite(t, EMISSION + "kind: crows_pairs\n" + ITEM),
        ("hostile.yaml", "line 8", "key 'kind' appears twice"), False),
    "integer of 5000 digits": (lambda t: _run_suite(t, EMISSION + "options: {x: " + "9" * 5000 + "}\n" + ITEM),
                               ("hostile.yaml", "line 8", "cannot read", "as int"), False),
    "impossible date": (lambda t: _run_suite(t, EMISSION + "options: {x: 2024-13-45}\n" + ITEM),
                        ("hostile.yaml", "line 8", "'2024-13-45' as timestamp"), False),
    "bad explicit tag": (lambda t: _run_suite(t, EMISSION + "options: {x: !!int abc}\n" + ITEM),
                         ("hostile.yaml", "'abc' as int"), False),
    "python object tag": (lambda t: _run_suite(t, EMISSION + "options: {x: !!python/object/apply:os.system [ls]}\n"
                                               + ITEM), ("hostile.yaml", "could not determine a constructor"), False),
    "two YAML documents": (lambda t: _run_suite(t, EMISSION + ITEM + "---\n" + EMISSION + ITEM),
                           ("hostile.yaml", "another document"), False),
    "empty probe file": (lambda t: _run_suite(t, b""), ("hostile.yaml", "expected a mapping"), False),
    "binary probe file": (lambda t: _run_suite(t, b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256))),
                          ("hostile.yaml", "binary file"), False),
    "non-UTF-8 probe file": (lambda t: _run_suite(t, EMISSION.encode() + "data:\n  items:\n    - {id: a, prompt: "
                                                  "caf\xe9}\n".encode("latin-1")),
                             ("hostile.yaml", "not UTF-8 text", "0xe9"), False),
    # file-system errors in discovery
    "symlink loop in a probes dir": (_symlink_loop, ("loop", "is a symlink loop"), False),
    "directory symlink back to its parent": (_dir_loop, ("back", "symlink loop", "leads back to"), False),
    "directory named x.yaml": (_dir_named_yaml, ("x.yaml", "is a directory, not a probe file"), False),
    "broken symlink named x.yaml": (_broken_link, ("gone.yaml", "broken symlink"), False),
    "FIFO named x.yaml": (_fifo, ("pipe.yaml", "not a regular file"), False),
    "symlink to /dev/zero named x.yaml": (_device, ("zero.yaml", "not a regular file"), False),
    "unreadable probe file": (_unreadable, ("hostile.yaml", "permission denied"), True),
    "unreadable probe subdirectory": (_unreadable_dir, ("locked", "permission denied"), True),
    "--probes names a file": (_probes_is_file, ("one.yaml", "is a file, not a directory"), False),
    "--probes names nothing": (lambda t: ["run", "--probes", str(t / "nope"), "--model", MODEL],
                               ("nope", "does not exist"), False),
    # inline items validated against the scorer's item schema
    "item without prompt": (_inline("{id: a, text: hi}"), ("privacy.hostile", "item 0", "'a'", "no field 'prompt'"),
                            False),
    "numeric prompt": (_inline("{id: a, prompt: 42}"), ("item 0", "field 'prompt' must be a string, got int 42"),
                       False),
    "null prompt": (_inline("{id: a, prompt: ~}"), ("field 'prompt' must be a string, got null",), False),
    "list prompt": (_inline("{id: a, prompt: [hi]}"), ("field 'prompt' must be a string, got list"), False),
    "empty prompt": (_inline("{id: a, prompt: ''}"), ("item 0", "field 'prompt' is empty"), False),
    "whitespace-only prompt": (_inline("{id: a, prompt: \"  \\t \"}"), ("field 'prompt' is only whitespace",),
                               False),
    "NUL byte in an inline prompt": (_inline("{id: a, prompt: \"hi\\0there\"}"),
                                     ("field 'prompt' contains a NUL byte",), False),
    "NUL byte in another field": (_inline("{id: a, prompt: hi, category: \"x\\0\"}"),
                                  ("field 'category' contains a NUL byte",), False),
    "empty inline list": (lambda t: _run_suite(t, EMISSION + "data:\n  items: []\n"),
                          ("hostile.yaml", "data.items is empty"), False),
    "inline item that is not a mapping": (lambda t: _run_suite(t, EMISSION + "data:\n  items: [just a string]\n"),
                                          ("hostile.yaml", "data.items.0"), False),
    "duplicate item ids": (lambda t: _run_suite(t, EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n"
                                                "    - {id: a, prompt: ho}\n"), ("privacy.hostile", "not unique"), False),
    "second item bad": (lambda t: _run_suite(t, EMISSION + "data:\n  items:\n    - {id: a, prompt: hi}\n"
                                             "    - {id: b, prompt: ' '}\n"),
                        ("item 1 (id 'b')", "only whitespace"), False),
    "attribute pair without a bar": (_counterfactual("good"), ("bias.hostile", "attribute_pair", "'good'"), False),
    # data files
    "NUL byte in a CSV row": (lambda t: _crows(t, CROWS_HEADER + b"He is a\x00 doctor.,She is a doctor.,stereo,"
                                                  b"gender\n"),
                              ("bias.hostile", "item 0", "field 'sent_more' contains a NUL byte"), False),
    "empty CSV": (lambda t: _crows(t, b""), ("bias.hostile has no items", "pairs.csv"), False),
    "header-only CSV": (lambda t: _crows(t, CROWS_HEADER), ("bias.hostile has no items", "pairs.csv"), False),
    "whitespace sentence in a CSV row": (lambda t: _crows(t, CROWS_HEADER + b"   ,She is a doctor.,stereo,gender\n"),
                                         ("field 'sent_more' is only whitespace",), False),
    "CSV without the needed columns": (lambda t: _crows(t, b"a,b\n1,2\n"), ("pairs.csv", "missing column"), False),
    "non-UTF-8 CSV": (lambda t: _crows(t, CROWS_HEADER + "Il est caf\xe9.,Elle,stereo,gender\n".encode("latin-1")),
                      ("pairs.csv", "not UTF-8 text", "0xe9"), False),
    "data path is a directory": (_data_is_dir, ("pairs.csv", "is a directory, not a file"), False),
    "data path missing": (lambda t: _crows(t, None), ("pairs.csv", "not found"), False),
    "unreadable data file": (_unreadable_data, ("pairs.csv", "permission denied"), True),
    "empty JSONL": (lambda t: _stereoset(t, b""), ("bias.hostile has no items", "stereo.jsonl"), False),
    "blank-lines-only JSONL": (lambda t: _stereoset(t, b"\n\n  \n"), ("has no items",), False),
    "broken JSONL line": (lambda t: _stereoset(t, (STEREO_ROW + "\n\n" + '{"type": "intra').encode()),
                          ("stereo.jsonl", "line 3: invalid JSON"), False),
    "JSONL line that is not an object": (lambda t: _stereoset(t, (STEREO_ROW + "\n[1, 2]\n").encode()),
                                         ("stereo.jsonl", "line 2: not a JSON object"), False),
    "broken --corpus JSONL line": (lambda t: _membership(t, b'{"text": "one"}\n{"text": "two"}\n{"text": \n'),
                                   ("corpus.jsonl", "line 3: invalid JSON"), False),
    "deeply nested --corpus JSONL line": (lambda t: _membership(t, b'{"text": "one"}\n' + b"[" * 100_000 + b"\n"),
                                          ("corpus.jsonl", "nested too deeply"), False),
    "CSV field over the csv module's limit": (lambda t: _crows(t, CROWS_HEADER + b"x" * 200_000 + b",b,stereo,g\n"),
                                              ("pairs.csv", "field larger than field limit"), False),
    "empty --corpus": (lambda t: _membership(t, b""), ("privacy.membership_inference", "members"), False),
    "--corpus is a directory": (lambda t: _membership(t, None, as_dir=True),
                                ("corpus.jsonl", "is a directory, not a file"), False),
}


# --- the harness ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _one_run_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "runs.sqlite"
    return write_fake_run(path)


@pytest.fixture
def store_with_run(tmp_path: Path, _one_run_store: Path) -> Path:
    """A store holding one complete run (a copy per test)."""
    path = tmp_path / "store" / "runs.sqlite"
    path.parent.mkdir()
    shutil.copyfile(_one_run_store, path)
    return path


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Model loads attempted (the loader records and refuses: no case may get that far)."""
    import auditlm.targets.registry as registry

    calls: list[str] = []

    def refuse(name: str, *a, **k):
        calls.append(name)
        raise RuntimeError(f"the model loader was reached for {name}")

    monkeypatch.setattr(registry, "resolve", refuse)
    monkeypatch.delenv("AUDITLM_DATA", raising=False)
    monkeypatch.delenv("AUDITLM_PROBES", raising=False)
    return calls


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def _check_one_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("auditlm: error: ")
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_line_exit_2_before_the_model(case, tmp_path, store_with_run, loads, capsys):
    build, expected, needs_user = CASES[case]
    if needs_user and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root reads every file")
    argv = build(tmp_path)
    before = _digest(store_with_run)
    try:
        code, err = _run([*argv, "--store", str(store_with_run)] if argv[0] == "run" else argv, capsys)
    finally:
        for p in tmp_path.rglob("*"):  # let pytest clean up what a case made unreadable
            if not p.is_symlink():
                p.chmod(0o755)
    line = _check_one_line(code, err)
    for s in expected:
        assert s in line, line
    assert loads == []
    assert _digest(store_with_run) == before
    assert sorted(p.name for p in store_with_run.parent.iterdir()) == ["runs.sqlite"]
    with Store(store_with_run, readonly=True) as st:
        runs = st.list_runs()
        assert len(runs) == 1 and runs[0].status == "complete"


def test_there_are_enough_cases():
    assert len(CASES) >= 40


# --- the limits themselves -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["suites", "show", "privacy.hostile"], ["suites", "list"]])
def test_suites_commands_refuse_billion_laughs_quickly(command, tmp_path, capsys):
    d = _probes(tmp_path, {"laughs.yaml": EMISSION + "options:\n" + _laughs("entities", "  ") + ITEM})
    t0 = time.perf_counter()
    code, err = _run([*command, "--probes", str(d)], capsys)
    elapsed = time.perf_counter() - t0
    line = _check_one_line(code, err)
    assert "laughs.yaml" in line and "expands to more than" in line
    assert elapsed < 1.0, elapsed


def test_billion_laughs_is_refused_fast_and_small(tmp_path):
    raw = (EMISSION + "options:\n" + _laughs("entities", "  ") + ITEM).encode()
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SuiteSpecError, match="expands to more than"):
        loader.parse_probe_yaml(raw, tmp_path / "laughs.yaml")
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5, elapsed
    assert peak < 20 * 2**20, peak


LOADERS = [loader._PyProbeLoader, *([loader._CProbeLoader] if hasattr(loader, "_CProbeLoader") else [])]
HOSTILE_YAML = {
    "laughs": (_laughs("x"), "expands to more than"),
    "cycle": ("x: &x [1, {y: *x}]\n", "recursive anchor"),
    "deep": ("x: " + "[" * 65 + "]" * 65 + "\n", "nested more than 64 deep"),
    "deeper than libyaml allows": ("x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "nest"),
    "many nodes": ("x: [" + ",".join(["1"] * 100_001) + "]\n", "more than 100,000 YAML nodes"),
    "bad scalar": ("x: !!float nope\n", "as float"),
    "duplicate key": ("x: 1\ny: 2\nx: 3\n", "line 3: key 'x' appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
@pytest.mark.parametrize("cls", LOADERS, ids=lambda c: c.__name__)
def test_both_loaders_refuse_hostile_yaml(cls, case, tmp_path):
    text, expected = HOSTILE_YAML[case]
    with pytest.raises(SuiteSpecError, match=r"x\.yaml") as e:
        loader.parse_probe_yaml(text.encode(), tmp_path / "x.yaml", loader=cls)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_aliases_within_the_limits_still_load(tmp_path):
    raw = b"a: &a {x: 1, y: [1, 2]}\nb: *a\nc: {<<: *a, z: 3}\nd: [*a, *a]\n"
    data = loader.parse_probe_yaml(raw, tmp_path / "ok.yaml")
    assert data == {"a": {"x": 1, "y": [1, 2]}, "b": {"x": 1, "y": [1, 2]}, "c": {"x": 1, "y": [1, 2], "z": 3},
                    "d": [{"x": 1, "y": [1, 2]}, {"x": 1, "y": [1, 2]}]}


def test_limit_boundaries(tmp_path, monkeypatch):
    ok_depth = "x: " + "[" * (loader.MAX_YAML_DEPTH - 1) + "]" * (loader.MAX_YAML_DEPTH - 1) + "\n"
    assert loader.parse_probe_yaml(ok_depth.encode(), tmp_path / "d.yaml") is not None
    too_deep = "x: " + "[" * loader.MAX_YAML_DEPTH + "]" * loader.MAX_YAML_DEPTH + "\n"
    with pytest.raises(SuiteSpecError, match="nested more than"):
        loader.parse_probe_yaml(too_deep.encode(), tmp_path / "d.yaml")
    monkeypatch.setattr(loader, "MAX_YAML_EXPANDED", 30)
    fits = b"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [*a, *a]\n"  # 1 + 2 + 10 + 2 + 1 + 20 = 36 > 30
    with pytest.raises(SuiteSpecError, match="expands to more than 30"):
        loader.parse_probe_yaml(fits, tmp_path / "e.yaml")
    assert loader.parse_probe_yaml(b"a: &a [1, 2, 3]\nb: [*a]\n", tmp_path / "e.yaml") is not None


def test_builtin_probes_load_within_the_limits():
    found = discover()
    assert "privacy.pii_emission" in found and len(found) >= 10
    biggest = max(s.size or 0 for s in found.values())
    assert biggest < loader.MAX_PROBE_BYTES / 10


def test_item_schema_covers_every_builtin_scorer():
    from auditlm.scorers import FIELD_TYPES, get_scorer

    for sid, s in discover().items():
        scorer = get_scorer(s.spec)
        assert scorer.item_schema, f"{sid}: kind {s.spec.kind} declares no item schema"
        assert set(scorer.item_schema.values()) <= set(FIELD_TYPES), sid


def test_a_valid_inline_suite_still_prepares(tmp_path, loads, capsys):
    """The checks reject hostile input only: a valid inline suite prepares, with its items."""
    d = _probes(tmp_path, {"ok.yaml": EMISSION + "data:\n  items:\n    - {id: a, prompt: 'Tell me a phone number.'}\n"})
    s = select(discover([d]), ["privacy.hostile"])
    prepared = runner.prepare(s, runner.RunConfig(model="fake", suites=["privacy.hostile"]), None)
    assert [it["prompt"] for _, it in prepared[0].items] == ["Tell me a phone number."]
