"""The package's import graph, read with `ast`: cli -> commands -> machinery and services -> adapters.

No import runs back up, nothing is imported through import_module/__import__, pvesim never imports
psa_provision, and each third-party library has the one importer (or the set) named here. The checker
runs on a tiny synthetic package too, so it is shown to find what it looks for.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# the modules a third-party library may be imported by (the adapter that owns it)
OWNERS: dict[str, set[str]] = {
    "proxmoxer": {"psa_provision.proxmox.session"},
    "requests": {"psa_provision.proxmox.session"},
    "fabric": {"psa_provision.ssh.connection"},
    "paramiko": {"psa_provision.ssh.connection"},
    "rich": {"psa_provision.output"},
    "jinja2": {"psa_provision.render"},
    "typer": {"psa_provision.cli"},
    "testinfra": set(),  # loaded by pytest as a plugin of verify's suites, never imported
    "yaml": {"psa_provision.loader"},
    # pydantic models are the input schema: the loader and the files it validates (limits: data/limits.yml)
    "pydantic": {"psa_provision.loader", "psa_provision.inventory", "psa_provision.phases",
                 "psa_provision.limits"},
}
# pytest: verify runs the suites in-process; each service's checks module is a suite fragment
PYTEST_PREFIXES = ("psa_provision.commands.verify", "psa_provision.suites.", "psa_provision.services.")
ADAPTERS = ("psa_provision.proxmox", "psa_provision.ssh", "psa_provision.output", "psa_provision.render")
# what adapters may import besides each other: errors, data types and the test-seam gate
ADAPTER_BASE = ("psa_provision.errors", "psa_provision.sensitive", "psa_provision.privileges",
                "psa_provision.packaged", "psa_provision.changes", "psa_provision.seams")
ENTRY_POINTS = ("psa_provision.cli", "psa_provision.suites")  # suites: run by verify's pytest


@dataclass
class Module:
    name: str
    imports: set[str] = field(default_factory=set)  # psa_provision modules (normalized later)
    third_party: set[str] = field(default_factory=set)
    dynamic: list[int] = field(default_factory=list)  # lines calling import_module / __import__


def _name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def read_modules(root: Path, package: str) -> dict[str, Module]:
    """Every module under root/package (data/ aside), with what it imports."""
    modules: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        if "data" in path.relative_to(root / package).parts:
            continue
        name = _name(path, root)
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        mod = modules[name] = Module(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" for a in node.names]  # a module, or a name in origin
            elif isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("import_module", "__import__"):
                    mod.dynamic.append(node.lineno)
            for target in targets:
                top = target.split(".")[0]
                if top == package:
                    mod.imports.add(target)
                elif top and top not in sys.stdlib_module_names and top != "__future__":
                    mod.third_party.add(top)
    for mod in modules.values():  # `from pkg import name`: keep modules only, not the names in them
        mod.imports = {_module_of(t, modules) for t in mod.imports} - {mod.name}
    return modules


def _module_of(target: str, modules: dict[str, Module]) -> str:
    while target not in modules and "." in target:
        target = target.rpartition(".")[0]
    return target


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(modules: dict[str, Module], package: str = "psa_provision",
               owners: dict[str, set[str]] | None = None) -> list[str]:
    """Every broken rule, one line each (empty: the layering holds)."""
    owners = OWNERS if owners is None else owners
    cli, commands = f"{package}.cli", f"{package}.commands"
    entry = tuple(e.replace("psa_provision", package, 1) for e in ENTRY_POINTS)
    adapters = tuple(a.replace("psa_provision", package, 1) for a in ADAPTERS)
    base = tuple(b.replace("psa_provision", package, 1) for b in ADAPTER_BASE)
    out = []
    for mod in modules.values():
        for dep in sorted(mod.imports):
            if _under(dep, (cli,)):
                out.append(f"{mod.name} imports the cli ({dep})")
            elif _under(dep, (commands,)) and dep != commands and not _under(mod.name, (commands, *entry)):
                out.append(f"{mod.name} imports a command ({dep}): only cli does")
            elif _under(mod.name, adapters) and dep != package and not _under(dep, adapters + base):
                out.append(f"adapter {mod.name} imports {dep}, above the adapters")
            elif _under(mod.name, (f"{package}.services",)) and _under(dep, (f"{package}.migration",)):
                out.append(f"service module {mod.name} imports {dep}")
        for line in mod.dynamic:
            out.append(f"{mod.name}:{line}: import_module/__import__ hides an import")
        for lib in sorted(mod.third_party):
            if lib == "pytest":
                allowed = tuple(p.replace("psa_provision", package, 1) for p in PYTEST_PREFIXES)
                if not mod.name.startswith(allowed):
                    out.append(f"{mod.name} imports pytest")
            elif lib in owners and mod.name not in owners[lib]:
                owner = ", ".join(sorted(owners[lib])) or "no module"
                out.append(f"{mod.name} imports {lib}, owned by {owner}")
    return out


def test_psa_provision_keeps_its_layers() -> None:
    modules = read_modules(ROOT, "psa_provision")
    assert len(modules) > 50 and "psa_provision.commands.up" in modules
    assert violations(modules) == []


def test_each_library_has_its_importers() -> None:
    modules = read_modules(ROOT, "psa_provision")
    for lib, want in OWNERS.items():
        assert {m.name for m in modules.values() if lib in m.third_party} == want, lib


def test_pvesim_never_imports_psa_provision() -> None:
    for path in sorted((ROOT / "pvesim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] == "psa_provision"], path


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


CLEAN = {
    "toy/__init__.py": "",
    "toy/cli.py": "import typer\nfrom toy.commands import up\n",
    "toy/commands/__init__.py": "",
    "toy/commands/up.py": "from toy import site\nfrom toy.commands import plan\n",
    "toy/commands/plan.py": "from toy.site import Site\n",
    "toy/site.py": "from toy.proxmox import client\nfrom toy.services import redis\n",
    "toy/services/__init__.py": "",
    "toy/services/redis.py": "from toy.ssh import Connection\n",
    "toy/proxmox/__init__.py": "",
    "toy/proxmox/client.py": "from . import session\nfrom toy.errors import Oops\n",
    "toy/proxmox/session.py": "import proxmoxer\n",
    "toy/ssh.py": "import paramiko\n",
    "toy/errors.py": "",
}
TOY_OWNERS = {"proxmoxer": {"toy.proxmox.session"}, "paramiko": {"toy.ssh"}, "typer": {"toy.cli"}}


def test_the_checker_passes_a_layered_package(tmp_path: Path) -> None:
    _write(tmp_path, CLEAN)
    modules = read_modules(tmp_path, "toy")
    assert modules["toy.proxmox.client"].imports == {"toy.proxmox.session", "toy.errors"}
    assert violations(modules, "toy", TOY_OWNERS) == []


def test_the_checker_finds_each_kind_of_violation(tmp_path: Path) -> None:
    _write(tmp_path, {**CLEAN,
                      "toy/proxmox/client.py": "from toy.commands import up\nfrom toy import site\n",
                      "toy/services/redis.py": "import paramiko\nfrom toy import cli\n",
                      "toy/site.py": "import importlib\nmod = importlib.import_module('toy.ssh')\n"})
    found = violations(read_modules(tmp_path, "toy"), "toy", TOY_OWNERS)
    assert found == [
        "toy.proxmox.client imports a command (toy.commands.up): only cli does",
        "adapter toy.proxmox.client imports toy.site, above the adapters",
        "toy.services.redis imports the cli (toy.cli)",
        "toy.services.redis imports paramiko, owned by toy.ssh",
        "toy.site:2: import_module/__import__ hides an import",
    ]
