"""Memory for a wallet's long-lived secret that the kernel never writes to disk.

An unlocked wallet keeps its seed in memory for as long as the passphrase's timeout (hours,
for some operators). In ordinary heap memory the kernel may write that page to swap, where it
stays after the process ends, or into a hibernation image. Bitcoin Core keeps keys in locked
memory for that reason (`LockedPoolManager`: `mlock`, and `MADV_DONTDUMP` so that no core
file holds them). `LockedBuffer` does the same for one secret: an anonymous mapping of its
own, `mlock`ed, excluded from core dumps (`MADV_DONTDUMP`) and from a forked child's copy
(`MADV_WIPEONFORK`: the child sees zeros), zeroed and unmapped when released.

One mapping per secret, not a pool: a wallet holds a handful at a time (the seed of each
unlocked wallet, a passphrase change's two), so a page each costs less than an allocator's
code would, and keeps no state shared between wallets.

Where `mlock` is refused (RLIMIT_MEMLOCK used up; the sandbox filter lacks it) the buffer
still works, unlocked, and says so (`locked`), as Core logs "Warning: Failed to lock memory";
the caller logs it. What Python cannot do: the `bytes` a caller makes from the secret (for
hashlib, coincurve, the KDF) are ordinary objects, freed but not cleared.
"""

from __future__ import annotations

import ctypes
import mmap
import os

_PAGE = mmap.PAGESIZE
# Where a bytes object's contents start (CPython: the header, then ob_sval).
_BYTES_HEADER = bytes.__basicsize__ - 1
_LIBC = ctypes.CDLL(None, use_errno=True)
# Not in Python 3.11's mmap module on every build; the Linux value (asm-generic/mman-common.h).
_MADV_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", 18)


class LockedBuffer:
    """`size` bytes in a mapping of their own: locked in RAM where the kernel allows it, never
    in a core dump or a forked child. `release()` zeroes and unmaps it."""

    __slots__ = ("_map", "_size", "locked", "lock_error")

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        length = -(-size // _PAGE) * _PAGE
        self._map: mmap.mmap | None = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._size = size
        for advice in (mmap.MADV_DONTDUMP, _MADV_WIPEONFORK):
            try:
                self._map.madvise(advice)
            except OSError:
                pass        # an older kernel: the rest still holds
        address = self._address()
        if _LIBC.mlock(ctypes.c_void_p(address), ctypes.c_size_t(length)) == 0:
            self.locked, self.lock_error = True, ""
        else:
            self.locked, self.lock_error = False, os.strerror(ctypes.get_errno())

    def _address(self) -> int:
        assert self._map is not None
        view = ctypes.c_char.from_buffer(self._map)
        try:
            return ctypes.addressof(view)
        finally:
            del view        # an exported buffer would keep the mapping from closing

    def read(self) -> bytes:
        """A copy of the secret's bytes (ValueError once released)."""
        if self._map is None:
            raise ValueError("released")
        return self._map[: self._size]

    def write(self, data: bytes | bytearray) -> None:
        """Put `data` (exactly `size` bytes) in place."""
        if self._map is None:
            raise ValueError("released")
        if len(data) != self._size:
            raise ValueError(f"expected {self._size} bytes, got {len(data)}")
        self._map[: self._size] = bytes(data) if isinstance(data, bytearray) else data

    def wipe(self) -> None:
        """Overwrite the whole mapping with zeros, in place."""
        if self._map is not None:
            self._map[:] = b"\x00" * len(self._map)

    @property
    def address(self) -> int:
        """Where the mapping starts (what /proc/PID/smaps lists it by)."""
        return self._address()

    def release(self) -> None:
        """Zero the whole mapping, unlock and unmap it. Safe to call twice."""
        if self._map is None:
            return
        self.wipe()
        if self.locked:
            _LIBC.munlock(ctypes.c_void_p(self._address()), ctypes.c_size_t(len(self._map)))
        self._map.close()
        self._map = None


def scrub(data: bytes) -> None:
    """Overwrite the contents of a `bytes` object with zeros, in place (CPython's layout).

    For a short-lived copy of a secret (a seed read out of its LockedBuffer, an HMAC digest
    holding a derived key) that nothing uses any more: freed, it would keep its bytes in the
    heap until the allocator reuses the block, for as long as the wallet runs. Never for an
    object anything else still holds (a dict key, an interned or cached object): it would
    change under its holder. Objects of fewer than 2 bytes (CPython's shared ones) are left."""
    if type(data) is bytes and len(data) > 1:
        ctypes.memset(id(data) + _BYTES_HEADER, 0, len(data))
