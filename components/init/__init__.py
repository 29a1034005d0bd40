"""One init module per executable, in the manner of Bitcoin Core's src/init/: how each
executable wires its processes together.

- `cleancoind`: CleanCoind, the node and its wallets in one process;
- `cleancoin_node`: CleanCoin-node, the node with its zygote, its sandbox and its wallet in
  another process (or a running one reached with -ipcconnect);
- `cleancoin_wallet`: CleanCoin-wallet as a process that serves wallets to a node (started
  by a node's zygote, or on its own with -ipcconnect or -ipcbind).

Argument parsing stays in cli/; the components (common, interfaces, node, wallet, ipc, rpc)
know nothing of which executable runs them.
"""
