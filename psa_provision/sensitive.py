"""Values that must never be shown: a `Secret` (one password) and `Sensitive` text (a script's stdin,
a file's content) that may hold secrets. Both show as `***` in repr, str, f-strings and JSON.

The mask travels with the value (pyinfra's MaskString idea): a plan, a log line or an exception built
from these objects cannot carry the real text. Only the SSH adapter unwraps a `Sensitive`
(`reveal()`), where the bytes go onto the channel or into the file. Stdlib only, so adapters and the
core both import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, NoReturn

MASK = "***"


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in text by `***` (longest first, so prefixes don't leak)."""
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


class _Masked:
    """Shared behaviour: shown as `***` everywhere, never copied out or pickled."""

    __slots__ = ()

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __copy__(self) -> Any:
        return self  # immutable; dataclasses.asdict deep-copies fields and must keep the wrapper

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} is not pickled (it would write the secret out)")


class Secret(_Masked):
    """A secret value. Printing it shows `***`; only `.value` gives the real thing."""

    __slots__ = ("value",)
    value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash((Secret, self.value))


class Sensitive(_Masked):
    """Text bound for a guest that may hold secrets: `Sensitive(***)` wherever it is shown.

    `reveal()` gives the text (the SSH adapter alone calls it); `mask(text)` hides the secret values
    it holds in whatever the guest echoes back (psql quotes a failing statement in its error), e.g.

        stdin = Sensitive.join("ALTER ROLE psa_app PASSWORD '", secrets.get("postgresql.app_password"), "'")
        conn.run(script, stdin=stdin)   # a failure's GuestError shows PASSWORD '***'
    """

    __slots__ = ("_secrets", "_text")
    _text: str
    _secrets: tuple[str, ...]

    def __init__(self, text: str = "", secrets: Iterable[str] = ()) -> None:
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_secrets", tuple(s for s in secrets if s))

    @classmethod
    def join(cls, *parts: str | Secret) -> Sensitive:
        """The parts in a row, each Secret's value among the values to mask."""
        text = "".join(p.value if isinstance(p, Secret) else p for p in parts)
        return cls(text, [p.value for p in parts if isinstance(p, Secret)])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Sensitive is immutable")

    def reveal(self) -> str:
        """The real text: only for the bytes that go onto the SSH channel or into the file."""
        return self._text

    def mask(self, text: str) -> str:
        """`text` with every secret value this holds replaced by `***`."""
        return mask(text, self._secrets)

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the UTF-8 text (what the guest's file checksum is compared with)."""
        return hashlib.sha256(self._text.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Sensitive({MASK})"

    def __bool__(self) -> bool:
        return bool(self._text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive) and other._text == self._text

    def __hash__(self) -> int:
        return hash((Sensitive, self._text))
