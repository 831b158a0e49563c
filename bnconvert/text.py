"""Text from files, made safe for a terminal: layer names, file names and messages are data.

A layer name may hold an escape sequence (retitle the terminal, move the cursor), a newline (forge
a line of the report), NUL or a lone surrogate (which cannot be encoded at all and would crash the
print). :func:`one_line` escapes all of them the way ``repr`` does (``\\x1b``, ``\\n``,
``\\ud800``) and leaves every other character, backslashes included, as it is. Everything that
prints a name on the terminal goes through it; JSON output is left to ``json.dumps`` (which
escapes the same characters itself).
"""

from __future__ import annotations

import re

__all__ = ["one_line", "safe_lines"]

# C0 controls and DEL, C1 controls, lone surrogates, the Unicode line and paragraph separators,
# and the bidirectional overrides and isolates (they reorder what the terminal shows)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: object) -> str:
    """``str(text)`` as one line that is safe to print: control characters, line separators,
    bidi overrides and lone surrogates escaped like ``repr`` (``'a\\x1b]0;x\\x07'``)."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s)


def safe_lines(text: str) -> str:
    """A multi-line text whose line breaks are its own (a report): each line made safe by
    :func:`one_line`. Names inside must already be escaped where the text was made, or a newline
    in a name would still start a line of its own."""
    return "\n".join(one_line(line) for line in text.split("\n"))
