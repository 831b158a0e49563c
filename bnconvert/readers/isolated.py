"""Parse untrusted HDF5 in a child process, so that no file can crash, hang or exhaust bnconvert.

libhdf5 trusts the structures it reads: a v1 B-tree node that is its own child recurses until the
stack overflows (SIGSEGV), a local-heap free list that points to itself allocates until memory
runs out. No check made before parsing can foresee every such file, so every HDF5 parse of a
model file happens in a child process under limits, and only validated plain data reaches the
main process.

**What crosses the boundary.** The child answers over a pipe with length-prefixed frames: raw
byte blobs (the values of weights that are not one contiguous uncompressed run in the file:
compressed, chunked, compact), then one JSON header: the facts the reader asked for (attribute
texts, name lists, what kind of object a name is) and, per weight, its dtype and shape and either
its byte offset in the file or the index of its blob. Nothing is unpickled: JSON and raw bytes
only, and every value is checked again in the main process (dtype in an allow-list, sane shape,
``offset + nbytes`` inside the file, blob sizes that match, totals within the file's budget).
The main process reads contiguous weights itself with ``os.preadv`` on an ordinary file
descriptor (:class:`ModelFile`; never a memory map, so a file that shrinks under us is a clear
error, not SIGBUS), and with ``lazy`` a large weight is a :class:`DeferredArray` read on first use.

**Limits** (in the child, ``resource.setrlimit``): address space = what the child had at start
plus :data:`MEMORY_ALLOWANCE` (raised just before a compressed weight is inflated, by that weight's
validated size); CPU :func:`cpu_seconds` (10 s plus 1 s per 50 MB of file); a wall-clock timeout
of ``WALL_FACTOR`` times that plus ``WALL_GRACE`` (a blocked child); no core files. A child that dies by a signal,
hits a limit or times out is a :class:`~bnconvert.errors.FormatError` naming the file; a child
that fails in bnconvert's own code (a bug, not the file) is an
:class:`~bnconvert.errors.InternalError`.

**fork or a fresh interpreter.** A forked child has only the thread that forked; a lock another
thread held at that moment stays held in the child forever, so the child must need no lock a
concurrent thread can hold. The child runs Python, numpy, h5py and libhdf5 only: glibc's malloc
and CPython's own locks are reset at fork, every module the child uses is imported before it
forks (no loader lock), and h5py's global lock (which serialises libhdf5) is only taken from
Python threads. So the rule is: fork when no other *Python* thread runs. The native thread pools
of OpenBLAS, TensorFlow or onnxruntime never take those locks and do not prevent it; this holds
when ``inspect``, ``fold``, ``export`` and ``verify`` read their inputs, and also when ``fold``'s
check reads its output with TensorFlow loaded. Forking is cheap (a few milliseconds: numpy and
h5py are already loaded). With another Python thread running (``export``'s TensorFlow-free
reference is built in one), a fresh interpreter is started instead (``python -I``, about 0.3 s
for its imports), with the same limits and the same answer. Either way the wall-clock timeout is
the backstop: a child that never answers cannot block bnconvert. A forked child that used almost
no CPU by then was stuck, not busy with the file (a native thread can still hold a lock of some
library at the fork: seen once in CI, a child with 0.0 s of CPU in 40 s): the file is read again,
once, in a fresh interpreter.
"""

from __future__ import annotations

import faulthandler
import json
import lzma
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from ..errors import BnconvertError, FormatError, InternalError
from .filedata import DeferredArray, ModelFile

try:  # imported here, not in the child: a forked child must not need the loader's lock
    import resource
except ImportError:  # pragma: no cover - not POSIX: no limits but the wall-clock timeout
    resource = None  # type: ignore[assignment]

__all__ = [
    "MEMORY_ALLOWANCE",
    "WALL_FACTOR",
    "DeferredArray",
    "ModelFile",
    "can_fork",
    "cpu_seconds",
    "is_damage",
    "run",
    "short",
]

#: Address space the child may add to what it had at start (libhdf5's metadata cache, a 64 MB
#: model config decoded and re-encoded); a compressed weight raises it by its own validated size.
MEMORY_ALLOWANCE = 1024**3
#: The wall-clock timeout is this many times the CPU limit plus ``WALL_GRACE`` seconds (a child
#: blocked, not computing; a machine so loaded that the child gets a third of a core).
WALL_FACTOR = 3
WALL_GRACE = 10.0
#: The JSON header may not exceed this (a 64 MB config with every byte escaped, plus the names).
MAX_HEADER_BYTES = 1024**3

