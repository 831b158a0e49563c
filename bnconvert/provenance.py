"""Provenance: what bnconvert stamps into the files it makes, and reads back from them.

A stamp is one JSON object (:func:`make_provenance`): the bnconvert version, what made the file
(``fold`` or ``export``), when (UTC), the source (file name only, format, Keras version, backend),
the fold log (:func:`bnconvert.fold.fold_log`: where each BN went and why each remaining one
stays) and the check's verdict. It is written after the check, on the temporary file, by
:func:`bnconvert.writers.stamp_keras` (HDF5: root attribute :data:`H5_ATTRIBUTE`; ``.keras``:
archive entry :data:`ZIP_ENTRY`) and :func:`bnconvert.onnx.save.stamp_onnx` (ONNX
``metadata_props``, :func:`onnx_props`).

Read back, a stamp is untrusted input like everything else in a file: :func:`parse_provenance`
bounds its size and depth, accepts JSON only, checks the type of every field it knows, and turns
anything wrong into a note (the stamp is then ignored), never an exception: a bad stamp must not
make a good model unreadable.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

from . import __version__

__all__ = [
    "H5_ATTRIBUTE", "MAX_PROVENANCE_CHARS", "ONNX_KEY", "SCHEMA", "ZIP_ENTRY", "check_verdict", "ignored_note", "make_provenance",
    "onnx_props", "parse_provenance", "provenance_line",
]

#: the value of the stamp's ``schema`` key (a reader ignores a stamp of another schema)
SCHEMA = "bnconvert-provenance/1"
#: the HDF5 root attribute holding the stamp (variable-length UTF-8 text: no 64 KB header limit)
H5_ATTRIBUTE = "bnconvert"
#: the ``.keras`` archive entry holding the stamp (Keras 3 and tf-keras ignore entries they do not know)
ZIP_ENTRY = "bnconvert.json"
#: the ONNX ``metadata_props`` key holding the whole stamp as JSON
ONNX_KEY = "bnconvert_provenance"
#: a stamp longer than this (characters, or bytes in an archive) is ignored: a real one is a few
#: hundred bytes per BN layer
MAX_PROVENANCE_CHARS = 4 * 1024**2
_MAX_DEPTH = 12


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _runner(text: Any) -> str | None:
    """What ran a side of the check, without the file it ran (``Keras 3.15.1 (keras, TensorFlow 2.21.0)``)."""
    if not isinstance(text, str) or not text:
        return None
    return text.partition(": ")[0]


def check_verdict(check: Any) -> dict[str, Any]:
    """The check as a stamp keeps it: ``checked``, ``passed``, ``status``, ``against`` (what
    computed the reference), ``reference_kind`` (keras, reference), ``max_error`` (the largest
    max|reference - output| / max|reference| over the outputs), ``atol``, ``rtol``, and
    ``reason`` when it did not run. ``check`` is a :class:`~bnconvert.check.results.CheckResult`,
    its ``to_dict()``, or None (no check ran)."""
    if check is None:
        return {"checked": False, "passed": None, "status": "not checked", "against": None, "reference_kind": None,
                "max_error": None, "atol": None, "rtol": None, "reason": "no check ran"}
    data = check.to_dict() if hasattr(check, "to_dict") else dict(check)
    checked = bool(data.get("checked", True))
    reference = _mapping(data.get("reference"))
    error = data.get("error")
    error = float(error) if isinstance(error, (int, float)) and not isinstance(error, bool) else None
    passed = data.get("passed")
    return {
        "checked": checked,
        "passed": passed if isinstance(passed, bool) else None,
        "status": data.get("status") or ("not checked" if not checked else "passed" if passed else "failed"),
        "against": _runner(reference.get("runner")) if checked else None,
        "reference_kind": reference.get("kind") if checked else None,
        "max_error": error if checked else None,
        "atol": data.get("atol"),
        "rtol": data.get("rtol"),
        "reason": None if checked else (data.get("reason") or data.get("message") or "not checked"),
    }


def make_provenance(
    source: Any,
    *,
    made: str,
    fold: Any = None,
    check: Any = None,
    extra: Mapping[str, Any] | None = None,
    when: str | None = None,
) -> dict[str, Any]:
    """The stamp of a file bnconvert made.

    ``source``: the input model's :class:`~bnconvert.model.Source` (None when unknown); only the
    file's base name is kept (a path can tell who made the file and where). ``made``: ``"fold"``
    or ``"export"``. ``fold``: a :class:`~bnconvert.fold.FoldReport`, or its :func:`fold_log`
    already made, or None when nothing was folded. ``check``: see :func:`check_verdict`.
    ``extra``: more JSON-ready facts (precision, opset ...), kept under ``"options"``.
    """
    from .fold.apply import FoldReport, fold_log

    if isinstance(fold, FoldReport):
        fold = fold_log(fold)
    return {
        "schema": SCHEMA,
        "bnconvert_version": __version__,
        "made": made,
        "when": when or _now(),
        "source": {
            "file": os.path.basename(source.path) if source is not None and source.path else None,
            "format": getattr(source, "format", None),
            "keras_version": getattr(source, "keras_version", None),
            "backend": getattr(source, "backend", None),
        },
        "fold": fold,
        "check": check_verdict(check),
        "options": dict(extra or {}),
    }


def onnx_props(provenance: Mapping[str, Any]) -> dict[str, str]:
    """The ONNX ``metadata_props`` of a stamp: the whole stamp as JSON under :data:`ONNX_KEY`, and
    a few flat keys that tools such as Netron show as they are."""
    source = provenance.get("source") or {}
    props = {
        ONNX_KEY: json.dumps(provenance, separators=(",", ":"), default=str),
        "source_file": str(source.get("file") or "unknown"),
        "source_format": str(source.get("format") or "unknown"),
        "keras_version": str(source.get("keras_version") or "unknown"),
        "fold_summary": _fold_words(provenance.get("fold")),
        "check": _check_words(provenance.get("check")),
    }
    return props


# -- reading back ---------------------------------------------------------------------------------

_STR = (str, type(None))
_NUM = (int, float, type(None))
#: the known fields and their JSON types (None allowed where the writer writes it)
_TOP: dict[str, tuple[type, ...]] = {
    "schema": (str,), "bnconvert_version": (str,), "made": (str,), "when": (str,), "source": (dict,),
    "fold": (dict, type(None)), "check": (dict,), "options": (dict,),
}
_SOURCE = {"file": _STR, "format": _STR, "keras_version": _STR, "backend": _STR}
_CHECK: dict[str, tuple[type, ...]] = {
    "checked": (bool,), "passed": (bool, type(None)), "status": (str,), "against": _STR, "reference_kind": _STR,
    "max_error": _NUM, "atol": _NUM, "rtol": _NUM, "reason": _STR,
}
_FOLD: dict[str, tuple[type, ...]] = {"totals": (dict,), "keep": (list,), "batch_norms": (list,), "dropped": (list,),
                                      "created_bias": (list,), "version": (int,)}
_BN: dict[str, tuple[type, ...]] = {"name": (str,), "action": (str,), "target": _STR, "via": (list,),
                                    "absorbed": (list,), "reason": (str,), "kept": _STR}


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                below += [v for v in item.values() if isinstance(v, (dict, list))]
            elif isinstance(item, list):
                below += [v for v in item if isinstance(v, (dict, list))]
        if depth > _MAX_DEPTH:
            return depth
        level = below
    return depth


def _bad_fields(data: Mapping[str, Any], spec: Mapping[str, tuple[type, ...]], where: str) -> str | None:
    for key, types in spec.items():
        if key in data and not (isinstance(data[key], types) and not (isinstance(data[key], bool) and bool not in types)):
            return f"'{where}{key}' is a {type(data[key]).__name__}"
    return None


def _problem(data: Any) -> str | None:
    """Why a parsed stamp is not one bnconvert wrote (None: it is well formed)."""
    if not isinstance(data, dict):
        return f"it is a JSON {type(data).__name__}, not an object"
    if data.get("schema") != SCHEMA:
        return f"its schema is {str(data.get('schema'))[:40]!r}, not {SCHEMA!r}"
    bad = _bad_fields(data, _TOP, "")
    if bad:
        return bad
    bad = _bad_fields(data.get("source") or {}, _SOURCE, "source.") or _bad_fields(data.get("check") or {}, _CHECK, "check.")
    if bad:
        return bad
    fold = data.get("fold")
    if fold is not None:
        bad = _bad_fields(fold, _FOLD, "fold.")
        if bad:
            return bad
        totals = fold.get("totals") or {}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in totals.values()):
            return "'fold.totals' holds a value that is not a count"
        for i, bn in enumerate(fold.get("batch_norms") or []):
            if not isinstance(bn, dict):
                return f"'fold.batch_norms[{i}]' is a {type(bn).__name__}"
            bad = _bad_fields(bn, _BN, f"fold.batch_norms[{i}].")
            if bad:
                return bad
    return None


def parse_provenance(raw: Any, where: str) -> tuple[dict[str, Any] | None, list[str]]:
    """A stamp read from a file (text or bytes, None when absent): ``(stamp, notes)``.

    Never raises: a stamp too long, not UTF-8, not JSON, nested too deeply, of another schema or
    with a field of the wrong type is ignored (``None``) with one note saying why (``where``
    names the place it was read from: "root attribute 'bnconvert'")."""
    if raw is None:
        return None, []
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > MAX_PROVENANCE_CHARS:
            return None, [ignored_note(where, f"it is {len(raw):,} bytes long (limit {MAX_PROVENANCE_CHARS:,})")]
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None, [ignored_note(where, "it is not UTF-8 text")]
    if not isinstance(raw, str):
        return None, [ignored_note(where, f"it is a {type(raw).__name__}, not text")]
    if len(raw) > MAX_PROVENANCE_CHARS:
        return None, [ignored_note(where, f"it is {len(raw):,} characters long (limit {MAX_PROVENANCE_CHARS:,})")]
    try:
        data = json.loads(raw)
    except RecursionError:
        return None, [ignored_note(where, "it is nested too deeply")]
    except ValueError as exc:
        return None, [ignored_note(where, f"it is not valid JSON ({str(exc)[:80]})")]
    if _depth(data) > _MAX_DEPTH:
        return None, [ignored_note(where, f"it is nested more than {_MAX_DEPTH} levels deep")]
    problem = _problem(data)
    if problem:
        return None, [ignored_note(where, problem)]
    return data, []


def ignored_note(where: str, why: str) -> str:
    """The note of a stamp ignored because ``why`` (read from ``where``)."""
    return f"the bnconvert provenance stamp ({where}) is ignored: {why}"


# -- words --------------------------------------------------------------------------------------------

def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (words are made from checked stamps, but
    also from stamps built in memory)."""
    return value if isinstance(value, Mapping) else {}


