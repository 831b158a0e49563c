"""The ``bnconvert`` command: thin click wrappers around the library, one module per command.

Only this package writes to the terminal. A :class:`~bnconvert.errors.BnconvertError` becomes one
line on stderr and its exit code (2 bad input, 1 failed check); ``--debug`` shows the traceback.
Everything printed that comes from a file (layer and file names, messages quoting them) goes
through :func:`bnconvert.text.one_line`: no control character reaches the terminal raw.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import click

from .. import __version__
from ..errors import BnconvertError, InternalError
from ..io import Terminated, terminate_on_signals
from ..text import one_line, safe_lines

__all__ = ["main"]



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

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with terminate_on_signals():  # SIGTERM/SIGHUP unwind like Ctrl-C: no output left behind
                return super().invoke(ctx)
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
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            refused = path_refusal(exc)
            if refused is not None:  # the system refused a path the user gave (or its folder): exit 2
                click.echo(refused, err=True)
                sys.exit(2)
            click.echo(one_line(f"bnconvert: internal error, please report: {type(exc).__name__}: {exc} "
                                "(rerun with --debug for the traceback)"), err=True)
            sys.exit(InternalError.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bnconvert")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Read Keras model files of every generation, audit and fold BatchNormalization,
    and export ONNX that is checked against the original.

    Exit codes: 0 success, 1 check failed (or findings with --strict), 2 bad input or usage,
    3 internal error (a bug in bnconvert: please report it); 130, 143, 129 interrupted by Ctrl-C,
    SIGTERM, SIGHUP (no output is left behind).
    """
    ctx.obj = {"debug": debug}


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
