"""What `psa-provision health` learnt from each member of a cluster, for the services' cross-member
verdicts (services/<name>/health.py `cluster_verdict`, gathered by services/clusters.py). Pure.

Each member's health probe runs its service's FACTS (shell, health.py's `fact` function): one
`fact:<name><TAB><exit code><TAB><base64 of the output>` line per command, in the same SSH round trip
as its per-container probes. A member that gave no facts (stopped, SSH down) says why in `absent`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MemberFacts:
    """One member's facts: name -> (exit code, output); `absent` says why there are none."""

    hostname: str
    ip: str
    facts: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    absent: str = ""

    def text(self, name: str) -> str:
        """The output of fact `name` ("" when it was not gathered)."""
        return self.facts.get(name, (-1, ""))[1]

    def code(self, name: str) -> int:
        """The exit code of fact `name` (-1 when it was not gathered)."""
        return self.facts.get(name, (-1, ""))[0]

    def failure(self, name: str) -> str:
        """Why fact `name` gave nothing usable: the member gave no facts, or the command failed."""
        if self.absent:
            return f"{self.hostname}: {self.absent}"
        if name not in self.facts:
            return f"{self.hostname}: no answer"
        said = " ".join(self.text(name).split())[:120] or "no output"
        return f"{self.hostname}: exit {self.code(name)}: {said}"


def unanswered(members: Iterable[MemberFacts], name: str) -> list[str]:
    """`host: why` for each member whose fact `name` failed (or who gave no facts)."""
    return [m.failure(name) for m in members if m.absent or m.code(name) != 0]


def merge(views: Mapping[str, list[str]]) -> list[str]:
    """The problems seen from several members (viewer -> problems), each once: seen from every viewer
    as it is, else with the viewers that see it (a member partitioned from the others sees other
    problems than they do)."""
    seen: dict[str, list[str]] = {}
    for viewer, problems in views.items():
        for problem in problems:
            seen.setdefault(problem, []).append(viewer)
    return [problem if len(viewers) == len(views) else f"{problem} (as {', '.join(viewers)} see it)"
            for problem, viewers in seen.items()]


def verdict(problems: list[str], healthy: str) -> tuple[bool, str]:
    """(ok, why): healthy when there are no problems, else the problems in one line."""
    return (not problems, "; ".join(problems) if problems else healthy)
