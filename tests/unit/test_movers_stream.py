"""ssh streaming between guests, pure parts: the pump, bounded tails, the failure message."""

from __future__ import annotations

import io

from psa_provision.ssh import Result, Tail, pump, stream_failure


def test_pump_copies_everything_in_bounded_chunks() -> None:
    data = bytes(range(256)) * 5000
    sink = io.BytesIO()
    sizes: list[int] = []

    def write(chunk: bytes) -> None:
        sizes.append(len(chunk))
        sink.write(chunk)

    assert pump(io.BytesIO(data).read, write, chunk=4096) == len(data)
    assert sink.getvalue() == data and max(sizes) == 4096


def test_pump_of_nothing_writes_nothing() -> None:
    calls: list[bytes] = []
    assert pump(io.BytesIO(b"").read, calls.append) == 0 and calls == []


def test_tail_keeps_only_the_last_bytes_and_says_it_cut() -> None:
    tail = Tail(limit=10)
    for line in (b"first line\n", b"second\n", b"end\n"):
        tail.write(line)
    assert tail.total == 22
    assert tail.text() == "[...]\nend\n"  # "econd" was a partial line


def test_short_tail_is_whole() -> None:
    tail = Tail(limit=100)
    tail.write(b"pg_restore: error: x\n")
    assert tail.text() == "pg_restore: error: x\n"


def test_failure_names_both_ends_codes_and_stderr() -> None:
    text = stream_failure("10.0.20.100", "set -e\npg_dump -Fc x", Result("", "dump: boom\n", 1),
                          "10.0.30.10", "pg_restore -d x", Result("", "", 0), "the target stopped reading")
    assert text.splitlines() == [
        "stream 10.0.20.100 -> 10.0.30.10 failed: the target stopped reading",
        "  source 10.0.20.100 `pg_dump -Fc x` exited 1",
        "    dump: boom",
        "  target 10.0.30.10 `pg_restore -d x` exited 0",
    ]


def test_failure_says_when_an_end_was_closed_before_its_exit_status() -> None:
    text = stream_failure("a", "yes", Result("", "", -1), "b", "head -c 1", Result("", "", 4))
    assert "`yes` exited nothing (channel closed)" in text and "`head -c 1` exited 4" in text
