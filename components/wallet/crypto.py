"""Passphrase encryption of wallet secrets, and a wipeable holder for them in memory.

Scheme (one `EncryptedBlob` per secret):

    key   = scrypt(passphrase, salt, n, r, p) -> 32 bytes     (memory-hard KDF, hashlib)
    blob  = ChaCha20-Poly1305(key).encrypt(nonce, secret, aad)  (AEAD, `cryptography`)
    aad   = purpose | header                                    (header = the bytes below)

The serialized blob is `header | ciphertext+tag` with

    header = magic "CCE1" | log2(n):u8 | r:u32 | p:u32 | salt[16] | nonce[12]

Why these choices:
- scrypt makes every passphrase guess cost n*r*128 bytes of memory (32 MiB at the default
  n=2**15, r=8), which GPUs and ASICs pay for dearly; Bitcoin Core's SHA-512 iterations do not.
  The parameters are stored with each blob, so a later version can raise them (re-encrypting
  on the next passphrase change) and still open old wallets.
- An AEAD authenticates as well as encrypts: a wrong passphrase is *detected* (the tag fails)
  instead of yielding garbage keys, and a tampered file cannot turn into a different secret.
- The purpose string in the associated data binds a blob to its role: a blob copied from
  one record (say a future encrypted label) into the seed slot fails to decrypt. The header
  is authenticated too, so lowering n or swapping the salt in the file is caught.
- A fresh random 12-byte nonce per encryption: each blob also has a fresh salt, hence a fresh
  key, so a nonce can never repeat under one key.

Errors never carry the passphrase, the secret, or the derived key: a wrong passphrase is
`WrongPassphrase` with a fixed message.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SCRYPT_N", "DEFAULT_SCRYPT_P", "DEFAULT_SCRYPT_R", "EncryptedBlob", "SEED_PURPOSE",
    "SecretBytes", "WrongPassphrase", "decrypt", "encrypt",
]

DEFAULT_SCRYPT_N: int = 2 ** 15
DEFAULT_SCRYPT_R: int = 8
DEFAULT_SCRYPT_P: int = 1
SALT_SIZE: int = 16
NONCE_SIZE: int = 12
KEY_SIZE: int = 32
#: Associated data of the wallet seed record.
SEED_PURPOSE: bytes = b"cleancoin-wallet-seed"
_MAGIC = b"CCE1"
_HEADER = struct.Struct(f">4sBII{SALT_SIZE}s{NONCE_SIZE}s")
# Upper bounds so that a corrupt or hostile file cannot make us allocate gigabytes:
# 2**22 * 8 * 128 = 4 GiB would be absurd for a wallet unlock.
_MAX_LOG_N = 20
_MAX_R = 64
_MAX_P = 16


# `cryptography` is imported in `encrypt` and `decrypt`, not with this module: most wallets
# are never encrypted, and its Rust extension with OpenSSL's bindings (some 6 MiB mapped,
# 1.3 MiB of objects) was in every process that imports the wallet, CleanCoin-node's zygote
# and wallet process included (issue #16). The import after the sandbox is up reads the
# Python installation, which every wallet policy grants read-only (policies/base/python.toml).


class WrongPassphrase(Exception):
    """The passphrase does not open the secret (or the record was tampered with: an AEAD
    cannot tell the two apart, and neither should the message)."""

    def __init__(self) -> None:
        # bitcoind's text (RPC_WALLET_PASSPHRASE_INCORRECT); fixed, so nothing can leak.
        super().__init__("The wallet passphrase entered was incorrect.")


@dataclass(frozen=True)
class EncryptedBlob:
    """An encrypted secret with everything needed to decrypt it except the passphrase."""

    log_n: int
    r: int
    p: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes     # includes the 16-byte Poly1305 tag

    def __post_init__(self) -> None:
        if not 1 <= self.log_n <= _MAX_LOG_N or not 1 <= self.r <= _MAX_R or not 1 <= self.p <= _MAX_P:
            raise ValueError("scrypt parameters out of range")
        if len(self.salt) != SALT_SIZE or len(self.nonce) != NONCE_SIZE or len(self.ciphertext) < 16:
            raise ValueError("malformed encrypted record")

    @property
    def n(self) -> int:
        """scrypt's cost parameter N."""
        return 1 << self.log_n

    @property
    def header(self) -> bytes:
        """The authenticated, unencrypted part."""
        return _HEADER.pack(_MAGIC, self.log_n, self.r, self.p, self.salt, self.nonce)

    def to_bytes(self) -> bytes:
        """header | ciphertext (what the wallet database stores)."""
        return self.header + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedBlob:
        """Parse to_bytes' output; ValueError when malformed."""
        if len(data) < _HEADER.size + 16:
            raise ValueError("malformed encrypted record")
        magic, log_n, r, p, salt, nonce = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("malformed encrypted record")
        return cls(log_n, r, p, salt, nonce, bytes(data[_HEADER.size:]))


