"""Client-chosen text made safe to show: every character Python does not count as printable
(controls such as newline, NUL and ESC, bidi and other format characters, line separators, lone
surrogates) becomes a visible escape, so a value can neither start a log line of its own, hide text,
reorder what a person reads, nor put a byte a log shipper or a metrics scraper chokes on."""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_character(character: str) -> str:
    named = _NAMED.get(character)
    if named is not None:
        return named
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_unprintable(value: str) -> str:
    if value.isprintable():
        return value
    return "".join(character if character.isprintable() else _escape_character(character) for character in value)
