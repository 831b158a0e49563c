"""What every command shares: ``--debug``, ``-q/--quiet``, ``-v/--verbose``, ``--version``, the
file arguments that refuse a folder in one line, stdout that respects ``--quiet``, the
architecture JSON beside a weights-only file (:func:`architecture_for`) and counts that agree
with their nouns (:func:`plural`).

The three flags are accepted before the command (``bnconvert --debug fold x.h5``) and after it
(``bnconvert fold --debug x.h5``): both set the same run-wide state (``ctx.obj``), which the
group's error handler reads.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import click

from .. import __version__
from ..errors import BnconvertError
from ..text import one_line

__all__ = [
    "FileArg",
    "OutputArg",
    "architecture_for",
    "common_options",
    "is_quiet",
    "plural",
    "say",
    "stop_logging",
    "version_lines",
    "version_option",
]


# ------------------------------------------------------------------------------ run-wide flags
def _state(ctx: click.Context) -> dict[str, Any]:
    """The run-wide flags, one dict shared by the group's context and the command's (click hands
    a parent's ``obj`` to its children by reference)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if ctx.obj is not root.obj:
        ctx.obj = root.obj
    state: dict[str, Any] = root.obj
    return state


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx)["debug"] = True


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        state = _state(ctx)
        state["quiet"] = True
        _refuse_both(state)


def _set_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        state = _state(ctx)
        state["verbose"] = state.get("verbose", 0) + value
        _refuse_both(state)
        _log_to_stderr(state["verbose"])


def _refuse_both(state: dict[str, Any]) -> None:
    if state.get("quiet") and state.get("verbose"):
        raise click.UsageError("-q/--quiet and -v/--verbose contradict each other; give one")


class _StderrHandler(logging.Handler):
    """Log records as ``bnconvert: <logger>: <message>`` on one line each (names are data), on
    the stderr of the moment (a caller that swaps ``sys.stderr``, as click's test runner does,
    gets them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(one_line(self.format(record)), err=True)
        except Exception:  # noqa: BLE001 - logging must never end the run
            self.handleError(record)


#: the level the ``bnconvert`` logger had before ``-v`` changed it, restored by :func:`stop_logging`
_saved_level: list[int] = []


def _log_to_stderr(verbosity: int) -> None:
    """``-v``: bnconvert's INFO messages on stderr (what ran, how long it took); ``-vv``: DEBUG
    too (each fold, TensorFlow's own log lines). Undone by :func:`stop_logging` when the command
    ends, so that a caller running several commands in one process keeps its own settings."""
    logger = logging.getLogger("bnconvert")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        _saved_level[:] = [logger.level]
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("bnconvert: %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def stop_logging() -> None:
    """Remove what ``-v`` installed (the handler, the level)."""
    logger = logging.getLogger("bnconvert")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if _saved_level:
        logger.setLevel(_saved_level.pop())


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--debug``, ``-q/--quiet`` and ``-v/--verbose``, on the group and on every command. They
    take effect while the command line is read, so they are not parameters of the command."""
    func = click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_set_verbose,
                        help="Log to stderr (-v: informational messages; -vv: debug detail: each fold, TensorFlow's own log).")(func)
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                        help="Print nothing on stdout when the command succeeds (errors still go to stderr).")(func)
    func = click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
                        help="Show a traceback on errors.")(func)
    return func


def is_quiet() -> bool:
    """True when ``-q/--quiet`` was given (before or after the command)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))


def say(text: str, *, nl: bool = True) -> None:
    """Print ``text`` on stdout unless ``--quiet``: a command's report on success."""
    if not is_quiet():
        click.echo(text, nl=nl)


# ------------------------------------------------------------------------------ --version
#: distribution names, in the order printed; the optional ones are printed only when installed
_CORE = ("numpy", "h5py", "onnx", "onnxruntime", "click")
_OPTIONAL = (("keras", ("keras",)), ("tf_keras", ("tf-keras",)),
             ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel")))


def _installed(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def version_lines() -> list[str]:
    """What ``--version`` prints: bnconvert, Python, and the versions of the libraries that decide
    its results. Read from the installed packages' metadata: nothing is imported (TensorFlow would
    take seconds and write to stderr)."""
    lines = [f"bnconvert {__version__}", f"  python       {platform.python_version()} ({sys.executable})"]
    for name in _CORE:
        lines.append(f"  {name:<12} {_installed((name,)) or 'not installed'}")
    for label, names in _OPTIONAL:
        found = _installed(names)
        if found is not None:
            lines.append(f"  {label:<12} {found}")
    return lines


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo("\n".join(version_lines()))
    ctx.exit(0)


def version_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--version``: bnconvert's version and those of the libraries it runs on."""
    return click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                        help="Show the versions of bnconvert, Python, numpy, h5py, onnx, onnxruntime "
                             "(and Keras/TensorFlow when installed) and exit.")(func)


# ------------------------------------------------------------------------------ file arguments
class FileArg(click.Path):
    """A path that must name a file (a model, an architecture JSON, a plugin, ...): a folder is
    refused in one ``bnconvert: error:`` line (exit 2), as every other bad input is, instead of
    click's usage message. Whether the file exists and can be read is left to the code that
    reads it, which says so in its own words."""

    def __init__(self, what: str) -> None:
        super().__init__(readable=False)
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        if os.path.isdir(path):
            raise BnconvertError(f"{os.fsdecode(path)}: is a folder, not {self.what}")
        return path


class OutputArg(click.Path):
    """A path to write: a folder is refused in one line (exit 2)."""

    def __init__(self) -> None:
        super().__init__(readable=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        if os.path.isdir(path):
            raise BnconvertError(f"{os.fsdecode(path)}: is a folder; give an output file name")
        return path


# ------------------------------------------------------------------------------ companion JSON
def architecture_for(path: str, config: str | None) -> tuple[str | None, str | None]:
    """The architecture JSON to read ``path`` with, and the note that says which one was used.

    ``--config`` wins. Without it, a weights-only HDF5 file uses the ``.json`` of the same name
    beside it (:func:`bnconvert.batch.companion_json`), as folder runs do; a full model keeps its
    own architecture (a JSON beside it is not read). A file that cannot be peeked into is left to
    the reader, which says why in its own words."""
    if config is not None:
        return config, None
    from ..batch import COMPANION_NOTE, companion_json
    from ..readers import root_attributes

    twin = companion_json(path)
    if twin is None:
        return None, None
    try:
        if root_attributes(path, ("model_config",))["model_config"] is not None:
            return None, None
    except BnconvertError:
        return None, None
    return str(twin), f"{COMPANION_NOTE} {twin}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 layer``, ``2 layers``, ``1,036 parameters``: the count and its noun, in agreement
    (``words``: the plural when it is not ``word`` + s)."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"