_SIGNAL_NAMES: dict[int, str] = {signal.SIGSEGV: "SIGSEGV", signal.SIGBUS: "SIGBUS", signal.SIGABRT: "SIGABRT",
                 signal.SIGFPE: "SIGFPE", signal.SIGILL: "SIGILL"}


def cpu_seconds(file_bytes: int) -> float:
    """The child's CPU limit for a file of ``file_bytes``: 10 s plus 1 s per 50 MB."""
    return 10.0 + file_bytes / 50e6


# -- what counts as damage (shared by the child and the in-process readers) ---------------------

#: Exceptions that mean "the bytes are broken", raised by the libraries under the readers.
DAMAGED = (OSError, RuntimeError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, struct.error,
           OverflowError, MemoryError, NotImplementedError, UnicodeError)
_LIBRARIES = (os.path.dirname(h5py.__file__), os.path.dirname(zipfile.__file__))
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raised_by_library(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is in h5py or the standard library (h5py raises
    KeyError and ValueError for damaged object headers), not in bnconvert."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if last is None or last.startswith(_PACKAGE):
        return False
    return last.startswith(_LIBRARIES) or last.startswith("h5py/")  # h5py's Cython frames: "h5py/h5o.pyx"


def is_damage(exc: BaseException) -> bool:
    """Does ``exc`` come from the file's bytes (a library refusing them), not from our code?"""
    return isinstance(exc, DAMAGED) or raised_by_library(exc)


def short(exc: BaseException) -> str:
    """An exception's text on one line, at most 200 characters."""
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


# -- the main process's side ---------------------------------------------------------------------

#: Called with the file's path once the child has answered, before the main process reads any
#: weight (tests truncate the file there).
after_answer: Callable[[str], None] | None = None

#: A child job: ``(file descriptor, file size, params, facts, send_blob)``; it fills ``facts`` and may
#: raise (the facts gathered until then are still sent, with the error).
Job = Callable[[int, int, dict[str, Any], dict[str, Any], Callable[[np.ndarray], int]], None]
_JOBS: dict[str, Job] = {}


def job(name: str) -> Callable[[Job], Job]:
    """Register a function the child can run by name (the fresh-interpreter child finds it so)."""

    def register(func: Job) -> Job:
        _JOBS[name] = func
        return func

    return register


class Answer:
    """The child's answer, checked: ``facts`` (plain JSON data), ``blobs`` (raw byte arrays) and the
    error that stopped the child's scan, if any. :meth:`get` raises that error for a fact the
    scan did not reach, so errors surface in the order the reader needs the facts."""

    def __init__(self, facts: dict[str, Any], blobs: list[np.ndarray], error: BnconvertError | None) -> None:
        self.facts = facts
        self.blobs = blobs
        self.error = error

    def get(self, key: str) -> Any:
        if key in self.facts:
            return self.facts[key]
        if self.error is not None:
            raise self.error
        raise InternalError(f"the isolated HDF5 reader did not report '{key}'")

    def __contains__(self, key: str) -> bool:
        return key in self.facts


def run(source: ModelFile, name: str, params: dict[str, Any] | None = None, *, what: str = "HDF5 file") -> Answer:
    """Run job ``name`` on ``source`` in a child process under limits and return its answer.

    FormatError (without the path: the caller adds it; ``what`` names the kind of file) when the
    child crashed, hit a limit or timed out; InternalError when it failed in our own code.
    """
    params = {**(params or {}), "_path": source.path}
    cpu = cpu_seconds(source.size)
    wall = WALL_FACTOR * cpu + WALL_GRACE
    forked = can_fork()
    while True:
        try:
            proc: _Child = (_Forked if forked else _Spawned)(source, name, params, cpu)
        except OSError as exc:  # no process or pipe to be had (EAGAIN, ENOMEM): the machine's state, not the file's
            raise BnconvertError(f"cannot start the process that reads it ({exc.strerror or exc}); try again") from None
        try:
            frames = _receive(proc.out, deadline=time.monotonic() + wall,
                              blob_limit=source.size + min(2**33, 1000 * max(source.size, 1)))
            break
        except _TimedOut:
            used = proc.cpu_used()
            proc.kill()
            proc.wait()
            if used is not None and used < cpu / 2:
                # not a loop in the file: the child hardly ran. A forked child can be stuck on a
                # lock a native thread of the parent held at the fork: read again in a fresh
                # interpreter, once
                if forked:
                    forked = False
                    continue
                raise BnconvertError(f"reading {what} stalled: its reading process got {used:.1f} s of CPU in "
                                     f"{wall:.0f} s (a busy machine?); try again") from None
            raise FormatError(f"damaged {what} (reading it took more than {wall:.0f} s: a loop "
                              "in its structures?); refused") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            os.close(proc.out)
    status = proc.wait()
    blobs, header = frames
    if header is None:
        raise _death(status, cpu, what)
    if status != 0:  # an answer, then a crash on the way out: the answer is complete, but be strict
        raise _death(status, cpu, what)
    return _answer(header, blobs, what)


def can_fork() -> bool:
    """Fork only a process that no other thread can leave in an inconsistent state for the child."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _death(status: int, cpu: float, what: str) -> BnconvertError:
    """What a child's end without an answer means (``status`` as from ``os.waitpid``)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU or sig == signal.SIGKILL:
            return FormatError(f"damaged {what} (reading it exceeded the CPU limit of {cpu:.0f} s: a loop in its "
                               "structures?); refused")
        name = _SIGNAL_NAMES.get(sig) or signal.Signals(sig).name
        return FormatError(f"damaged {what} (the HDF5 library crashed reading it: {name})")
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    if code == _EXIT_MEMORY:
        return FormatError(f"damaged {what} (reading it exceeded the memory limit); refused")
    return InternalError(f"the isolated HDF5 reader exited with status {code} without an answer")


class _TimedOut(Exception):
    pass


def _read_exact(fd: int, buf: memoryview, deadline: float) -> bool:
    """Fill ``buf`` from the pipe; False at end of file before anything was read."""
    done = 0
    while done < len(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        try:
            got = os.readv(fd, [buf[done:]])
        except InterruptedError:  # pragma: no cover
            continue
        if got == 0:
            if done == 0:
                return False
            raise EOFError
        done += got
    return True


def _receive(fd: int, *, deadline: float, blob_limit: int) -> tuple[list[np.ndarray], bytes | None]:
    """Frames from the child until its header (None if the pipe ends first)."""
    blobs: list[np.ndarray] = []
    total = 0
    head = bytearray(9)
    try:
        while True:
            if not _read_exact(fd, memoryview(head), deadline):
                return blobs, None
            kind, size = head[:1], int.from_bytes(head[1:], "little")
            if kind == b"H":
                if size > MAX_HEADER_BYTES:
                    return blobs, None
                header = bytearray(size)
                if size and not _read_exact(fd, memoryview(header), deadline):
                    return blobs, None
                return blobs, bytes(header)
            if kind != b"B" or total + size > blob_limit:
                return blobs, None
            total += size
            blob = np.empty(size, np.uint8)
            if size and not _read_exact(fd, memoryview(blob), deadline):  # type: ignore[arg-type]  # ndarray is a buffer; its stubs say so from 3.12
                return blobs, None
            blobs.append(blob)
    except EOFError:
        return blobs, None


def _answer(header: bytes, blobs: list[np.ndarray], what: str) -> Answer:
    try:
        message = json.loads(header)
        facts, error = message["facts"], message["error"]
        if not isinstance(facts, dict) or not (error is None or isinstance(error, dict)):
            raise TypeError("malformed answer")
    except (ValueError, TypeError, KeyError) as exc:
        raise InternalError(f"the isolated HDF5 reader gave a malformed answer ({short(exc)})") from None
    raised: BnconvertError | None = None
    if error is not None:
        kind, text = error.get("kind"), str(error.get("message"))
        if kind == "format":
            raised = FormatError(text)
        elif kind == "damaged":
            raised = FormatError(f"damaged {what} ({text})")
        elif kind == "memory":
            raised = FormatError(f"damaged {what} (reading it exceeded the memory limit); refused")
        else:
            raise InternalError(f"the isolated HDF5 reader failed: {text}")
    return Answer(facts, blobs, raised)


# -- the two kinds of child ----------------------------------------------------------------------


class _Child:
    out: int
    pid: int

    def cpu_used(self) -> float | None:
        """Seconds of CPU the running child has used (Linux ``/proc``), None when unknown."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        raise NotImplementedError

    def wait(self) -> int:
        raise NotImplementedError


class _Forked(_Child):
    def __init__(self, source: ModelFile, name: str, params: dict[str, Any], cpu: float) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _child_main(source.fd, write_end, name, params, cpu, forked=True)
        os.close(write_end)
        self.pid, self.out = pid, read_end
        self.status: int | None = None

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover
                pass

    def wait(self) -> int:
        while self.status is None:
            try:
                self.status = os.waitpid(self.pid, 0)[1]
            except ChildProcessError:  # pragma: no cover - reaped elsewhere
                self.status = 0
            except InterruptedError:  # pragma: no cover
                continue
        return self.status


class _Spawned(_Child):
    def __init__(self, source: ModelFile, name: str, params: dict[str, Any], cpu: float) -> None:
        package_parent = os.path.dirname(_PACKAGE)
        boot = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from bnconvert.readers.isolated import _spawned_main; _spawned_main()")
        spec = json.dumps({"fd": source.fd, "job": name, "params": params, "cpu": cpu})
        os.set_inheritable(source.fd, True)
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-c", boot, package_parent, spec],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         pass_fds=(source.fd,), close_fds=True)
        finally:
            os.set_inheritable(source.fd, False)
        assert self.proc.stdout is not None
        self.pid = self.proc.pid
        self.out = os.dup(self.proc.stdout.fileno())
        self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def wait(self) -> int:
        code = self.proc.wait()
        # as os.waitpid would say it: a signal in the low bits, an exit code shifted
        return -code & 0x7F if code < 0 else code << 8


# -- the child's side ----------------------------------------------------------------------------

_EXIT_OK, _EXIT_MEMORY, _EXIT_BUG = 0, 86, 87


def _spawned_main() -> None:
    """Entry point of the fresh-interpreter child: ``argv[2]`` holds the job, stdout is the pipe."""
    import bnconvert.readers  # noqa: F401 - registers the jobs

    spec = json.loads(sys.argv[2])
    out = os.dup(1)
    _child_main(spec["fd"], out, spec["job"], spec["params"], spec["cpu"], forked=False)


def _vm_bytes() -> int | None:
    """The process's current address-space size (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def allow_memory(extra: int) -> None:
    """In the child: let the address space grow ``extra`` bytes past its current size (plus the
    base allowance). A no-op in the main process or where limits are not available."""
    if not _IN_CHILD or resource is None:
        return
    try:
        now = _vm_bytes()
        if now is None:
            return
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = now + MEMORY_ALLOWANCE + max(int(extra), 0)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    except (ValueError, OSError):  # pragma: no cover - refused
        pass


_IN_CHILD = False
_PATH = ""  # in the child: the model file's name, for h5_path's last resort


def _limit(cpu: float) -> None:
    """Set the child's limits: no core files, CPU, address space."""
    if resource is None:  # pragma: no cover - not POSIX: the wall-clock timeout still holds
        return
    for what, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, math.ceil(cpu))):
        try:
            _soft, hard = resource.getrlimit(what)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(what, (value, hard if what == resource.RLIMIT_CORE else min(hard, value + 2)
                                      if hard != resource.RLIM_INFINITY else value + 2))
        except (ValueError, OSError):  # pragma: no cover
            pass
    allow_memory(0)


