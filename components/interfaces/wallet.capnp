@0xc41d8e2a9b7f3065;
# WalletLoader: what a node asks of the wallet process it started (CleanCoin-node ->
# CleanCoin-wallet). components/interfaces/wallet.py defines it in Python.

struct WalletOptions {
  network @0 :Text;          # "main", "test", "regtest"
  netdatadir @1 :Text;       # the node's network datadir; wallets live in its wallets/
  ignoreStartupList @2 :Bool;  # -nowallet: load no wallet of wallets/settings.json
}

using Chain = import "chain.capnp";

struct WalletEvent {
  # One wallet's state after a change (components/interfaces/wallet.py: WalletEvent).
  wallet @0 :Text;
  kind @1 :Text;              # "loaded", "unloaded", "transaction", "balance", "status"
  txid @2 :Data;              # for "transaction", else empty
  trusted @3 :Int64;          # balances in units
  untrustedPending @4 :Int64;
  immature @5 :Int64;
  encrypted @6 :Bool;
  locked @7 :Bool;
  unlockedUntil @8 :Int64;
}

interface WalletNotifications {
  # Implemented by the node and passed to handleNotifications: the wallet process calls it
  # back, one call at a time, in order.
  walletEvents @0 (events :List(WalletEvent)) -> ();
}

interface WalletLoader {
  loadWallets @0 (names :List(Text)) -> (loaded :List(Text));
  # Load these wallets (the node's -wallet options, or those loaded before a restart).
  loadedWallets @1 () -> (names :List(Text));
  shutdown @2 () -> ();
  # Close every wallet; the process exits when the connection then closes.
  handleNotifications @3 (notifications :WalletNotifications) -> (handler :Chain.Handler);
  # Push every wallet change to `notifications` (a "loaded" event for each wallet loaded now
  # first) until the handler is disconnected or the connection is lost.
}