def _passphrase_bytes(passphrase: str | bytes | bytearray) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return bytes(passphrase)


def _derive_key(passphrase: bytes, blob_salt: bytes, log_n: int, r: int, p: int) -> bytes:
    n = 1 << log_n
    # OpenSSL's default memory cap is 32 MiB, which n=2**15, r=8 exactly reaches (plus
    # overhead), so pass a cap that fits the parameters instead.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(passphrase, salt=blob_salt, n=n, r=r, p=p, maxmem=maxmem,
                          dklen=KEY_SIZE)


def encrypt(secret: bytes | bytearray | SecretBytes, passphrase: str | bytes, *,
            purpose: bytes = SEED_PURPOSE, n: int = DEFAULT_SCRYPT_N, r: int = DEFAULT_SCRYPT_R,
            p: int = DEFAULT_SCRYPT_P) -> EncryptedBlob:
    """Encrypt `secret` under `passphrase` with a fresh salt and nonce."""
    if n < 2 or n & (n - 1):
        raise ValueError("scrypt n must be a power of two")
    log_n = n.bit_length() - 1
    plain = secret.get() if isinstance(secret, SecretBytes) else bytes(secret)
    salt, nonce = os.urandom(SALT_SIZE), os.urandom(NONCE_SIZE)
    key = _derive_key(_passphrase_bytes(passphrase), salt, log_n, r, p)
    # Build the header first: it is part of the associated data.
    header = EncryptedBlob(log_n, r, p, salt, nonce, b"\x00" * 16).header
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # here: see above
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, plain, purpose + header)
    return EncryptedBlob(log_n, r, p, salt, nonce, ciphertext)


def decrypt(blob: EncryptedBlob, passphrase: str | bytes, *,
            purpose: bytes = SEED_PURPOSE) -> bytes:
    """The secret in `blob`; WrongPassphrase when the passphrase (or purpose) does not match."""
    key = _derive_key(_passphrase_bytes(passphrase), blob.salt, blob.log_n, blob.r, blob.p)
    # Imported here, at the first encryption or unlock, not with the module (see above).
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    try:
        return ChaCha20Poly1305(key).decrypt(blob.nonce, blob.ciphertext, purpose + blob.header)
    except InvalidTag:
        raise WrongPassphrase() from None


class SecretBytes:
    """A secret in memory of its own that `wipe()` overwrites with zeros and gives back.

    The memory is locked (never swapped), left out of core dumps and of a forked child's copy
    (`locked_memory.LockedBuffer`), as Bitcoin Core keeps keys. Python cannot promise that no
    copy exists elsewhere (`bytes` objects handed to hashlib or coincurve are immutable and
    freed, not cleared), but the long-lived copy, the one an unlocked wallet keeps for the
    passphrase's timeout and a locked wallet must not keep, is this one.
    """

    __slots__ = ("_memory", "_size", "_wiped")

    def __init__(self, data: bytes | bytearray) -> None:
        from .locked_memory import LockedBuffer
        self._size = len(data)
        self._memory = LockedBuffer(max(self._size, 1))
        if self._size:
            self._memory.write(data)
        self._wiped = False
        if isinstance(data, bytearray):
            # The caller's mutable copy is the same secret: clear it too.
            data[:] = b"\x00" * len(data)

    def get(self) -> bytes:
        """The secret (a short-lived copy); ValueError once wiped."""
        if self._wiped:
            raise ValueError("secret has been wiped")
        return self._memory.read()[: self._size]

    @property
    def locked(self) -> bool:
        """Whether the kernel locked the memory in RAM (`locked_memory`); if not, why is in
        `lock_error`."""
        return self._memory.locked

    @property
    def lock_error(self) -> str:
        """Why the memory could not be locked ("" when it is)."""
        return self._memory.lock_error

    @property
    def address(self) -> int:
        """Where the secret's mapping starts (ValueError once wiped): for tests that read
        /proc/PID/smaps."""
        if self._wiped:
            raise ValueError("secret has been wiped")
        return self._memory.address

    @property
    def wiped(self) -> bool:
        """True after wipe()."""
        return self._wiped

    def wipe(self) -> None:
        """Overwrite the memory with zeros, in place, then unlock and unmap it."""
        self._memory.release()
        self._wiped = True

    def __len__(self) -> int:
        return self._size

    def __enter__(self) -> SecretBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __del__(self) -> None:
        if hasattr(self, "_memory"):       # not when __init__ failed before it
            self.wipe()

    def __repr__(self) -> str:      # never print the secret
        return f"SecretBytes(<{self._size} bytes{', wiped' if self._wiped else ''}>)"

    def __reduce__(self) -> object:
        raise TypeError("SecretBytes cannot be pickled")
