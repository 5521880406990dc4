"""YAML files in and out, with line numbers: every pydantic error is reported as `file:line: ...`.

The one importer of PyYAML. `load_model(path, Model)` parses a file, remembers the line of every
key and list item, validates with pydantic and maps each error location back to the line that
holds the offending key (or its parent, when the key is missing).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, get_args, get_origin

import yaml

from .errors import InputError

if TYPE_CHECKING:  # pydantic is imported at run time only by the model modules (inventory, phases)
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")
Loc = tuple[str | int, ...]


MAX_DEPTH = 64  # nesting deeper than any inventory needs; guards recursive aliases (&a [*a])
MAX_NODES = 100_000  # guards alias bombs ("billion laughs") that expand into huge data


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""


# libyaml parses about ten times faster (it was most of a converged `plan`'s file loading). Its error
# wording differs, so a file it refuses is parsed again by _LineLoader for the message users are shown.
# It follows the YAML spec more closely: a few texts PyYAML refuses (a tab or `? ` inside a plain
# scalar) it reads as strings, which the models then refuse by name and line.
_FastLoader: Any = getattr(yaml, "CSafeLoader", _LineLoader)


class _Refused(Exception):
    """Well-formed YAML we refuse (duplicate key, list as key, too deep or large): line, text, hint."""

    def __init__(self, line: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.line, self.message, self.hint = line, message, hint


def _compose(node: yaml.Node, loc: Loc, lines: dict[Loc, int], loader: Any,
             budget: list[int]) -> Any:
    """Build Python data from a node, filling `lines` with 1-based line numbers per location."""
    line = node.start_mark.line + 1
    budget[0] -= 1
    if len(loc) > MAX_DEPTH or budget[0] < 0:
        raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels or more than {MAX_NODES} values "
                       "(a recursive or exploding alias?)", "write the values out plainly, without *aliases")
    lines.setdefault(loc, line)
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, loc, lines, loader, budget)
    if isinstance(node, yaml.SequenceNode):
        return [_compose(item, (*loc, i), lines, loader, budget) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. `2024-13-45` read as a bad date
        raise _Refused(line, f"value not understood: {exc}", "quote the value to make it a string") from None


def _mapping(node: yaml.MappingNode, loc: Loc, lines: dict[Loc, int], loader: Any,
             budget: list[int]) -> dict[Any, Any]:
    """A mapping whose keys are plain scalars, each once (YAML would silently keep the last)."""
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Refused(key_line, "a list or mapping cannot be a key",
                           "write a plain word as the key, e.g. `memory_mb:`")
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise _Refused(key_line, f"duplicate key '{show(key)}' (first at line {lines[(*loc, key)]})",
                           "keep one of the two; YAML would silently use the last")
        lines[(*loc, key)] = key_line
        out[key] = _compose(value_node, (*loc, key), lines, loader, budget)
    return out


def _syntax_error(path: Path, exc: yaml.YAMLError, text: str) -> InputError:
    """`file:line: YAML syntax error: ...` with a hint fitted to the usual causes (tabs, quotes)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character or similar
        line = text[:exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        return InputError(f"{path}:{line}: character {char!r} (U+{ord(char[:1] or ' '):04X}) is not allowed "
                          "in YAML",
                          hint="save the file as plain UTF-8 text without control characters")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return InputError(f"{path}:1: not valid YAML: {exc}", hint="check the file is YAML text")
    problem = exc.problem or str(exc)
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    hint = "fix the indentation or quoting on that line"
    if "'\\t'" in problem:
        hint = "indent with spaces, not tabs"
    if "another document" in problem:
        hint = "one document per file: remove the `---` line and what follows, or merge them"
    opened = exc.context and ("quoted" in exc.context or "flow" in exc.context)
    if opened and exc.context_mark and exc.context_mark.line + 1 != line:
        start = exc.context_mark.line + 1
        problem = f"{problem} ({exc.context} that starts at line {start})"
        what = "quote" if "quoted" in str(exc.context) else "bracket"
        line, hint = start, f"close the {what} opened on line {start}"
    return InputError(f"{path}:{line}: YAML syntax error: {problem}", hint=hint)


def load_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; returns (data, {location: line}). Syntax errors -> InputError file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found", hint="check the path (relative paths are resolved "
                         "against the inventory file's directory)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                         f"{exc.start})", hint="save the file as UTF-8") from None
    try:
        return _parse(path, text, _FastLoader)
    except InputError:
        if _FastLoader is _LineLoader:
            raise
    return _parse(path, text, _LineLoader)


def _parse(path: Path, text: str, loader_class: Any) -> tuple[Any, dict[Loc, int]]:
    try:
        loader = loader_class(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise _syntax_error(path, exc, text) from None
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        data = {} if node is None else _compose(node, (), lines, loader, [MAX_NODES])
    except yaml.YAMLError as exc:
        raise _syntax_error(path, exc, text) from None
    except _Refused as exc:
        raise InputError(f"{path}:{exc.line}: {exc.message}", hint=exc.hint) from None
    except RecursionError:  # PyYAML's composer recurses once per level: [[[[...]]]] thousands deep
        raise InputError(f"{path}:{loader.line + 1}: nested deeper than {MAX_DEPTH} levels",
                         hint="no inventory or phase file needs this; check the brackets") from None
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


def _unwrap(annotation: Any) -> list[Any]:
    """The model classes an annotation may hold (through Optional, list, dict values, Annotated)."""
    if hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _unwrap(arg)]


def _field_at(model: Any, loc: Loc) -> tuple[Any, dict[str, Any]]:
    """(FieldInfo of loc's last key or None, the sibling fields at that level) by walking the models."""
    fields: dict[str, Any] = dict(getattr(model, "model_fields", {}))
    info: Any = None
    for i, part in enumerate(loc):
        if isinstance(part, int) or part not in fields:
            if isinstance(part, str) and info is not None and get_origin(info.annotation) is dict:
                continue  # a free-form key such as a service name
            if isinstance(part, int):
                info = _item_info(info) if i == len(loc) - 1 else info
                continue
            return None, fields
        info = fields[part]
        if i < len(loc) - 1:
            models = _unwrap(info.annotation)
            fields = dict(models[0].model_fields) if models else {}
    return info, fields


def _item_info(info: Any) -> Any:
    """For an item of a list field: the item type's own Field (description, examples), else the list's."""
    for item in get_args(getattr(info, "annotation", None)):
        for meta in get_args(item)[1:]:
            if getattr(meta, "description", None):
                return meta
    return info


def _hint(kind: str, err: Any, loc: Loc, model: Any) -> str:
    """`-> what to write instead` for one pydantic error, from the field's description/examples."""
    info, siblings = _field_at(model, loc)
    example = (info.examples or [None])[0] if info is not None else None
    eg = f", e.g. {example}" if example is not None else ""
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), list(siblings), n=1, cutoff=0.6)
        return f" -> did you mean '{close[0]}'?" if close else (
            f" -> remove it or check its spelling (allowed here: {', '.join(siblings)})")
    if kind == "missing":
        return f" -> add it, e.g. `{show(loc[-1])}: {example}`" if example is not None else " -> add it"
    ctx = err.get("ctx") or {}
    bounds = [f"{op} {ctx[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if k in ctx]
    if bounds:
        return f" -> write a number {' and '.join(bounds)}{eg}"
    simple = {"int": "a whole number", "float": "a number", "bool": "true or false", "string": "text",
              "dict": "a mapping (key: value lines indented below)", "model": "a mapping (key: value "
              "lines indented below)", "list": "a list, e.g. [a, b]", "literal": "one of those"}
    kind_word = kind.split("_")[0]
    if kind_word in simple and not kind.startswith("string_"):
        return f" -> write {simple[kind_word]}{eg}"
    if kind == "string_type":
        return f" -> write text (quote it){eg}"
    return f" -> write e.g. {example}" if example is not None else ""


def format_errors(path: Path, exc: ValidationError, data: Any, lines: Mapping[Loc, int],
                  model: Any = None) -> str:
    """One `file:line: key.path: message -> what to write` line per pydantic error, sorted by line."""
    found: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]), data)
        where = ".".join(show(p) for p in loc) or "(top level)"
        msg = str(err["msg"])
        kind = err["type"]
        info, _ = _field_at(model, loc)
        if kind == "extra_forbidden":
            msg = f"unknown key '{show(loc[-1])}'"
        elif kind == "missing":
            msg = f"missing key '{show(loc[-1])}'"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif kind == "string_pattern_mismatch" and info is not None and info.description:
            msg = f"{err['input']!r} is not {info.description}"
        elif isinstance(err.get("input"), str | int | float | bool):
            msg = f"{msg} (got {_short(err['input'])})"
        if "->" not in msg:
            msg += _hint(kind, err, loc, model)
        found.append((line_of(loc, lines), f"{path}:{line_of(loc, lines)}: {where}: {msg}"))
    return "\n".join(m for _, m in sorted(found))


def show(value: object, limit: int = 40) -> str:
    """A key or value as written, safe on one line: control characters escaped, cut to `limit`."""
    text = str(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: object) -> str:
    """repr of a value, cut to 60 characters (a 10 kB string or a 300-digit number stays readable)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Parse and validate one YAML file as `model`; every problem -> InputError with file:line."""
    return load_model_and_lines(path, model, context=context)[0]


def load_model_and_lines(path: Path, model: type[M], *,
                         context: dict[str, Any] | None = None) -> tuple[M, dict[Loc, int]]:
    """load_model, and the line of every location (for checks beyond the schema); one parse."""
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}:{line_of((), lines)}: expected a mapping of keys at the top level "
                         f"-> start with `{next(iter(model.model_fields))}:`")
    try:
        return model.model_validate(data, context=context), lines
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        if not hasattr(exc, "errors"):
            raise
        raise InputError(format_errors(path, cast("ValidationError", exc), data, lines, model)) from None


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
