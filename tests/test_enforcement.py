"""Each enforcement mechanism, proven on the running kernel.

Every test runs real code in a child launched by `cleancoin.sandbox.launcher` under a real
policy (see conftest.py) and sets an operation the policy forbids beside one it allows, in the
same test: the denial shows the mechanism is in force, the allowed operation shows the denial is
the mechanism's and not a broken child, a missing file or a wrong port. Where the errno alone
could come from elsewhere, the test picks an operation whose unsandboxed answer differs (for
example clone3(NULL, 0) is EINVAL without the filter, ENOSYS with it).

Functions named `fn` run inside the sandbox, after fork, under Landlock and seccomp: they may use
modules imported here, and they return plain data.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import signal
import socket
import termios
import threading
import uuid

import prctl
import pytest

from cleancoin.sandbox.errors import PolicyErrors
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy

BASE_POLICY = shipped_policy("base/python")
STRICT_POLICY = shipped_policy("strict")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers (the sandbox is x86_64 only, see docs/sandbox.md).
SYS_IOCTL, SYS_GETPID, SYS_CAPSET, SYS_PERSONALITY, SYS_KEYCTL, SYS_CLONE3 = 16, 39, 126, 135, 250, 435
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
CAP_SYS_ADMIN = 21
TIOCLINUX = 0x541C

# The deny list of the shipped base, for the policy that cannot extend it (see the errno test).
BASE_DENY = '''[
    "@keyring", "@privileged", "@setuid",
    "execve", "execveat", "unshare", "setns", "kcmp",
    "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "personality", "name_to_handle_at", "open_tree",
]'''


pytestmark = pytest.mark.usefixtures("deadline")


# --- helpers that run inside the sandbox -------------------------------------------------------

def errno_of(call, *args) -> int:
    """0 when call(*args) succeeds, else the errno it failed with."""
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return 0


def raw_syscall(number: int, *args) -> int:
    """0 when the raw syscall succeeds, else its errno (no libc wrapper in between)."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *args)
    return ctypes.get_errno() if result == -1 else 0


def in_grandchild(action) -> dict:
    """Run `action()` in a forked process; how it ended: {"signal": n} or {"exit": status}.

    A seccomp kill takes the whole process, so forbidden syscalls are tried one level down.
    """
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = int(action() or 0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"exit": os.WEXITSTATUS(status)}


SIGSYS = {"signal": int(signal.SIGSYS)}


