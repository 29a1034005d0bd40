"""An operator's interactive shell, reduced to its job control, for the terminal attack tests.

`python operator_shell.py TTY STATUS -- PROGRAM ARGS...` becomes a session leader, makes TTY
(a pty's slave) its controlling terminal (setsid, TIOCSCTTY), starts PROGRAM as a job in a
process group of its own with the terminal on 0, 1 and 2, gives that group the foreground
(tcsetpgrp), waits for it and takes the foreground back, as bash does for `CleanCoin-node ...`
typed at a prompt. Its STATUS file holds, once the job ended, the job's pid and wait status
and the group that had the foreground then (a job that took it away shows there). The tests started
their nodes with start_new_session and no controlling terminal before; here /dev/tty, the
foreground group and the session leader are the operator's, as on a real desktop.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios

#: What an interactive shell ignores itself and restores for its jobs.
JOB_CONTROL = (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP, signal.SIGINT, signal.SIGQUIT)


def main(argv: list[str]) -> int:
    """Run the job; 2 for a usage error, else 0 (the job's status is in STATUS)."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: operator_shell.py TTY STATUS -- PROGRAM ARGS...", file=sys.stderr)
        return 2
    tty_path, status_path, command = argv[0], argv[1], argv[3:]
    os.setsid()
    tty = os.open(tty_path, os.O_RDWR)
    fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
    # A shell ignores these, or taking the foreground back from a background group stops it.
    for sig in JOB_CONTROL:
        signal.signal(sig, signal.SIG_IGN)
    job = subprocess.Popen(command, stdin=tty, stdout=tty, stderr=tty, process_group=0,
                           preexec_fn=_job_signals)
    os.tcsetpgrp(tty, job.pid)
    code = job.wait()
    foreground = os.tcgetpgrp(tty)
    os.tcsetpgrp(tty, os.getpgrp())
    with open(status_path, "w") as handle:
        json.dump({"job": job.pid, "status": code, "foreground": foreground}, handle)
    return 0


def _job_signals() -> None:
    """The job's child, before exec: the signals the shell ignores are the job's again."""
    for sig in JOB_CONTROL:
        signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
