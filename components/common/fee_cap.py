"""-maxtxfee: the most a wallet transaction may pay in fees, as bitcoind's wallet has it.

Why it matters more here than in bitcoind: a wallet without `settxfee` paid the fee rate its
node named (`Chain.relayMinFee`; since 12-07 it pays MIN_RELAY_FEE_RATE, its own). Under CleanCoin-node that node is a separate, confined
process facing the network; once compromised it may name any rate, and a wallet that signed
whatever that rate asked for would give its coins to the miners (tests/functional/
test_wallet_fee_cap.py: 42 of 50 coins for a one-coin payment, before this cap). So the cap
is the operator's own: CleanCoind and the standalone CleanCoin-wallet read it from their
options; CleanCoin-node reads it before it confines itself and hands it to the zygote with the
wallet's policy (components/node/wallet_component.py), never over IPC, where the node could
raise it later. The option itself and its parsing are in options.py (`MAX_TX_FEE_OPTION`,
`max_tx_fee`): a wallet process imports this module, never the option tables.
"""

from __future__ import annotations

from cleancoin.components.common.amount import COIN, format_amount

#: bitcoind's DEFAULT_TRANSACTION_MAXFEE: 0.10 coin.
DEFAULT_MAX_TX_FEE: int = COIN // 10
#: Above this, the wallet warns at start, as bitcoind's HIGH_MAX_TX_FEE (1 coin).
HIGH_MAX_TX_FEE: int = COIN
#: The node's minimum relay fee rate (mempool.DEFAULT_MIN_RELAY_FEE, which no option changes):
#: a cap below it could never pay for a transaction the network relays.
MIN_RELAY_FEE_RATE: int = 1000
#: bitcoind's TransactionError::MAX_FEE_EXCEEDED text, the message of RPC error -6.
MAX_FEE_EXCEEDED = "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"


def fee_rate_text(units_per_kb: int) -> str:
    """A fee rate as bitcoind's CFeeRate::ToString: '0.00001000 CC/kvB'."""
    return f"{format_amount(units_per_kb)} CC/kvB"


def high_fee_warning(units: int) -> str | None:
    """bitcoind's start-up warning for a cap above HIGH_MAX_TX_FEE, else None."""
    if units > HIGH_MAX_TX_FEE:
        return "-maxtxfee is set very high! Fees this large could be paid on a single transaction."
    return None