def capset_effective(bits: int) -> int:
    """capset(2) with `bits` as the effective, permitted and inheritable sets; 0 or errno."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)   # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    for i in range(2):
        word = (bits >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    return raw_syscall(SYS_CAPSET, ctypes.byref(header), data)


def ioctl_errno(fd: int, request: int, arg) -> int:
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(SYS_IOCTL), ctypes.c_long(fd), ctypes.c_ulong(request), arg)
    return ctypes.get_errno() if result == -1 else 0


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listener(family=socket.AF_INET, address=("127.0.0.1", 0)) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(4)
    return sock


# --- Landlock ------------------------------------------------------------------------------------

def test_landlock_filesystem_read_and_write(base_sandbox, write_policy, run_in_sandbox, sandbox_vars,
                                             tmp_path, outside_dir):
    read_dir, write_dir = tmp_path / "ro", tmp_path / "rw"
    read_dir.mkdir()
    write_dir.mkdir()
    (read_dir / "granted.txt").write_text("granted")
    secret = os.path.join(outside_dir, "secret.txt")
    with open(secret, "w") as handle:
        handle.write("secret")
    with open(secret) as handle:   # the parent may read it: only the sandbox can stop the child
        assert handle.read() == "secret"
    policy = write_policy(f"""
        [filesystem]
        read = ["{read_dir}"]
        write = ["{write_dir}"]
    """, view=False)      # Landlock alone: no filesystem view in front of it

    def fn():
        out = {}
        with open(read_dir / "granted.txt") as handle:
            out["read_granted"] = handle.read()
        out["read_outside"] = errno_of(open, secret)
        out["list_outside"] = errno_of(os.listdir, outside_dir)
        with open(write_dir / "new.txt", "w") as handle:
            handle.write("written inside")
        out["create_in_read_only_dir"] = errno_of(open, read_dir / "new.txt", "w")
        out["write_file_in_read_only_dir"] = errno_of(open, read_dir / "granted.txt", "r+")
        return out

    result, code, _ = run_in_sandbox(policy, sandbox_vars, fn)
    assert code == 0
    assert result == {"read_granted": "granted", "read_outside": errno.EACCES,
                      "list_outside": errno.EACCES, "create_in_read_only_dir": errno.EACCES,
                      "write_file_in_read_only_dir": errno.EACCES}
    assert (write_dir / "new.txt").read_text() == "written inside"
    assert sorted(p.name for p in read_dir.iterdir()) == ["granted.txt"]
    assert (read_dir / "granted.txt").read_text() == "granted"

    # With the view (the default), what is not granted is not there at all, and what is
    # granted read-only is a read-only mount: the same refusals come from the view first.
    viewed, code, _ = run_in_sandbox(write_policy(f"""
        [filesystem]
        read = ["{read_dir}"]
        write = ["{write_dir}"]
    """), sandbox_vars, fn)
    assert code == 0
    assert viewed == {"read_granted": "granted", "read_outside": errno.ENOENT,
                      "list_outside": errno.ENOENT, "create_in_read_only_dir": errno.EROFS,
                      "write_file_in_read_only_dir": errno.EROFS}


@contextlib.contextmanager
def _tcp_grants(write_policy):  # noqa: ANN001, ANN202 - the fixture's function
    """A policy granting bind on one free port and connect to one listener, with a second
    free port and a second listener it does not grant: (policy, bind_ok, bind_denied,
    connect_ok, connect_denied, granted listener, refused listener). No network namespace
    (the base enters none), inet sockets allowed by seccomp: only Landlock's port rules stand
    between the child and these ports."""
    bind_ok, bind_denied = free_tcp_port(), free_tcp_port()
    while bind_denied == bind_ok:
        bind_denied = free_tcp_port()
    with listener() as granted, listener() as refused:
        connect_ok, connect_denied = granted.getsockname()[1], refused.getsockname()[1]
        policy = write_policy(f"""
            [network]
            socket_families = ["inet"]
            bind_tcp = [{bind_ok}]
            connect_tcp = [{connect_ok}]
        """)
        yield policy, bind_ok, bind_denied, connect_ok, connect_denied, granted, refused


def test_landlock_tcp_bind_and_connect(base_sandbox, require, write_policy, run_in_sandbox,
                                       sandbox_vars):
    require(base_sandbox.landlock_abi >= 4, "Landlock ABI 4 (TCP port rules)")
    with _tcp_grants(write_policy) as (policy, bind_ok, bind_denied, connect_ok, connect_denied,
                                       granted, refused):

        def fn():
            def attempt(op, port):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    return errno_of(getattr(sock, op), ("127.0.0.1", port))

            return {"bind_granted": attempt("bind", bind_ok),
                    "bind_other": attempt("bind", bind_denied),
                    "connect_granted": attempt("connect", connect_ok),
                    "connect_other": attempt("connect", connect_denied)}

        result, code, report = run_in_sandbox(policy, sandbox_vars, fn)
        assert code == 0
        assert result == {"bind_granted": 0, "bind_other": errno.EACCES,
                          "connect_granted": 0, "connect_other": errno.EACCES}
        granted.settimeout(5)
        conn, _ = granted.accept()   # the allowed connection really arrived
        conn.close()
        refused.setblocking(False)
        with pytest.raises(BlockingIOError):
            refused.accept()
    assert f"TCP bind [{bind_ok}]" in report.mechanisms["landlock"].details[0]


IPPROTO_SMC, IPPROTO_MPTCP = 256, 262


def test_stream_protocols_other_than_tcp_do_not_pass_the_tcp_port_rules(
        base_sandbox, require, write_policy, run_in_sandbox, sandbox_vars):
    """Landlock's TCP port rules hold for IPPROTO_TCP sockets only (the kernel's own fix of
    6.11, sk_is_tcp): an inet stream socket of another protocol (MPTCP, which falls back to
    plain TCP when the peer does not speak it; SMC over inet; SCTP where its module loads)
    binds and connects where Landlock refuses TCP. Before this test, a sandboxed child under
    bind_tcp = [A] and connect_tcp = [B] bound port C and connected to a host listener on port D
    with socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP): both 0, the connection arrived. Now the
    filter lets an inet stream socket have protocol 0 or IPPROTO_TCP only (datagrams 0 or
    IPPROTO_UDP): another answers EAFNOSUPPORT, as a family not granted; TCP still works."""
    require(base_sandbox.landlock_abi >= 4, "Landlock ABI 4 (TCP port rules)")
    with _tcp_grants(write_policy) as (policy, bind_ok, bind_denied, connect_ok, connect_denied,
                                       granted, refused):

        def fn():
            def attempt(proto, op, port):
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
                except OSError as exc:
                    return exc.errno
                with sock:
                    return errno_of(getattr(sock, op), ("127.0.0.1", port))

            out = {f"{name}-{op}": attempt(proto, op, port)
                   for name, proto in (("mptcp", IPPROTO_MPTCP), ("smc", IPPROTO_SMC))
                   for op, port in (("bind", bind_denied), ("connect", connect_denied))}
            out["tcp-connect-granted"] = attempt(socket.IPPROTO_TCP, "connect", connect_ok)
            out["tcp-bind-other"] = attempt(0, "bind", bind_denied)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP):
                out["udp"] = 0
            return out

        result, code, _ = run_in_sandbox(policy, sandbox_vars, fn)
        assert code == 0
        assert result == {"mptcp-bind": errno.EAFNOSUPPORT, "mptcp-connect": errno.EAFNOSUPPORT,
                          "smc-bind": errno.EAFNOSUPPORT, "smc-connect": errno.EAFNOSUPPORT,
                          "tcp-connect-granted": 0, "tcp-bind-other": errno.EACCES, "udp": 0}, result
        refused.setblocking(False)
        with pytest.raises(BlockingIOError):
            refused.accept()
        granted.settimeout(5)
        granted.accept()[0].close()


def test_landlock_scopes_abstract_unix_socket_and_signal(base_sandbox, require, write_policy,
                                                         run_in_sandbox, sandbox_vars):
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (scopes)")
    name = f"\0cleancoin-test-{uuid.uuid4().hex}".encode()

    def fn():
        out = {}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            out["connect_outside"] = errno_of(sock.connect, name)
        with listener(socket.AF_UNIX, name + b"-inside"), \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            out["connect_inside"] = errno_of(sock.connect, name + b"-inside")
        out["parent_pid"] = os.getppid()
        out["kill_parent"] = errno_of(os.kill, os.getppid(), 0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        out["kill_own_child"] = errno_of(os.kill, pid, 0)
        os.close(write_end)
        os.waitpid(pid, 0)
        return out

    unscoped = write_policy("""
        [scopes]
        abstract_unix_socket = false
        signal = false
    """)
    with listener(socket.AF_UNIX, name):
        scoped_result, code, _ = run_in_sandbox(write_policy(""), sandbox_vars, fn)
        assert code == 0
        unscoped_result, code, _ = run_in_sandbox(unscoped, sandbox_vars, fn)
        assert code == 0
    # The parent (PID 1 of the pid namespace, forked before Landlock) is outside the domain.
    assert scoped_result == {"connect_outside": errno.EPERM, "connect_inside": 0,
                             "parent_pid": 1, "kill_parent": errno.EPERM, "kill_own_child": 0}
    # The same child without the scopes reaches both: the EPERMs above are Landlock's.
    assert unscoped_result == {"connect_outside": 0, "connect_inside": 0,
                               "parent_pid": 1, "kill_parent": 0, "kill_own_child": 0}


# --- seccomp -------------------------------------------------------------------------------------

def _forbidden_syscalls():
    return {"getpid": in_grandchild(lambda: 0 if libc.syscall(ctypes.c_long(SYS_GETPID)) > 0 else 1),
            # personality(0xffffffff) only reads the persona: harmless, and succeeds unfiltered.
            "personality": in_grandchild(lambda: raw_syscall(SYS_PERSONALITY, ctypes.c_ulong(0xFFFFFFFF))),
            # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
            "keyctl": in_grandchild(lambda: raw_syscall(SYS_KEYCTL, ctypes.c_long(0), ctypes.c_long(-3),
                                                        ctypes.c_long(0)))}


def test_seccomp_kills_a_forbidden_syscall(base_sandbox, write_policy, run_in_sandbox, sandbox_vars):
    result, code, report = run_in_sandbox(write_policy(""), sandbox_vars, _forbidden_syscalls)
    assert code == 0
    assert result == {"getpid": {"exit": 0}, "personality": SIGSYS, "keyctl": SIGSYS}
    assert "default kill_process" in report.mechanisms["seccomp"].details[0]


def test_seccomp_errno_default_action_answers_eperm(base_sandbox, write_policy, run_in_sandbox,
                                                    sandbox_vars):
    # Standalone, not extending the base: the base's ioctl rules already use errno:EPERM and
    # libseccomp cannot add a rule whose action is the default one (the loader says so).
    policy = write_policy(f"""
        [policy]
        name = "errno-default"

        [seccomp]
        default_action = "errno:EPERM"
        allow = ["@system-service"]
        deny = {BASE_DENY}
    """, extends=False)
    result, code, report = run_in_sandbox(policy, sandbox_vars, _forbidden_syscalls)
    assert code == 0
    assert result == {"getpid": {"exit": 0}, "personality": {"exit": errno.EPERM},
                      "keyctl": {"exit": errno.EPERM}}
    assert "default errno:EPERM" in report.mechanisms["seccomp"].details[0]


def _mode_bits(directory: str):
    def fn():
        path = os.path.join(directory, "mode-bits")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created = os.path.join(directory, "created")

        def create(mode):
            os.close(os.open(created, os.O_WRONLY | os.O_CREAT, mode))
        result = {"chmod-suid": errno_of(os.chmod, path, 0o4755), "fchmod-sgid": errno_of(os.fchmod, fd, 0o2750),
                  "chmod-plain": errno_of(os.chmod, path, 0o750), "open-suid": errno_of(create, 0o4700),
                  "open-plain": errno_of(create, 0o600),
                  # Without O_CREAT the mode argument means nothing: allowed.
                  "open-existing": errno_of(lambda: os.close(os.open(path, os.O_RDONLY, 0o4755))),
                  "mode": os.stat(path).st_mode & 0o7777}
        os.close(fd)
        return result
    return fn


def test_seccomp_refuses_set_user_id_and_set_group_id_bits(base_sandbox, write_policy, run_in_sandbox,
                                                           sandbox_vars, outside_dir):
    """Derived for every policy, under a kill default and under an errno default (where the
    rule is written as allows under the complementary conditions). Found 12-06 (h32): the
    wallet planted a set-user-ID program in wallets/, nosuid in its view only."""
    expected = {"chmod-suid": errno.EPERM, "fchmod-sgid": errno.EPERM, "chmod-plain": 0,
                "open-suid": errno.EPERM, "open-plain": 0, "open-existing": 0, "mode": 0o750}
    grant = f"""
        [filesystem]
        write = ["{outside_dir}"]
    """
    killing = write_policy(grant)
    result, code, report = run_in_sandbox(killing, sandbox_vars, _mode_bits(outside_dir))
    assert (code, result) == (0, expected)
    assert any("set-user-ID" in d for d in report.mechanisms["seccomp"].details)
    errno_default = write_policy(f"""
        [policy]
        name = "errno-default"

        [seccomp]
        default_action = "errno:EPERM"
        allow = ["@system-service"]
        deny = {BASE_DENY}
    """ + grant, extends=False)
    for name in ("mode-bits", "created"):
        os.unlink(os.path.join(outside_dir, name))
    result, code, _ = run_in_sandbox(errno_default, sandbox_vars, _mode_bits(outside_dir))
    assert (code, result) == (0, expected)


def test_set_user_id_bits_are_refused_where_the_policy_lets_the_call_run_otherwise(
        base_sandbox, write_policy, run_in_sandbox, sandbox_vars, outside_dir):
    """The rule is for every filter, but it was derived only for calls on the allow list
    without a rule of their own: a `log` default (everything not allowed runs, logged) and a
    rule `{ syscall = "fchmod", action = "log" }` or `{ syscall = "openat", action = "allow" }`
    (unconditional: libseccomp drops conditional rules beside it) let the bits through. Before this test the sandboxed child set them:
    chmod-suid 0, fchmod-sgid 0, open-suid 0 under the log default, and fchmod-sgid 0 and
    open-suid 0 under the rules. Now EPERM in all, the plain calls run (logged where the policy
    says so)."""
    expected = {"chmod-suid": errno.EPERM, "fchmod-sgid": errno.EPERM, "chmod-plain": 0,
                "open-suid": errno.EPERM, "open-plain": 0, "open-existing": 0, "mode": 0o750}
    grant = f"""
        [filesystem]
        write = ["{outside_dir}"]
    """
    logging_default = write_policy(f"""
        [policy]
        name = "log-default"

        [seccomp]
        default_action = "log"
        reason = "this test: a mode-setting call under a log default"
        allow = ["@system-service"]
        deny = {BASE_DENY[:-1] + '"chmod", "fchmod", "fchmodat", "openat", "open"]'}
    """ + grant, extends=False)
    result, code, _ = run_in_sandbox(logging_default, sandbox_vars, _mode_bits(outside_dir))
    assert (code, result) == (0, expected)
    logged_rule = write_policy(grant + """
        [[seccomp.rules]]
        syscall = "fchmod"
        action = "log"

        [[seccomp.rules]]
        syscall = "openat"
        action = "allow"
        reason = "a policy that allows openat outright"
    """)
    for name in ("mode-bits", "created"):
        os.unlink(os.path.join(outside_dir, name))
    result, code, _ = run_in_sandbox(logged_rule, sandbox_vars, _mode_bits(outside_dir))
    assert (code, result) == (0, expected)


SYS_PRCTL, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 157, 3, 4


def _dumpable_attempts():
    """prctl(PR_SET_DUMPABLE, 1) as written and with a high bit of the option set (the kernel
    reads the option as an int), then whether the process is dumpable; setting it to 0 is
    allowed (what the launcher's own step does)."""
    def prctl_raw(option: int, value: int) -> int:
        return raw_syscall(SYS_PRCTL, ctypes.c_ulong(option), ctypes.c_ulong(value),
                           ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))

    return {"plain": prctl_raw(PR_SET_DUMPABLE, 1), "high_bit": prctl_raw((1 << 32) | PR_SET_DUMPABLE, 1),
            "zero": prctl_raw(PR_SET_DUMPABLE, 0),
            "dumpable": libc.syscall(ctypes.c_long(SYS_PRCTL), ctypes.c_long(PR_GET_DUMPABLE), 0, 0, 0, 0)}


