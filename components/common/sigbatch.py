"""The compiled signature pool (sigbatch.c): helper threads that verify a block's signatures
without ever taking the GIL, fed while the connecting thread still prepares the block's
other inputs (sigcheck.py says why).

The library is loaded once, when this module is imported (before a confined node restricts
itself: loading a library later would need the files it maps). libsecp256k1 is coincurve's
own: sigbatch.c gets the addresses of its functions and coincurve's global context, so the
verdict on every input is exactly `keys.check_signature`'s. Where the library cannot be
loaded (built without it, a foreign platform), `NATIVE` is None and sigcheck verifies
through coincurve as before, with the same verdicts.

The helper threads are Python threads (started at the first job, as a ThreadPoolExecutor
starts its own: a confined component checks that it is single-threaded before it restricts
itself) that call `cc_sigpool_serve` once; ctypes releases the GIL for the whole call.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

from .keys import SignatureCheck

__all__ = ["DER_MAX", "LIBRARY", "NATIVE", "NativeJob", "NativeLibrary", "NativePool", "packable"]

#: The compiled library, installed beside this module by setup.py.
LIBRARY: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sigbatch.so")
PUB_LEN: int = 33
DIGEST_LEN: int = 32
#: The longest DER signature (without its sighash byte) a record holds.
DER_MAX: int = 72
RECORD_LEN: int = PUB_LEN + DIGEST_LEN + 1 + DER_MAX
#: Records handed to the helpers at a time while a block's inputs are prepared: one
#: ctypes call each (a microsecond or two), against ~40 us a signature.
PUBLISH_EVERY: int = 8
_PAD = bytes(DER_MAX)
_LENGTHS = [bytes((n,)) for n in range(DER_MAX + 1)]


class _Secp(ctypes.Structure):
    """sigbatch.c's `struct secp`: coincurve's context and three libsecp256k1 functions."""

    _fields_ = [("ctx", ctypes.c_void_p), ("pubkey_parse", ctypes.c_void_p),
                ("der_parse", ctypes.c_void_p), ("verify", ctypes.c_void_p)]


def packable(check: SignatureCheck) -> bool:
    """Whether `check` fits a record: a 33-byte pubkey, a 32-byte digest, DER of at most
    DER_MAX bytes (every check keys.prepare_input_check makes does)."""
    return len(check.pubkey) == PUB_LEN and len(check.digest) == DIGEST_LEN and len(check.der) <= DER_MAX


def record(check: SignatureCheck) -> bytes:
    """A packable check as sigbatch.c's record."""
    der = check.der
    n = len(der)
    return check.pubkey + check.digest + _LENGTHS[n] + der + _PAD[n:]


@dataclass(frozen=True)
class NativeLibrary:
    """The loaded library with coincurve's libsecp256k1 bound to it."""

    lib: ctypes.CDLL
    secp: _Secp

    def pool(self, helpers: int) -> NativePool:
        """A pool of `helpers` threads (started at its first job)."""
        return NativePool(self, helpers)


