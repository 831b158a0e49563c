"""Write a file atomically: into a temporary file beside the target, then ``os.replace``.

Nothing is left behind on failure, the input is never overwritten, and an existing output is
only replaced when the caller says so (``force``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

__all__ = ["atomic_output", "check_target"]


def check_target(target: str | os.PathLike[str], *, source: str | os.PathLike[str] | None, force: bool) -> Path:
    """Validate an output path before any work is done; returns it as a Path."""
    out = Path(target)
    if source is not None and (out.resolve() == Path(source).resolve() or (out.exists() and _same(out, Path(source)))):
        raise OutputError(f"{out}: refusing to overwrite the input file")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder")
    if out.exists() and not force:
        raise OutputError(f"{out}: already exists (use --force to replace it)")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{out}: folder {folder} is not writable")
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path (same folder, same extension) to write to; on normal exit it
    replaces ``target``, on any exception it is removed and ``target`` is untouched."""
    out = check_target(target, source=source, force=force)
    folder = out.parent if str(out.parent) else Path(".")
    suffix = "".join(out.suffixes[-1:])
    tmp = folder / f".{out.stem}.{secrets.token_hex(4)}.tmp{suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{out}: nothing was written")
        if out.exists() and not force:  # appeared while we worked
            raise OutputError(f"{out}: already exists (use --force to replace it)")
        os.replace(tmp, out)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
