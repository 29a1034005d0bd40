"""components/rpc/aiohttp_web.py: aiohttp's server imported without the CA bundle, and the
environment left as it was (each case in a fresh interpreter: aiohttp is imported once)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys

import pytest

PROBE = """
import json, os, ssl
from cleancoin.components.rpc.aiohttp_web import web
from aiohttp import connector
after = ssl.create_default_context()
print(json.dumps({
    "variable": os.environ.get("SSL_CERT_FILE"),
    "aiohttp_verified_cas": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "later_cas": after.cert_store_stats()["x509_ca"],
    "web": hasattr(web, "Server"),
}))
"""


def _probe(env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return json.loads(out)


def _system_cas() -> int:
    return ssl.create_default_context().cert_store_stats()["x509_ca"]


def test_the_import_skips_the_ca_bundle_and_unsets_the_variable_again() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    seen = _probe(env)
    assert seen["web"] is True
    assert seen["variable"] is None                   # not left behind
    assert seen["aiohttp_verified_cas"] == 0          # aiohttp's default client context trusts none
    assert seen["later_cas"] == _system_cas()         # a context made afterwards: the system's CAs


def test_an_operators_ssl_cert_file_is_put_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if _system_cas() == 0:
        pytest.skip("no system CA bundle to copy")
    bundle = tmp_path / "ca.pem"
    paths = ssl.get_default_verify_paths()
    source = paths.cafile or paths.openssl_cafile
    if not source or not os.path.exists(source):
        pytest.skip("no CA file at OpenSSL's default path")
    bundle.write_bytes(open(source, "rb").read())
    env = dict(os.environ, SSL_CERT_FILE=str(bundle))
    seen = _probe(env)
    assert seen["variable"] == str(bundle)
    assert seen["aiohttp_verified_cas"] == 0
    assert seen["later_cas"] == _system_cas()
