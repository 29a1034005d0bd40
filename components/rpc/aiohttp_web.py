"""aiohttp's server side (`web`), imported without loading the system's CA certificates.

`import aiohttp` imports its client too, whose connector module builds two default TLS client
contexts at import time, each loading the system CA bundle (OpenSSL's default verify file,
/etc/ssl/certs/ca-certificates.crt: some 140 certificates parsed twice). That was about
35 ms of CPU at every CleanCoind and CleanCoin-node start (measured with
`time.process_time()` around `import aiohttp.web`: 150 ms with the bundle, 115 ms without),
for contexts nothing of ours uses: the RPC server speaks plain HTTP, and the IPC listeners
build their own TLS context from -ipccert/-ipckey.

So aiohttp is imported with OpenSSL's `SSL_CERT_FILE` pointing at an empty file for the
duration of the import, and the variable is put back as it was at once. The only effect is
that aiohttp's *default client* contexts trust no certificate authority: an aiohttp client
request relying on them would fail verification (fail closed), never succeed unverified.
Every module of ours that uses aiohttp imports `web` from here, so that this import is the
first one in the process.
"""

from __future__ import annotations

import os

_CA_FILE_VARIABLE = "SSL_CERT_FILE"      # OpenSSL's X509_get_default_cert_file_env()


def _import_web():  # type: ignore[no-untyped-def]
    saved = os.environ.get(_CA_FILE_VARIABLE)
    os.environ[_CA_FILE_VARIABLE] = os.devnull
    try:
        from aiohttp import web as module
    finally:
        if saved is None:
            del os.environ[_CA_FILE_VARIABLE]
        else:
            os.environ[_CA_FILE_VARIABLE] = saved
    return module


web = _import_web()