def test_dumpable_cannot_be_turned_on_with_a_high_bit_of_the_option(base_sandbox, write_policy,
                                                                      run_in_sandbox, sandbox_vars):
    """The filter refused prctl(PR_SET_DUMPABLE, 1) comparing all 64 bits of the option: with
    bit 32 set it saw another option and allowed the call, and the kernel (which reads an int)
    made the process dumpable. Under both forms of the rule: a kill default (an EPERM rule)
    and an errno:EPERM default (allow rules for every other option)."""
    errno_default = write_policy(f"""
        [seccomp]
        default_action = "errno:EPERM"
        allow = ["@system-service"]
        deny = {BASE_DENY}
    """, extends=False)
    for policy in (write_policy(""), errno_default):
        result, code, _ = run_in_sandbox(policy, sandbox_vars, _dumpable_attempts)
        assert code == 0
        assert result == {"plain": errno.EPERM, "high_bit": errno.EPERM, "zero": 0, "dumpable": 0}, policy


def _derived_rule_attempts():
    """What two derived rules refuse: prctl(PR_SET_DUMPABLE, 1) (and whether the process is
    dumpable after it), clone(CLONE_NEWUSER); and what they let through (PR_SET_DUMPABLE 0).
    A socket of a family the policy does not list (netlink) and a unix socket: the loader
    refuses a rule for socket, so the family rule cannot be dropped this way."""
    import socket as sockets
    out = {"dumpable-on": errno_of(libc_prctl, PR_SET_DUMPABLE, 1),
           "dumpable": libc.syscall(ctypes.c_long(SYS_PRCTL), ctypes.c_long(PR_GET_DUMPABLE), 0, 0, 0, 0),
           "dumpable-off": errno_of(libc_prctl, PR_SET_DUMPABLE, 0)}
    out["netlink"] = errno_of(lambda: sockets.socket(sockets.AF_NETLINK, sockets.SOCK_RAW, 0).close())
    out["unix"] = errno_of(lambda: sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM).close())
    pid = libc.syscall(ctypes.c_long(SYS_CLONE), ctypes.c_ulong(CLONE_NEWUSER | signal.SIGCHLD),
                       ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if pid == 0:
        os._exit(0)
    out["clone-newuser"] = ctypes.get_errno() if pid < 0 else os.waitpid(pid, 0) and 0
    return out


def libc_prctl(option: int, value: int) -> None:
    if libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


SYS_CLONE, CLONE_NEWUSER = 56, 0x10000000


def test_derived_rules_hold_beside_a_rule_that_lets_the_call_run(base_sandbox, write_policy,
                                                                 run_in_sandbox, sandbox_vars):
    """A rule without conditions for prctl or clone (`log`: audit every call) made the
    compiler skip the derived rule (libseccomp drops conditional rules beside an
    unconditional one): before this test, under such rules, the sandboxed child turned
    dumpable back on (0, and PR_GET_DUMPABLE said 1) and cloned into a new user namespace
    (0). Now the rule's action is what the call gets where no derived rule refuses it."""
    policy = write_policy("""
        [seccomp]
        allow = ["clone", "fork"]

        [[seccomp.rules]]
        syscall = "prctl"
        action = "log"

        [[seccomp.rules]]
        syscall = "clone"
        action = "log"
    """)
    result, code, _ = run_in_sandbox(policy, sandbox_vars, _derived_rule_attempts)
    assert code == 0
    assert result == {"dumpable-on": errno.EPERM, "dumpable-off": 0, "netlink": errno.EAFNOSUPPORT,
                      "unix": 0, "clone-newuser": errno.EPERM, "dumpable": 0}, result


SYS_FCNTL, F_GETFD = 72, 1


def _fcntl_getfd_attempts():
    """fcntl(0, F_GETFD) as written, with bit 32 of the command set (the kernel reads an
    unsigned int: still F_GETFD), and another command that no rule refuses."""
    def fcntl_raw(cmd: int) -> int:
        return raw_syscall(SYS_FCNTL, ctypes.c_ulong(0), ctypes.c_ulong(cmd), ctypes.c_ulong(0))

    return {"plain": fcntl_raw(F_GETFD), "high_bit": fcntl_raw((1 << 32) | F_GETFD),
            "other": fcntl_raw(3)}                       # F_GETFL


def test_a_rule_on_a_32_bit_argument_cannot_be_passed_with_a_high_bit(base_sandbox, write_policy,
                                                                       run_in_sandbox, sandbox_vars):
    """A refusing rule with `eq` on a 32-bit argument was checked and explained as refusing
    F_GETFD, and fcntl(0, F_GETFD | 1 << 32) ran F_GETFD. The loader refuses such a condition,
    naming it; written on the low 32 bits (masked_eq) the rule refuses both forms."""
    rule = ('[[seccomp.rules]]\nsyscall = "fcntl"\naction = "errno:EPERM"\n'
            'args = [{{ index = 1, op = "{op}", value = 1{mask} }}]\n')
    eq = write_policy(rule.format(op="eq", mask=""))
    with pytest.raises(PolicyErrors) as refused:
        load_policy(eq)
    [error] = refused.value.errors
    assert (error.where.file, error.where.key) == (eq, "seccomp.rules[0].args[0]") and error.where.line > 0
    assert "argument 1 of fcntl is 32 bits wide" in error.message and "masked_eq" in error.message
    masked = write_policy(rule.format(op="masked_eq", mask=", mask = 0xFFFFFFFF"))
    result, code, _ = run_in_sandbox(masked, sandbox_vars, _fcntl_getfd_attempts)
    assert code == 0
    assert result == {"plain": errno.EPERM, "high_bit": errno.EPERM, "other": 0}


def test_seccomp_socket_families(base_sandbox, run_in_sandbox, sandbox_vars):
    def fn():
        def make(family, kind=socket.SOCK_STREAM):
            return errno_of(lambda: socket.socket(family, kind).close())

        return {"unix": make(socket.AF_UNIX), "unix_dgram": make(socket.AF_UNIX, socket.SOCK_DGRAM),
                "socketpair": errno_of(lambda: [s.close() for s in socket.socketpair()]),
                "inet": make(socket.AF_INET), "inet6": make(socket.AF_INET6),
                "netlink": make(socket.AF_NETLINK, socket.SOCK_RAW)}

    result, code, _ = run_in_sandbox(BASE_POLICY, sandbox_vars, fn)
    assert code == 0
    assert result == {"unix": 0, "unix_dgram": 0, "socketpair": 0, "inet": errno.EAFNOSUPPORT,
                      "inet6": errno.EAFNOSUPPORT, "netlink": errno.EAFNOSUPPORT}


def test_seccomp_inet_family_without_raw(base_sandbox, write_policy, run_in_sandbox, sandbox_vars):
    policy = write_policy("""
        [network]
        socket_families = ["inet"]
    """)

    def fn():
        def make(kind, proto=0):
            return errno_of(lambda: socket.socket(socket.AF_INET, kind, proto).close())

        return {"stream": make(socket.SOCK_STREAM),
                "stream_nonblock": make(socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC),
                "dgram": make(socket.SOCK_DGRAM),
                "raw": make(socket.SOCK_RAW, socket.IPPROTO_ICMP),
                "inet6": errno_of(lambda: socket.socket(socket.AF_INET6).close())}

    result, code, _ = run_in_sandbox(policy, sandbox_vars, fn)
    assert code == 0
    # Without the filter a raw socket fails with EPERM (no CAP_NET_RAW): EAFNOSUPPORT is seccomp's.
    assert result == {"stream": 0, "stream_nonblock": 0, "dgram": 0, "raw": errno.EAFNOSUPPORT,
                      "inet6": errno.EAFNOSUPPORT}


def test_seccomp_clone3_answers_enosys_and_threads_still_start(base_sandbox, run_in_sandbox,
                                                              sandbox_vars):
    def fn():
        seen = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join(10)
        # clone3(NULL, 0): EINVAL from the kernel, ENOSYS from the filter.
        return {"clone3": raw_syscall(SYS_CLONE3, ctypes.c_void_p(0), ctypes.c_size_t(0)),
                "thread_ran": len(seen) == 1 and seen[0] != os.getpid()}

    result, code, _ = run_in_sandbox(BASE_POLICY, sandbox_vars, fn)
    assert code == 0
    assert result == {"clone3": errno.ENOSYS, "thread_ran": True}


def test_seccomp_ioctl_tiocsti_denied_other_ioctls_pass(base_sandbox, run_in_sandbox, sandbox_vars):
    def fn():
        one, two = socket.socketpair()
        two.sendall(b"abc")
        char = ctypes.c_char(b"x")
        count = ctypes.c_int(-1)
        termios_buf = ctypes.create_string_buffer(64)
        fd = one.fileno()
        # On a socket the kernel answers ENOTTY to terminal ioctls: EPERM can only be the filter.
        out = {"TIOCSTI": ioctl_errno(fd, termios.TIOCSTI, ctypes.byref(char)),
               "TIOCSTI_high_bits": ioctl_errno(fd, (1 << 32) | termios.TIOCSTI, ctypes.byref(char)),
               "TIOCLINUX": ioctl_errno(fd, TIOCLINUX, ctypes.byref(char)),
               "TCGETS": ioctl_errno(fd, termios.TCGETS, termios_buf),
               "FIONREAD": ioctl_errno(fd, termios.FIONREAD, ctypes.byref(count))}
        out["FIONREAD_value"] = count.value
        return out

    result, code, _ = run_in_sandbox(BASE_POLICY, sandbox_vars, fn)
    assert code == 0
    assert result == {"TIOCSTI": errno.EPERM, "TIOCSTI_high_bits": errno.EPERM,
                      "TIOCLINUX": errno.EPERM, "TCGETS": errno.ENOTTY, "FIONREAD": 0,
                      "FIONREAD_value": 3}


#: Requests of types 'T' (terminals), 'K' (the console) and 'V' (virtual terminals) that the
#: base filter let reach the kernel until 12-07 (ENOTTY on a socket; a few take effect on a
#: pty: see below), and the 'T' requests it keeps allowing (the components' own).
TERMINAL_REQUESTS_REFUSED = {
    "TIOCEXCL": 0x540C, "TIOCNXCL": 0x540D, "TIOCGETD": 0x5424, "TIOCSBRK": 0x5427, "TCSBRK": 0x5409,
    "TCSBRKP": 0x5425, "TIOCMSET": 0x5418, "TIOCMBIS": 0x5416, "TIOCSSERIAL": 0x541F,
    "TIOCSSOFTCAR": 0x541A, "TIOCSIG": 0x40045436, "TIOCGSID": 0x5429, "TIOCGPGRP": 0x540F,
    "FIOASYNC": 0x5452, "KDSETMODE": 0x4B3A, "KDSKBMODE": 0x4B45, "KDSKBSENT": 0x4B49,
    "KDFONTOP": 0x4B72, "VT_ACTIVATE": 0x5606, "VT_SETMODE": 0x5602, "VT_LOCKSWITCH": 0x560B,
}
TERMINAL_REQUESTS_ALLOWED = {"TCGETS": 0x5401, "TIOCOUTQ": 0x5411, "TIOCGWINSZ": 0x5413, "FIONREAD": 0x541B,
                             "FIONBIO": 0x5421, "FIONCLEX": 0x5450, "FIOCLEX": 0x5451}
TIOCEXCL, TIOCGEXCL, TIOCSETD, N_NULL = 0x540C, 0x80045440, 0x5423, 27


def _terminal_requests(pty_fd: int) -> dict[str, int]:
    """Each request on a socket (EPERM is the filter's, the kernel answers ENOTTY or does it),
    then exclusive mode and the N_NULL line discipline on the operator's pty (`pty_fd`),
    the second undone at once if it passes."""
    one, two = socket.socketpair()
    buf = ctypes.create_string_buffer(128)
    out = {name: ioctl_errno(one.fileno(), request, buf)
           for name, request in {**TERMINAL_REQUESTS_REFUSED, **TERMINAL_REQUESTS_ALLOWED}.items()}
    out["pty-TIOCEXCL"] = ioctl_errno(pty_fd, TIOCEXCL, ctypes.c_void_p(0))
    null, tty = ctypes.c_int(N_NULL), ctypes.c_int(0)
    out["pty-TIOCSETD-N_NULL"] = ioctl_errno(pty_fd, TIOCSETD, ctypes.byref(null))
    if out["pty-TIOCSETD-N_NULL"] == 0:
        ioctl_errno(pty_fd, TIOCSETD, ctypes.byref(tty))
    one.close()
    two.close()
    return out


def _pty_exclusive(fd: int) -> bool:
    value = ctypes.c_int(-1)
    assert ioctl_errno(fd, TIOCGEXCL, ctypes.byref(value)) == 0
    return value.value == 1


def test_seccomp_terminal_requests_are_an_allow_list(base_sandbox, run_in_sandbox, sandbox_vars):
    """The base filter lets through only the terminal requests the components use (TCGETS,
    TIOCGWINSZ) and the socket and descriptor requests of type 'T'; every other request of
    types 'T', 'K' and 'V' answers EPERM (since 12-07). Attack, with the operator's pty passed
    in (a terminal that reached the sandbox by mistake): until 12-07 the deny-list let the
    requests above reach the kernel, TIOCEXCL left the pty exclusive after the process ended
    (another open of it failed with EBUSY) and TIOCSETD put the N_NULL line discipline on it
    (every key typed discarded)."""
    master, slave = os.openpty()
    try:
        result, code, _ = run_in_sandbox(BASE_POLICY, sandbox_vars, lambda: _terminal_requests(slave),
                                         pass_fds=(slave,))
        exclusive = _pty_exclusive(slave)
    finally:
        os.close(slave)
        os.close(master)
    assert code == 0
    assert {name: result[name] for name in TERMINAL_REQUESTS_REFUSED} == \
        {name: errno.EPERM for name in TERMINAL_REQUESTS_REFUSED}, result
    assert result["pty-TIOCEXCL"] == errno.EPERM and result["pty-TIOCSETD-N_NULL"] == errno.EPERM, result
    assert not exclusive
    # The kernel's answers on a socket: the allowed requests reach it.
    assert {name: result[name] for name in TERMINAL_REQUESTS_ALLOWED} == {
        "TCGETS": errno.ENOTTY, "TIOCOUTQ": 0, "TIOCGWINSZ": errno.ENOTTY, "FIONREAD": 0, "FIONBIO": 0,
        "FIONCLEX": 0, "FIOCLEX": 0}, result


def test_an_interactive_program_keeps_its_terminal_modes_but_not_what_outlives_it(
        base_sandbox, run_in_sandbox, write_policy, sandbox_vars):
    """examples/program with the operator's terminal on its descriptors (stdio = "inherit",
    with a reason): it may set the terminal's modes (line editing does), not make the
    terminal exclusive, change its line discipline or reach the console (since 12-07).
    Attack on the code before: TIOCEXCL left the operator's pty exclusive after the program
    ended (another open: EBUSY) and TIOCSETD put N_NULL on it."""
    policy = write_policy(f"""
        extends = ["{shipped_policy('examples/program')}"]
        [policy]
        name = "interactive"
        [process]
        stdio = "inherit"
        reason = "an interactive program: the operator's terminal"
        """, extends=False)
    master, slave = os.openpty()

    def fn() -> dict[str, int]:
        out = _terminal_requests(slave)
        out["pty-TCSETS"] = 0
        try:
            termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(slave))
        except termios.error as exc:
            out["pty-TCSETS"] = exc.args[0]
        return out

    try:
        result, code, _ = run_in_sandbox(policy, sandbox_vars, fn, pass_fds=(slave,))
        exclusive = _pty_exclusive(slave)
    finally:
        os.close(slave)
        os.close(master)
    assert code == 0
    assert result["pty-TCSETS"] == 0, result
    assert result["pty-TIOCEXCL"] == errno.EPERM and result["pty-TIOCSETD-N_NULL"] == errno.EPERM, result
    assert not exclusive
    for name in ("KDSETMODE", "KDSKBMODE", "KDSKBSENT", "KDFONTOP", "VT_ACTIVATE", "VT_SETMODE", "VT_LOCKSWITCH"):
        assert result[name] == errno.EPERM, (name, result)


