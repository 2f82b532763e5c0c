"""Cache-Control (RFC 9111 §5.2) and its targeted twins (RFC 9213), parsed once per message.

Directive names are case-insensitive; arguments may be tokens or quoted strings. A
directive that appears twice with different arguments, or whose delta-seconds
argument is not a non-negative integer, is kept as `INVALID`: §4.2.1 says such a
response is stale, and callers treat an invalid request directive as absent.
"""

from __future__ import annotations

from typing import Final

Directives = dict[bytes, bytes | None]

INVALID: Final = b"\x00invalid"
"""The argument recorded for a directive given twice with different arguments."""

# RFC 9111 §1.2.2: a delta-seconds too large to represent counts as 2^31.
DELTA_CAP: Final = 2147483648


def parse(value: bytes | None) -> Directives:
    """The directives of a (comma-joined) Cache-Control value, names lower-cased."""
    directives: Directives = {}
    if not value:
        return directives
    for name, argument in _items(value):
        if name in directives and directives[name] != argument:
            directives[name] = INVALID
        else:
            directives[name] = argument
    return directives


def _items(value: bytes) -> list[tuple[bytes, bytes | None]]:
    """Split on commas outside quoted strings: `private="a, b"` is one directive."""
    items: list[tuple[bytes, bytes | None]] = []
    start = 0
    quoted = False
    escaped = False
    for index, byte in enumerate(value):
        if escaped:
            escaped = False
        elif byte == 0x5C and quoted:  # backslash
            escaped = True
        elif byte == 0x22:  # double quote
            quoted = not quoted
        elif byte == 0x2C and not quoted:  # comma
            _add(items, value[start:index])
            start = index + 1
    _add(items, value[start:])
    return items


def _add(items: list[tuple[bytes, bytes | None]], part: bytes) -> None:
    name, equals, argument = part.partition(b"=")
    name = name.strip().lower()
    if not name:
        return
    if not equals:
        items.append((name, None))
        return
    argument = argument.strip()
    if len(argument) >= 2 and argument[0] == 0x22 and argument[-1] == 0x22:
        argument = argument[1:-1].replace(b"\\", b"")
    items.append((name, argument))


def seconds(directives: Directives, name: bytes) -> int | None:
    """A delta-seconds directive: None if absent, -1 if present but invalid (not
    digits, duplicated with another value, or without an argument)."""
    if name not in directives:
        return None
    argument = directives[name]
    if argument is None or argument is INVALID or not argument.isdigit():
        return -1
    return min(int(argument), DELTA_CAP)


def field_names(directives: Directives, name: bytes) -> frozenset[bytes] | None:
    """The field names qualifying `private="a, b"` or `no-cache="a"`; None when the
    directive has no argument (it then applies to the whole response)."""
    argument = directives.get(name)
    if argument is None or argument is INVALID:
        return None
    names = frozenset(part.strip().lower() for part in argument.split(b",") if part.strip())
    return names or None


def targeted(headers: list[tuple[bytes, bytes]], names: tuple[bytes, ...]) -> Directives | None:
    """The first targeted field (RFC 9213) in `names`' order that the response has, parsed
    — it then replaces Cache-Control and Expires for this cache — or None. A targeted
    field that does not parse as a list of directives is ignored (§2.1)."""
    for wanted in names:
        value = joined(headers, wanted)
        if value is not None:
            directives = parse(value)
            if directives:
                return directives
    return None


def joined(headers: list[tuple[bytes, bytes]], lower_name: bytes) -> bytes | None:
    """All lines of one header joined into a comma-separated list, or None."""
    found: bytes | None = None
    size = len(lower_name)
    for name, value in headers:
        if len(name) == size and name.lower() == lower_name:
            found = value if found is None else found + b", " + value
    return found
