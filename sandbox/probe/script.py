"""`probe --script`: run a file as __main__ in the sandbox instead of the battery, in a fork,
its stdout and stderr captured."""

from __future__ import annotations

import linecache
import os
import signal
import sys
import traceback

from .. import control, launcher

_MAX_SCRIPT_OUTPUT = 1 << 20


def _child_script(control_fd: int, path: str, source: str) -> int:
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.close(w)
            # Fresh streams on fds 1 and 2: the inherited sys.stdout may wrap a descriptor
            # the sandbox closed (pytest's capture file, for one).
            sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                              closefd=False)
            sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                              closefd=False)
            try:
                sys.stdin = open(0, "r", closefd=False)
            except OSError:
                pass
            status = _exec_script(path, source)
        finally:
            os._exit(status)
    os.close(w)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        if size < _MAX_SCRIPT_OUTPUT:
            chunks.append(chunk)
        size += len(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks)[:_MAX_SCRIPT_OUTPUT].decode(errors="replace")
    if size > _MAX_SCRIPT_OUTPUT:
        output += f"\n[... {size - _MAX_SCRIPT_OUTPUT} more bytes of output cut]\n"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
        output += "[the script was killed by SIGSYS: a syscall the seccomp filter forbids]\n"
    control.send(control_fd, {"script": {"status": launcher.returncode(status), "output": output}})
    return 0


def _exec_script(path: str, source: str) -> int:
    """Compile and run the script as __main__; its exit status."""
    sys.argv = [path]
    # Tracebacks read lines through linecache; the file itself may not be readable in here.
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    status = 0
    try:
        code = compile(source, path, "exec")
        exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
    except SystemExit as exc:
        if exc.code is None:
            status = 0
        elif isinstance(exc.code, int):
            status = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001 - the script's own failure, reported as output
        kind, value, tb = sys.exc_info()
        # Leave out this function's own frame: the traceback starts in the script.
        traceback.print_exception(kind, value, tb.tb_next if tb is not None else None)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return status
