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
#: The wallet process's start-up list in wallets/ and its temporary file (wallet.store's
#: SETTINGS_FILENAME and SETTINGS_TMP_FILENAME, not imported by the node this early).
WALLET_SETTINGS_FILES = ("settings.json", "settings.json.tmp")
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


def wallet_at_start(wallets: Sequence[str], netdatadir: str, *, frontend: bool, learning: bool) -> bool:
    """Whether CleanCoin-node starts its wallet process with itself (as before 12-08) rather
    than at the first RPC call that may want a wallet (`WalletProcess.ensure_started`). At
    once when a wallet is loaded at start (-wallet, or a `wallets/settings.json` start-up list,
    which only the wallet process reads), for a front end (-ipcfd: it waits for the wallet
    methods) and in a learning run (it records what the wallet uses). Otherwise a start that
    never uses a wallet pays for neither the zygote's preload nor the wallet process (issue
    #16; docs/multiprocess.md, "Each node start and stop")."""
    if wallets or frontend or learning:
        return True
    walletdir = os.path.join(netdatadir, "wallets")
    return any(os.path.lexists(os.path.join(walletdir, name)) for name in WALLET_SETTINGS_FILES)


def launch_zygote(preload: bool = True) -> Zygote:
    """Start the zygote's interpreter, with the wallet's code preloading at once if `preload`
    (else it is imported at configure, or at the first spawn for a wallet started on first
    use); `wallet_spec` and `Zygote.configure` follow once the datadir is made (raises OSError
    if it cannot start)."""
    return Zygote.launch([WALLET_PRELOAD] if preload else [])


def wallet_spec(netdatadir: str, *, sandbox: bool, verbose_denials: bool,
                learn_dir: str | None, max_tx_fee: int, denial_log: str = "",
                minimum_chain_work: int | None = None, on_first_use: bool = False) -> ComponentSpec:
    """The wallet process under policies/wallet.toml (None with -sandbox=0): its wallets
    directory; its refusals logged to `denial_log` (the node's sandbox.log; "" for its stderr,
    which the zygote passes on to the node's), all of them when `verbose_denials`. Never to
    wallets/debug.log: the wallet may write that file, and so erase the record of what it
    tried. The zygote opens the log before the wallet's view goes up, outside of it.
    `max_tx_fee` (-maxtxfee, units) goes with the spec, not over IPC:
    the node is not confined yet, and cannot raise the cap later (components/common/fee_cap.py);
    so does `minimum_chain_work` (-minimumchainwork; None: the network's, wallet/headers.py).
    `on_first_use`: the zygote runs the wallet's preload at its first spawn, not before
    (`wallet_at_start`); the policy, its plan and every sandbox step are the same."""
    from cleancoin.sandbox.denial_log import DenialLog
    from cleancoin.sandbox.policy_files import shipped_policy
    from cleancoin.sandbox.zygote import ComponentSpec
    return ComponentSpec(WALLET_COMPONENT, WALLET_TARGET, shipped_policy("wallet") if sandbox else None,
                         {"walletdir": os.path.join(netdatadir, "wallets")},
                         writable_roots=(netdatadir,), preload=WALLET_PRELOAD,
                         preload_at_first_spawn=on_first_use,
                         denials=DenialLog(denial_log, verbose_denials, label=WALLET_COMPONENT),
                         learn_dir=learn_dir,
                         arguments={"max_tx_fee": str(max_tx_fee),
                                    "minimum_chain_work": "" if minimum_chain_work is None
                                    else f"{minimum_chain_work:x}"})


def start_wallet(zygote: Zygote, netdatadir: str, *, sandbox: bool, verbose_denials: bool,
                 learn_dir: str | None, denial_log: str, title: str, max_tx_fee: int,
                 minimum_chain_work: int | None = None, detached: Sequence[Detached] = (),
                 on_first_use: bool = False) -> socket.socket | None:
    """Fit the wallet's policy (`wallet_spec`), hand it to a launched `zygote` and ask for the
    wallet process at once (`prestart`); returns our end of its socket. CleanCoin-node calls
    this as soon as its log is open, before it imports the rest of the node: the zygote builds
    the wallet's sandbox on the other core meanwhile, instead of after the node's imports
    (issue #16). Raises ZygoteError for a policy that cannot be fitted (the zygote is stopped)
    and OSError when the zygote cannot be reached. `detached`: what the zygote forks once, now
    (the node's connect broker, connect_broker.forked); their descriptors are closed here,
    the zygote has its own. `on_first_use` (`wallet_at_start` said no): the zygote is
    configured, and forks the broker, but no wallet process is asked for (None is returned);
    `WalletProcess.ensure_started` asks at the first call that may want one."""
    try:
        zygote.configure({WALLET_COMPONENT: wallet_spec(netdatadir, sandbox=sandbox, verbose_denials=verbose_denials,
                                                        learn_dir=learn_dir, denial_log=denial_log,
                                                        max_tx_fee=max_tx_fee,
                                                        minimum_chain_work=minimum_chain_work,
                                                        on_first_use=on_first_use)},
                         wait=False, title=title, detached=detached)
    finally:
        for process in detached:
            os.close(process.fd)
    return None if on_first_use else prestart(zygote)


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
