"""YAML files in and out, with line numbers: every pydantic error is reported as `file:line: ...`.

The one importer of PyYAML. `load_model(path, Model)` parses a file, remembers the line of every
key and list item, validates with pydantic and maps each error location back to the line that
holds the offending key (or its parent, when the key is missing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml

from .errors import InputError

if TYPE_CHECKING:  # pydantic is imported at run time only by the model modules (inventory, phases)
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")
Loc = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""


def _compose(node: yaml.Node, loc: Loc, lines: dict[Loc, int], loader: _LineLoader) -> Any:
    """Build Python data from a node, filling `lines` with 1-based line numbers per location."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _compose(value_node, (*loc, key), lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_compose(item, (*loc, i), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; returns (data, {location: line}). Syntax errors -> InputError file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found", hint="check the path (relative paths are resolved "
                         "against the inventory file's directory)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        data = {} if node is None else _compose(node, (), lines, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise InputError(f"{path}:{line}: YAML syntax error: {exc.problem or exc}",
                         hint="fix the indentation or quoting on that line") from None
    finally:
        loader.dispose()
    return data, lines


def line_of(loc: Loc, lines: Mapping[Loc, int]) -> int:
    """The line of the deepest known prefix of `loc` (a missing key points at its parent)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _clean_loc(loc: tuple[str | int, ...], data: Any) -> Loc:
    """Drop pydantic's union/validator tags (e.g. `function-after[...]`) that are not data keys."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and part < len(cur)
        if in_dict or in_list:
            cur = cur[part]
            out.append(part)
        elif isinstance(part, str) and ("[" in part or part.startswith("function")):
            continue
        else:
            out.append(part)
            cur = None
    return tuple(out)


def format_errors(path: Path, exc: ValidationError, data: Any, lines: Mapping[Loc, int]) -> str:
    """One `file:line: key.path: message` line per pydantic error, sorted by line."""
    found: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]), data)
        where = ".".join(str(p) for p in loc) or "(top level)"
        msg = str(err["msg"])
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}' -> remove it or check its spelling"
        elif kind == "missing":
            msg = f"missing key '{loc[-1]}' -> add it"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif isinstance(err.get("input"), str | int | float | bool):
            msg = f"{msg} (got {err['input']!r})"
        found.append((line_of(loc, lines), f"{path}:{line_of(loc, lines)}: {where}: {msg}"))
    return "\n".join(m for _, m in sorted(found))


def load_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Parse and validate one YAML file as `model`; every problem -> InputError with file:line."""
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}:1: expected a mapping of keys at the top level")
    try:
        return model.model_validate(data, context=context)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        if not hasattr(exc, "errors"):
            raise
        raise InputError(format_errors(path, cast("ValidationError", exc), data, lines)) from None


def dump_yaml(data: Any) -> str:
    """YAML text for data (block style, key order kept)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_private(path: Path, text: str) -> None:
    """Write text atomically with mode 0600 from the start (temp file created 0600, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
