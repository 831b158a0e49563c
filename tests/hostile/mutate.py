"""Mutations for the fuzz test: raw bytes of a file, and the JSON config inside a model file.

Every mutator is a pure function of its input and a ``random.Random``, so a failing case can be
replayed from its seed (``hypothesis`` hands the seed over and shrinks it).
"""

from __future__ import annotations

import copy
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import h5py

__all__ = ["BYTE_OPS", "config_of", "mutate_bytes", "mutate_json", "with_config"]

BYTE_OPS = ("flip", "byte", "insert", "delete", "truncate", "zero", "splice", "pointer")

_WEIRD = [None, True, False, 0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e308, 0.5, float("nan"),
          float("inf"), "", "x", "channels_first", "same", "valid", [], [0], [-1, -1], [None], [1, 2, 3, 4, 5],
          {}, {"class_name": "Lambda", "config": {"function": "4wEAAAAAAAAA"}}, {"__keras_tensor__": 1},
          ["a", 0, 0], [["a", 0, 0, {}]], "Sequential", "Functional", "BatchNormalization", "Conv2D", "Dense"]
#: integers past every bound a reader might forget (shapes, strides, axes), and names that are data
_HUGE = [2**31, 2**63, 2**70, -(2**63), -9, 10**6]
_NAMES = ["\x1b]0;pwned\x07", "\x1b[2J", "a\nbnconvert: error: forged", "nul\x00name", "\ud800", "\u202e", "..", "/abs", ""]


def _pointers(buf: bytearray, rng: random.Random, tries: int = 4000) -> list[int]:
    """Positions of 8-byte little-endian words that hold a plausible file address (sampled)."""
    size = len(buf)
    found = []
    for _ in range(tries):
        pos = rng.randrange(max(1, size - 8))
        value = int.from_bytes(buf[pos : pos + 8], "little")
        if 0 < value < size:
            found.append(pos)
    return found


def mutate_bytes(data: bytes, rng: random.Random, op: str | None = None) -> tuple[bytes, str]:
    """One byte-level mutation (a few edits of one kind); returns the new bytes and a label."""
    buf = bytearray(data)
    op = op or rng.choice(BYTE_OPS)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            break
        pos = rng.randrange(len(buf))
        if op == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == "byte":
            buf[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, 1, rng.randrange(256)])
        elif op == "insert":
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == "delete":
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == "truncate":
            del buf[pos:]
            break
        elif op == "zero":
            n = min(rng.choice([1, 8, 64, 512]), len(buf) - pos)
            buf[pos : pos + n] = bytes(n)
        elif op == "splice":  # copy a run of the file over another place (plausible structures)
            src = rng.randrange(len(buf))
            n = rng.randint(1, 64)
            buf[pos : pos + n] = buf[src : src + n]
        elif op == "pointer":  # an address field pointed at itself, near itself, or at another
            # structure's address: B-tree children and siblings that loop, heaps that point inward
            where = _pointers(buf, rng)
            if not where:
                break
            at = rng.choice(where)
            target = rng.choice([at, max(0, at - rng.randint(1, 64)), int.from_bytes(buf[rng.choice(where):][:8], "little")])
            buf[at : at + 8] = target.to_bytes(8, "little")
    return bytes(buf), op


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _get(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def mutate_json(config: Any, rng: random.Random) -> tuple[Any, str]:
    """One structural mutation of a parsed config: delete, replace, duplicate, nest or retype."""
    config = copy.deepcopy(config)
    paths = _paths(config)
    path = rng.choice(paths[1:] or paths)
    op = rng.choice(["delete", "weird", "weird", "swap", "nest", "copy", "number", "huge", "name", "rewire"])
    if not path:
        return rng.choice(_WEIRD), "root"
    if op == "rewire":  # a reference to a layer made to name another one: cycles, dangling calls
        names = sorted({v for p in paths if p and p[-1] == "name" and isinstance(v := _get(config, p), str)})
        refs = [p for p in paths if p and isinstance(_get(config, p), str) and _get(config, p) in names and p[-1] != "name"]
        if refs and names:
            ref = rng.choice(refs)
            _get(config, ref[:-1])[ref[-1]] = rng.choice(names)
            return config, op
        op = "weird"
    parent, key = _get(config, path[:-1]), path[-1]
    if op == "delete":
        del parent[key]
    elif op == "weird":
        parent[key] = copy.deepcopy(rng.choice(_WEIRD))
    elif op == "swap":  # another node of the config in this place
        parent[key] = copy.deepcopy(_get(config, rng.choice(paths)))
    elif op == "nest":
        value = parent[key]
        for _ in range(rng.choice([1, 3, 40])):
            value = [value]
        parent[key] = value
    elif op == "copy" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif op == "huge":
        parent[key] = rng.choice(_HUGE) if not isinstance(parent[key], list) else [rng.choice(_HUGE)] * max(1, len(parent[key]))
    elif op == "name":  # any string may be a layer name somewhere: control characters, surrogates
        if isinstance(parent[key], str):
            parent[key] = rng.choice(_NAMES) + parent[key] * rng.randint(0, 1)
    elif op == "number":
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            parent[key] = rng.choice([0, -1, 3])
        else:
            parent[key] = rng.choice([value + 1, value - 1, value * 2, -value, 0])
    return config, op


def config_of(path: Path) -> Any:
    """The parsed model config of a ``.keras`` zip or a full ``.h5`` (None when there is none)."""
    data = path.read_bytes()
    if data.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return json.loads(zf.read("config.json"))
    with h5py.File(io.BytesIO(data), "r") as f:
        text = f.attrs.get("model_config")
    if text is None:
        return None
    return json.loads(text.decode() if isinstance(text, bytes) else text)


def with_config(path: Path, out: Path, config_text: str) -> None:
    """Write a copy of the model file ``path`` to ``out`` with its config replaced by ``config_text``."""
    data = path.read_bytes()
    if data.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                body = config_text.encode("utf-8", "surrogatepass") if info.filename == "config.json" else src.read(info)
                dst.writestr(info.filename, body)
        return
    out.write_bytes(data)
    with h5py.File(out, "r+") as f:
        f.attrs["model_config"] = config_text.encode("utf-8", "surrogatepass")
