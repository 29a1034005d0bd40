"""Descriptors 0, 1 and 2 of a sandboxed process, and the relay of its output.

A component that keeps the user's terminal on its standard descriptors can read keystrokes,
change the terminal's modes and write escape sequences to it (and push input where TIOCSTI
works). So by default (`process.stdio = "pipe"`) a launched child gets /dev/null as stdin and
two pipes as stdout and stderr; the launcher reads them and passes the text on, with control
characters made visible when it goes to a terminal (or always, for components). "null" gives
/dev/null on all three; "inherit" keeps the launcher's (a dangerous choice: needs a reason).
A process that restricts itself (CleanCoin-node, the GUI's window, a wallet started on its
own) gives up stdin and keeps fds 1 and 2, except where either is a terminal: then both
become pipes to a relay program started at this step (`relay_main`, a fresh interpreter,
outside the namespaces and the Landlock domain that follow), which passes the output on to
the terminal with control characters made visible, and the process holds no descriptor of
the terminal at all. Until 12-06 it kept the terminal, reopened write-only (it had read what
the operator typed through the read-write description a shell puts on 0, 1 and 2), and
wrote escape sequences to it raw: OSC 52 (the desktop's clipboard), CSI 2J (the screen).
"""

from __future__ import annotations

import os
import re
import threading

from .records import Record, record

#: The longest line a prefixing relay keeps back waiting for its end (journald's LineMax is
#: 48K); a longer one is passed on in pieces of this size, each with the prefix.
MAX_LINE = 16 * 1024
# Compiled on first use (re keeps it), not at import: most launches never show output on a terminal.
_RAW_BYTE = r"[\udc80-\udcff]"     # a byte that is not UTF-8, as surrogateescape decodes it


def sanitize(data: bytes) -> bytes:
    """A program's output for a terminal: every character printable.py names (C0 and C1
    controls, DEL, Unicode's format characters such as bidi overrides) shown as \\xNN
    (\\uXXXX above U+00FF), newlines and tabs kept; a byte that is not part of UTF-8 shown as
    \\xNN too (0x9b alone is CSI to a terminal in an 8-bit locale). The rest passes as it was
    written. Until 12-06 only C0 controls and DEL were shown: U+009B-U+009D (CSI, OSC and ST
    without an ESC) and U+202E reached the terminal."""
    from .printable import UNPRINTABLE_IN_LINES, escaped
    text = data.decode("utf-8", "surrogateescape")
    if UNPRINTABLE_IN_LINES.search(text) is None:
        return data
    return escaped(re.sub(_RAW_BYTE, _raw_byte, text), lines=True).encode("utf-8", "surrogateescape")


def _raw_byte(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group(0)) - 0xDC00:02x}"


