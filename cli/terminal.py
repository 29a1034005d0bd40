"""The executables' own stdout and stderr, as a terminal shows them.

What the node executables, the GUIs and the offline wallet tool print carries text others
chose: a file name another local user planted (named in a refusal), a dump file's lines, a
confined component's answers logged to the console. A terminal runs the escape sequences in
it (OSC 52 writes the operator's clipboard, CSI rewrites or clears the screen, U+202E turns a
line around). So each console script shows control and format characters as \\uXXXX
(sandbox/printable.py `VisibleWriter`, as CleanCoin-sandbox's output); newlines and tabs are
kept. CleanCoin-cli shows what the server answered through sandbox/stdio.visible itself.
"""

from __future__ import annotations

import sys


def show_others_text_escaped() -> None:
    """Wrap sys.stdout and sys.stderr (once) in printable.VisibleWriter. For console scripts
    only: a caller that passes argv (a test, in-process) keeps its own streams."""
    from cleancoin.sandbox.printable import VisibleWriter
    if not isinstance(sys.stdout, VisibleWriter):
        sys.stdout = VisibleWriter(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, VisibleWriter):
        sys.stderr = VisibleWriter(sys.stderr)  # type: ignore[assignment]
