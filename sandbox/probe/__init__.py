"""`CleanCoin-sandbox probe`: try to break out of a policy, and report what happened.

The parent prepares the plan, sets up targets outside the sandbox (a canary file and a
directory outside every granted path, a listening TCP port, a UDP port and an abstract unix
socket, a named unix socket, a secret in its memory, its own pid, a pidfd and a
network-namespace descriptor handed in with each attempt), starts a zygote as CleanCoin-node
does, and has it start one sandboxed child per attempt: the production path, every step of
it. A few attempts need a careless launcher (descriptors or a terminal left open, a grant
swapped between launches): the parent plays that part itself.

Every attempt runs in its own sandboxed child, with a timeout, so that a seccomp kill
(SIGSYS) or a hang ends that attempt only, and a policy that forbids fork is probed too. Each attempt has an expectation that is computed
from the policy and the plan, not written down for one policy: reading a path is expected to
work only if a Landlock rule grants it, a TCP connect only if the port (or "any") is granted,
the inet family is allowed and there is no new network namespace, and so on. The battery is
therefore meaningful for any policy. An *escape* is an attempt the policy says is denied that
succeeded; the CLI's exit status is `bool(result.escapes)`.

With `script`, the file is read in the parent before the sandbox goes up, and executed in the
sandbox instead of the battery (its stdout and stderr captured).

Modules:
  parent               `probe`, `probe_against`: the parent side, from plan to verdicts
  result               `Attempt`, `ProbeResult` and their text and JSON forms
  judge                what the policy promises (`_Host`, `_Why`, `_Judge`)
  targets              the canary, ports and sockets outside the sandbox
  runner               one attempt in its own sandboxed child: timeout, SIGSYS, notes
  battery              every attempt in order, and its run in the child
  attempts_files       filesystem attempts and their expectations
  attempts_network     network attempts and their expectations
  attempts_processes   execve and attempts on other processes
  attempts_kernel      mounts, namespaces, seccomp-only calls, foreign architectures, clone3
  attempts_privileges  capabilities, securebits, rlimits, iopl, resource exhaustion
  attempts_inherited   descriptors, terminals, the launcher's memory, named sockets, swapped grants
  script               `probe --script`: run a file in the sandbox instead of the battery
  kernel_abi           x86_64 syscall numbers, flags, capability numbers, raw syscalls
"""

from __future__ import annotations

from .parent import DEFAULT_ATTEMPT_TIMEOUT, probe, probe_against  # noqa: F401 - the public API
from .result import Attempt, ProbeResult  # noqa: F401
from .judge import resource_hard_core  # noqa: F401
from .runner import Outcome, Runner  # noqa: F401

# Private names tests/test_probe.py uses, kept importable from the package.
from .judge import _Host, _Judge  # noqa: F401
from .kernel_abi import _MAKE_REG, _READ_FILE, _WRITE_FILE  # noqa: F401
from .runner import _Ctx, _Out, _interpret  # noqa: F401
from .targets import _Targets  # noqa: F401
