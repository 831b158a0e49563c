"""Auditing many model files: finding them, reading them in parallel, adding up the results.

The path of a run::

    collect(paths, recursive=...)  -> Collection (tasks + what was skipped; a sniff of each file's head)
    audit_records(tasks, jobs=N)   -> one plain-data record per task, streamed in input order
    Summary.add(record)            -> counts for the closing summary

A record is :func:`bnconvert.audit.audit_file`'s dict plus ``config_file`` (the architecture
JSON used, or None), or an error record ``{"file": ..., "error": "<one line>"}``: one bad file
never stops the others, not even one that crashes the process reading it: with ``jobs`` > 1
the workers are separate processes, and with ``jobs`` 1 each file is audited in a forked child
(when the process may fork, see :mod:`bnconvert.readers.isolated`), so a crash in a native
library is that file's error record. Records cross back as JSON, never pickled from the child.
Records are yielded one by one and at most ``2 * jobs`` are in flight, so memory stays flat
however many files there are.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import sys
import zipfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audit import audit_file
from .errors import BnconvertError, InternalError
from .readers import LoadOptions, sniff
from .readers.isolated import can_fork

if TYPE_CHECKING:
    import multiprocessing.context
    from concurrent.futures import Future

__all__ = [
    "COMPANION_NOTE",
    "Collection",
    "Summary",
    "Task",
    "audit_record",
    "audit_records",
    "collect",
    "companion_json",
    "error_record",
    "is_error",
]

log = logging.getLogger(__name__)

_MODEL_KINDS = ("hdf5", "zip", "unreadable")
#: the note a record carries when its architecture came from a companion JSON
COMPANION_NOTE = "architecture read from the companion file"


@dataclass(frozen=True)
class Task:
    """One model file to audit.

    ``config`` is an architecture JSON given by the user (``--config``); ``companion`` one found
    next to the file (``model.h5`` + ``model.json``), used only when the file holds weights only.
    """

    path: str
    config: str | None = None
    companion: str | None = None


@dataclass
class Collection:
    """What :func:`collect` found: the model files to audit and what it passed over."""

    tasks: list[Task] = field(default_factory=list)
    #: files in the folders that are not model files (by content), nor a companion JSON
    skipped: int = 0
    #: JSON files paired with a same-stem HDF5 file as its possible architecture
    paired: int = 0
    #: subfolders not searched because ``recursive`` was off
    unsearched: int = 0
    #: True when a folder was given (a "many files" run even if it holds one model)
    folders: bool = False
    #: folders that could not be listed, one line each (a failure: the run exits 2)
    unreadable: list[str] = field(default_factory=list)


def _classify(path: Path) -> str | None:
    """``'hdf5'``, ``'zip'``, ``'json'``, ``'unreadable'`` or None (not a model file) from the content.

    Only regular files are opened: a named pipe would block the run, a device never end; they
    are skipped like other files that are not models.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return "unreadable"  # a dangling link, a file gone since the listing: audited, so reported
    try:
        kind = sniff(path)
    except BnconvertError:
        return None if _readable(path) else "unreadable"  # audited, so the error is reported
    if kind == "zip":
        # .npz arrays, .docx and friends are zips too: a Keras archive has a config.json.
        # A zip whose directory cannot be read is kept, so its damage is reported.
        try:
            with zipfile.ZipFile(path) as zf:
                return "zip" if "config.json" in zf.namelist() else None
        except (zipfile.BadZipFile, OSError, ValueError):
            return "zip"
    return kind


