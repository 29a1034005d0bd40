"""bitcoind's REST interface (-rest): unauthenticated, read-only GETs on the RPC port.

    GET /rest/chaininfo.json
    GET /rest/block/<hash>.<bin|hex|json>            (json: transactions decoded)
    GET /rest/block/notxdetails/<hash>.<bin|hex|json>  (json: txids only)
    GET /rest/headers/<hash>.<bin|hex|json>?count=<n>  (and the old /rest/headers/<n>/<hash>.<ext>)
    GET /rest/blockhashbyheight/<height>.<bin|hex|json>
    GET /rest/tx/<txid>.<bin|hex|json>
    GET /rest/mempool/info.json, /rest/mempool/contents.json

As bitcoind: only clients -rpcallowip lets in (the server checks that first), errors are
`text/plain` with bitcoind's messages, a format the endpoint lacks is 404 "output format not
found (available: .bin, .hex, .json)". The answers are the RPC methods' (getblock,
getrawtransaction, ...), so the two interfaces cannot disagree. Not here: /rest/getutxos and
/rest/spenttxouts (bitcoind's UTXO and undo queries), /rest/blockfilter*, /rest/deploymentinfo.

`handle` builds a `RestReply` and does not send it: the RPC server (components/rpc/server.py)
counts REST requests, charges their replies to its budget and writes them under its deadline,
as it does for its users' (docs/node.md, "REST interface").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cleancoin.components.rpc.aiohttp_web import web

from cleancoin.components.rpc import jsonfmt
from cleancoin.components.rpc.errors import RPC_IN_WARMUP, RpcError

if TYPE_CHECKING:
    from .node import NodeContext

#: bitcoind's MAX_REST_HEADERS_RESULTS and the default count.
MAX_HEADERS = 2000
#: Bytes of JSON a mempool entry takes in /rest/mempool/contents.json at the least (488
#: measured for one-input transactions: two 64-digit hashes and some twenty fields): a pool
#: whose entries cannot fit the room the server has left is refused before it is built.
MEMPOOL_ENTRY_JSON_BYTES = 400
DEFAULT_HEADERS = 5
_FORMATS = ("bin", "hex", "json")
_HASH = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class RestReply:
    """One REST answer, not yet sent: the server charges `body` to its budget, then writes it."""

    status: int
    content_type: str
    body: bytes
    charset: str | None = None


class _RestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _split_format(tail: str, allowed: tuple[str, ...] = _FORMATS) -> tuple[str, str]:
    """"<x>.<ext>" -> (x, ext); 404 with bitcoind's message for a missing or unknown format."""
    name, dot, ext = tail.rpartition(".")
    if not dot or ext not in allowed:
        available = ", ".join(f".{f}" for f in allowed)
        raise _RestError(404, f"output format not found (available: {available})")
    return name, ext


def _check_hash(text: str) -> str:
    if not _HASH.fullmatch(text):
        raise _RestError(400, f"Invalid hash: {text}")
    return text


