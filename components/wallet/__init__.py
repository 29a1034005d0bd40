"""CleanCoin wallet: HD keys, encrypted secrets, the SQLite wallet store, coin selection.

Modules:

- `hd`      BIP32 derivation over secp256k1 (hardened paths m/0'/0'/i' and m/0'/1'/i')
- `crypto`  passphrase encryption of secrets (scrypt + ChaCha20-Poly1305), SecretBytes
- `store`   the wallet database `<netdatadir>/wallets/<name>/wallet.sqlite`, dump/createfromdump
- `coins`   coin selection, fee from the signed size, building and signing a transaction
- `wallet`  `Wallet` (one loaded wallet, talking to the node only through the Chain
            interface: catch-up, notifications, balances, sending, locking) and `WalletManager`
- `rpc`     the wallet's JSON-RPC methods, registered by CleanCoind

The offline CleanCoin-wallet tool (create, info, dump, createfromdump) is cli/wallet_main.py;
see docs/wallet.md.
"""
