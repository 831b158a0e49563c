"""Write output files so that a failure never leaves a partial file or destroys anything.

Every command that writes (``fold``, ``export``, ``inspect --plot``) goes through
:func:`atomic_output`:

* the output is written into a private temporary folder *inside the target's folder* (same file
  system, so the final rename is atomic; same file name, so writers that pick a format from the
  suffix or write companion files by relative name keep working), then renamed into place;
* an existing output is replaced only with ``force``; without it the final step is a hard link,
  which fails instead of overwriting a file that appeared in the meantime;
* the output may never be one of the inputs (the model, ``--config``, every file a folder run
  audits: an :class:`InputSet`), compared by resolved path (symlinks, ``..``, relative paths) and
  by device and inode (hard links, case-insensitive file systems);
* only a regular file is ever replaced: a device, a pipe or a socket (also through a symlink) is
  refused even with ``force``;
* the CLI turns SIGTERM and SIGHUP into :class:`Terminated` (a ``KeyboardInterrupt``), so the
  cleanup below runs for them as it does for Ctrl-C (:func:`terminate_on_signals`);
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
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

from .errors import OutputError

__all__ = ["InputSet", "Terminated", "atomic_output", "check_output", "same_file", "shown_path", "terminate_on_signals"]

_TMP_PREFIX = ".bnconvert-tmp-"

PathLike = str | os.PathLike[str]


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop resolves to nothing: inodes decide
        return None


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


class InputSet:
    """Every file a command reads, so that no output can ever be one of them.

    A file is known by its resolved path (symlinks, ``..``, relative paths) and by its device and
    inode (hard links, case-insensitive file systems, bind mounts); :meth:`find` answers whether a
    path names any of them in constant time, however many files a folder run reads. ``None``
    entries are ignored, so optional inputs (``--config``) can be passed as they are.
    """

    def __init__(self, paths: Iterable[PathLike | None] = ()) -> None:
        self._by_path: dict[Path, Path] = {}
        self._by_inode: dict[tuple[int, int], Path] = {}
        self.add(*paths)

    def add(self, *paths: PathLike | None) -> InputSet:
        """Add files (``None`` is skipped); returns self."""
        for raw in paths:
            if raw is None:
                continue
            path = Path(raw)
            resolved = _resolved(path)
            if resolved is not None:
                self._by_path.setdefault(resolved, path)
            inode = _inode(path)
            if inode is not None:
                self._by_inode.setdefault(inode, path)
        return self

    def find(self, path: PathLike) -> Path | None:
        """The input that ``path`` names (as the caller gave it), or None."""
        p = Path(path)
        resolved = _resolved(p)
        if resolved is not None and resolved in self._by_path:
            return self._by_path[resolved]
        inode = _inode(p)
        return self._by_inode.get(inode) if inode is not None else None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and self.find(path) is not None

    def __len__(self) -> int:
        return len(set(self._by_path.values()) | set(self._by_inode.values()))

    @classmethod
    def of(cls, inputs: InputSet | Iterable[PathLike | None]) -> InputSet:
        """``inputs`` as an InputSet (itself when it already is one)."""
        return inputs if isinstance(inputs, InputSet) else cls(inputs)


def shown_path(path: PathLike) -> str:
    """The path to name in a report: for a file :func:`atomic_output` is writing, its final path
    (the temporary folder is an implementation detail that is gone when the report is read: the
    check of ``fold`` and ``export`` runs on the file before it is renamed into place), else
    ``path`` as given."""
    text = os.fspath(path)
    p = Path(text)
    if p.parent.name.startswith(_TMP_PREFIX):
        return str(p.parent.parent / p.name)
    return text


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file: same resolved path, or the same inode."""
    return InputSet([b]).find(a) is not None


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so every
    ``finally`` (the temporary output of :func:`atomic_output` first) runs before the process ends.
    ``exit_code`` is the shell's 128 + signal number (143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back during a cleanup (delivered right after it), so an
    interruption cannot cut the cleanup short. POSIX main thread only; elsewhere a no-op."""
    held = {signal.SIGINT, *_SIGNALS}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (the
    first one only: a repeat while the cleanup runs is ignored, so the cleanup completes); the
    previous handlers are restored after. Outside the main thread it does nothing (Python delivers
    signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread() or not _SIGNALS:
        yield
        return
    raised: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not raised:
            raised.append(signum)
            raise Terminated(signum)

    previous = {}
    try:
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


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
    inputs: InputSet | Iterable[PathLike | None] = (),
    companions: Iterable[str] = (),
) -> Path:
    """Validate an output path before any work is done; returns it as a :class:`~pathlib.Path`.

    ``inputs`` are every file the command reads (an :class:`InputSet`, or paths; ``None`` is
    skipped): the output and its companions may be none of them.

    ``companions`` are file names written beside the output (``model.onnx.data``); they are held
    to the same rules.
    """
    out = Path(path)
    folder = out.parent
    sources = InputSet.of(inputs)
    for target in [out, *(folder / name for name in companions)]:
        src = sources.find(target)
        if src is not None:
            raise OutputError(f"{target}: is the input file {src}; bnconvert never overwrites its input")
        if target.is_dir():
            raise OutputError(f"{target}: is a folder; give an output file name")
        try:
            mode = os.stat(target).st_mode  # through a symlink: what a write would reach
        except (OSError, ValueError):
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise OutputError(f"{target}: exists and is not a regular file; refused even with --force")
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
    inputs: InputSet | Iterable[PathLike | None] = (),
    companions: Iterable[str] = (),
) -> Iterator[Path]:
    """Yield a temporary path to write the output to; on success it is renamed to ``path``.

    The temporary path has the output's file name, in a private folder inside the output's folder.
    Files named in ``companions`` that the writer puts beside it (same folder) are moved too,
    before the main file, so the main file appears last. On any exception nothing is left behind
    and an ``OSError`` becomes :class:`~bnconvert.errors.OutputError`.
    """
    inputs = InputSet.of(inputs)
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
        with _signals_held():  # a SIGTERM now waits until the temporary folder is gone
            shutil.rmtree(tmpdir, ignore_errors=True)
