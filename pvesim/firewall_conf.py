"""Proxmox firewall files (/etc/pve/firewall/<vmid>.fw, cluster.fw): parse and write, pure.

Format as pve-firewall writes it:

    [OPTIONS]

    enable: 1
    policy_in: DROP

    [IPSET clients] # app servers

    10.0.20.100 # app
    !10.0.20.9

    [RULES]

    IN ACCEPT -source 10.0.20.100 -p tcp -dport 5432 -log nolog # app -> postgres
    |IN SSH(ACCEPT) -i net0

A rule line is `[|]TYPE ACTION [options] [# comment]`; `|` marks a disabled rule, a macro is
written `Macro(ACTION)`, a security group `GROUP name`. The digest is the SHA1 of the file.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field

# rule option in the file -> key in the API
RULE_OPTIONS = {"-i": "iface", "-source": "source", "-dest": "dest", "-p": "proto", "-dport": "dport",
                "-sport": "sport", "-icmp-type": "icmp-type", "-log": "log"}
FILE_OPTION = {v: k for k, v in RULE_OPTIONS.items()}
RULE_KEYS = ("type", "action", "macro", "enable", "iface", "source", "dest", "proto", "dport", "sport",
             "icmp-type", "log", "comment")
_SECTION = re.compile(r"^\[(OPTIONS|RULES|ALIASES|IPSET\s+[A-Za-z][A-Za-z0-9\-_]+)\]\s*(?:#\s*(.*))?$",
                      re.IGNORECASE)
_OPTION = re.compile(r"^([a-z_]+)\s*:\s*(.*?)\s*$")
_ACTION = re.compile(r"^(?:([A-Za-z][A-Za-z0-9\-_]*)\((ACCEPT|DROP|REJECT)\)|([A-Za-z][A-Za-z0-9\-_]+))$")


class FirewallConfError(ValueError):
    """A line of a .fw file that pve-firewall would not accept."""


@dataclass
class IpSet:
    """A named set of addresses; entries are {cidr, comment?, nomatch?}."""

    comment: str = ""
    entries: list[dict[str, str]] = field(default_factory=list)


@dataclass
class FirewallConf:
    """One .fw file: options, rules in order (first match wins), ipsets, aliases."""

    options: dict[str, str] = field(default_factory=dict)
    rules: list[dict[str, str]] = field(default_factory=list)
    ipsets: dict[str, IpSet] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)


def digest(text: str) -> str:
    """SHA1 of the raw file, as pve-firewall computes config digests."""
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def parse(text: str) -> FirewallConf:
    """Parse a .fw file; FirewallConfError names the bad line."""
    conf = FirewallConf()
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or (line.startswith("#") and section != "RULES"):
            continue
        head = _SECTION.match(line)
        try:
            if head:
                section = _open_section(conf, head.group(1), head.group(2) or "")
            elif section == "OPTIONS":
                _parse_option(conf, line)
            elif section == "RULES":
                if not line.startswith("#"):
                    conf.rules.append(parse_rule(line))
            elif section == "ALIASES":
                _parse_alias(conf, line)
            elif section.startswith("IPSET "):
                conf.ipsets[section[6:]].entries.append(_parse_ipset_entry(line))
            else:
                raise FirewallConfError("line outside of a section")
        except FirewallConfError as e:
            raise FirewallConfError(f"line {number}: {e}: {raw!r}") from None
    return conf


def _open_section(conf: FirewallConf, name: str, comment: str) -> str:
    """Start a section; an IPSET section creates the set."""
    upper = name.upper()
    if upper.startswith("IPSET"):
        set_name = name.split(None, 1)[1].strip()
        conf.ipsets[set_name] = IpSet(comment=comment.strip())
        return f"IPSET {set_name}"
    return upper


def _parse_option(conf: FirewallConf, line: str) -> None:
    match = _OPTION.match(line)
    if not match:
        raise FirewallConfError("not an option")
    conf.options[match.group(1)] = match.group(2)


def _split_comment(line: str) -> tuple[str, str]:
    """'body # comment' -> ('body', 'comment')."""
    body, sep, comment = line.partition("#")
    return body.strip(), comment.strip() if sep else ""


def _parse_alias(conf: FirewallConf, line: str) -> None:
    body, comment = _split_comment(line)
    parts = body.split()
    if len(parts) != 2:
        raise FirewallConfError("an alias is 'name cidr'")
    entry = {"name": parts[0], "cidr": parts[1]}
    if comment:
        entry["comment"] = comment
    conf.aliases[parts[0].lower()] = entry


def _parse_ipset_entry(line: str) -> dict[str, str]:
    body, comment = _split_comment(line)
    if not body or " " in body:
        raise FirewallConfError("an ipset entry is one address, CIDR or alias")
    entry = {"cidr": body.lstrip("!")}
    if body.startswith("!"):
        entry["nomatch"] = "1"
    if comment:
        entry["comment"] = comment
    return entry


def parse_rule(line: str) -> dict[str, str]:
    """One rule line -> the rule as the API shows it (without pos/digest)."""
    body, comment = _split_comment(line)
    rule: dict[str, str] = {"enable": "1"}
    if body.startswith("|"):
        rule["enable"], body = "0", body[1:].strip()
    words = shlex.split(body)
    if len(words) < 2:
        raise FirewallConfError("a rule needs a type and an action")
    kind = words[0].lower()
    if kind not in ("in", "out", "forward", "group"):
        raise FirewallConfError(f"unknown rule type '{words[0]}'")
    match = _ACTION.match(words[1])
    if not match:
        raise FirewallConfError(f"bad action '{words[1]}'")
    rule["type"] = kind
    if match.group(1):
        rule["macro"], rule["action"] = match.group(1), match.group(2)
    else:
        rule["action"] = match.group(3)
    rest = words[2:]
    if len(rest) % 2:
        raise FirewallConfError("an option lacks its value")
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        if flag not in RULE_OPTIONS:
            raise FirewallConfError(f"unknown rule option '{flag}'")
        rule[RULE_OPTIONS[flag]] = value
    if comment:
        rule["comment"] = comment
    return rule


def format_rule(rule: dict[str, str]) -> str:
    """The rule as one .fw line (inverse of parse_rule)."""
    action = f"{rule['macro']}({rule['action']})" if rule.get("macro") else rule["action"]
    words = [rule["type"].upper(), action]
    for key in ("iface", "source", "dest", "proto", "dport", "sport", "icmp-type", "log"):
        if rule.get(key):
            words += [FILE_OPTION[key], rule[key]]
    line = ("|" if rule.get("enable", "1") == "0" else "") + " ".join(words)
    return f"{line} # {rule['comment']}" if rule.get("comment") else line


def write(conf: FirewallConf) -> str:
    """The file text; sections in pve-firewall's order (options, aliases, ipsets, rules)."""
    out: list[str] = []
    if conf.options:
        out += ["[OPTIONS]", ""] + [f"{k}: {v}" for k, v in sorted(conf.options.items())] + [""]
    if conf.aliases:
        out += ["[ALIASES]", ""]
        for alias in conf.aliases.values():
            out.append(f"{alias['name']} {alias['cidr']}" + (f" # {alias['comment']}" if alias.get("comment")
                                                              else ""))
        out.append("")
    for name, ipset in sorted(conf.ipsets.items()):
        out += [f"[IPSET {name}]" + (f" # {ipset.comment}" if ipset.comment else ""), ""]
        for entry in ipset.entries:
            text = ("!" if entry.get("nomatch") == "1" else "") + entry["cidr"]
            out.append(f"{text} # {entry['comment']}" if entry.get("comment") else text)
        out.append("")
    if conf.rules:
        out += ["[RULES]", ""] + [format_rule(r) for r in conf.rules] + [""]
    return "\n".join(out).rstrip("\n") + "\n" if out else ""
