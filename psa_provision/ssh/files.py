"""A directory tree shipped as one tar stream with its manifest: stale files removed, owner set."""

from __future__ import annotations

import io
import shlex
import tarfile
from fnmatch import fnmatch
from pathlib import Path

DEFAULT_EXCLUDE = ("node_modules", "dist", ".git")
# stdin: a line with the file count, that many paths (the manifest), then a tar.gz stream.
# Stale files are removed only inside the top-level directories the source ships (never .env,
# logs, backups or anything else that lives beside the tree), except pruned names (node_modules).
PUT_TREE_SCRIPT = """set -e
mkdir -p {dir}
cd {dir}
manifest=$(mktemp)
IFS= read -r count
for _ in $(seq 1 "$count"); do IFS= read -r line; printf '%s\\n' "$line"; done > "$manifest"
tar -xzf - --no-same-owner --no-overwrite-dir
for top in {dirs}; do
  find "$top" \\( {prune} \\) -prune -o -type f -print
done | sort > "$manifest.have"
sort "$manifest" | comm -13 - "$manifest.have" | while IFS= read -r f; do rm -f -- "$f"; done
rm -f "$manifest" "$manifest.have"
chown -R {owner}:{group} {top}
"""


def put_tree_payload(root: Path, remote_dir: str, exclude: tuple[str, ...], *, owner: str,
                     group: str) -> tuple[str, bytes, int]:
    """(bash script, its stdin, file count) that unpack `root` into remote_dir (see PUT_TREE_SCRIPT)."""
    archive, names = tar_tree(root, exclude)
    q = shlex.quote
    prune = " -o ".join(f"-name {q(p)}" for p in exclude) or "-false"
    tops = sorted({n.split("/", 1)[0] for n in names})
    dirs = " ".join(q(t) for t in tops if (root / t).is_dir())
    script = PUT_TREE_SCRIPT.format(dir=q(remote_dir), prune=prune, owner=q(owner), group=q(group),
                                    dirs=dirs, top=" ".join(q(t) for t in tops) or ".")
    header = f"{len(names)}\n" + "".join(f"{n}\n" for n in names)
    return script, header.encode() + archive, len(names)


def tar_tree(root: Path, exclude: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """A gzip tar of `root` (paths relative to it), skipping names matching `exclude`; + file list."""
    buf = io.BytesIO()
    names: list[str] = []

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(fnmatch(part, pat) for part in parts for pat in exclude):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isfile():
            names.append(info.name.removeprefix("./"))
        return info

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=skip)
    return buf.getvalue(), sorted(names)