class NativePool:
    """sigbatch.c's pool: `helpers` threads that verify the records of the job running,
    one job at a time (the owner's thread verifies too when it finishes one)."""

    def __init__(self, library: NativeLibrary, helpers: int) -> None:
        self._library = library
        self._lib = library.lib
        self._helpers = helpers
        self._handle = self._lib.cc_sigpool_new(ctypes.byref(library.secp))
        if not self._handle:
            raise MemoryError("signature pool")
        self._threads: list[threading.Thread] = []

    def begin(self, capacity: int) -> NativeJob:
        """A job for at most `capacity` signatures, the pool's current one until finished."""
        if self._handle is None:
            raise RuntimeError("signature pool closed")
        if len(self._threads) < self._helpers:
            for n in range(len(self._threads), self._helpers):
                thread = threading.Thread(target=self._lib.cc_sigpool_serve, args=(self._handle,),
                                          name=f"sigcheck_{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        job = self._lib.cc_sigpool_begin(self._handle, max(1, capacity))
        if not job:
            raise MemoryError("signature job (or one still running)")
        return NativeJob(self._lib, self._handle, job, max(1, capacity))

    def close(self) -> None:
        """Stop and join the helpers, free the pool (no job may be running; idempotent)."""
        if self._handle is None:
            return
        self._lib.cc_sigpool_stop(self._handle)
        for thread in self._threads:
            thread.join()
        self._lib.cc_sigpool_free(self._handle)
        self._handle = None


class NativeJob:
    """One block's signatures in the pool: `add` packs them, the helpers start on them as
    every PUBLISH_EVERY are added, `finish` ends the job. Exactly one `finish` per job, on
    every path: until then it is the pool's job (one at a time)."""

    def __init__(self, lib: ctypes.CDLL, pool: int, job: int, capacity: int) -> None:
        self._lib = lib
        self._pool = pool
        self._job = job
        self._capacity = capacity
        self._base = self._lib.cc_sigjob_records(job)
        self._written = 0          # records copied into the job
        self._pending: list[bytes] = []
        #: Records the threads claimed, all together (once finished): each exactly once.
        self.claimed = 0

    def add(self, check: SignatureCheck) -> None:
        """Queue a packable check (in block order: its index is the number added before)."""
        if self._written + len(self._pending) >= self._capacity:
            raise ValueError("more signatures than the job was begun for")
        self._pending.append(record(check))
        if len(self._pending) >= PUBLISH_EVERY:
            self._publish()

    def _publish(self) -> None:
        data = b"".join(self._pending)
        ctypes.memmove(self._base + self._written * RECORD_LEN, data, len(data))
        self._written += len(self._pending)
        self._pending.clear()
        if self._lib.cc_sigpool_publish(self._pool, self._job, self._written) != 0:
            raise RuntimeError("signature job published out of order")

    def finish(self, *, verify: bool = True) -> int | None:
        """With `verify`: verify what is left (on this thread too; a signature a helper took
        but has not finished after a moment too, so a helper the scheduler preempted does
        not hold the block up); the index of the first invalid check in the order added, or
        None. Without (the block failed another rule): the helpers take nothing more, and
        None. Either way this thread leaves at once: a helper still in the middle of a
        signature holds the job's memory until it is done (sigbatch.c counts references)."""
        if self._job is None:
            raise RuntimeError("signature job finished twice")
        try:
            if verify and self._pending:
                self._publish()
        finally:
            bad = ctypes.c_long(-1)
            self.claimed = int(self._lib.cc_sigpool_finish(self._pool, self._job, 1 if verify else 0,
                                                            ctypes.byref(bad)))
            self._job = None
        if not verify:
            return None
        if self.claimed != self._written:
            raise RuntimeError(f"signature pool verified {self.claimed} of {self._written}")
        return None if bad.value < 0 else bad.value


def _load() -> NativeLibrary | None:
    try:
        lib = ctypes.CDLL(LIBRARY)
        from coincurve._libsecp256k1 import ffi
        from coincurve._libsecp256k1 import lib as secp
        from coincurve.context import GLOBAL_CONTEXT
    except (OSError, ImportError):
        return None
    if lib.cc_sigbatch_record_len() != RECORD_LEN:
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_long
    for name, argtypes, restype in (
            ("cc_sigpool_new", [pointer], pointer),
            ("cc_sigpool_serve", [pointer], None),
            ("cc_sigpool_stop", [pointer], None),
            ("cc_sigpool_free", [pointer], None),
            ("cc_sigpool_begin", [pointer, size], pointer),
            ("cc_sigjob_records", [pointer], ctypes.c_size_t),
            ("cc_sigpool_publish", [pointer, pointer, size], ctypes.c_int),
            ("cc_sigpool_finish", [pointer, pointer, ctypes.c_int, pointer], size)):
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype

    def address(obj: object) -> int:
        return int(ffi.cast("uintptr_t", obj))
    bound = _Secp(address(GLOBAL_CONTEXT.ctx),
                  address(ffi.addressof(secp, "secp256k1_ec_pubkey_parse")),
                  address(ffi.addressof(secp, "secp256k1_ecdsa_signature_parse_der")),
                  address(ffi.addressof(secp, "secp256k1_ecdsa_verify")))
    return NativeLibrary(lib, bound)


#: The compiled pool's library, or None where it is missing (sigcheck falls back).
NATIVE: NativeLibrary | None = _load()
