"""CleanCoin wallet: HD keys, encrypted secrets, the SQLite wallet store, coin selection.

Modules (foundation only: synchronous, no network, no RPC):

- `hd`      BIP32 derivation over secp256k1 (hardened paths m/0'/0'/i' and m/0'/1'/i')
- `crypto`  passphrase encryption of secrets (scrypt + ChaCha20-Poly1305), SecretBytes
- `store`   the wallet database `<netdatadir>/wallets/<name>/wallet.sqlite`, dump/createfromdump
- `coins`   coin selection, fee from the signed size, building and signing a transaction

The wallet logic on top (catch-up through the Chain interface, RPCs, the offline
CleanCoin-wallet tool) is built on these and is not part of this package yet.
"""
