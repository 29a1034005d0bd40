@0xb2e7d41c9a5f8360;
# Node: what a front end (the gui, a third-party tool) drives in a node process.
# components/interfaces/node.py defines it in Python.

using Chain = import "chain.capnp";
using Wallet = import "wallet.capnp";

struct TipInfo {
  # The node's active tip and how far it is from being in sync.
  height @0 :Int32;
  hash @1 :Data;             # internal byte order
  time @2 :Int64;            # the tip's header time, Unix time
  headers @3 :Int32;         # height of the best header known
  progress @4 :Float64;      # verification progress, 0 to 1
  initialDownload @5 :Bool;  # still catching up (initial block download)
  mempoolSize @6 :UInt32;    # transactions in the mempool
}

struct ProcessEvent {
  # A process of the node's tree changed: "started", "exited", "restarted", "connected",
  # "disconnected".
  kind @0 :Text;
  name @1 :Text;             # "CleanCoin-wallet", ...
  pid @2 :Int32;             # 0 when not known
  detail @3 :Text;           # how it ended ("killed by SIGKILL"), its policy, ...
  restarts @4 :UInt32;
}

interface NodeNotifications {
  # Implemented by a front end and passed to handleNotifications: the node calls it back, one
  # call at a time, in order. Tip changes are coalesced (a burst of blocks arrives as the
  # last tip), wallet events per wallet.
  tipChanged @0 (tip :TipInfo) -> ();
  walletEvents @1 (events :List(Wallet.WalletEvent)) -> ();
  processEvent @2 (event :ProcessEvent) -> ();
  logLines @3 (lines :List(Text)) -> ();
  # The node's warnings and errors as they are logged (refused registrations, sandbox
  # denials seen as a process killed by SIGSYS, restarts), one line each.
}

interface Node {
  executeRpc @0 (request :Chain.RpcRequest) -> (response :Chain.RpcResponse);
  # Run one JSON-RPC call as the node's RPC server would (wallet methods included: they are
  # forwarded to the wallet process). `params` is JSON text; errors come back in the
  # response, with bitcoind's codes. `tipHash` is ignored.
  shutdown @1 () -> ();
  # Ask the node to shut down, as the `stop` RPC does.
  handleNotifications @2 (notifications :NodeNotifications) -> (handler :Chain.Handler);
  # Deliver tip changes, wallet events, process events and log lines to `notifications`
  # until the handler is disconnected or the connection is lost. First comes the current
  # tip and a "loaded" event for each loaded wallet, delivered before this returns.
}
