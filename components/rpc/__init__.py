"""JSON-RPC over HTTP in bitcoind's style, independent of the chain.

- `errors`: `RpcError` and bitcoind's error codes (`protocol.h`).
- `registry`: the method table, parameter binding and type checks, `help`, wallet resolution.
- `server`: the aiohttp HTTP server: binds, -rpcallowip, cookie and user/password auth,
  JSON-RPC 1.0 / 2.0 / batches.
- `client`: a small synchronous client (urllib), used by CleanCoin-cli and tests.
- `conf`: CleanCoin.conf reading and the datadir layout shared by the daemon and the cli.
- `jsonfmt`: JSON text with exact decimals (amounts) both ways.
- `thread`: an RpcServer on a background thread, for synchronous callers (tests, tools).

Nothing is imported here, so the cli does not pay for aiohttp.
"""