def _readable(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never waits on a pipe
    except OSError:
        return False
    os.close(fd)
    return True


def _folder_files(folder: Path, recursive: bool, found: Collection) -> Iterator[list[Path]]:
    """The files of each folder, sorted by name: the folder first, then subfolders in name order."""

    def unreadable(exc: OSError) -> None:
        found.unreadable.append(f"{exc.filename}: cannot list the folder ({exc.strerror})")

    if recursive:
        for root, dirs, files in os.walk(folder, onerror=unreadable):
            dirs.sort()
            yield [Path(root, f) for f in sorted(files)]
        return
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        unreadable(exc)
        return
    found.unsearched += sum(1 for e in entries if e.is_dir())
    yield [e for e in entries if e.exists() and not e.is_dir()]  # pipes and devices too: counted as skipped


def companion_json(path: str | os.PathLike[str]) -> Path | None:
    """The architecture JSON beside an HDF5 file, with the same stem (``model.h5`` + ``model.json``,
    as Keras' ``to_json``/``save_weights`` examples write them), or None. Whether the file needs it
    (holds weights only) is for the reader to find out: a full model keeps its own architecture."""
    p = Path(path)
    twin = p.with_suffix(".json")
    if twin == p or _classify(p) != "hdf5":  # a file that cannot be reached is "unreadable": its reader says why
        return None
    return twin if _classify(twin) == "json" else None


def collect(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = False, config: str | None = None) -> Collection:
    """The model files among ``paths`` (files and folders), in order, without duplicates.

    Files named explicitly are always audited (a non-model file becomes an error record: it was
    asked for). In folders, model files are recognised by content (HDF5 signature, or a zip with
    a ``config.json``), and the rest is skipped and counted. A JSON file with the same stem as an
    HDF5 file in the same folder is its companion architecture, unless ``config`` is given (also
    for a file named explicitly: :func:`companion_json`).
    """
    found = Collection()
    seen: set[str] = set()

    def add(task: Task) -> None:
        key = os.path.realpath(task.path)
        if key not in seen:
            seen.add(key)
            found.tasks.append(task)

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            twin = companion_json(path) if config is None else None
            found.paired += twin is not None  # counted like a folder's pair: skipped when not used
            add(Task(str(path), config=config, companion=str(twin) if twin is not None else None))
            continue
        found.folders = True
        for files in _folder_files(path, recursive, found):
            kinds = {f: _classify(f) for f in files}
            used_json: set[Path] = set()
            for f in files:
                if kinds[f] not in _MODEL_KINDS:
                    continue
                companion = None
                twin = f.with_suffix(".json")
                if config is None and kinds[f] == "hdf5" and twin != f and kinds.get(twin) == "json":
                    companion = str(twin)
                    used_json.add(twin)
                add(Task(str(f), config=config, companion=companion))
            found.paired += len(used_json)
            found.skipped += sum(1 for f in files if kinds[f] not in _MODEL_KINDS and f not in used_json)
    return found


def error_record(path: str, message: str) -> dict[str, Any]:
    """The record of a file that could not be audited: its path and the reason on one line."""
    return {"file": path, "error": " ".join(str(message).split())}


def is_error(record: dict[str, Any]) -> bool:
    """True for an error record."""
    return "error" in record


@dataclass(frozen=True)
class AuditOptions:
    """How every file of a run is read and audited: the reading options (the architecture JSON
    comes per file, from its task) and the user's replacements. Plain data: worker processes get
    a pickled copy."""

    load: LoadOptions = field(default_factory=LoadOptions)
    replacements: tuple[Any, ...] = ()

    def audit(self, path: str, config: str | None) -> dict[str, Any]:
        """:func:`bnconvert.audit.audit_file` of ``path``, read with ``config``."""
        return audit_file(path, replacements=list(self.replacements) or None, config=config,
                          running_std=self.load.running_std, flip_kernels=self.load.flip_kernels)


def _audit_with_companion(task: Task, options: AuditOptions) -> dict[str, Any]:
    """Read the file alone first: the companion JSON is used only if the file holds weights only.

    (Passing an architecture would override a full model's own config, so the file decides.)
    """
    assert task.companion is not None
    first: dict[str, Any] | None = None
    try:
        first = options.audit(task.path, None)
    except InternalError:
        raise
    except BnconvertError:
        first = None  # a weights-only file may only be readable with its architecture
    if first is not None and not str(first.get("format", "")).endswith("-weights"):
        first["config_file"] = None
        return first
    try:
        record = options.audit(task.path, task.companion)
    except BnconvertError as exc:
        if first is None:
            raise
        first["config_file"] = None
        first["notes"].append(f"companion architecture {Path(task.companion).name} not used: {exc}")
        return first
    record["config_file"] = task.companion
    record["notes"].append(f"{COMPANION_NOTE} {Path(task.companion).name}")
    return record


def audit_record(task: Task, options: AuditOptions | None = None) -> dict[str, Any]:
    """Audit one task and return its record; never raises for a bad file (error record instead).

    A bug of bnconvert's (any exception that is not a :class:`BnconvertError`, or an
    :class:`InternalError`) is not the file's fault: it propagates and ends the run (the CLI
    reports "internal error, please report", exit 3). Runs in worker processes, so it takes and
    returns plain, picklable data.
    """
    options = options or AuditOptions()
    try:
        if task.companion is not None:
            return _audit_with_companion(task, options)
        record = options.audit(task.path, task.config)
        record["config_file"] = task.config
        return record
    except InternalError:
        raise
    except BnconvertError as exc:
        return error_record(task.path, str(exc))


# process pools are imported where used: one file (the common case) never needs them
def _context() -> multiprocessing.context.BaseContext:
    """forkserver where the platform has it, else spawn: never fork a process that may hold h5py state."""
    import multiprocessing

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _isolated(task: Task, options: AuditOptions) -> dict[str, Any] | None:
    """Rerun one task alone in a fresh process after a worker died, so only the culprit fails.

    None when that process died too.
    """
    from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
        try:
            return pool.submit(audit_record, task, options).result()
        except BrokenProcessPool:
            return None


def _ping() -> bool:
    return True


def _workers_can_start() -> bool:
    from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
        try:
            return pool.submit(_ping).result()
        except BrokenProcessPool:
            return False


def _crashed(task: Task) -> dict[str, Any]:
    return error_record(task.path, f"{task.path}: the process reading this file died "
                                   "(a crash in a native library such as HDF5?)")


def _parallel(tasks: Iterator[Task], jobs: int, options: AuditOptions) -> Iterator[dict[str, Any]]:
    from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor

    window = 2 * jobs
    pending: deque[tuple[Task, Future[dict[str, Any]]]] = deque()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=_context())
    checked = False  # have worker processes been seen to work? (else a crash may be the setup's fault)
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                else:
                    pending.append((task, pool.submit(audit_record, task, options)))
            if not pending:
                return
            task, future = pending[0]
            try:
                record = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                for task, future in pending:
                    done = future.done() and not future.cancelled() and future.exception() is None
                    redone = future.result() if done else _isolated(task, options)
                    if redone is None and not checked and not _workers_can_start():
                        raise BnconvertError("--jobs: worker processes cannot run here; rerun with --jobs 1") from None
                    checked = True
                    yield redone or _crashed(task)
                pending.clear()
                pool = ProcessPoolExecutor(max_workers=jobs, mp_context=_context())
                continue
            checked = True
            pending.popleft()
            yield record
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _forked_record(task: Task, options: AuditOptions) -> dict[str, Any]:
    """:func:`audit_record` in a forked child, so that a crash (a native library's SIGSEGV, the
    kernel's OOM killer) is this file's error record, not the end of the run. The record comes
    back as JSON over a pipe. In-process when forking is not safe (threads are running)."""
    if not can_fork():
        return audit_record(task, options)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: audit, answer, exit without running the parent's cleanup
        code = 1
        try:
            os.close(read_end)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            import faulthandler

            faulthandler.disable()  # a crash is reported by the parent, in one line
            try:
                data = json.dumps(audit_record(task, options)).encode("utf-8", "surrogatepass")
            except Exception as exc:  # noqa: BLE001 - a bug of ours: sent to the parent, which raises it
                import traceback

                bug = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {exc}"
                data = json.dumps({_BUG: bug, "traceback": traceback.format_exc()}).encode("utf-8", "surrogatepass")
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    try:
        with os.fdopen(read_end, "rb") as pipe:
            while chunk := pipe.read(1 << 20):
                chunks.append(chunk)
        status = os.waitpid(pid, 0)[1]
    except BaseException:  # Ctrl-C, SIGTERM: the child goes too
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    if status == 0 and chunks:
        try:
            record = json.loads(b"".join(chunks).decode("utf-8", "surrogatepass"))
        except ValueError:
            record = None
        if isinstance(record, dict) and _BUG in record:
            error = InternalError(str(record[_BUG]))
            note = f"in the child process that audited {task.path}:\n{record.get('traceback', '')}"
            if sys.version_info >= (3, 11):
                error.add_note(note)
            else:  # what add_note does (PEP 678), on Python 3.10
                error.__notes__ = [note]  # type: ignore[attr-defined]  # the attribute PEP 678 defines
            raise error
        if isinstance(record, dict) and "file" in record:
            return record
    return _crashed(task)


