"""The RPC layer's list of secret-bearing methods (components/rpc/sensitive.py) against the
methods this project serves: a method that takes a passphrase, a private key or a seed and is
not on the list would be kept in the GUI console's history and shown in its output.

The node's and the wallet's methods, as registered for a real node's registry; and what the
console makes of a line that does not parse."""

from __future__ import annotations

from pathlib import Path

from cleancoin.components.rpc.registry import Registry
from cleancoin.components.rpc.sensitive import SENSITIVE_METHODS, command_method, is_sensitive
from cleancoin.components.wallet.rpc import register_wallet_methods
from cleancoin.components.wallet.wallet import WalletManager

#: Words in a parameter's name that say it is a secret.
SECRET_WORDS = ("passphrase", "password", "privkey", "private", "seed", "secret")


def test_every_served_method_with_a_secret_parameter_is_sensitive(tmp_path: Path) -> None:
    registry = Registry()
    register_wallet_methods(registry, WalletManager(str(tmp_path), None, "regtest"))  # type: ignore[arg-type]
    with_secrets = {m.name for m in registry
                    if any(word in p.name.lower() for p in m.params for word in SECRET_WORDS)}
    # The check finds what it should: these take a passphrase here.
    assert {"createwallet", "encryptwallet", "walletpassphrase", "walletpassphrasechange"} <= with_secrets
    assert with_secrets <= SENSITIVE_METHODS, with_secrets - SENSITIVE_METHODS
    assert not is_sensitive("getblockcount") and not is_sensitive("signmessage")


def test_a_line_that_does_not_parse_still_names_its_method() -> None:
    assert command_method('walletpassphrase "it\'s 60') == "walletpassphrase"
    assert command_method("  'encryptwallet' x") == "encryptwallet"
    assert command_method("") == ""
    assert is_sensitive(command_method('"walletpassphrasechange" a b'))


def test_the_settings_that_hold_passwords_do_not_print_them() -> None:
    """A dataclass's repr prints every field, and reprs reach logs and tracebacks: the IPC
    login and the node's RPC credentials keep theirs out."""
    from cleancoin.components.ipc.auth import Credentials
    from cleancoin.components.node.node import NodeConfig

    config = NodeConfig(chain="regtest", netdatadir="/x", rpcuser="alice", rpcpassword="hunter2-rpc",
                        rpcauth=["bob:hunter2-auth"])
    login = Credentials("carol", "hunter2-ipc")
    text = repr(config) + repr(login)
    assert "hunter2" not in text, text
    assert "alice" in text and "carol" in text          # the rest is still shown
