"""`probe --script`: run a file as __main__ in the sandbox instead of the battery (the child
that runs it is started like every attempt: runner.serve_script)."""

from __future__ import annotations

import linecache
import sys
import traceback


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