# --- namespaces ----------------------------------------------------------------------------------

NAMESPACE_LINKS = ("user", "mnt", "pid", "net", "ipc", "uts")


def _identity():
    return {"pid": os.getpid(), "hostname": socket.gethostname(), "uid": os.getuid()}


def _ns_inodes(pid: int | str) -> dict[str, int]:
    return {name: os.stat(f"/proc/{pid}/ns/{name}").st_ino for name in NAMESPACE_LINKS}


def test_namespaces_isolate_the_component(base_sandbox, require, write_policy, sandboxed,
                                          sandbox_vars, proc):
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (the strict policy's minimum)")
    ours = _ns_inodes("self")
    our_hostname = socket.gethostname()
    assert our_hostname != "sandbox"

    # The strict policy's namespaces, with the syscalls of general code (gethostname is uname).
    isolated = write_policy("[namespaces]\nnet = true\n")
    with sandboxed(isolated, sandbox_vars, _identity) as (child, inside):
        component = proc.leaf(child.pid)
        assert component != child.pid   # the launcher waits on a process outside the pid namespace
        theirs = _ns_inodes(component)
        nspid = proc.status(component)["NSpid"].split()
    assert {name for name in NAMESPACE_LINKS if theirs[name] == ours[name]} == set()
    assert inside["pid"] <= 3 and nspid == [str(component), str(inside["pid"])]
    assert inside["hostname"] == "sandbox"
    assert inside["uid"] == os.getuid()   # the uid map keeps the same number

    # The same probe under a policy that enters no namespace sees the parent's.
    no_namespaces = write_policy("""
        [namespaces]
        user = false
        pid = false
        ipc = false
        uts = false
        reason = "the test compares a sandbox without namespaces"
    """, view=False)
    with sandboxed(no_namespaces, sandbox_vars, _identity) as (child, plain):
        assert proc.leaf(child.pid) == child.pid
        assert _ns_inodes(child.pid) == ours
    assert plain == {"pid": child.pid, "hostname": our_hostname, "uid": os.getuid()}


# --- capabilities, prctl -------------------------------------------------------------------------

def _privileges():
    return {"dumpable": prctl.get_dumpable(),
            "no_new_privs": prctl.get_no_new_privs(),
            "bounding_sys_admin": prctl.capbset_read(prctl.CAP_SYS_ADMIN),
            "ambient_raise": raw_syscall(157, ctypes.c_long(PR_CAP_AMBIENT),    # prctl
                                         ctypes.c_long(PR_CAP_AMBIENT_RAISE),
                                         ctypes.c_long(CAP_SYS_ADMIN), ctypes.c_long(0), ctypes.c_long(0)),
            "capset_raise": in_grandchild(lambda: capset_effective(1 << CAP_SYS_ADMIN)),
            "capset_clear": in_grandchild(lambda: capset_effective(0))}


def test_capabilities_dropped_no_new_privs_seccomp_and_not_dumpable(base_sandbox, write_policy,
                                                                     sandboxed, sandbox_vars, proc):
    with sandboxed(write_policy(""), sandbox_vars, _privileges) as (child, inside):
        component = proc.status(proc.leaf(child.pid))
        waiter = proc.status(child.pid)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(component[field], 16) == 0, (field, component[field])
    assert (component["NoNewPrivs"], component["Seccomp"]) == ("1", "2")
    # The waiting process outside was root in the new user namespace, with every capability,
    # and gave them up once the component ran (child_setup._retire). This process's bounding
    # set is full: the zeros above are the drops' doing, and these fields are read correctly.
    assert int(waiter["CapEff"], 16) == 0 and waiter["NoNewPrivs"] == "1"
    assert int(proc.status(os.getpid())["CapBnd"], 16) != 0
    # capset is not in the base filter at all; the capability drop is checked without it below.
    assert inside == {"dumpable": 0, "no_new_privs": 1, "bounding_sys_admin": False,
                      "ambient_raise": errno.EPERM, "capset_raise": SIGSYS, "capset_clear": SIGSYS}

    permissive = write_policy("""
        [process]
        dumpable = true
        reason = "the test compares a dumpable process"

        [seccomp]
        enabled = false
        reason = "the test compares a process without a filter"
    """)
    with sandboxed(permissive, sandbox_vars, _privileges) as (child, loose):
        assert proc.status(proc.leaf(child.pid))["Seccomp"] == "0"
    assert loose == {"dumpable": 1, "no_new_privs": 1, "bounding_sys_admin": False,
                     "ambient_raise": errno.EPERM, "capset_raise": {"exit": errno.EPERM},
                     "capset_clear": {"exit": 0}}


# --- rlimits -------------------------------------------------------------------------------------

def test_rlimits_core_zero_and_nofile_from_policy(base_sandbox, write_policy, run_in_sandbox,
                                                  sandbox_vars):
    assert resource.getrlimit(resource.RLIMIT_NOFILE) != (64, 64)   # else the test proves nothing
    policy = write_policy("""
        [process.rlimits]
        nofile = 64
    """)

    def fn():
        def change(which, limits):
            try:
                resource.setrlimit(which, limits)
            except ValueError:   # CPython's word for EPERM from setrlimit
                return "refused"
            return "ok"

        out = {"core": resource.getrlimit(resource.RLIMIT_CORE),
               "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}
        out["raise_core_hard"] = change(resource.RLIMIT_CORE, (0, 1 << 20))
        out["lower_nofile_soft"] = change(resource.RLIMIT_NOFILE, (32, 64))
        out["raise_nofile_soft_to_hard"] = change(resource.RLIMIT_NOFILE, (64, 64))
        out["raise_nofile_hard"] = change(resource.RLIMIT_NOFILE, (64, 65))
        out["nofile_after"] = resource.getrlimit(resource.RLIMIT_NOFILE)
        return out

    result, code, report = run_in_sandbox(policy, sandbox_vars, fn)
    assert code == 0
    assert result == {"core": [0, 0], "nofile": [64, 64], "raise_core_hard": "refused",
                      "lower_nofile_soft": "ok", "raise_nofile_soft_to_hard": "ok",
                      "raise_nofile_hard": "refused", "nofile_after": [64, 64]}
    assert "nofile=64" in report.mechanisms["rlimits"].details[0]
