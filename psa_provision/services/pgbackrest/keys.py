"""The two key pairs of pgBackRest's SSH: postgres@db -> pgbackrest@repo, pgbackrest@repo -> postgres@db.

Made by `psa-provision init` next to the tool's own key (`<key_file>-pgbackrest-db`, `-repo`), read
when a phase has a backup container. Private keys travel as Sensitive only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ...sensitive import Sensitive

KINDS = ("db", "repo")


@dataclass(frozen=True)
class KeyPair:
    private: Sensitive
    public: str


@dataclass(frozen=True)
class BackupKeys:
    """db: postgres's identity on the database containers; repo: pgbackrest's on the repository host."""

    db: KeyPair
    repo: KeyPair


def key_path(key_file: Path, kind: str) -> Path:
    """`keys/site_ed25519` -> `keys/site_ed25519-pgbackrest-db` (or -repo)."""
    return key_file.with_name(f"{key_file.name}-pgbackrest-{kind}")


def keys_present(key_file: Path) -> bool:
    """Both key pairs are on disk."""
    return all(key_path(key_file, k).is_file() and key_path(key_file, k).with_name(
        key_path(key_file, k).name + ".pub").is_file() for k in KINDS)


def read_keys(key_file: Path) -> BackupKeys:
    """Both key pairs, or InputError naming the missing file and `init`."""
    pairs = []
    for kind in KINDS:
        path = key_path(key_file, kind)
        pub = path.with_name(path.name + ".pub")
        try:
            private, public = path.read_text(encoding="utf-8"), pub.read_text(encoding="utf-8").strip()
        except OSError:
            raise InputError(f"{path}: pgBackRest's SSH key pair is missing (the phase has a backup "
                             "container)",
                             hint="run `psa-provision init` again: it adds the missing key pairs") from None
        pairs.append(KeyPair(Sensitive(private, [private]), public))
    return BackupKeys(*pairs)
