@0xb2e7d41c9a5f8360;
# Node: what a front end (the gui, a third-party tool) drives in a node process.
# components/interfaces/node.py defines it in Python.

using Chain = import "chain.capnp";

interface Node {
  executeRpc @0 (request :Chain.RpcRequest) -> (response :Chain.RpcResponse);
  # Run one JSON-RPC call as the node's RPC server would (wallet methods included: they are
  # forwarded to the wallet process). `params` is JSON text; errors come back in the
  # response, with bitcoind's codes. `tipHash` is ignored.
  shutdown @1 () -> ();
  # Ask the node to shut down, as the `stop` RPC does.
}
