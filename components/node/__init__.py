"""CleanCoin node: consensus foundation (pure, synchronous, no I/O) and, later, storage,
mempool, P2P and RPC built on it.

Consensus modules, in dependency order:

- `amount`      COIN, MAX_MONEY, amount parsing and formatting
- `hashes`      SHA-256d, HASH160 (RIPEMD-160 with a pure-Python fallback)
- `errors`      ValidationError (Bitcoin-style reject reasons) and DeserializationError
- `primitives`  transactions, headers, blocks, exact serialization, merkle root
- `address`     bech32 addresses (segwit-v0 shaped) and base58check (WIF)
- `pow`         compact bits, proof of work, retargeting, chain work
- `chainparams` main / test / regtest parameters and their genesis blocks
- `keys`        secp256k1 keys (coincurve), signature digest, sign/verify an input
- `consensus`   context-free and contextual block and transaction checks
- `mining`      coinbase, block assembly, nonce search
"""
