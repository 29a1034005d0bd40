"""The coin library every CleanCoin process uses: amounts, hashes, transactions and blocks,
addresses, keys and signatures, proof of work, chain parameters, consensus rules and the
standardness policy. It imports nothing of the node, the wallet or the IPC runtime."""