def _fold_words(fold: Any) -> str:
    if not isinstance(fold, Mapping):
        return "not folded"
    t = _mapping(fold.get("totals"))
    line = f"{t.get('folded', 0)} of {t.get('batch_norms', 0)} BN folded"
    parts = [f"{t[k]} {k}" for k in ("backward", "forward", "merged") if t.get(k)]
    if parts:
        line += f" ({', '.join(parts)})"
    kept = sum(1 for bn in fold.get("batch_norms") or [] if isinstance(bn, Mapping) and bn.get("kept"))
    if t.get("stays"):
        line += f", {t['stays']} stay" + (f" ({kept} kept by --keep)" if kept else "")
    return line


def _check_words(check: Any) -> str:
    if not isinstance(check, Mapping) or not check.get("checked"):
        reason = check.get("reason") if isinstance(check, Mapping) else None
        return f"not checked: {reason or 'no check ran'}"
    verdict = check.get("status") or ("passed" if check.get("passed") else "failed")
    line = str(verdict)
    if check.get("against"):
        line += f" against {check['against']}"
    error = check.get("max_error")
    if isinstance(error, (int, float)) and not isinstance(error, bool):
        line += f" (max |diff| / max |reference| {error:.2g})"
    return line


def provenance_line(provenance: Mapping[str, Any]) -> str:
    """One line for ``inspect``: who made the file from what, what the fold did, the check."""
    source = _mapping(provenance.get("source"))
    what = f"{source.get('format') or 'unknown format'}"
    if source.get("keras_version"):
        what += f", Keras {source['keras_version']}"
    made = provenance.get("made") or "made"
    return (f"made by bnconvert {provenance.get('bnconvert_version') or '?'} ({made}) from "
            f"{source.get('file') or 'an unnamed file'} ({what}) on {provenance.get('when') or '?'}; "
            f"{_fold_words(provenance.get('fold'))}; check: {_check_words(provenance.get('check'))}")
