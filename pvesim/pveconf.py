"""PVE container configs (/etc/pve/lxc/<vmid>.conf): parse, write, digest, property strings.

Format as Proxmox writes it: `#` lines at the top are the description (URL-encoded newlines are
plain lines), `key: value` lines, then `[snapname]` sections (snapshots, with `snaptime` and
the main section's `parent`) and one `[pve:pending]` section (changes waiting for a restart, with
`delete: key,key`). The digest is the SHA1 of the raw file, as PVE computes it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PENDING = "pve:pending"
_SECTION = re.compile(r"^\[([^\]]+)\]\s*$")
_LINE = re.compile(r"^([a-z][a-z0-9_.\-]*)\s*[:=]\s*(.*?)\s*$", re.IGNORECASE)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])?$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass
class Section:
    """One section: settings plus its description (the `#` comment lines)."""

    values: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def as_dict(self) -> dict[str, str]:
        """The settings with `description` included, as GET config shows them."""
        out = dict(self.values)
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class PveConf:
    """A whole container config: the current section, its snapshots and its pending changes."""

    main: Section = field(default_factory=Section)
    snapshots: dict[str, Section] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    pending_delete: list[str] = field(default_factory=list)


def parse(text: str) -> PveConf:
    """Parse the text of a PVE container config."""
    conf = PveConf()
    current = conf.main
    in_pending = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _SECTION.match(line)
        if m:
            in_pending = m.group(1) == PENDING
            current = Section()
            if not in_pending:
                conf.snapshots[m.group(1)] = current
            continue
        if line.startswith("#"):
            text_line = line[1:]
            current.description = f"{current.description}\n{text_line}" if current.description else text_line
            continue
        kv = _LINE.match(line)
        if not kv:
            continue
        key, value = kv.group(1), kv.group(2)
        if in_pending:
            if key == "delete":
                conf.pending_delete = [k for k in value.split(",") if k]
            else:
                conf.pending[key] = value
        else:
            current.values[key] = value
    return conf


def _write_section(section: Section) -> list[str]:
    """Lines for one section; description first, as PVE writes it."""
    lines = [f"#{d}" for d in section.description.split("\n")] if section.description else []
    lines += [f"{k}: {v}" for k, v in sorted(section.values.items()) if not k.startswith("lxc.")]
    lines += [f"{k}: {v}" for k, v in section.values.items() if k.startswith("lxc.")]
    return lines


def dump(conf: PveConf) -> str:
    """The text of a PVE container config (round-trips with parse)."""
    lines = _write_section(conf.main)
    if conf.pending or conf.pending_delete:
        lines += ["", f"[{PENDING}]"]
        if conf.pending_delete:
            lines.append(f"delete: {','.join(conf.pending_delete)}")
        lines += [f"{k}: {v}" for k, v in sorted(conf.pending.items())]
    for name, snap in conf.snapshots.items():
        lines += ["", f"[{name}]", *_write_section(snap)]
    return "\n".join(lines) + "\n"


def digest(text: str) -> str:
    """SHA1 hex of the raw config, PVE's `digest`."""
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - PVE's digest is SHA1


def read(path: Path) -> tuple[PveConf, str]:
    """Parse a config file; returns the config and its digest."""
    text = path.read_text()
    return parse(text), digest(text)


def write(path: Path, conf: PveConf) -> str:
    """Write a config atomically (temp + rename); returns the new digest."""
    text = dump(conf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".conf.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return digest(text)


def split_property_string(value: str) -> list[tuple[str | None, str]]:
    """Split `a=1,b=2,default` into [(key or None, value)]; empty parts are skipped like PVE."""
    parts: list[tuple[str | None, str]] = []
    for part in value.split(","):
        if not part.strip():
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            parts.append((k, v))
        else:
            parts.append((None, part))
    return parts


def parse_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """Parse a property string into a dict, putting the bare value under default_key."""
    out: dict[str, str] = {}
    for k, v in split_property_string(value):
        if k is None:
            if default_key is None:
                raise ValueError("value without key, but schema does not define a default key")
            k = default_key
        out[k] = v
    return out


def print_property_string(values: dict[str, str], default_key: str | None = None,
                          first: tuple[str, ...] = ()) -> str:
    """Render a dict as a property string: default key bare, then `first` keys, then sorted."""
    parts: list[str] = []
    if default_key and default_key in values:
        parts.append(values[default_key])
    order = [k for k in first if k in values] + sorted(k for k in values if k not in first)
    parts += [f"{k}={values[k]}" for k in order if k != default_key]
    return ",".join(parts)


def parse_size(value: str) -> int | None:
    """PVE's parse_size: `8G` -> bytes; None when it is not a size."""
    m = _SIZE.match(value)
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def format_size(size: int) -> str:
    """PVE's format_size: the largest unit that divides evenly (8589934592 -> 8G)."""
    for unit in ("T", "G", "M", "K"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)
