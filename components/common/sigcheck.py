"""Verifying a block's signatures on several threads (Bitcoin Core's script-check queue).

Everything about an input except the elliptic-curve verification runs first, in block order,
on the caller's thread (consensus.connect_block_inputs: script parsing, DER and low-S rules,
the pubkey hash, the signature digest). What is left per input is the libsecp256k1 calls.
Since 12-08 they run on the compiled pool (sigbatch.c, sigbatch.py): helper threads that
stay in C and never take the GIL, fed each signature as the caller prepares it
(`SignatureSession.append`), so they verify while the caller still checks the block's other
inputs and makes its writes; the caller verifies what is left in `wait()`, and the chain
commits nothing before every signature passed. Before, the helpers were Python threads
calling coincurve, three GIL-releasing cffi calls per signature, started only once every
input was prepared: each call had to take the GIL back, which the caller's Python kept for
up to the interpreter's switch interval (docs/node.md has the figures). Without the
compiled library (sigbatch.NATIVE is None) that path is still used, with the same verdicts.

Earlier, whole inputs (a third of their time Python under the GIL) were spread over threads
and it did not pay (docs/node.md); separating the Python part from the C calls is what makes
the second core useful.

The verdict does not depend on thread timing: all checks run, and the first failing one *in
block order* is reported.

A signature that already verified as a mempool transaction's is not verified again when its
block arrives (Bitcoin Core's signature cache, `SignatureCache`): a relayed block's
transactions are mostly in the mempool already.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .keys import SignatureCheck, check_signature
from .sigbatch import NATIVE, NativeJob, NativeLibrary, NativePool, packable

__all__ = ["CHUNK", "DEFAULT_CACHE_MIB", "MAX_THREADS", "SignatureCache", "SignatureChecker", "SignatureSession",
           "cgroup_cpus", "default_threads", "usable_cpus"]

#: Signatures per helper thread woken: fewer are not worth a thread's wake-up. The threads
#: take the signatures one at a time (a shared counter, tens of ns a take), so they finish
#: within one verification of each other; before 12-07 they took chunks of 8, and the
#: caller then waited up to a whole chunk of a helper's (13 % of its samples in make bench's
#: block connect on a loaded machine).
CHUNK: int = 8
#: Upper bound of threads, the caller's included (Bitcoin Core: 15 script-check threads).
MAX_THREADS: int = 8


#: -maxsigcachesize's default, in MiB (Bitcoin Core's: 32).
DEFAULT_CACHE_MIB: int = 32
#: What one cached signature costs: a 32-byte key in an OrderedDict (measured with
#: tracemalloc: 170 bytes per entry).
ENTRY_BYTES: int = 176


class SignatureCache:
    """Signatures known to verify (Bitcoin Core's signature cache): a mempool transaction's,
    so that its block does not verify them again.

    Only a valid signature is remembered, and only its exact (digest, pubkey, signature)
    triple, which is all libsecp256k1's verdict depends on (every other rule of the input is
    checked again each time: prepare_input_check). The key is a SHA-256 of the triple under a
    random salt of this process, as Core's, so nobody can aim entries at one another. At most
    `max_bytes` of entries; the oldest goes first. Thread-safe (the mempool adds on the event
    loop's thread while a block may be checked on another).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_MIB << 20) -> None:
        self.capacity = max(0, max_bytes // ENTRY_BYTES)
        self._salt = os.urandom(32)
        self._entries: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, check: SignatureCheck) -> bytes:
        return hashlib.sha256(b"".join((self._salt, check.digest, len(check.pubkey).to_bytes(1, "big"),
                                        check.pubkey, check.der))).digest()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, check: SignatureCheck) -> bool:
        return self.capacity > 0 and self._key(check) in self._entries

    def verified(self, check: SignatureCheck) -> bool:
        """Whether `check` is valid: cached, or verified now (and then remembered). The key
        is computed once."""
        key = self._key(check) if self.capacity else b""
        if key and key in self._entries:
            return True
        if not check_signature(check.pubkey, check.der, check.digest):
            return False
        if key:
            self._remember(key)
        return True

    def _remember(self, key: bytes) -> None:
        with self._lock:
            self._entries[key] = None
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def cgroup_cpus(cgroup_fs: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int | None:
    """The CPUs the cgroup v2 CPU quota lets this process use: `cpu.max` ("QUOTA PERIOD", or
    "max" for none) of its own cgroup (from `self_cgroup`, under `cgroup_fs`) and of every
    ancestor, the smallest QUOTA/PERIOD rounded up, at least 1. None where there is no quota or
    no cpu.max to read (cgroup v1 and hybrid hierarchies are not looked into)."""
    try:
        with open(self_cgroup, encoding="utf-8", errors="replace") as handle:
            entries = handle.read().splitlines()
    except OSError:
        return None
    path = next((entry[3:] for entry in entries if entry.startswith("0::")), None)
    if path is None:
        return None
    parts = [part for part in path.split("/") if part and part != "."]
    if ".." in parts:
        # A cgroup outside this cgroup namespace's root: only the mounted root is ours to read.
        parts = []
    limit: int | None = None
    for depth in range(len(parts), -1, -1):
        try:
            with open(os.path.join(cgroup_fs, *parts[:depth], "cpu.max"), encoding="ascii") as handle:
                quota, period = handle.read().split()
            cpus = max(1, -(-int(quota) // int(period))) if quota != "max" else None
        except (OSError, ValueError, ZeroDivisionError):
            continue       # no file at this level (no cpu controller there), or not a quota
        if cpus is not None:
            limit = cpus if limit is None else min(limit, cpus)
    return limit


def usable_cpus(cgroup_fs: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int:
    """The CPUs this process may run on (its affinity mask), no more than a container's CPU
    quota allows (`cgroup_cpus`). A confined CleanCoin-node cannot read /sys or /proc: its
    count is taken before it confines itself (-par, cli/node_main.py)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus(cgroup_fs, self_cgroup)
    return max(1, cpus if quota is None else min(cpus, quota))


def default_threads(cgroup_fs: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int:
    """One thread per usable CPU (`usable_cpus`), at most MAX_THREADS."""
    return min(usable_cpus(cgroup_fs, self_cgroup), MAX_THREADS)


def _run(checks: Sequence[SignatureCheck], claims: Iterator[int], failed: list[int]) -> None:
    """Verify the checks `claims` hands out until none is left; record the index of every
    failing check. `claims` is an itertools.count shared by the threads: its next() runs in
    C under the GIL, so each index goes to exactly one thread. (Without the compiled pool.)"""
    n = len(checks)
    for i in claims:
        if i >= n:
            return
        check = checks[i]
        if not check_signature(check.pubkey, check.der, check.digest):
            failed.append(i)


class _Batch:
    """The signatures of one block, being verified through coincurve (without the compiled
    pool, or for a check that does not fit its records)."""

    def __init__(self, checks: Sequence[SignatureCheck], pool: ThreadPoolExecutor | None,
                 workers: int) -> None:
        self._checks = checks
        self._claims = itertools.count()
        self._failed: list[int] = []
        self._futures: list[Future[None]] = []
        if pool is not None:
            # No more helpers than CHUNKs of work beyond the caller's own.
            helpers = min(workers, (len(checks) + CHUNK - 1) // CHUNK - 1)
            self._futures = [pool.submit(_run, checks, self._claims, self._failed)
                             for _ in range(helpers)]

    def wait(self) -> int | None:
        """Verify what is left on this thread, wait for the helpers; the index (into the
        checks) of the first failing check in block order, or None when all are valid.
        An unexpected exception in a helper is raised here."""
        try:
            _run(self._checks, self._claims, self._failed)
        finally:
            # Even when this thread failed, never return while helpers still read the
            # block's data: the caller may move on to another block. A helper that has not
            # started yet finds nothing left to do: cancel it rather than wait for a thread
            # to wake up.
            errors = []
            for future in self._futures:
                if future.cancel():
                    continue
                exc = future.exception()
                if exc is not None:
                    errors.append(exc)
        if errors:
            raise errors[0]
        return min(self._failed) if self._failed else None


class SignatureSession:
    """One block's signatures, verified as they are prepared (SignatureChecker.begin).

    `append` takes each check in block order (consensus.connect_block_inputs calls it as it
    goes): with the compiled pool the helper threads start on it at once; a cached one is
    skipped. Exactly one of `wait` (the verdict) or `abort` (the block failed another rule,
    or a write failed) ends the session, on every path.
    """

    def __init__(self, checker: SignatureChecker, job: NativeJob | None) -> None:
        self.checks: list[SignatureCheck] = []
        self._checker = checker
        cache = checker.cache
        self._cache = cache if cache is not None and cache.capacity else None
        self._job = job
        self._native: list[int] = []     # indices given to the compiled pool, in order
        self._later: list[int] = []      # indices verified through coincurve in wait()

    def append(self, check: SignatureCheck) -> None:
        """The next check of the block."""
        index = len(self.checks)
        self.checks.append(check)
        if self._cache is not None and check in self._cache:
            return
        if self._job is not None and packable(check):
            self._native.append(index)
            self._job.add(check)
        else:
            self._later.append(index)

    def wait(self) -> int | None:
        """Verify what is left (on this thread too) and wait for the helpers: the index of the
        first failing check in block order, or None when all are valid."""
        bad: int | None = None
        try:
            if self._later:
                # Only without the compiled pool (or for a check its records cannot hold).
                first = _Batch([self.checks[i] for i in self._later], self._checker._pool,
                               self._checker.threads - 1).wait()
                bad = None if first is None else self._later[first]
        finally:
            job, self._job = self._job, None
            native_bad = job.finish() if job is not None else None
        if native_bad is not None:
            index = self._native[native_bad]
            bad = index if bad is None else min(bad, index)
        return bad

    def abort(self) -> None:
        """End the session without a verdict: the helpers take nothing more."""
        job, self._job = self._job, None
        if job is not None:
            job.finish(verify=False)


class SignatureChecker:
    """A small pool of threads that verify signatures with the caller's thread, and the
    cache of signatures already verified.

    `threads` counts the caller's thread: 1 verifies everything on the caller's thread (the
    compiled pool then has no helper). Without a `cache`, every signature is verified every
    time. Owned by one ChainManager, which runs one block at a time; close() stops the
    threads. `native` is the compiled pool's library (None: coincurve's calls on Python
    threads, as before 12-08).
    """

    def __init__(self, threads: int | None = None, cache: SignatureCache | None = None,
                 native: NativeLibrary | None = NATIVE) -> None:
        count = default_threads() if threads is None else threads
        if not 1 <= count <= MAX_THREADS:
            raise ValueError(f"signature threads must be 1..{MAX_THREADS}, not {count}")
        self.threads = count
        self.cache = cache
        self._library = native
        self._native: NativePool | None = None      # made at the first block (begin)
        self._pool = (ThreadPoolExecutor(count - 1, thread_name_prefix="sigcheck")
                      if count > 1 and native is None else None)

    @property
    def compiled(self) -> bool:
        """Whether the compiled pool verifies (sigbatch.c)."""
        return self._library is not None

    def begin(self, capacity: int) -> SignatureSession:
        """A session for a block of at most `capacity` signatures (its inputs)."""
        job = None
        if self._library is not None and capacity > 0:
            if self._native is None:
                self._native = self._library.pool(self.threads - 1)
            job = self._native.begin(capacity)
        return SignatureSession(self, job)

    def verify(self, checks: Sequence[SignatureCheck]) -> int | None:
        """A block's signatures: those not in the cache verified on the helper threads and
        this one; the index of the first failing check in their order, or None when all are
        valid. Nothing is added to the cache (a block's signatures are not seen again)."""
        session = self.begin(len(checks))
        try:
            for check in checks:
                session.append(check)
        except BaseException:
            session.abort()
            raise
        return session.wait()

    def verify_one(self, check: SignatureCheck) -> bool:
        """A mempool transaction's signature, on this thread: valid if cached, else verified
        (and cached when valid)."""
        if self.cache is not None:
            return self.cache.verified(check)
        return check_signature(check.pubkey, check.der, check.digest)

    def close(self) -> None:
        """Stop the helper threads (waits for running work; idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._native is not None:
            self._native.close()
