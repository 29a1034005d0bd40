"""Functional: the node's command line: -help, unknown options, bad conf, init errors.

The same for CleanCoind and CleanCoin-node (framework.NODE_EXECUTABLE): same options, same
messages, same exit codes, same files (the tests expect CleanCoind.pid from both, as
bitcoin-node keeps bitcoind.pid).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from framework import TestNode, node_command


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(node_command(*args), capture_output=True, text=True, timeout=30)


def test_help_and_unknown_options(tmp_path: Path) -> None:
    out = run("-help")
    assert out.returncode == 0 and "-rpcport=<port>" in out.stdout and "-debug=<category>" in out.stdout
    bad = run(f"-datadir={tmp_path}", "-regtest", "-rpcprot=1")
    assert bad.returncode == 1
    assert "Error: Error parsing command line arguments: Invalid parameter -rpcprot" in bad.stderr
    # An unknown setting in the conf file is only logged (test_bitcoind_compat.py); a line
    # that is not a setting stops start-up.
    (tmp_path / "CleanCoin.conf").write_text("[regtest]\n-bogus=1\n")
    conf = run(f"-datadir={tmp_path}", "-regtest")
    assert conf.returncode == 1 and "options in configuration file must be specified without leading -" in conf.stderr
    missing = run(f"-datadir={tmp_path}/nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_port_in_use_is_an_init_error_and_conf_sections_apply(tmp_path: Path) -> None:
    first = TestNode(0, tmp_path)
    (first.datadir / "CleanCoin.conf").write_text("[regtest]\ndebug=rpc\n")
    first.start()
    try:
        first.rpc.getblockcount()
        assert "[cleancoin.rpc] DEBUG" in first.debug_log()
        # Same datadir: the database is locked; the running node's pid file stays.
        same = run("-regtest", f"-datadir={first.datadir}", "-port=0", "-rpcport=0", "-printtoconsole=0")
        assert same.returncode == 1 and "in use by another process" in same.stderr
        assert (first.netdatadir / "CleanCoind.pid").exists()
        # Another datadir, same P2P port: cannot bind.
        (tmp_path / "other").mkdir()
        clash = run("-regtest", f"-datadir={tmp_path}/other", f"-port={first.p2p_port}",
                    "-bind=127.0.0.1", "-rpcport=0", "-printtoconsole=0")
        assert clash.returncode == 1 and clash.stderr.startswith("Error: Unable to bind")
    finally:
        first.cleanup()


def test_sigterm_is_a_clean_shutdown(tmp_path: Path) -> None:
    import signal
    node = TestNode(0, tmp_path)
    node.start()
    try:
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(20) == 0
        node.process = None
        assert not node.cookie_path.exists()
        assert not (node.netdatadir / "CleanCoind.pid").exists()
        assert "Shutdown: done" in node.debug_log()
    finally:
        node.cleanup()


def test_par_sets_the_signature_threads_and_bad_values_stop_the_start(tmp_path: Path) -> None:
    """-par as bitcoind's: a count (the chain's own thread included), at most 8; 0 for one per
    usable CPU; negative leaves that many CPUs free, never fewer than 1. The node says the
    count in its log, as bitcoind does. Not a number: an init error, nothing started."""
    import os

    from cleancoin.components.common.sigcheck import usable_cpus
    expected = {"3": 3, "100": 8, "-100": 1, "0": min(usable_cpus(), 8),
                "-1": max(1, min(usable_cpus() - 1, 8))}
    node = TestNode(0, tmp_path)
    for value, threads in expected.items():
        node.start([f"-par={value}"])
        try:
            assert node.rpc.getblockcount() == 0
            line = f"Signature verification uses {threads} threads, this one included (-par)"
            assert line in node.debug_log(), (value, [l for l in node.debug_log().splitlines() if "-par" in l])
        finally:
            node.stop()
        os.remove(node.netdatadir / "debug.log")
    bad = run(f"-datadir={tmp_path}", "-regtest", "-par=two")
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: Invalid value for -par: 'two' is not a number"
    # The signature cache's size, as bitcoind's -maxsigcachesize (MiB; 0 turns it off).
    bad = run(f"-datadir={tmp_path}", "-regtest", "-maxsigcachesize=-1")
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: Invalid value for -maxsigcachesize: '-1' (0 to 16384 MiB)"
