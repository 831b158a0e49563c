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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Model

__all__ = ["one_line", "refuse_unencodable", "safe_lines", "unencodable_layers"]

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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string (keys included) in a config value; the readers bound the nesting already."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from _strings(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def unencodable_layers(model: Model, *, hdf5: bool = False) -> list[str]:
    """The layers (as ``'name' (Class)``, escaped) whose name or config holds a lone surrogate:
    text no file format can store (UTF-8, HDF5 names, ONNX's protobuf strings all refuse it).
    With ``hdf5``, also the layers whose name holds NUL, which HDF5 names and string attributes
    cannot hold (a Keras file stores its layer names there). ``fold`` and ``export`` refuse such
    a model before writing anything."""
    found = []
    if any(_SURROGATE.search(s) for s in _strings(model.name)):
        found.append(f"the model '{one_line(model.name)}'")
    for path, layer, _ in model.walk():
        if (_SURROGATE.search(path) or (hdf5 and "\x00" in path)
                or any(_SURROGATE.search(s) for s in _strings(layer.config))):
            found.append(f"'{one_line(path)}' ({one_line(layer.source_class)})")
    return found


def refuse_unencodable(model: Model, path: object, what: str, *, hdf5: bool = False) -> None:
    """Raise :class:`~bnconvert.errors.FormatError` (``<path>: cannot <what>: ...``) when
    :func:`unencodable_layers` finds any: called before an output is written, never after."""
    from .errors import FormatError

    bad = unencodable_layers(model, hdf5=hdf5)
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        kinds = "a lone surrogate (text that is not valid Unicode)" + (" or a NUL character" if hdf5 else "")
        raise FormatError(f"{path}: cannot {what}: {', '.join(bad[:5])}{more}: a name or config value holds "
                          f"{kinds}, which the output file cannot store")