def _child_main(fd: int, out: int, name: str, params: dict[str, Any], cpu: float, *, forked: bool) -> None:
    """Run one job and write its answer to ``out``; always ends the process."""
    global _IN_CHILD, _PATH
    code = _EXIT_BUG
    try:
        _IN_CHILD, _PATH = True, str(params.get("_path", ""))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_WRONLY)  # nothing from the child reaches the terminal
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        if forked:
            faulthandler.disable()
        _limit(cpu)
        code = _serve(fd, out, name, params)
    except MemoryError:
        code = _EXIT_MEMORY
    except BaseException:  # noqa: BLE001 - the child must end here whatever happens
        code = _EXIT_BUG
    finally:
        os._exit(code)


def _serve(fd: int, out: int, name: str, params: dict[str, Any]) -> int:
    def write(data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(out, view):]

    count = 0

    def send_blob(arr: np.ndarray) -> int:
        nonlocal count
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        write(b"B" + len(data).to_bytes(8, "little"))
        write(data.data)
        count += 1
        return count - 1

    facts: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    try:
        size = os.fstat(fd).st_size
        _JOBS[name](fd, size, params, facts, send_blob)
    except FormatError as exc:
        error = {"kind": "format", "message": str(exc)}
    except MemoryError:
        error = {"kind": "memory", "message": "memory limit"}
    except RecursionError as exc:
        error = {"kind": "damaged", "message": short(exc)}
    except Exception as exc:  # noqa: BLE001 - sorted into the file's fault or ours
        if is_damage(exc):
            error = {"kind": "damaged", "message": short(exc)}
        else:
            error = {"kind": "internal", "message": f"{type(exc).__name__}: {short(exc)} "
                                                    f"[{_where_raised(exc)}]"}
    header = json.dumps({"facts": facts, "error": error}).encode("ascii")
    write(b"H" + len(header).to_bytes(8, "little"))
    write(header)
    return _EXIT_OK


def _where_raised(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno}"


def h5_path(fd: int) -> str:
    """A name under which the child opens the very file the main process opened (Linux
    ``/proc/self/fd``, BSD and macOS ``/dev/fd``), else the file's own name."""
    for name in (f"/proc/self/fd/{fd}", f"/dev/fd/{fd}"):
        if os.path.exists(name):
            return name
    return _PATH  # pragma: no cover - no descriptor file system
