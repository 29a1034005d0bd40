"""The modes of the operator's terminal, kept across a run that hands it to the program.

A program given the launcher's descriptors (`process.stdio = "inherit"`) may set the
terminal's modes, as an interactive program must (raw input, no echo while it asks for a
password). What it leaves there outlived it until 12-08 (h108): a sandboxed program turned
echo and canonical input off, and the operator's shell afterwards showed nothing typed. The
launcher saves the modes of each terminal on 0-2 before the program starts and puts back any
that differ once it has ended, as a shell's job control does for a job that did not end
cleanly (zsh's `ttyctl -f` for every job). The filter refuses what the modes do not cover
(the line discipline, exclusive mode, the size, the foreground: syscalls.TERMINAL_REFUSED).
"""

from __future__ import annotations

import os
import signal
import termios
from dataclasses import dataclass


@dataclass(frozen=True)
class SavedModes:
    """One terminal's descriptor (one of ours on 0-2) and its modes when the run began."""

    fd: int
    modes: list


@dataclass(frozen=True)
class TerminalState:
    """The saved modes of every distinct terminal on descriptors 0-2."""

    saved: tuple[SavedModes, ...]

    @classmethod
    def save(cls) -> "TerminalState | None":
        """The modes of the terminals on 0-2 now; None when none of them is a terminal."""
        saved, seen = [], set()
        for fd in (0, 1, 2):
            try:
                device = os.fstat(fd).st_rdev
                if device in seen or not os.isatty(fd):
                    continue
                saved.append(SavedModes(fd, termios.tcgetattr(fd)))
                seen.add(device)
            except (OSError, termios.error):
                continue
        return cls(tuple(saved)) if saved else None

    def restore(self) -> list[int]:
        """Put back every saved terminal's modes that changed (after the output written so far
        has drained); the descriptors restored. SIGTTOU is ignored meanwhile, as a shell
        ignores it: a launcher in a background job is not stopped for it."""
        restored = []
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            for entry in self.saved:
                try:
                    if termios.tcgetattr(entry.fd) != entry.modes:
                        termios.tcsetattr(entry.fd, termios.TCSADRAIN, entry.modes)
                        restored.append(entry.fd)
                except (OSError, termios.error):
                    continue        # the terminal is gone (hung up): nothing to put back
        finally:
            signal.signal(signal.SIGTTOU, previous)
        return restored
