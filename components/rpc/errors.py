"""RPC errors: `RpcError(code, message)` and bitcoind's error codes (src/rpc/protocol.h)."""

from __future__ import annotations

from typing import Any

# HTTP status codes used by the server (bitcoind's HTTPStatusCode).
HTTP_OK = 200
HTTP_NO_CONTENT = 204
HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_BAD_METHOD = 405
HTTP_REQUEST_TIMEOUT = 408
HTTP_CONTENT_TOO_LARGE = 413
HTTP_UNSUPPORTED_MEDIA_TYPE = 415
HTTP_TOO_MANY_REQUESTS = 429
HTTP_INTERNAL_SERVER_ERROR = 500
HTTP_SERVICE_UNAVAILABLE = 503

# Standard JSON-RPC 2.0 errors.
RPC_INVALID_REQUEST = -32600        # mapped to HTTP 400 for JSON-RPC 1.0 requests
RPC_METHOD_NOT_FOUND = -32601       # mapped to HTTP 404 for JSON-RPC 1.0 requests
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700

# General application defined errors.
RPC_MISC_ERROR = -1                 # an exception thrown in command handling
RPC_FORBIDDEN_BY_SAFE_MODE = -2     # unused, reserved
RPC_TYPE_ERROR = -3                 # unexpected type was passed as parameter
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_OUT_OF_MEMORY = -7
RPC_INVALID_PARAMETER = -8          # invalid, missing or duplicate parameter
RPC_DATABASE_ERROR = -20
RPC_DESERIALIZATION_ERROR = -22     # error parsing or validating structure in raw format
RPC_VERIFY_ERROR = -25              # general error during transaction or block submission
RPC_VERIFY_REJECTED = -26           # transaction or block was rejected by network rules
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28                 # client still warming up
RPC_METHOD_DEPRECATED = -32

# Aliases for backward compatibility.
RPC_TRANSACTION_ERROR = RPC_VERIFY_ERROR
RPC_TRANSACTION_REJECTED = RPC_VERIFY_REJECTED
RPC_TRANSACTION_ALREADY_IN_CHAIN = RPC_VERIFY_ALREADY_IN_CHAIN

# P2P client errors.
RPC_CLIENT_NOT_CONNECTED = -9
RPC_CLIENT_IN_INITIAL_DOWNLOAD = -10
RPC_CLIENT_NODE_ALREADY_ADDED = -23
RPC_CLIENT_NODE_NOT_ADDED = -24
RPC_CLIENT_NODE_NOT_CONNECTED = -29
RPC_CLIENT_INVALID_IP_OR_SUBNET = -30
RPC_CLIENT_P2P_DISABLED = -31
RPC_CLIENT_MEMPOOL_DISABLED = -33
RPC_CLIENT_NODE_CAPACITY_REACHED = -34

# Wallet errors.
RPC_WALLET_ERROR = -4
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_WALLET_INVALID_LABEL_NAME = -11
RPC_WALLET_KEYPOOL_RAN_OUT = -12
RPC_WALLET_UNLOCK_NEEDED = -13
RPC_WALLET_PASSPHRASE_INCORRECT = -14
RPC_WALLET_WRONG_ENC_STATE = -15
RPC_WALLET_ENCRYPTION_FAILED = -16
RPC_WALLET_ALREADY_UNLOCKED = -17
RPC_WALLET_NOT_FOUND = -18
RPC_WALLET_NOT_SPECIFIED = -19
RPC_WALLET_ALREADY_LOADED = -35
RPC_WALLET_ALREADY_EXISTS = -36
RPC_WALLET_INVALID_ACCOUNT_NAME = RPC_WALLET_INVALID_LABEL_NAME


class RpcError(Exception):
    """An error with a JSON-RPC code, as the caller sees it: `{"code": ..., "message": ...}`.

    Raise it from a handler to answer with that code; the client raises it for an error reply.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = int(code)
        self.message = str(message)

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_json(cls, error: Any) -> "RpcError":
        """An error object from a reply; anything malformed becomes RPC_MISC_ERROR."""
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message")
            if isinstance(code, int) and not isinstance(code, bool):
                return cls(code, message if isinstance(message, str) else str(message))
        return cls(RPC_MISC_ERROR, str(error))


def legacy_http_status(code: int) -> int:
    """The HTTP status bitcoind sends with an error reply to a JSON-RPC 1.0 request."""
    if code == RPC_INVALID_REQUEST:
        return HTTP_BAD_REQUEST
    if code == RPC_METHOD_NOT_FOUND:
        return HTTP_NOT_FOUND
    return HTTP_INTERNAL_SERVER_ERROR
