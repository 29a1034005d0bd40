"""An unconfirmed transaction that spends the wallet's coins counts as the wallet's own (its
outputs to the wallet are trusted, as bitcoind's change). Under CleanCoin-node such
transactions come from the less trusted side, the node's mempool notifications, so the wallet
takes one only when each input spending its coins carries its key's valid signature and, if
every input is the wallet's, it pays out no more than they hold
(Wallet._forged_spend; tests/functional/test_wallet_fake_chain.py runs the attack inside a
confined node).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from test_wallet import OTHER, SUBSIDY, Env, env, make_wallet  # noqa: F401 - a fixture


def test_only_spends_the_wallets_key_signed_count_as_its_own(env: Env, caplog) -> None:
    async def scenario() -> None:
        w = make_wallet(env)
        pkh = w.new_key(False).pkh
        first = env.mine(101, pkh)[0]
        await w.load()
        assert w.balances().trusted == SUBSIDY
        coin = OutPoint(first.txs[0].txid, 0)
        unsigned = Transaction(1, (TxIn(coin),), (TxOut(1000 * SUBSIDY, pkh),), 0)
        stranger = PrivateKey(hashlib.sha256(b"not the wallet's key").digest())
        forged = {
            "a stranger's signature": sign_transaction(unsigned, [stranger]),
            "garbage": Transaction(1, (TxIn(coin, b"\x01\x02"),), unsigned.vout, 0),
            "more out than in, signed": w.sign_inputs(unsigned, [pkh])[0],
        }
        with caplog.at_level(logging.WARNING, logger="cleancoin.wallet"):
            for what, tx in forged.items():
                assert w.add_mempool_transaction(tx, 0) is False, what
                assert w.store.get_transaction(tx.txid) is None, what
        refused = [r.getMessage() for r in caplog.records if "refused transaction" in r.getMessage()]
        assert len(refused) == 3 and "pays out more" in refused[2], refused
        assert w.balances().trusted == SUBSIDY and w.balances().untrusted_pending == 0
        # The wallet's own spend, as the node echoes it back: taken, its change trusted.
        honest = w.sign_inputs(Transaction(1, (TxIn(coin),), (TxOut(SUBSIDY // 2, OTHER),
                                                              TxOut(SUBSIDY // 2 - 10_000, pkh)), 0),
                               [pkh])[0]
        assert w.add_mempool_transaction(honest, 0) is True
        assert w.balances().trusted == SUBSIDY // 2 - 10_000
        await w.close()

    asyncio.run(scenario())