def complete(data: bytes) -> tuple[bytes, bytes]:
    """`data` split before an unfinished UTF-8 character at its end (at most 3 bytes, kept
    for the next read, so that a character two reads cut is not shown as its bytes)."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80 or byte >= 0xC0:      # ASCII or a lead byte: where the character starts
            needed = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if 0xF0 <= byte < 0xF8 else 1
            return (data[:-back], data[-back:]) if needed > back else (data, b"")
    return data, b""


def visible(text: str, *, lines: bool = False) -> str:
    """A string another process chose (its name, an RPC answer), for a terminal: every
    character printable.py names (controls, C1's escape introducers, DEL, Unicode's format
    characters such as bidi overrides) shown as \\xNN (\\uXXXX above U+00FF); newlines and
    tabs too, unless `lines` (text of several lines). One definition of what may not be shown,
    for the policy tools, the logs (log_format.LogFormatter) and these alike."""
    from .printable import escaped
    return escaped(text, lines=lines)


@record
class Pipes(Record):
    """The two output pipes of a child: read ends for the launcher, write ends for the child."""

    stdout_r: int
    stdout_w: int
    stderr_r: int
    stderr_w: int

    @classmethod
    def make(cls) -> "Pipes":
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        return cls(out_r, out_w, err_r, err_w)

    def close_child_ends(self) -> None:
        os.close(self.stdout_w)
        os.close(self.stderr_w)

    def close_parent_ends(self) -> None:
        os.close(self.stdout_r)
        os.close(self.stderr_r)


def apply(mode: str, devnull: int, pipes: Pipes | None, launched: bool) -> tuple[str, int]:
    """Put the policy's descriptors on 0, 1 and 2; returns a note for the report and the pid
    of the relay it started (a process restricting itself on a terminal), else 0."""
    if mode == "inherit":
        return "stdio inherited from the launcher", 0
    os.dup2(devnull, 0)
    if not launched:
        if not any(_is_terminal(fd) for fd in (1, 2)):
            return "stdin is /dev/null; stdout and stderr kept (no terminal on either)", 0
        pid = _relay_to_terminal(devnull)
        return (f"stdin is /dev/null; stdout and stderr go through pipes to a relay (pid {pid}) that "
                "passes them on to the terminal with control characters made visible", pid)
    if mode == "pipe" and pipes is not None:
        os.dup2(pipes.stdout_w, 1)
        os.dup2(pipes.stderr_w, 2)
        return "stdin is /dev/null; stdout and stderr go through pipes to the launcher", 0
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    return "stdin, stdout and stderr are /dev/null", 0


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _relay_to_terminal(devnull: int) -> int:
    """Put pipes on 1 and 2 and start `relay_main` to pass what comes through them on to the
    descriptors 1 and 2 had (the terminal); its pid. The relay is nobody's child here
    (helpers.detached: no zombie for this process, no pid its waits could take), holds the two
    read ends and the terminal and nothing of this process's memory (a fresh `python -I`, not
    a fork), gives up capabilities and sets no_new_privs, and ends at end of file: once this
    process and whatever inherited the pipes are gone, so that the last lines written before
    an exit still show. A relay that cannot be started stops the step (OSError): the process
    would go on holding the terminal."""
    import sys
    from . import helpers
    pipes = Pipes.make()
    argv = [sys.executable, "-I", "-m", "cleancoin.sandbox.relay_main", "0", "3", "4", ""]
    # An empty environment: the relay copies bytes (its own escaping, whatever the locale),
    # and nothing of the process's environment (a secret in it) should follow it.
    env: dict[str, str] = {}

    def relay() -> None:
        # Only 0 (/dev/null), 1 and 2 (the terminal) and the read ends, as 3 and 4, survive exec
        # (moved above 4 first: either may be 3 or 4 already).
        import fcntl
        out, err = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (pipes.stdout_r, pipes.stderr_r))
        os.dup2(devnull, 0)
        os.dup2(out, 3)
        os.dup2(err, 4)
        os.closerange(5, os.sysconf("SC_OPEN_MAX"))
        os.execve(sys.executable, argv, env)

    try:
        try:
            pid = helpers.detached(relay)
        finally:
            pipes.close_parent_ends()
        if not pid:
            raise OSError(0, "no pid came back")
        os.dup2(pipes.stdout_w, 1)
        os.dup2(pipes.stderr_w, 2)
    except OSError as exc:
        raise OSError(exc.errno, f"fd 1 or 2 is a terminal, and the relay that shows this process's "
                                 f"output there could not be started: {exc.strerror}") from None
    finally:
        pipes.close_child_ends()
    return pid


class Relay:
    """Copies a child's output pipes to this process's stdout and stderr (or `targets`) until
    end of file.

    `raw` passes bytes unchanged unless the destination is a terminal; otherwise control
    characters are always made visible. Runs in a thread (`start`) or is driven by the
    caller's own event loop (`pump(fd)` when `fd` is readable).
    """

    def __init__(self, pipes: Pipes, *, raw: bool = False, prefix: bytes = b"",
                 targets: tuple[int, int] = (1, 2)) -> None:
        self.pipes = pipes
        self.raw = raw
        self.prefix = prefix
        self._targets = {pipes.stdout_r: targets[0], pipes.stderr_r: targets[1]}
        self._partial: dict[int, bytes] = {}
        self._thread: threading.Thread | None = None

    def fds(self) -> list[int]:
        return list(self._targets)

    def held(self) -> int:
        """Bytes kept back, waiting for the end of their line (at most MAX_LINE per pipe)."""
        return sum(len(rest) for rest in self._partial.values())

    def pump(self, fd: int) -> bool:
        """Move what `fd` holds on; False at end of file (the descriptor is then closed)."""
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        target = self._targets[fd]
        if not data:
            rest = self._partial.pop(fd, b"")
            if rest:
                self._write(target, rest + b"\n" if self.prefix else rest)
            os.close(fd)
            return False
        if self.prefix:
            data = self._partial.pop(fd, b"") + data
            ended, newline, rest = data.rpartition(b"\n")
            lines = ended.split(b"\n") if newline else []
            # A line longer than MAX_LINE goes on in pieces: a child that never writes a
            # newline must not make the relay (a zygote, unconfined) hold all it writes.
            while len(rest) > MAX_LINE:
                piece = complete(rest[:MAX_LINE])[0] or rest[:MAX_LINE]
                lines.append(piece)
                rest = rest[len(piece):]
            if rest:
                self._partial[fd] = rest
            if not lines:
                return True
            data = b"".join(self.prefix + line + b"\n" for line in lines)
        else:
            # A character a read cut in two waits for its end (shown whole, not as bytes).
            data, rest = complete(self._partial.pop(fd, b"") + data)
            if rest:
                self._partial[fd] = rest
            if not data:
                return True
        self._write(target, data)
        return True

    def _write(self, target: int, data: bytes) -> None:
        if not self.raw or os.isatty(target):
            data = sanitize(data)
        try:
            while data:
                data = data[os.write(target, data):]
        except OSError:
            pass    # our own output is gone: the child's output has nowhere to go

    def start(self) -> None:
        """Relay in a daemon thread until both pipes end."""
        self._thread = threading.Thread(target=self._run, name="sandbox-output", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = 10) -> None:
        """Wait until everything the child wrote has been passed on (after it ended)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # poll(2), not selectors: two descriptors need no epoll set, and selectors.py (its
        # ABCs and namedtuple) is about 1 ms of CPU of every `CleanCoin-sandbox run`.
        # POLLHUP and POLLERR are reported without being asked for: pump reads the end.
        import select
        poller = select.poll()
        for fd in self.fds():
            poller.register(fd, select.POLLIN)
        open_fds = len(self._targets)
        while open_fds:
            for fd, _events in poller.poll():
                if not self.pump(fd):
                    poller.unregister(fd)
                    open_fds -= 1
