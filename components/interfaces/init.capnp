@0xe3b59f2a6c1d4f07;
# Init: the bootstrap capability of every CleanCoin process (node, wallet, gui).
# A client asks it for the interfaces it needs; new factories get new ordinals, so older
# clients keep working.

using Echo = import "echo.capnp".Echo;
using Chain = import "chain.capnp".Chain;
using Wallet = import "wallet.capnp";
using Node = import "node.capnp".Node;

struct IpcPeer {
  # Who is at one end of a connection, for logs (-debug=ipc) and error messages.
  name @0 :Text;     # process name: "CleanCoin-node", "CleanCoin-wallet", ...
  pid @1 :UInt32;
}

interface Init {
  hello @0 (client :IpcPeer, debug :List(Text)) -> (server :IpcPeer);
  # Introduce both ends. Clients call it first; servers use the answer in their logs.
  # `debug` passes the caller's -debug categories on: a child its parent started takes no
  # options of its own, so "ipc" here turns on -debug=ipc for this connection.
  makeEcho @1 () -> (echo :Echo);
  makeChain @2 () -> (chain :Chain);
  # The node's Chain (for a wallet). Processes that are no node fail the call.
  makeWalletLoader @3 (chain :Chain, options :Wallet.WalletOptions) -> (loader :Wallet.WalletLoader);
  # A wallet process's wallets, working through `chain` (which the caller, a node, serves).
  # The wallet registers its RPC methods with `chain`. Processes that are no wallet fail.
  makeNode @4 () -> (node :Node);
  # The node as a front end drives it: JSON-RPC calls and shutdown. Processes that are no
  # node fail.
}
