@0x914023b4e5f7e4e7;
# Chain: the node as the wallet sees it (components/chain_interface.py defines it in Python).
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

interface ChainNotifications {
  # Implemented by the wallet and passed to handleNotifications: the node calls it back, in
  # chain order, one call at a time.
  blockConnected @0 (block :Data, height :Int32) -> ();
  blockDisconnected @1 (block :Data, height :Int32) -> ();
  transactionAddedToMempool @2 (tx :Data) -> ();
  transactionRemovedFromMempool @3 (txid :Data, reason :Text) -> ();
}

interface Chain {
  getHeight @0 () -> (height :Int32);
  # -1 when the chain holds no block.
  getBlockHash @1 (height :Int32) -> (hash :Data);
  getBlockHeaderInfo @2 (hash :Data) -> (info :BlockInfo);
  getBlocks @3 (startHeight :Int32, count :UInt32) -> (blocks :List(Data));
  # Batched: up to `count` active-chain blocks from startHeight on, possibly fewer (tip, size
  # bound); continue from startHeight + the number returned.
  findFork @4 (locator :List(Data)) -> (height :Int32);
  broadcastTransaction @5 (tx :Data, maxFee :Int64) -> (result :BroadcastResult);
  # maxFee: absolute fee limit, 0 for none.
  relayMinFee @6 () -> (feePerKb :Int64);
  isInMempool @7 (txid :Data) -> (result :Bool);
  handleNotifications @8 (notifications :ChainNotifications) -> (handler :Handler);
}
