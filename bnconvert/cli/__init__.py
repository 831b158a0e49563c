"""The ``bnconvert`` command: thin click wrappers around the library, one module per command.

Only this package writes to the terminal. A :class:`~bnconvert.errors.BnconvertError` becomes one
line on stderr and its exit code (2 bad input, 1 failed check); ``--debug`` shows the traceback.
Everything printed that comes from a file (layer and file names, messages quoting them) goes
through :func:`bnconvert.text.one_line`: no control character reaches the terminal raw.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import click

from ..errors import BnconvertError, InternalError
from ..io import Terminated, terminate_on_signals
from ..text import one_line, safe_lines
from .common import common_options, stop_logging, version_option

__all__ = ["main"]

log = logging.getLogger(__name__)


class _Commands(Mapping[str, click.Command]):
    """``main.commands``: each command's module is imported when the command is asked for, so
    ``bnconvert inspect`` never imports what ``export`` needs."""

    names = ("export", "fold", "inspect", "verify")

    def __getitem__(self, name: str) -> click.Command:
        if name == "inspect":
            from .inspect_cmd import inspect as command
        elif name == "fold":
            from .fold_cmd import fold as command
        elif name == "export":
            from .export_cmd import export as command
        elif name == "verify":
            from .verify_cmd import verify as command
        else:
            raise KeyError(name)
        return command

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class _Group(click.Group):
    """Turns library errors into one clear line and an exit code, never a traceback."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        """``bnconvert --help | head -1``, ``--version``: the reader may go away there too."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except BrokenPipeError:
            if _stdout_gone():
                _end_quietly()
            raise

    def invoke(self, ctx: click.Context) -> Any:
        start = time.perf_counter()
        try:
            with terminate_on_signals():  # SIGTERM/SIGHUP unwind like Ctrl-C: no output left behind
                result = super().invoke(ctx)
            log.info("%s finished in %.2f s", ctx.invoked_subcommand or "bnconvert", time.perf_counter() - start)
            return result
        except BnconvertError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(error_text(exc), err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C 130, SIGTERM 143, SIGHUP 129 (128 + signal)
            if isinstance(exc, Terminated):
                click.echo(f"bnconvert: terminated ({exc})", err=True)
                sys.exit(exc.exit_code)
            click.echo("bnconvert: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug of ours, exit 3
            if isinstance(exc, BrokenPipeError) and _stdout_gone():  # `| head`: not an error; any other
                _end_quietly()  # broken pipe (to a worker of ours) is a bug, said as one below
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            refused = path_refusal(exc)
            if refused is not None:  # the system refused a path the user gave (or its folder): exit 2
                click.echo(refused, err=True)
                sys.exit(2)
            click.echo(one_line(f"bnconvert: internal error, please report: {type(exc).__name__}: {exc} "
                                "(rerun with --debug for the traceback)"), err=True)
            sys.exit(InternalError.exit_code)
        finally:
            stop_logging()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@version_option
@common_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Read Keras model files of every generation, audit and fold BatchNormalization,
    and export ONNX that is checked against the original.

    Exit codes: 0 success, 1 check failed (or findings with --strict), 2 bad input or usage,
    3 internal error (a bug in bnconvert: please report it); 130, 143, 129 interrupted by Ctrl-C,
    SIGTERM, SIGHUP (no output is left behind); 141 the reader of stdout went away
    (`bnconvert inspect DIR | head -1`: nothing more is printed, as Unix tools end on SIGPIPE).

    --debug, -q/--quiet and -v/--verbose are accepted before or after the command.
    """
    ctx.ensure_object(dict)  # the run-wide flags (:mod:`bnconvert.cli.common`)


#: the exit code of a run whose reader of stdout went away: 128 + SIGPIPE, what the shell reports
#: for a Unix tool that SIGPIPE ended (``yes | head -1``)
EXIT_PIPE = 141


def _stdout_gone() -> bool:
    """True when stdout is a pipe (or socket) whose reader went away. Asked of the system
    (``poll`` reports an error on the writing end of a pipe without reader), so a broken pipe of
    bnconvert's own (to a worker process) is not mistaken for it; where stdout has no descriptor
    or ``poll`` does not exist (Windows), the broken pipe is taken to be stdout's."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _end_quietly() -> NoReturn:
    """End the run without a word: the reader of stdout is gone (``| head``), which is not an
    error to report. What is still buffered for stdout goes nowhere (Python would otherwise
    complain while flushing at exit); the exit code is :data:`EXIT_PIPE`."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass  # no descriptor (a test's captured stdout): nothing is flushed to a pipe at exit
    sys.exit(EXIT_PIPE)


#: what the system says about a path that no code of bnconvert can change: no permission to
#: reach or read it (a folder without search permission), a parent that is not a folder, a link
#: loop, a name too long, a read-only or full file system
_PATH_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EROFS,
    errno.ENOSPC, errno.EDQUOT,
})


def path_refusal(exc: BaseException) -> str | None:
    """The one line for an OSError about a named path (``Path.exists`` raises PermissionError
    for a file in a folder without search permission), None for anything else."""
    if not isinstance(exc, OSError) or exc.filename is None or exc.errno not in _PATH_ERRNOS:
        return None
    return one_line(f"bnconvert: error: {os.fsdecode(exc.filename)}: cannot be accessed ({exc.strerror or exc})")


def error_text(exc: BaseException) -> str:
    """The line(s) the CLI prints for a library error: ``bnconvert: error: <message>`` with every
    control character escaped (layer and file names are data). A failed check (exit 1) keeps the
    line breaks of its report, whose names are escaped where the report is made."""
    text = str(exc)
    if isinstance(exc, BnconvertError) and exc.exit_code == 1:
        return "bnconvert: error: " + safe_lines(text)
    if isinstance(exc, InternalError):  # a bug of ours found by the library (a reader child that failed)
        return one_line(f"bnconvert: internal error, please report: {text} (rerun with --debug for the traceback)")
    return "bnconvert: error: " + one_line(text)


main.commands = _Commands()  # type: ignore[assignment]
