"""When CleanCoin-node starts its wallet process: with itself, or at the first call that may
want a wallet (wallet_component.wallet_at_start; issue #16)."""

from __future__ import annotations

from pathlib import Path

from cleancoin.components.node.wallet_component import WALLET_SETTINGS_FILES, wallet_at_start
from cleancoin.components.wallet.store import SETTINGS_FILENAME, SETTINGS_TMP_FILENAME


def test_the_node_names_the_wallets_start_up_list_as_the_wallet_does() -> None:
    assert WALLET_SETTINGS_FILES == (SETTINGS_FILENAME, SETTINGS_TMP_FILENAME)


def test_the_wallet_process_starts_with_the_node_only_when_a_wallet_is_loaded_or_watched(tmp_path: Path) -> None:
    walletdir = tmp_path / "wallets"
    assert not wallet_at_start([], str(tmp_path), frontend=False, learning=False)     # no wallets/ yet
    walletdir.mkdir()
    (walletdir / "debug.log").write_text("")
    (walletdir / "w").mkdir()                  # a wallet not in the start-up list: not loaded at start
    assert not wallet_at_start([], str(tmp_path), frontend=False, learning=False)
    assert wallet_at_start(["w"], str(tmp_path), frontend=False, learning=False)
    assert wallet_at_start([], str(tmp_path), frontend=True, learning=False)          # -ipcfd: a GUI
    assert wallet_at_start([], str(tmp_path), frontend=False, learning=True)          # -sandboxlearn
    for name in WALLET_SETTINGS_FILES:
        (walletdir / name).write_text("{}")
        assert wallet_at_start([], str(tmp_path), frontend=False, learning=False), name
        (walletdir / name).unlink()
    # A link counts as the file (lexists): the wallet process decides what it holds.
    (walletdir / "settings.json").symlink_to(tmp_path / "nowhere")
    assert wallet_at_start([], str(tmp_path), frontend=False, learning=False)
