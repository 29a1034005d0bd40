"""The node's wallet process as the zygote knows it: its names, its spec, the first request.

Kept apart from remote_wallet.py (which needs Cap'n Proto and asyncio) so that CleanCoin-node
can launch its zygote before it imports the node: the zygote's interpreter and the node's
imports then start up side by side (docs/multiprocess.md, start-up order).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

# Only what `launch_zygote` needs: the policy model, the launcher and the enforcement steps are
# imported by `wallet_spec`, after the zygote's interpreter is on its way (issue #16).
from cleancoin.sandbox.zygote import Zygote

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cleancoin.sandbox.zygote import ComponentSpec, Detached

WALLET_COMPONENT = "CleanCoin-wallet"
#: What the zygote runs in the wallet's sandbox (components/init/wallet_process.py: not
#: cleancoin_wallet.py, whose option table and RPC server a wallet process of a node never uses).
WALLET_TARGET = "cleancoin.components.init.wallet_process:serve_node"
#: What the zygote imports once, so that each wallet (re)start begins warm.
WALLET_PRELOAD = "cleancoin.components.init.wallet_process:zygote_preload"
#: Where a CleanCoin-wallet -ipcbind=unix waits for nodes (in the network datadir).
WALLET_SOCKET = "wallet.sock"


def uses_running_wallet(connect: str | None, netdatadir: str) -> bool:
    """-ipcconnect: always for an address; for `auto`, when wallet.sock answers now."""
    if connect is None:
        return False
    if connect != "auto":
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.path.join(netdatadir, WALLET_SOCKET))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def launch_zygote() -> Zygote:
    """Start the zygote's interpreter with the wallet's code preloading; `wallet_spec` and
    `Zygote.configure` follow once the datadir is made (raises OSError if it cannot start)."""
    return Zygote.launch([WALLET_PRELOAD])


def wallet_spec(netdatadir: str, *, sandbox: bool, verbose_denials: bool,
                learn_dir: str | None, max_tx_fee: int, denial_log: str = "",
                minimum_chain_work: int | None = None) -> ComponentSpec:
    """The wallet process under policies/wallet.toml (None with -sandbox=0): its wallets
    directory; its refusals logged to `denial_log` (the node's sandbox.log; "" for its stderr,
    which the zygote passes on to the node's), all of them when `verbose_denials`. Never to
    wallets/debug.log: the wallet may write that file, and so erase the record of what it
    tried. The zygote opens the log before the wallet's view goes up, outside of it.
    `max_tx_fee` (-maxtxfee, units) goes with the spec, not over IPC:
    the node is not confined yet, and cannot raise the cap later (components/common/fee_cap.py);
    so does `minimum_chain_work` (-minimumchainwork; None: the network's, wallet/headers.py)."""
    from cleancoin.sandbox.denial_log import DenialLog
    from cleancoin.sandbox.policy_files import shipped_policy
    from cleancoin.sandbox.zygote import ComponentSpec
    return ComponentSpec(WALLET_COMPONENT, WALLET_TARGET, shipped_policy("wallet") if sandbox else None,
                         {"walletdir": os.path.join(netdatadir, "wallets")},
                         writable_roots=(netdatadir,), preload=WALLET_PRELOAD,
                         denials=DenialLog(denial_log, verbose_denials, label=WALLET_COMPONENT),
                         learn_dir=learn_dir,
                         arguments={"max_tx_fee": str(max_tx_fee),
                                    "minimum_chain_work": "" if minimum_chain_work is None
                                    else f"{minimum_chain_work:x}"})


def start_wallet(zygote: Zygote, netdatadir: str, *, sandbox: bool, verbose_denials: bool,
                 learn_dir: str | None, denial_log: str, title: str, max_tx_fee: int,
                 minimum_chain_work: int | None = None, detached: Sequence[Detached] = ()) -> socket.socket:
    """Fit the wallet's policy (`wallet_spec`), hand it to a launched `zygote` and ask for the
    wallet process at once (`prestart`); returns our end of its socket. CleanCoin-node calls
    this as soon as its log is open, before it imports the rest of the node: the zygote builds
    the wallet's sandbox on the other core meanwhile, instead of after the node's imports
    (issue #16). Raises ZygoteError for a policy that cannot be fitted (the zygote is stopped)
    and OSError when the zygote cannot be reached. `detached`: what the zygote forks once, now
    (the node's connect broker, connect_broker.forked); their descriptors are closed here,
    the zygote has its own."""
    try:
        zygote.configure({WALLET_COMPONENT: wallet_spec(netdatadir, sandbox=sandbox, verbose_denials=verbose_denials,
                                                        learn_dir=learn_dir, denial_log=denial_log,
                                                        max_tx_fee=max_tx_fee,
                                                        minimum_chain_work=minimum_chain_work)},
                         wait=False, title=title, detached=detached)
    finally:
        for process in detached:
            os.close(process.fd)
    return prestart(zygote)


def prestart(zygote: Zygote) -> socket.socket:
    """Ask the zygote to start a wallet process now and return our end of its socket;
    `WalletProcess` collects the answer later. CleanCoin-node calls this before it restricts
    itself and opens its chain, so the wallet's interpreter starts meanwhile."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        zygote.request_spawn(WALLET_COMPONENT, theirs.fileno())
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours
