"""Write output files so that a failure never leaves a partial file or destroys anything.

Every command that writes (``fold``, ``export``, ``inspect --plot``) goes through
:func:`atomic_output`:

* the output is written into a private temporary folder *inside the target's folder* (same file
  system, so the final rename is atomic; same file name, so writers that pick a format from the
  suffix or write companion files by relative name keep working), then renamed into place;
* an existing output is replaced only with ``force``; without it the final step is a hard link,
  which fails instead of overwriting a file that appeared in the meantime;
* the output may never be one of the inputs: compared by resolved path (symlinks, ``..``,
  relative paths) and by :func:`os.path.samefile` (hard links, case-insensitive file systems);
* a read-only folder, a full disk or any exception while writing leaves nothing behind and
  raises :class:`~bnconvert.errors.OutputError` with the reason.

Usage::

    check_output(out, force=force, inputs=[src])       # before the expensive work: fail early
    with atomic_output(out, force=force, inputs=[src]) as tmp:
        write_model(model, tmp)                          # write to tmp; renamed on success
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputError

__all__ = ["atomic_output", "check_output", "same_file"]

_TMP_PREFIX = ".bnconvert-tmp-"


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name the same file: same resolved path, or the same inode."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.resolve() == pb.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop resolves to nothing: compare inodes below
        pass
    try:
        return os.path.samefile(pa, pb)
    except (OSError, ValueError):
        return False


def _why(exc: OSError) -> str:
    """The system's words for an OSError, with what they mean for the user."""
    words = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file is larger than this system or file system allows",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}.get(exc.errno or 0)
    return f"{words}: {hint}" if hint and hint.lower() != words.lower() else words


def check_output(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    companions: Iterable[str] = (),
) -> Path:
    """Validate an output path before any work is done; returns it as a :class:`~pathlib.Path`.

    ``companions`` are file names written beside the output (``model.onnx.data``); they are held
    to the same rules.
    """
    out = Path(path)
    folder = out.parent
    sources = [Path(p) for p in inputs]
    for target in [out, *(folder / name for name in companions)]:
        for src in sources:
            if same_file(target, src):
                raise OutputError(f"{target}: is the input file {src}; bnconvert never overwrites its input")
        if target.is_dir():
            raise OutputError(f"{target}: is a folder; give an output file name")
        if (target.exists() or target.is_symlink()) and not force:
            raise OutputError(f"{target}: already exists (use --force to replace it)")
    if not folder.is_dir():
        raise OutputError(f"{out}: the folder {folder} does not exist")
    return out


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _place(tmp: Path, target: Path, force: bool) -> None:
    """Move ``tmp`` to ``target``: replace when ``force``, else link (fails if target exists)."""
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputError(f"{target}: appeared while bnconvert was writing; not replaced (use --force)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists() or target.is_symlink():  # no hard links here: check, then rename
            raise OutputError(f"{target}: appeared while bnconvert was writing; not replaced (use --force)") from None
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    companions: Iterable[str] = (),
) -> Iterator[Path]:
    """Yield a temporary path to write the output to; on success it is renamed to ``path``.

    The temporary path has the output's file name, in a private folder inside the output's folder.
    Files named in ``companions`` that the writer puts beside it (same folder) are moved too,
    before the main file, so the main file appears last. On any exception nothing is left behind
    and an ``OSError`` becomes :class:`~bnconvert.errors.OutputError`.
    """
    inputs = list(inputs)
    companions = list(companions)
    out = check_output(path, force=force, inputs=inputs, companions=companions)
    folder = out.parent
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=folder))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {folder} ({_why(exc)})") from None
    tmp = tmpdir / out.name
    try:
        yield tmp
        if not tmp.is_file():
            raise OutputError(f"{out}: the writer produced no file")
        written = [name for name in companions if (tmpdir / name).is_file()]
        for name in [*written, out.name]:
            _fsync(tmpdir / name)
        check_output(out, force=force, inputs=inputs, companions=companions)  # still true after the work?
        placed: list[Path] = []
        try:
            for name in written:
                _place(tmpdir / name, folder / name, force)
                placed.append(folder / name)
            _place(tmp, out, force)
        except BaseException:
            for p in placed:  # a companion without its main file would be a partial output
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        _fsync(folder)
    except OSError as exc:
        raise OutputError(f"{out}: cannot be written ({_why(exc)}); nothing was written") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
