"""argparse for CleanCoin-sandbox: the help formatter and the parser class.

Kept apart from cli/sandbox_main.py so that `CleanCoin-sandbox run`, whose arguments
cli/run_args.py reads, imports neither argparse nor what argparse brings (gettext, locale,
warnings: docs/audit.md, "Start-up time"). Every other command, every help and every usage
error goes through this parser.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

TYPE_CHECKING = False     # not typing's: CleanCoin-sandbox imports this and never typing

if TYPE_CHECKING:
    from typing import Any, NoReturn

EXIT_USAGE = 2


def columns() -> int:
    """The terminal's width as shutil.get_terminal_size gives it (COLUMNS, else the width of
    standard output's terminal, else 80), without importing shutil (and with it bz2, lzma
    and zlib) at every start: argparse asks for it each time it makes a help formatter,
    which it does for every option it adds."""
    with contextlib.suppress(KeyError, ValueError):
        width = int(os.environ["COLUMNS"])
        if width > 0:
            return width
    with contextlib.suppress(AttributeError, ValueError, OSError):
        width = os.get_terminal_size(sys.__stdout__.fileno()).columns
        if width > 0:
            return width
    return 80


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, given the width (`columns`)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or columns())


class RawDescriptionFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    """The top level's: its description and epilog (the module docstring) as written."""


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as JSON when --json is given (exit 2 either way), and
    help formatted by `Formatter`."""

    json_errors = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            print(json.dumps({"ok": False, "exit": EXIT_USAGE, "error": f"{self.prog}: {message}"}))
            raise SystemExit(EXIT_USAGE)
        super().error(message)
