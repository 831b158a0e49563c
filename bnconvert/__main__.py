"""``python -m bnconvert``: the ``bnconvert`` command, for when the script is not on PATH (a
virtual environment not activated, ``pipx run``, Windows)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main(prog_name="bnconvert")
