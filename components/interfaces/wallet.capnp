@0xc41d8e2a9b7f3065;
# WalletLoader: what a node asks of the wallet process it started (CleanCoin-node ->
# CleanCoin-wallet). components/interfaces/wallet.py defines it in Python.

struct WalletOptions {
  network @0 :Text;          # "main", "test", "regtest"
  netdatadir @1 :Text;       # the node's network datadir; wallets live in its wallets/
  ignoreStartupList @2 :Bool;  # -nowallet: load no wallet of wallets/settings.json
}

interface WalletLoader {
  loadWallets @0 (names :List(Text)) -> (loaded :List(Text));
  # Load these wallets (the node's -wallet options, or those loaded before a restart).
  loadedWallets @1 () -> (names :List(Text));
  shutdown @2 () -> ();
  # Close every wallet; the process exits when the connection then closes.
}
