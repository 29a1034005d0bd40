"""Secret options handed to a child through an inherited pipe instead of its command line
(components/common/command_line_secrets.py: options_pipe, read_options_fd, CleanCoin-node's
-optionsfd): real pipes, and the real CleanCoin-node refusing what it cannot read, before it
starts anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cleancoin.components.common.command_line_secrets import (
    PIPE_CAPACITY, options_pipe, read_options_fd, split_secret,
)


def test_the_secret_options_are_split_off_in_order() -> None:
    argv = ["-regtest", "-rpcpassword=a", "-rpcuser=op", "-rpcauth=x:y$z", "-norpcpassword=1", "-ipcauth=u:p"]
    public, secret = split_secret(argv)
    assert public == ["-regtest", "-rpcuser=op"]
    assert secret == ["-rpcpassword=a", "-rpcauth=x:y$z", "-norpcpassword=1", "-ipcauth=u:p"]
    # After a method's name come its parameters (CleanCoin-cli), whatever they look like.
    public, secret = split_secret(["-rpcpassword=a", "echo", "-rpcpassword=b"])
    assert public == ["echo", "-rpcpassword=b"] and secret == ["-rpcpassword=a"]


def test_options_go_through_a_pipe_and_take_the_descriptors_place() -> None:
    options = ["-rpcpassword=sp ace\nnew line=equals", "-ipcauth=u:p\u00e9"]
    fd = options_pipe(options)
    assert not os.get_inheritable(fd)
    assert read_options_fd(["-regtest", f"-optionsfd={fd}", "-rpcuser=op"]) == ["-regtest", *options, "-rpcuser=op"]
    with pytest.raises(OSError):
        os.fstat(fd)                                    # read to its end and closed
    assert read_options_fd(["-regtest", "-optionsfdx=1"]) == ["-regtest", "-optionsfdx=1"]


def test_a_secret_method_and_its_parameters_go_through_the_pipe_to_the_end_of_the_line() -> None:
    """CleanCoin-cli's command line (the `CleanCoin` wrapper's `rpc`): a method that takes a
    passphrase or a key goes into the pipe with its parameters, which come back, after every
    option, as they were (one that looks like an option too); another method stays."""
    argv = ["-regtest", "-rpcpassword=a", "walletpassphrase", "pass phrase", "-60", ""]
    public, secret = split_secret(argv, arguments=True)
    assert public == ["-regtest"] and secret == ["-rpcpassword=a", "walletpassphrase", "pass phrase", "-60", ""]
    assert split_secret(argv) == (["-regtest", "walletpassphrase", "pass phrase", "-60", ""], ["-rpcpassword=a"])
    assert split_secret(["-regtest", "getblockcount", "walletpassphrase"], arguments=True) == \
        (["-regtest", "getblockcount", "walletpassphrase"], [])
    fd = options_pipe(secret)
    assert read_options_fd(["-named", *public, f"-optionsfd={fd}"], arguments=True) == ["-named", "-regtest", *secret]
    # Arguments in the pipe are refused where the reader takes none, and before more of argv.
    for reader, argv_after in ((lambda a: read_options_fd(a), []), (lambda a: read_options_fd(a, arguments=True), ["-x"])):
        fd = options_pipe(["walletpassphrase", "hunter2", "60"])
        with pytest.raises(ValueError) as caught:
            reader([f"-optionsfd={fd}", *argv_after])
        assert "hunter2" not in str(caught.value)


def test_more_than_a_pipe_holds_is_refused_without_waiting() -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="more than a pipe"):
        options_pipe(["-rpcauth=" + "x" * PIPE_CAPACITY])
    assert len(os.listdir("/proc/self/fd")) == before   # neither end left open


def _pipe_with(data: bytes) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


@pytest.mark.parametrize("data, message", [
    (b"hunter2\0", "its entry 1 is not an option"),
    (b"-rpcuser=op\0-optionsfd=0\0", "its entry 2 is not an option"),
    (b"-rpcpassword=cut", "not terminated"),
    (b"-rpcpassword=\xff\0", "not UTF-8"),
])
def test_what_is_not_options_is_refused_and_not_echoed(data: bytes, message: str) -> None:
    fd = _pipe_with(data)
    with pytest.raises(ValueError, match=message) as caught:
        read_options_fd([f"-optionsfd={fd}"])
    assert "hunter2" not in str(caught.value) and "cut" not in str(caught.value).replace("cut short", "")


def test_the_node_stops_on_a_descriptor_it_cannot_read(tmp_path: Path) -> None:
    """The real CleanCoin-node: -optionsfd naming no open descriptor, or a value that is not
    one, stops it with the reason (exit 1) before it makes its datadir's network directory.
    What a pipe holds is read and parsed as the command line is (an unknown option in it is
    refused by name); the GUI's node logging in with them: test_other_users.py."""
    node = str(Path(sys.executable).parent / "CleanCoin-node")
    for value, reason in (("250", "-optionsfd=250: cannot read it: Bad file descriptor"),
                          ("x", "-optionsfd: 'x' is not a descriptor number")):
        done = subprocess.run([node, "-regtest", f"-datadir={tmp_path}", f"-optionsfd={value}"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and reason in done.stderr, done.stderr[-1000:]
        assert not (tmp_path / "regtest").exists()
    fd = _pipe_with(b"-rpcuser=op\0-bogusoption=1\0")
    try:
        done = subprocess.run([node, "-regtest", f"-datadir={tmp_path}", f"-optionsfd={fd}"], pass_fds=(fd,),
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    # Read from the pipe: the unknown option in it is refused as one on the command line is.
    assert done.returncode == 1 and "Invalid parameter -bogusoption" in done.stderr, done.stderr[-1000:]
    assert not (tmp_path / "regtest").exists()