#: the key of the answer a forked child sends instead of a record when it met a bug of ours
_BUG = "internal error"


def audit_records(tasks: Iterable[Task], *, jobs: int = 1, options: AuditOptions | None = None) -> Iterator[dict[str, Any]]:
    """One record per task, in input order, streamed; ``jobs`` > 1 reads in that many processes,
    ``jobs`` 1 each file in a forked child of this one (see :func:`_forked_record`)."""
    options = options or AuditOptions()
    if jobs <= 1:
        for task in tasks:
            yield _forked_record(task, options)
        return
    yield from _parallel(iter(tasks), jobs, options)


@dataclass
class Summary:
    """Running totals over records, for the closing summary of a many-file run."""

    files: int = 0
    failed: int = 0
    batch_norms: int = 0
    foldable: int = 0
    with_findings: int = 0
    companions_used: int = 0
    findings: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        """Count one record."""
        self.files += 1
        if is_error(record):
            self.failed += 1
            return
        summary = record["summary"]
        self.batch_norms += summary["batch_norms"]
        self.foldable += summary["foldable"]
        self.findings.update(summary["findings"])
        self.with_findings += bool(summary["findings"])
        if record.get("config_file") and any(n.startswith(COMPANION_NOTE) for n in record.get("notes", [])):
            self.companions_used += 1

    def to_dict(self, collection: Collection | None = None) -> dict[str, Any]:
        """The totals as plain data; ``collection`` adds what was skipped."""
        out: dict[str, Any] = {
            "files": self.files,
            "audited": self.files - self.failed,
            "failed": self.failed,
            "batch_norms": self.batch_norms,
            "foldable": self.foldable,
            "foldable_share": self.foldable / self.batch_norms if self.batch_norms else None,
            "files_with_findings": self.with_findings,
            "findings": dict(self.findings.most_common()),
            "companions_used": self.companions_used,
        }
        if collection is not None:
            out["skipped"] = collection.skipped + collection.paired - self.companions_used
            out["unsearched_folders"] = collection.unsearched
        return out

    def lines(self, collection: Collection | None = None) -> list[str]:
        """The summary as a few lines of text."""
        d = self.to_dict(collection)
        head = f"{_count(d['files'], 'model file')}: {d['audited']} audited, {d['failed']} failed"
        if collection is not None:
            head += f"; {_count(d['skipped'], 'other file')} skipped"
            if d["companions_used"]:
                head += f"; {_count(d['companions_used'], 'architecture JSON companion')} used"
        lines = [head]
        if collection is not None and collection.unreadable:
            lines.append(f"{_count(len(collection.unreadable), 'folder')} could not be listed")
        if d.get("unsearched_folders"):
            lines.append(f"{_count(d['unsearched_folders'], 'subfolder')} not searched (add --recursive)")
        share = f" ({d['foldable_share']:.0%})" if d["foldable_share"] is not None else ""
        lines.append(f"BN layers: {d['batch_norms']}, foldable {d['foldable']}{share}")
        if d["findings"]:
            kinds = ", ".join(f"{kind} {n}" for kind, n in d["findings"].items())
            lines.append(f"findings in {_count(d['files_with_findings'], 'file')}: {kinds}")
        else:
            lines.append("findings: none")
        return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
