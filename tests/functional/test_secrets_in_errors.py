"""Functional: start-up and configuration errors never repeat a secret option's value.

Operators paste start-up errors and debug.log into bug reports. The classic mistakes with
secrets are a plaintext password where -rpcauth wants `USER:SALT$HASH`, a conf line
`rpcpassword secret` without its `=`, a `-rpcpassword=` line in the conf file (with the
command line's dash), and a typo in the option's name. Each must stop the program with an
error that names the option and the line (what the operator needs to fix it), and shows no
part of the value: not on stderr, not in debug.log. For both node executables (the
functional suite runs this file against each) and for CleanCoin-cli, which reads the same
conf file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from framework import TestNode, node_command, resolve_executable


def planted(label: str) -> str:
    return f"Planted{label}{os.urandom(6).hex()}"


def run_node(datadir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(node_command("-regtest", f"-datadir={datadir}", "-printtoconsole=0", *args),
                          capture_output=True, text=True, timeout=60)


def run_cli(datadir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([resolve_executable("CleanCoin-cli"), "-regtest", f"-datadir={datadir}", *args],
                          capture_output=True, text=True, timeout=60)


def everything_written(datadir: Path, out: subprocess.CompletedProcess[str]) -> str:
    log = datadir / "regtest" / "debug.log"
    return out.stdout + out.stderr + (log.read_text(errors="replace") if log.exists() else "")


def test_a_password_given_as_rpcauth_is_not_repeated(tmp_path: Path) -> None:
    """-rpcauth=alice:<password> (the password where the salted hash belongs), on the command
    line and in the conf file: start-up stops, the error says which -rpcauth is wrong and what
    it must look like, and neither stderr nor debug.log holds the password."""
    good = TestNode(0, tmp_path)      # the well-formed line of the same run is accepted
    salted = "carol:00112233445566778899aabbccddeeff$" + "ab" * 32
    password = planted("RpcauthPw")
    out = run_node(good.datadir, f"-rpcauth={salted}", f"-rpcauth=alice:{password}")
    text = everything_written(good.datadir, out)
    assert out.returncode == 1, text
    assert "Invalid -rpcauth argument" in out.stderr and "the 2nd" in out.stderr, out.stderr
    assert "USER:SALT$HASH" in out.stderr
    assert "Invalid -rpcauth argument" in (good.netdatadir / "debug.log").read_text()
    assert password[-12:] not in text and password[-12:-4] not in text, text

    conf_password = planted("ConfRpcauthPw")
    (good.datadir / "CleanCoin.conf").write_text(f"[regtest]\nrpcauth={conf_password}\n")
    out = run_node(good.datadir)
    text = everything_written(good.datadir, out)
    assert out.returncode == 1 and "Invalid -rpcauth argument (the 1st)" in out.stderr, text
    assert conf_password[-12:] not in text and conf_password[-12:-4] not in text, text


def test_conf_parse_errors_name_the_line_but_not_the_value(tmp_path: Path) -> None:
    """A conf line that is not `name=value` stops the node and CleanCoin-cli with its number
    and the option's name, never its value."""
    datadir = tmp_path / "d"
    datadir.mkdir()
    for number, (line, shown) in enumerate([("rpcpassword {}", "parse error on line 2: rpcpassword …"),
                                            ("-rpcpassword={}", "parse error on line 2: -rpcpassword=…"),
                                            ("-ipcauth=gui:{}", "parse error on line 2: -ipcauth=…")]):
        secret = planted(f"ConfLine{number}")
        (datadir / "CleanCoin.conf").write_text("[regtest]\n" + line.format(secret) + "\n")
        for out in (run_node(datadir), run_cli(datadir, "getblockcount")):
            text = everything_written(datadir, out)
            assert out.returncode == 1 and shown in out.stderr, text
            assert secret[-12:] not in text and secret[-12:-4] not in text, text


def test_a_mistyped_secret_option_is_named_without_its_value(tmp_path: Path) -> None:
    """`-rpcpasword=<password>` (a typo): both programs refuse the unknown option by name, as
    bitcoind and bitcoin-cli do, and do not print the password that came with it."""
    secret = planted("TypoPw")
    for out in (run_node(tmp_path, f"-rpcpasword={secret}"), run_cli(tmp_path, f"-rpcpasword={secret}", "getblockcount")):
        assert out.returncode == 1 and "Invalid parameter -rpcpasword" in out.stderr, out.stderr
        assert secret[-12:-4] not in out.stdout + out.stderr, out.stderr
