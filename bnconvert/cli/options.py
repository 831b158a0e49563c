"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["load_kwargs", "load_options"]


def load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config``, ``--running-std`` and ``--flip-kernels/--no-flip-kernels`` for reading a model."""
    func = click.option(
        "--flip-kernels/--no-flip-kernels", "flip_kernels", default=None,
        help="Flip conv kernels written by Theano (default: decided from the file).",
    )(func)
    func = click.option(
        "--running-std", type=click.Choice(["auto", "variance", "std", "theano-1.0.7"]), default="auto", show_default=True,
        help="What a Keras 1 BN running_std holds: auto follows the version table; 'std' for Keras 1.0.0-1.0.6 files.",
    )(func)
    func = click.option(
        "--config", "config", type=click.Path(readable=False), default=None,
        help="Architecture JSON (model.to_json()) for a weights-only .h5.",
    )(func)
    return func


def load_kwargs(config: str | None, running_std: str, flip_kernels: bool | None) -> dict[str, Any]:
    """The keyword arguments :func:`bnconvert.load` takes, from the shared options."""
    return {"config": config, "running_std": running_std, "flip_kernels": flip_kernels}
