"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..readers.options import RUNNING_STD, LoadOptions
from .common import FileArg

__all__ = ["reading_options", "load_options", "replace_options", "replacements_from", "require_check_option", "tolerance_options", "keep_option"]


def load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config``, ``--running-std`` and ``--flip-kernels/--no-flip-kernels`` for reading a model."""
    func = click.option(
        "--flip-kernels/--no-flip-kernels", "flip_kernels", default=None,
        help="Flip conv kernels written by Theano (default: decided from the file).",
    )(func)
    func = click.option(
        "--running-std", type=click.Choice(RUNNING_STD), default="auto", show_default=True,
        help="What a Keras 1 BN running_std holds: auto follows the version table; 'std' for Keras 1.0.0-1.0.6 files.",
    )(func)
    func = click.option(
        "--config", "config", type=FileArg("an architecture JSON"), default=None,
        help="Architecture JSON (model.to_json()) for a weights-only .h5 (default: the .json of the same "
             "name beside it, when there is one).",
    )(func)
    return func


def reading_options(config: str | None, running_std: str, flip_kernels: bool | None) -> LoadOptions:
    """The reading options of the shared ``--config``, ``--running-std`` and ``--flip-kernels``."""
    return LoadOptions(config=config, running_std=running_std, flip_kernels=flip_kernels)


def replace_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--replace``, ``--replacements`` and ``--plugin``: Lambda and custom layers replaced by Keras
    layers the user names, and the user's own classes registered (:mod:`bnconvert.replace`,
    :mod:`bnconvert.custom`)."""
    func = click.option(
        "--plugin", "plugins", multiple=True, type=FileArg("a Python file"), metavar="FILE.py",
        help="Run FILE.py, YOUR OWN Python code (never the model file's), before reading: it may register "
             "custom classes with bnconvert.register_layer (repeatable).",
    )(func)
    func = click.option(
        "--replacements", "replacements_file", type=FileArg("a replacements file"), default=None, metavar="FILE",
        help="A JSON or YAML file mapping NAME_OR_CLASS to a Keras layer config or a list of them "
             "(YAML needs PyYAML).",
    )(func)
    func = click.option(
        "--replace", "replace", multiple=True, metavar="NAME_OR_CLASS=SPEC",
        help="Replace a Lambda or custom layer (by name or nested path; or every layer of a class) with what it "
             "computes: SPEC is a Keras layer config JSON, e.g. "
             '\'lambda={"class_name": "Rescaling", "config": {"scale": 0.00392156862745098, "offset": -0.5}}\', '
             "or a JSON list of them run in sequence; @FILE reads a replacements file. Repeatable. The code of "
             "the file is never run; `inspect` prints a --replace line per such layer.",
    )(func)
    return func


def replacements_from(replace: tuple[str, ...], replacements_file: str | None, plugins: tuple[str, ...]) -> list[Any]:
    """The plugins run (they register classes replacements may use), then the replacements given,
    as :class:`bnconvert.replace.Replacement` objects (empty: none)."""
    from ..custom import load_plugin
    from ..replace import parse_replace_option, read_replacements

    for plugin in plugins:
        load_plugin(plugin)
    found = [r for text in replace for r in parse_replace_option(text)]
    if replacements_file is not None:
        found += read_replacements(replacements_file)
    return found


def tolerance_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--atol`` and ``--rtol``: the one pass rule of fold, export and verify
    (:mod:`bnconvert.check.compare`), with its defaults."""
    from ..check.compare import DEFAULT_ATOL, DEFAULT_RTOL

    func = click.option(
        "--rtol", type=click.FloatRange(min=0), default=DEFAULT_RTOL, show_default=True,
        help="Relative tolerance, times the largest |A| of each output (A: the reference).",
    )(func)
    func = click.option(
        "--atol", type=click.FloatRange(min=0), default=DEFAULT_ATOL, show_default=True,
        help="Absolute tolerance. Equivalent when every output has |A-B| <= atol + rtol * max|A|.",
    )(func)
    return func


def keep_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--keep PATTERN``: BatchNormalization layers that stay (:func:`bnconvert.fold.fold_model`)."""
    return click.option(
        "--keep", "keep", multiple=True, metavar="PATTERN",
        help="Leave the BatchNormalization layers whose name matches the glob PATTERN unfolded (e.g. 'bn_head*'; "
             "nested layers also match as outer/inner). Repeatable; a pattern that matches no BN is an error.",
    )(func)


def require_check_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--require-check``: exit 1 when no check could run (the default is exit 0, NOT CHECKED)."""
    return click.option(
        "--require-check", is_flag=True,
        help="Exit 1 (and write nothing) when the numerical check cannot run, instead of writing the file "
             "marked NOT CHECKED.",
    )(func)
