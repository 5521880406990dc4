"""redis.conf / sentinel.conf as directives, for comparing the settings the tool owns with a file that
Redis or Sentinel rewrote (CONFIG REWRITE quotes values, appends its own lines, moves `replicaof`)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable

# Sentinel's per-master directives: `sentinel <sub> <master-name> ...`
PER_MASTER = frozenset({"monitor", "auth-pass", "auth-user", "down-after-milliseconds", "failover-timeout",
                        "parallel-syncs", "known-replica", "known-sentinel", "config-epoch", "leader-epoch",
                        "notification-script", "client-reconfig-script", "master-reboot-down-after-period"})


def conf_word(value: str) -> str:
    """One redis.conf argument: as is when plain, else double-quoted with \\, \\" and \\xHH escapes.

    Redis splits config lines like a shell (sdssplitargs): whitespace ends a word and a quote starts a
    quoted section, so a password holding either must be quoted to reach Redis whole.
    """
    if value and not any(c.isspace() or c in "\"'" or not c.isprintable() for c in value):
        return value
    out = []
    for c in value:
        if c in "\\\"":
            out.append("\\" + c)
        elif c == " " or (c.isprintable() and c.isascii() and not c.isspace()):
            out.append(c)
        else:
            out.extend(f"\\x{b:02x}" for b in c.encode())
    return '"' + "".join(out) + '"'


def split(line: str) -> list[str]:
    """One config line as Redis splits it (quotes group words); [] for a blank line or a comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return []
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()


def directives(text: str) -> dict[str, list[tuple[str, ...]]]:
    """key -> the argument tuples of every line with that key, in file order. The key is the directive
    (`maxmemory`), or for Sentinel `sentinel <sub>` plus the master name for per-master ones."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for line in text.splitlines():
        words = split(line)
        if not words:
            continue
        name, args = words[0].lower(), words[1:]
        if name == "sentinel" and args:
            sub = args[0].lower()
            if sub in PER_MASTER and len(args) > 1:
                name, args = f"sentinel {sub} {args[1]}", args[2:]
            else:
                name, args = f"sentinel {sub}", args[1:]
        out.setdefault(name, []).append(tuple(args))
    return out


def drift(want: str, have: str, *, ignore: Iterable[str] = (), presence_only: Iterable[str] = (),
          free_first_arg: Iterable[str] = ()) -> list[str]:
    """The keys of `want` whose lines differ in `have` (sorted).

    ignore: keys not compared (the topology Sentinel owns); presence_only: keys whose values are
    secrets (masked in the facts), only required to be there; free_first_arg: keys whose first
    argument is not the tool's (Sentinel's `monitor` address).
    """
    wanted, found = directives(want), directives(have)
    skip, present, free = set(ignore), set(presence_only), set(free_first_arg)
    out = []
    for key, lines in wanted.items():
        if key in skip:
            continue
        got = found.get(key)
        if key in present:
            same = got is not None and len(got) == len(lines)
        elif key in free:
            same = got is not None and [a[1:] for a in got] == [a[1:] for a in lines]
        else:
            same = got == lines
        if not same:
            out.append(key)
    return sorted(out)