class RestInterface:
    """The REST endpoints of one node; RpcServer calls `handle` for paths under /rest/."""

    def __init__(self, node: NodeContext) -> None:
        self._node = node

    async def handle(self, request: web.BaseRequest, room: int | None = None) -> RestReply:
        """The answer to one request under /rest/ (errors included: never raises for a
        client's input). `room`: the bytes of reply the server can take now (None: no
        bound); an answer known to be larger is refused before it is built (503)."""
        if request.method != "GET":
            return _text(405, "The REST interface serves only GET requests")
        try:
            return await self._route(request.rel_url.path[len("/rest/"):], request.rel_url.query, room)
        except _RestError as exc:
            return _text(exc.status, exc.message)
        except RpcError as exc:
            if exc.code == RPC_IN_WARMUP:
                return _text(503, f"Service temporarily unavailable: {exc.message}")
            return _text(404 if exc.code == -5 else 400, exc.message)

    async def _call(self, method: str, *params: Any) -> Any:
        return await self._node.registry.execute(method, list(params), user="REST")

    async def _route(self, path: str, query: Any, room: int | None) -> RestReply:
        if path.startswith("block/notxdetails/"):
            return await self._block(path[len("block/notxdetails/"):], 1)
        if path.startswith("block/"):
            return await self._block(path[len("block/"):], 2)
        if path.startswith("headers/"):
            return await self._headers(path[len("headers/"):], query)
        if path.startswith("blockhashbyheight/"):
            height_text, ext = _split_format(path[len("blockhashbyheight/"):])
            if not height_text.isdigit() or len(height_text) > 10:
                raise _RestError(400, f"Invalid height: {height_text[:20]}")
            try:
                block_hash = await self._call("getblockhash", int(height_text))
            except RpcError:
                raise _RestError(404, "Block height out of range") from None
            if ext == "json":
                return _json({"blockhash": block_hash})
            raw = bytes.fromhex(block_hash)[::-1]
            return _binary(raw) if ext == "bin" else _text(200, raw.hex())
        if path.startswith("tx/"):
            txid, ext = _split_format(path[len("tx/"):])
            _check_hash(txid)
            try:
                if ext == "json":
                    return _json(await self._call("getrawtransaction", txid, 1))
                hexstring = await self._call("getrawtransaction", txid, 0)
            except RpcError:
                raise _RestError(404, f"{txid} not found") from None
            return _binary(bytes.fromhex(hexstring)) if ext == "bin" else _text(200, hexstring)
        if path.startswith("chaininfo"):
            _split_format(path[len("chaininfo"):] or ".", ("json",))
            return _json(await self._call("getblockchaininfo"))
        if path.startswith("mempool/"):
            what, _ = _split_format(path[len("mempool/"):], ("json",))
            if what == "info":
                return _json(await self._call("getmempoolinfo"))
            if what == "contents":
                # Built whole before it can be measured: a full 300 MB pool's answer took 11 s
                # of the event loop and some 350 MB for a moment, then was too large to send.
                entries = int((await self._call("getmempoolinfo"))["size"])
                if room is not None and entries * MEMPOOL_ENTRY_JSON_BYTES > room:
                    raise _RestError(503, f"Reply too large: the {entries} mempool entries take more than the "
                                          f"{room} bytes the REST replies in flight may still hold")
                return _json(await self._call("getrawmempool", True))
            raise _RestError(400, "Invalid URI format. Expected /rest/mempool/<info|contents>.json")
        raise _RestError(404, "Not found")

    async def _block(self, tail: str, verbosity: int) -> RestReply:
        block_hash, ext = _split_format(tail)
        _check_hash(block_hash)
        try:
            if ext == "json":
                return _json(await self._call("getblock", block_hash, verbosity))
            hexstring = await self._call("getblock", block_hash, 0)
        except RpcError:
            raise _RestError(404, f"{block_hash} not found") from None
        return _binary(bytes.fromhex(hexstring)) if ext == "bin" else _text(200, hexstring)

    async def _headers(self, tail: str, query: Any) -> RestReply:
        parts = tail.split("/")
        if len(parts) == 2:                       # the old form: headers/<count>/<hash>.<ext>
            count_text, tail = parts
        elif len(parts) == 1:
            count_text = query.get("count", str(DEFAULT_HEADERS))
        else:
            raise _RestError(400, "Invalid URI format. Expected /rest/headers/<hash>.<ext>?count=<count>")
        block_hash, ext = _split_format(tail)
        # Length first: int() of a few thousand digits raises, and the message echoes it.
        if not count_text.isdigit() or len(count_text) > 6 or not 1 <= int(count_text) <= MAX_HEADERS:
            raise _RestError(400, f"Header count is invalid or out of acceptable range (1-{MAX_HEADERS}): "
                                  f"{count_text[:20]}")
        _check_hash(block_hash)
        headers: list[Any] = []
        current: str | None = block_hash
        while current is not None and len(headers) < int(count_text):
            try:
                header = await self._call("getblockheader", current, True)
            except RpcError:
                break
            if header["confirmations"] < 0:       # bitcoind stops at the end of the active chain
                break
            headers.append(header)
            current = header.get("nextblockhash")
        if ext == "json":
            return _json(headers)
        raw = b"".join([bytes.fromhex(await self._call("getblockheader", h["hash"], False)) for h in headers])
        return _binary(raw) if ext == "bin" else _text(200, raw.hex())


def _text(status: int, message: str) -> RestReply:
    text = message + "\r\n" if status >= 400 else message + "\n"
    return RestReply(status, "text/plain", text.encode(), "utf-8")


def _json(value: Any) -> RestReply:
    try:
        text = jsonfmt.dumps(value)
    except (TypeError, ValueError):
        # The RPC methods answer JSON; should one not, say so rather than send something else.
        return _text(500, "Internal error (the result is not JSON)")
    # In place where CPython can (the only reference), then one encoded copy: a block's JSON
    # is some 11 MB, and each extra copy is as much again for a moment.
    text += "\n"
    return RestReply(200, "application/json", text.encode())


def _binary(data: bytes) -> RestReply:
    return RestReply(200, "application/octet-stream", data)
