"""What a replacement is, and reading the ones a user gives: ``--replace NAME=SPEC``, ``@FILE``,
a JSON or YAML file, or the API's mapping (:data:`ReplacementsLike`)."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BnconvertError

#: the longest chain one replacement may hold (a replacement is a short description, not a model)
MAX_CHAIN = 8


#: the largest replacements file read (JSON or YAML)
MAX_FILE_BYTES = 1 << 20


_SPEC_KEYS = frozenset({"class_name", "config", "module", "registered_name"})


class ReplacementError(BnconvertError):
    """A replacement the user gave cannot be read or applied (exit 2, one line)."""


@dataclass(frozen=True)
class Replacement:
    """``target`` (a layer name or path, or a class name) -> ``layers``, Keras layer configs
    (``{"class_name": ..., "config": {...}}``) run in sequence; ``origin`` says where the user gave
    it (``--replace``, a file), for messages."""

    target: str
    layers: tuple[dict[str, Any], ...]
    origin: str = "--replace"

    @classmethod
    def of(cls, target: str, spec: Any, origin: str = "--replace") -> Replacement:
        """A checked replacement from a target and its spec: a layer config, a list of them, or
        their JSON text."""
        if not isinstance(target, str) or not target.strip():
            raise ReplacementError(f"{origin}: a replacement needs a layer name or class before '='")
        target = target.strip()
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise ReplacementError(f"{origin}: the replacement of '{target}' is not JSON ({exc.msg} at "
                                       f"character {exc.pos})") from None
        specs = spec if isinstance(spec, list) else [spec]
        if not specs or len(specs) > MAX_CHAIN:
            raise ReplacementError(f"{origin}: the replacement of '{target}' holds {len(specs)} layers; give 1 to "
                                   f"{MAX_CHAIN}")
        layers = []
        for i, item in enumerate(specs):
            where = f"{origin}: the replacement of '{target}'" + (f", layer {i + 1}," if len(specs) > 1 else "")
            if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
                raise ReplacementError(f"{where} is not a Keras layer config "
                                       '({"class_name": "...", "config": {...}})')
            extra = sorted(set(item) - _SPEC_KEYS)
            if extra:
                raise ReplacementError(f"{where} has unknown keys {', '.join(map(repr, extra))} (a layer config has "
                                       "'class_name' and 'config')")
            config = item.get("config", {})
            if not isinstance(config, dict):
                raise ReplacementError(f"{where}: 'config' is not an object")
            layers.append({"class_name": item["class_name"], "config": copy.deepcopy(config)})
        return cls(target, tuple(layers), origin)

    def describe(self) -> str:
        """``Rescaling(scale=0.0039, offset=-0.5) -> Activation(activation='relu')``."""
        return " -> ".join(_short(spec) for spec in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "layers": [copy.deepcopy(s) for s in self.layers], "origin": self.origin}


#: what the API takes: a mapping target -> spec, Replacement objects, ``--replace`` texts, or a
#: path to a JSON/YAML file (a ``str`` naming a file must start with ``@``; a Path need not)
ReplacementsLike = Mapping[str, Any] | Iterable[Replacement | str] | os.PathLike | None


def _short(spec: dict[str, Any]) -> str:
    config = spec.get("config") or {}
    shown = ", ".join(f"{k}={_value(v)}" for k, v in config.items() if k != "name")
    return f"{spec['class_name']}({shown})"


def _value(v: Any) -> str:
    text = f"{v:.6g}" if isinstance(v, float) else repr(v)
    return text if len(text) <= 30 else text[:27] + "..."


def parse_replace_option(text: str) -> list[Replacement]:
    """One ``--replace`` value: ``NAME_OR_CLASS=SPEC`` (SPEC: a layer config JSON, or a JSON list
    of them) or ``@FILE`` (a JSON or YAML mapping of such replacements)."""
    if text.startswith("@"):
        return read_replacements(text[1:])
    target, sep, spec = text.partition("=")
    if not sep:
        raise ReplacementError(f"--replace {text!r}: expected NAME_OR_CLASS=SPEC or @FILE")
    return [Replacement.of(target, spec.strip())]


def read_replacements(path: str | os.PathLike[str]) -> list[Replacement]:
    """The replacements of a JSON or YAML file: a mapping ``NAME_OR_CLASS: SPEC`` (SPEC a layer
    config or a list of them)."""
    p = Path(path)
    origin = f"replacements file {p}"
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ReplacementError(f"{origin}: not a regular file")
        if size > MAX_FILE_BYTES:
            raise ReplacementError(f"{origin}: {size:,} bytes is too large for a replacements file")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReplacementError(f"{origin}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ReplacementError(f"{origin}: not UTF-8 text") from None
    data = _parse_mapping(text, p, origin)
    if not isinstance(data, dict) or not data:
        raise ReplacementError(f"{origin}: expected a mapping NAME_OR_CLASS -> layer config (or a list of them)")
    return [Replacement.of(str(target), spec, origin) for target, spec in data.items()]


def _parse_mapping(text: str, path: Path, origin: str) -> Any:
    if path.suffix.lower() not in (".yaml", ".yml"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if path.suffix.lower() == ".json":
                raise ReplacementError(f"{origin}: not JSON ({exc.msg} at line {exc.lineno})") from None
    import yaml  # a dependency; imported here, as only replacement files need it

    try:
        return yaml.safe_load(text)  # safe_load: plain data only, never Python objects
    except yaml.YAMLError as exc:
        raise ReplacementError(f"{origin}: not YAML ({str(exc).splitlines()[0]})") from None


def as_replacements(value: ReplacementsLike) -> list[Replacement]:
    """The replacements given to an API function, in any of the forms of :data:`ReplacementsLike`;
    two replacements of one target are an error."""
    if value is None:
        return []
    if isinstance(value, os.PathLike):
        out = read_replacements(value)
    elif isinstance(value, str):
        out = parse_replace_option(value)
    elif isinstance(value, Mapping):
        out = [Replacement.of(str(target), spec, "replacements") for target, spec in value.items()]
    else:
        out = []
        for item in value:
            if isinstance(item, Replacement):
                out.append(item)
            elif isinstance(item, str):
                out.extend(parse_replace_option(item))
            else:
                raise TypeError(f"a replacement is a Replacement or a 'NAME=SPEC' text, not {type(item).__name__}")
    seen: dict[str, Replacement] = {}
    for r in out:
        if r.target in seen:
            raise ReplacementError(f"'{r.target}' is replaced twice ({seen[r.target].origin} and {r.origin})")
        seen[r.target] = r
    return out
