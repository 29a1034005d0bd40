"""Daemon options in bitcoind's style: command line over CleanCoin.conf, sections, -noX."""

from __future__ import annotations

import pytest

from cleancoin.components.common.options import Option, OptionError, help_text, load_settings, parse_args

TABLE = [Option("datadir", "data directory", "General", "<dir>"), Option("conf", "conf file", "General"),
         Option("regtest", "regtest", "Chain"), Option("testnet", "testnet", "Chain"), Option("chain", "chain", "Chain"),
         Option("port", "P2P port", "Connection", "<port>", "27491"), Option("addnode", "add a node", "Connection"),
         Option("listen", "accept connections", "Connection", "", "1"), Option("debug", "debug category", "Debug")]


def test_parse_args_handles_flags_negation_and_repeats() -> None:
    assert parse_args(["-listen", "-nolisten", "-addnode=a", "-addnode=b", "-port=1"]) == {
        "listen": ["1", "0"], "addnode": ["a", "b"], "port": ["1"]}
    with pytest.raises(OptionError, match="unexpected token 'foo'"):
        parse_args(["foo"])


def test_negation_as_bitcoind(tmp_path) -> None:
    """-noX=0 is the double negative (X=1); a negation drops the list values before it, on the
    command line and in the file (noX=1), and -noX is told apart from -X=0."""
    assert parse_args(["-nolisten=0", "-nolisten=1"]) == {"listen": ["1", "0"]}
    s = load_settings([f"-datadir={tmp_path}", "-addnode=a", "-noaddnode", "-addnode=b", "-nolisten=0"], TABLE)
    assert s.get_all("addnode") == ["b"] and s.get_bool("listen", False) is True
    assert s.negated_on_cmdline("addnode") and not s.negated_on_cmdline("port")
    assert load_settings([f"-datadir={tmp_path}", "-noaddnode"], TABLE).get_all("addnode") == []
    assert load_settings([f"-datadir={tmp_path}", "-addnode=0"], TABLE).get_all("addnode") == ["0"]
    (tmp_path / "CleanCoin.conf").write_text("addnode=x\nnoaddnode=1\naddnode=y\nnolisten=1\n")
    s = load_settings([f"-datadir={tmp_path}"], TABLE)
    assert s.get_all("addnode") == ["y"] and s.get_bool("listen", True) is False


def test_datadir_from_the_conf_file(tmp_path) -> None:
    """-conf=<file> without -datadir: the file's datadir= is the data directory (bitcoind)."""
    (tmp_path / "data").mkdir()
    conf = tmp_path / "cc.conf"
    conf.write_text(f"datadir={tmp_path / 'data'}\nregtest=1\n")
    s = load_settings([f"-conf={conf}"], TABLE)
    assert s.datadir == str(tmp_path / "data") and s.netdatadir == str(tmp_path / "data" / "regtest")
    conf.write_text("datadir=data\n")                      # relative: next to the conf file
    assert load_settings([f"-conf={conf}"], TABLE).datadir == str(tmp_path / "data")
    conf.write_text("datadir=missing\n")
    with pytest.raises(OptionError, match="does not exist"):
        load_settings([f"-conf={conf}"], TABLE)
    # The command line's -datadir wins over the file's.
    assert load_settings([f"-conf={conf}", f"-datadir={tmp_path}"], TABLE).datadir == str(tmp_path)


def test_command_line_beats_conf_and_sections_apply_per_network(tmp_path) -> None:
    (tmp_path / "CleanCoin.conf").write_text(
        "port=1111\nport=2222\naddnode=x\naddnode=y\ndebug=net\n[regtest]\nport=3333\n")
    main = load_settings([f"-datadir={tmp_path}"], TABLE)
    assert main.chain == "main" and main.get("port") == "1111"          # the file's first value
    assert main.get_all("addnode") == ["x", "y"]
    regtest = load_settings([f"-datadir={tmp_path}", "-regtest"], TABLE)
    assert regtest.get("port") == "3333"                                # the network's section
    assert regtest.get_all("addnode") == []                             # network-only: main only
    assert regtest.get("debug") == "net"                                # not network-only
    assert load_settings([f"-datadir={tmp_path}", "-regtest", "-port=9"], TABLE).get("port") == "9"
    assert regtest.netdatadir == str(tmp_path / "regtest")


def test_unknown_options_and_contradictions_are_errors(tmp_path) -> None:
    with pytest.raises(OptionError, match="Invalid parameter -rpcprot"):
        load_settings([f"-datadir={tmp_path}", "-rpcprot=1"], TABLE)
    # In the conf file an unknown name is only a warning, as bitcoind's "Ignoring unknown
    # configuration value" (a conf file shared with bitcoind must not stop the node).
    (tmp_path / "CleanCoin.conf").write_text("bogus=1\nfallbackfee=0.0002\nport=5\n")
    settings = load_settings([f"-datadir={tmp_path}"], TABLE)
    assert settings.warnings == ["Ignoring unknown configuration value bogus",
                                 "Ignoring unknown configuration value fallbackfee"]
    assert settings.get("port") == "5" and settings.get("bogus") is None
    (tmp_path / "CleanCoin.conf").write_text("[test]\nwalletnotify=x\n")
    assert load_settings([f"-datadir={tmp_path}"], TABLE).warnings == [
        "Ignoring unknown configuration value test.walletnotify"]
    (tmp_path / "CleanCoin.conf").write_text("port=5\n")
    assert load_settings([f"-datadir={tmp_path}", "-noconf"], TABLE).get("port") is None
    (tmp_path / "CleanCoin.conf").write_text("")
    with pytest.raises(OptionError, match="Invalid combination"):
        load_settings([f"-datadir={tmp_path}", "-regtest", "-testnet"], TABLE)
    with pytest.raises(OptionError, match="does not exist"):
        load_settings([f"-datadir={tmp_path}/missing"], TABLE)


def test_help_lists_every_option_with_defaults() -> None:
    text = help_text("CleanCoind", "A node.", TABLE)
    assert "-port=<port>" in text and "(default: 27491)" in text and "Connection:" in text
