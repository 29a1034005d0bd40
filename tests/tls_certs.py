"""Self-signed TLS certificates for the tests of -ipccert/-ipckey (the IPC runtime's, the
executables'): one for 127.0.0.1, made with the cryptography package, else with openssl."""

from __future__ import annotations

import os
import shutil
import subprocess


class NoCertificateTool(Exception):
    """Neither the cryptography package nor openssl is there (the caller skips)."""


def make_self_signed(cert: str, key: str) -> None:
    """A self-signed certificate for 127.0.0.1 (its subjectAltName too) at `cert`, its key at
    `key`; NoCertificateTool when nothing here can make one."""
    try:
        _with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            raise NoCertificateTool("neither the cryptography package nor openssl is available") from None
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=30)


def _with_cryptography(cert: str, key: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(private, hashes.SHA256()))
    # 0600, as openssl writes it: the listener refuses a key others may read (since 12-07).
    with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with open(cert, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))


def make_ca_signed(directory: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """A CA and two certificates it signs for 127.0.0.1, each written as a chain file (the
    certificate, then the CA's, as a CA's fullchain.pem is) with its key: ((chain, key) of the
    first, (chain, key) of the second). Needs the cryptography package (ImportError without)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, public: object, signer: object, ca: bool) -> object:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", "test CA", ca_key.public_key(), ca_key, True)
    made = []
    for name in ("first", "second"):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = build("127.0.0.1", "test CA", key.public_key(), ca_key, False)
        chain, key_path = os.path.join(directory, f"{name}-chain.pem"), os.path.join(directory, f"{name}-key.pem")
        with open(chain, "wb") as handle:
            handle.write(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        made.append((chain, key_path))
    return made[0], made[1]
