"""The bad-input corpus: every broken inventory, phase or secrets file is refused with file:line + a fix.

One test per file under tests/unit/corpus/{inventory,phase,secrets}/NAME.yml. A file's header says what
to expect (like pyinfra's data-driven tests):

    # expect: LINE: TEXT   the error names this file at LINE (`-`: the file itself) on a line holding TEXT
    # as: phase1           phase files: checked as phases/phase1.yml (default phase0)
    # with: phase2         phase files: the repo's phases/phase2.yml sits next to it (cross-phase checks)
    # mode: 0644           secrets files: the file's mode (default 0600)
    # get: redis.password  secrets files: the secret the run asks for

Every reported line must also say what to write instead (`-> ...`, or the error's hint).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from psa_provision import phases
from psa_provision.errors import InputError, ProvisionError
from psa_provision.inventory import load_inventory
from psa_provision.packaged import PHASES_DIR
from psa_provision.secrets import load_secrets

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(CORPUS.glob("*/*.yml"))


@dataclass
class Header:
    """What a corpus file's comment header asks for."""

    expects: list[tuple[str, str]] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)


def header(path: Path) -> Header:
    """Parse the leading `# key: value` lines (bytes decoded leniently: some cases are not UTF-8)."""
    out = Header()
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        m = re.match(r"^# (expect|as|with|mode|get): (.*)$", line)
        if not line.startswith("#"):
            break
        if m and m.group(1) == "expect":
            where, _, text = m.group(2).partition(": ")
            out.expects.append((where, text))
        elif m:
            out.options[m.group(1)] = m.group(2)
    return out


def run_inventory(case: Path, _: Header, __: Path) -> tuple[Path, str]:
    with pytest.raises(InputError) as info:
        load_inventory(case)
    return case, str(info.value)


def run_phase(case: Path, head: Header, tmp_path: Path) -> tuple[Path, str]:
    name = head.options.get("as", "phase0")
    target = tmp_path / f"{name}.yml"
    shutil.copyfile(case, target)
    if "with" in head.options:
        other = head.options["with"]
        shutil.copyfile(PHASES_DIR / f"{other}.yml", tmp_path / f"{other}.yml")
    errors = [p for p in phases.check_all(tmp_path) if p.severity == "error"]
    assert errors, f"{case}: check_all found nothing"
    if "with" not in head.options:  # alone, load_phase must refuse it the same way
        with pytest.raises(InputError) as info:
            phases.load_phase(name, tmp_path)
        for where, text in head.expects:
            assert text in str(info.value) and _names(str(info.value), target, where), str(info.value)
    return target, "\n".join(str(p) for p in errors)


def run_secrets(case: Path, head: Header, tmp_path: Path) -> tuple[Path, str]:
    target = tmp_path / case.name
    shutil.copyfile(case, target)
    target.chmod(int(head.options.get("mode", "0600"), 8))
    with pytest.raises(InputError) as info:
        loaded = load_secrets(target)
        if "get" in head.options:
            loaded.get(head.options["get"])
    return target, str(info.value)


RUNNERS = {"inventory": run_inventory, "phase": run_phase, "secrets": run_secrets}


def _names(message: str, path: Path, where: str) -> bool:
    """The message names `path` at line `where` (`-`: the file without a line)."""
    pattern = re.escape(str(path)) + (r":(?!\d)" if where == "-" else rf":{where}(?!\d)")
    return re.search(pattern, message) is not None


def test_corpus_is_wide() -> None:
    kinds = {k: len(list((CORPUS / k).glob("*.yml"))) for k in RUNNERS}
    assert sum(kinds.values()) >= 40 and all(n >= 5 for n in kinds.values()), kinds


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_corpus_case(case: Path, tmp_path: Path) -> None:
    head = header(case)
    assert head.expects, f"{case}: no '# expect: LINE: TEXT' header"
    target, message = RUNNERS[case.parent.name](case, head, tmp_path)
    lines = message.splitlines()
    for where, text in head.expects:
        hits = [i for i, m in enumerate(lines) if text in m and _names(m, target, where)]
        assert hits, f"expected {target}:{where} with {text!r} in:\n{message}"
        fix = lines[hits[0]] + (lines[hits[0] + 1] if hits[0] + 1 < len(lines) else "")
        assert "->" in fix, f"no '-> what to write' for:\n{lines[hits[0]]}"


def test_not_utf8_is_refused_at_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yml"
    bad.write_bytes(b"proxmox:\n  node: pve\xe9\n")
    with pytest.raises(InputError, match=rf"{re.escape(str(bad))}:2: not UTF-8 text .*\n  -> save"):
        load_inventory(bad)


def test_control_character_is_refused_at_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yml"
    bad.write_text("proxmox:\n  node: pve\x07\n")
    with pytest.raises(InputError) as info:
        load_inventory(bad)
    assert str(info.value).startswith(f"{bad}:2: character '\\x07' (U+0007) is not allowed in YAML")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yml"
    bad.write_text("proxmox: &loop\n  node: [*loop]\n")
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        load_inventory(bad)


def test_secrets_mode_hint_is_the_command_to_run(tmp_path: Path) -> None:
    target = tmp_path / "my secrets.yml"
    shutil.copyfile(CORPUS / "secrets" / "mode_0644.yml", target)
    target.chmod(0o644)
    with pytest.raises(InputError) as info:
        load_secrets(target)
    assert info.value.hint == f"chmod 600 '{target}'"


def test_every_input_error_is_a_provision_error() -> None:
    assert issubclass(InputError, ProvisionError)
