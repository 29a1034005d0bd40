@0x914023b4e5f7e4e7;
# Chain: the node as the wallet sees it (components/interfaces/chain.py defines it in Python).
# Blocks and transactions travel serialized, in the consensus format; hashes and txids are
# 32 bytes in internal byte order.

struct BlockInfo {
  hash @0 :Data;
  height @1 :Int32;
  time @2 :Int64;            # header timestamp, Unix time
  prevHash @3 :Data;         # all zero for genesis
  inActiveChain @4 :Bool;
}

struct BroadcastResult {
  ok @0 :Bool;
  txid @1 :Data;             # empty when the bytes were not a transaction
  reason @2 :Text;           # reject reason ("txn-mempool-conflict", ...), "" when ok
}

interface Handler {
  disconnect @0 () -> ();
  # Ends a registration: no callback starts after this returns.
}

struct ChainEvent {
  # One event in a batch: `kind` names the single-event method it stands for
  # ("blockConnected", "blockDisconnected", "transactionAddedToMempool",
  # "transactionRemovedFromMempool"); `data` is the block, the transaction or the txid.
  kind @0 :Text;
  data @1 :Data;
  height @2 :Int32;
  reason @3 :Text;
}

struct RpcMethodInfo {
  # An RPC method a wallet process serves through the node (registerRpc).
  name @0 :Text;
  category @1 :Text;
  signature @2 :Text;        # first line of its help
  help @3 :Text;             # full help text
  hidden @4 :Bool;
}

struct RpcRequest {
  method @0 :Text;
  params @1 :Text;           # JSON: array, object or null
  uriWallet @2 :Text;        # the name in /wallet/<name>; see hasUriWallet
  hasUriWallet @3 :Bool;     # false: the call came to "/"
  user @4 :Text;
  tipHash @5 :Data;          # the node's tip at forwarding: the wallet catches up to it first
}

struct RpcResponse {
  ok @0 :Bool;
  result @1 :Text;           # JSON text of the result when ok
  errorCode @2 :Int32;       # the JSON-RPC error otherwise
  errorMessage @3 :Text;
}

interface RpcHandler {
  # Implemented by a wallet process: runs the calls the node forwards to it.
  execute @0 (request :RpcRequest) -> (response :RpcResponse);
}

interface ChainNotifications {
  # Implemented by the wallet and passed to handleNotifications: the node calls it back, in
  # chain order, one call at a time.
  blockConnected @0 (block :Data, height :Int32) -> ();
  blockDisconnected @1 (block :Data, height :Int32) -> ();
  transactionAddedToMempool @2 (tx :Data) -> ();
  transactionRemovedFromMempool @3 (txid :Data, reason :Text) -> ();
  chainEvents @4 (events :List(ChainEvent)) -> ();
  # Several of the above at once, in order: sent when events queue up (a reorg, a burst of
  # blocks), so a wallet in another process pays one round trip per batch.
}

interface Chain {
  getHeight @0 () -> (height :Int32);
  # -1 when the chain holds no block.
  getBlockHash @1 (height :Int32) -> (hash :Data);
  getBlockHeaderInfo @2 (blockHash :Data) -> (info :BlockInfo);
  getBlocks @3 (startHeight :Int32, count :UInt32) -> (blocks :List(Data));
  # Batched: up to `count` active-chain blocks from startHeight on, possibly fewer (tip, size
  # bound); continue from startHeight + the number returned.
  findFork @4 (locator :List(Data)) -> (height :Int32);
  broadcastTransaction @5 (tx :Data, maxFee :Int64) -> (result :BroadcastResult);
  # maxFee: absolute fee limit, 0 for none.
  relayMinFee @6 () -> (feePerKb :Int64);
  isInMempool @7 (txid :Data) -> (result :Bool);
  handleNotifications @8 (notifications :ChainNotifications) -> (handler :Handler);
  registerRpc @9 (methods :List(RpcMethodInfo), handler :RpcHandler) -> (registration :Handler);
  # Serve these JSON-RPC methods on the node by forwarding their calls to `handler`, until
  # the registration is disconnected or the connection is lost. Only the node's own wallet
  # process may (docs/multiprocess.md, "Who may serve wallet methods"); others fail.
  getHeaders @10 (startHeight :Int32, count :UInt32) -> (headers :Data);
  # Added after the above (a node without it answers "unimplemented"): up to `count` (at
  # most 2000) active-chain headers from startHeight on, 80 bytes each, concatenated; fewer
  # past the tip, empty at or past it. The wallet checks them from genesis before it takes
  # an anchor (wallet/headers.py).
}
