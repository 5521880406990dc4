"""Property tests: whatever bytes or data an inventory, phase or secrets file holds, the loaders either
accept it or raise InputError naming the file and a line inside it; never another exception."""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psa_provision import loader, phases
from psa_provision.errors import InputError
from psa_provision.inventory import load_inventory
from psa_provision.loader import dump_yaml
from psa_provision.packaged import PHASES_DIR, SANDBOX_INVENTORY
from psa_provision.secrets import load_secrets

SANDBOX = yaml.safe_load((SANDBOX_INVENTORY).read_text())
PHASE0 = yaml.safe_load((PHASES_DIR / "phase0.yml").read_text())
SECRETS = {"postgresql": {"app_password": "a" * 32}, "redis": {"password": "b" * 32},
           "app": {"jwt_secret": "c" * 64, "admin_email": "admin@x.local"}}
# Fixed examples in the suite (bounded time, reproducible); PSA_PROPERTY_EXAMPLES=5000 explores at random.
EXPLORE = int(os.environ.get("PSA_PROPERTY_EXAMPLES", "0"))
RUN = settings(max_examples=EXPLORE or 80, deadline=None, derandomize=not EXPLORE,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "yes", "off", "~", "10.0.20.300/24", "vmbr20", "phase0", "a" * 300,
                     "é\u200b\U0001f600", "'\"$;\\`", "2024-13-45", "0x1F", "1e999", ".nan", "${HOME}"]),
)
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), inner,
                                                 max_size=4)), max_leaves=25)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside nested dicts and lists."""
    out = [prefix] if prefix else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        out.extend(_paths(value, (*prefix, key)))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with 1-4 random edits: delete a key, swap a value for random data, add a key, nest deeper."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["delete", "replace", "add", "nest"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(documents)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(scalars)
        elif action == "nest":
            parent[path[-1]] = {"x": [parent[path[-1]]]}
    return data


def _write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _accepts_or_refuses_well(fn: Any, path: Path, *args: Any) -> None:
    """fn(*args) returns, or raises InputError naming `path` at a line the file has."""
    try:
        fn(*args)
    except InputError as exc:
        text = str(exc)
        assert str(path) in text, text
        text_of_file = path.read_bytes().decode("utf-8", "replace")
        lines = len(text_of_file.splitlines()) + 1  # YAML also breaks lines at \r, NEL, U+2028
        for m in re.finditer(re.escape(str(path)) + r":(\d+):", text):
            assert 1 <= int(m.group(1)) <= lines, text


def _tmp(tmp_path_factory: Any) -> Path:
    return Path(tmp_path_factory.mktemp("prop"))


@RUN
@given(text=st.text(max_size=400))
def test_any_text_as_inventory(tmp_path_factory: Any, text: str) -> None:
    path = _write(_tmp(tmp_path_factory), "inv.yml", text)
    _accepts_or_refuses_well(load_inventory, path, path)


@RUN
@given(blob=st.binary(max_size=300))
def test_binary_junk_as_inventory_and_secrets(tmp_path_factory: Any, blob: bytes) -> None:
    tmp = _tmp(tmp_path_factory)
    path = _write(tmp, "inv.yml", blob)
    _accepts_or_refuses_well(load_inventory, path, path)
    path.chmod(0o600)
    _accepts_or_refuses_well(load_secrets, path, path)


@RUN
@given(data=documents)
def test_any_yaml_document_everywhere(tmp_path_factory: Any, data: Any) -> None:
    tmp = _tmp(tmp_path_factory)
    text = dump_yaml(data)
    inv = _write(tmp, "inv.yml", text)
    _accepts_or_refuses_well(load_inventory, inv, inv)
    sec = _write(tmp, "secrets.yml", text)
    sec.chmod(0o600)
    _accepts_or_refuses_well(load_secrets, sec, sec)
    phase = _write(tmp, "phase0.yml", text)
    _accepts_or_refuses_well(phases.load_phase, phase, "phase0", tmp)
    phases.check_all(tmp)


@RUN
@given(data=mutated(SANDBOX))
def test_mutated_sandbox_inventory(tmp_path_factory: Any, data: dict[str, Any]) -> None:
    path = _write(_tmp(tmp_path_factory), "inv.yml", dump_yaml(data))
    _accepts_or_refuses_well(load_inventory, path, path)


@RUN
@given(data=mutated(PHASE0))
def test_mutated_phase0(tmp_path_factory: Any, data: dict[str, Any]) -> None:
    tmp = _tmp(tmp_path_factory)
    path = _write(tmp, "phase0.yml", dump_yaml(data))
    _accepts_or_refuses_well(phases.load_phase, path, "phase0", tmp)
    shutil.copyfile(PHASES_DIR / "phase1.yml", tmp / "phase1.yml")
    for problem in phases.check_all(tmp):  # never raises; every problem points into a file
        assert problem.line >= 1 and Path(problem.file).is_file(), problem


@RUN
@given(data=mutated(SECRETS))
def test_mutated_secrets(tmp_path_factory: Any, data: dict[str, Any]) -> None:
    path = _write(_tmp(tmp_path_factory), "s.yml", dump_yaml(data))
    path.chmod(0o600)
    _accepts_or_refuses_well(load_secrets, path, path)


@RUN
@given(edits=st.lists(st.tuples(st.integers(0, 4000), st.sampled_from(
    ["\t", "'", '"', ":", "- ", "\n", "  ", "{", "[", "&a", "*a", "!!binary ", "? ", "---\n", "#", "%", "@",
     "\x00", "\ufeff", "é", "\U0001f600", "|", ">"])), min_size=1, max_size=5))
def test_text_edits_of_real_files(tmp_path_factory: Any, edits: list[tuple[int, str]]) -> None:
    tmp = _tmp(tmp_path_factory)
    for source, name in ((SANDBOX_INVENTORY, "inv.yml"),
                         (PHASES_DIR / "phase0.yml", "phase0.yml")):
        text = source.read_text()
        for pos, insert in edits:
            pos %= len(text) + 1
            text = text[:pos] + insert + text[pos:]
        path = _write(tmp, name, text)
        if name == "inv.yml":
            _accepts_or_refuses_well(load_inventory, path, path)
        else:
            _accepts_or_refuses_well(phases.load_phase, path, "phase0", tmp)


def _outcome(parse: Any) -> Any:
    try:
        return parse()
    except InputError as exc:
        return str(exc), exc.hint


@RUN
@given(edits=st.lists(st.tuples(st.integers(0, 4000), st.sampled_from(
    ["\t", "'", '"', ":", "- ", "\n", "  ", "{", "[", "&a", "*a", "!!binary ", "? ", "---\n", "#", "%", "@",
     "\x00", "\x85", "\ufeff", "\U0001f600", "|", ">", "<<: *a", "!!set ", "1_000", "0o17", "2024-01-01"])),
    max_size=5))
def test_libyaml_and_the_pure_parser_agree(tmp_path_factory: Any, edits: list[tuple[int, str]]) -> None:
    """load_yaml parses with libyaml: where the pure parser reads the text, the same data and lines; where
    libyaml refuses it, the pure parser's error. (libyaml reads a few texts PyYAML refuses, e.g. a tab or
    `? ` inside a plain scalar, as the YAML spec says: strings, which the models refuse.)"""
    assert loader._FastLoader is not loader._LineLoader, "PyYAML without libyaml: plan loads files 10x slower"
    path = _tmp(tmp_path_factory) / "phase1.yml"
    text = (PHASES_DIR / "phase1.yml").read_text()
    for pos, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos:]
    path.write_text(text)
    pure = _outcome(lambda: loader._parse(path, text, loader._LineLoader))
    fast = _outcome(lambda: loader.load_yaml(path))
    libyaml_read_it = not isinstance(_outcome(lambda: loader._parse(path, text, loader._FastLoader))[0], str)
    if libyaml_read_it and isinstance(pure[0], str):
        assert "YAML syntax error" in pure[0], pure  # only syntax: what PyYAML's scanner refuses
    else:
        assert fast == pure


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.yml", "proxmox: " + "[" * 5000 + "]" * 5000 + "\n")
    _accepts_or_refuses_well(load_inventory, path, path)
    path = _write(tmp_path, "inv.yml", "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 300)))
    _accepts_or_refuses_well(load_inventory, path, path)
