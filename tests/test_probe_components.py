"""CI probe of the shipped component policies: `CleanCoin-sandbox probe` on policies/node.toml
and policies/wallet.toml, as CI runs it, must find zero escapes; and the `fs-read-hidden`
attempt is shown to catch a directory that is not hidden although the policy says so.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cleancoin.sandbox import probe
from cleancoin.sandbox.policy_files import shipped_names
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
from cleancoin.sandbox.variables import referenced
from ports import free_port as _free_port

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")



def _probe(*args: str) -> dict[str, object]:
    result = subprocess.run([TOOL, "probe", "--json", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return json.loads(result.stdout)


def _probe_any(*args: str) -> dict[str, object]:
    """As _probe, whatever the exit status (an escape the test does not judge)."""
    result = subprocess.run([TOOL, "probe", "--json", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr
    return json.loads(result.stdout)


def _attempts(data: dict[str, object]) -> dict[str, dict[str, object]]:
    return {a["name"]: a for a in data["attempts"]}  # type: ignore[union-attr, index]


def test_probe_node_policy_has_no_escapes(base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    netdir = tmp_path / "regtest"
    (netdir / "wallets").mkdir(parents=True)
    (netdir / "CleanCoin.conf").write_text("server=1\n")       # mainnet's place for it
    (netdir / "sandbox.log").write_text("a refusal\n")
    data = _probe("--policy", shipped_policy("node"), "--var", f"datadir={netdir}",
                  "--var", f"port={_free_port()}", "--var", f"rpcport={_free_port()}",
                  "--var", f"ipcport={_free_port()}")
    assert data["escapes"] == []
    attempts = _attempts(data)
    assert not [n for n, a in attempts.items() if a["outcome"] == "error"], attempts
    # Denied beside allowed: the hidden wallets directory, the writable datadir.
    assert attempts["fs-read-hidden"]["outcome"] == "denied"
    assert attempts["fs-read-hidden"]["detail"] == "ENOENT (hide: covered by an empty tmpfs)"
    assert attempts["fs-write-granted"]["outcome"] == "allowed"
    # ... and the conf file in it, which the next (unconfined) start reads, stays as it was.
    assert attempts["fs-modify-protected"]["outcome"] == "denied", attempts["fs-modify-protected"]
    assert (netdir / "CleanCoin.conf").read_text() == "server=1\n"
    assert (netdir / "sandbox.log").read_text() == "a refusal\n"
    # The node connects to no peer by itself (its connect broker does: 12-06, h35), by no
    # spelling of the loopback, sends no UDP, and binds only its two ports.
    for name in ("net-tcp-connect", "net-connect-loopback", "net-udp-send"):
        assert attempts[name]["expected"] == attempts[name]["outcome"] == "denied", attempts[name]
    assert attempts["net-tcp-bind"]["outcome"] == "denied"
    assert attempts["exec-bin-true"]["outcome"] == "denied"
    # Since 12-07 it makes no unix socket once confined (node.sock is bound and a wallet's
    # socket connected before): a socket in a read-only grant is out of reach (until then it
    # was reachable, though no shipped grant of its held one), and so is the host's abstract
    # namespace, where it bound a name that a host client then connected to.
    reach = attempts["unix-socket-in-read-grant"]
    assert reach["expected"] == reach["outcome"] == "denied", reach
    claim = attempts["net-abstract-bind"]
    assert claim["expected"] == claim["outcome"] == "denied", claim
    assert claim["detail"] == "EAFNOSUPPORT (seccomp: socket family not allowed)", claim
    # ... and, since 12-07 (later), with a socket of a pair, the socketpair(AF_UNIX) its event
    # loop needs: until then that took a name of the host's (a squat; in its own network
    # namespace now, where its filter refuses bind(2) as well).
    pair = attempts["net-abstract-bind-pair"]
    assert pair["expected"] == pair["outcome"] == "denied", pair
    assert pair["detail"].startswith("EPERM"), pair
    assert attempts["proc-ptrace-parent"]["outcome"] == "denied"
    # CleanCoin-node restricts itself and keeps its output: on a terminal, write-only (h32),
    # since 12-06 pipes to a relay that shows escape sequences as text (OSC 52 reached it raw).
    assert attempts["terminal-self-restriction"]["outcome"] == "denied", attempts["terminal-self-restriction"]
    escape = attempts["terminal-escape-self-restriction"]
    assert escape["expected"] == escape["outcome"] == "denied", escape
    # ... and it cannot set that terminal's modes by any request (h33: TCSETA, TCSETS2 and kin did).
    modes = attempts["terminal-modes-self-restriction"]
    assert modes["expected"] == modes["outcome"] == "denied", modes
    # The node's policy leaves modes to the node (its umask): chmod 0644 goes through.
    assert attempts["fs-loosen-mode"]["expected"] == attempts["fs-loosen-mode"]["outcome"] == "allowed"
    assert not os.listdir(netdir / "wallets")   # the planted canary was removed


def test_probe_wallet_policy_has_no_escapes(base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    walletdir = tmp_path / "regtest" / "wallets"
    walletdir.mkdir(parents=True)
    data = _probe("--policy", shipped_policy("wallet"), "--var", f"walletdir={walletdir}")
    assert data["escapes"] == []
    attempts = _attempts(data)
    assert not [n for n, a in attempts.items() if a["outcome"] == "error"], attempts
    assert attempts["fs-write-granted"]["outcome"] == "allowed"
    for name in ("net-tcp-connect", "net-tcp-bind", "net-udp-send", "net-abstract-unix",
                 "exec-bin-true", "proc-ptrace-parent"):
        assert attempts[name]["outcome"] == "denied", attempts[name]
    # The wallet makes no socket at all: the filter kills it at socket(2), before any family.
    assert "SIGSYS" in str(attempts["net-tcp-connect"]["detail"])
    # Its files keep their owner's modes (h39): chmod 0644 and fchmod 0606 refused.
    loosen = attempts["fs-loosen-mode"]
    assert loosen["expected"] == loosen["outcome"] == "denied" and "EPERM" in str(loosen["detail"]), loosen
    reach = attempts["unix-socket-in-read-grant"]
    assert reach["expected"] == reach["outcome"] == "denied" and "SIGSYS" in str(reach["detail"]), reach
    # mlock is the wallet's (its seeds out of swap); until 12-07 it kept the launcher's memlock
    # limit (8 MiB here, unlimited on some hosts): 4 MiB pinned in RAM. Its own 64 KiB now.
    pin = attempts["rlimit-memlock-4mib"]
    assert pin["expected"] == pin["outcome"] == "denied", pin


def test_the_connect_broker_makes_no_unix_socket(base_sandbox) -> None:  # noqa: ANN001
    """Until 12-07 the broker's filter let it make a unix socket, and the probe's fake
    ssh-agent in a directory granted read-only was reached ('connected to a listener in a
    read-only grant'); now socket(AF_UNIX) answers EAFNOSUPPORT, and inet sockets and the
    socketpair (its channel, the probe's own) still work."""
    attempts = _attempts(_probe_any("--policy", shipped_policy("connect-broker")))
    reach = attempts["unix-socket-in-read-grant"]
    assert reach["expected"] == reach["outcome"] == "denied", reach
    assert reach["detail"] == "EAFNOSUPPORT (seccomp)", reach
    assert attempts["net-tcp-connect"]["outcome"] == "allowed", attempts["net-tcp-connect"]


def _variables_of(path: str) -> set[str]:
    """The variables a policy file and the files it extends name."""
    text = Path(path).read_text()
    found = set(referenced(text))
    for base in tomllib.loads(text).get("extends", []):
        found |= _variables_of(os.path.join(os.path.dirname(path), base if base.endswith(".toml") else f"{base}.toml"))
    return found


def test_the_probe_finds_no_escape_in_any_shipped_policy(base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """Every policy CleanCoin ships, probed as CI would (all at once: each probe mostly waits
    on its attempts' children): no escape and no attempt that could not be made. Until 12-07
    connect-broker's had both: its `fsize = 0` was applied before the denial monitor started,
    which inherited it and could not write a line (`denial-log-bury` escaped), and the
    fs-write-granted control, judged allowed, failed with EFBIG."""
    netdir = tmp_path / "regtest"
    (netdir / "wallets").mkdir(parents=True)
    (tmp_path / "Xauthority").write_text("")
    display = socket.socket(socket.AF_UNIX)      # gui-wayland's compositor socket must exist
    display.bind(str(tmp_path / "wayland-0"))
    display.close()
    values = {"datadir": netdir, "walletdir": netdir / "wallets", "tmpdir": tmp_path,
              "xauthority": tmp_path / "Xauthority", "wayland_socket": tmp_path / "wayland-0",
              "port": _free_port(), "rpcport": _free_port(), "ipcport": _free_port(),
              "ipcconnectport": _free_port()}
    names = shipped_names()
    assert {"connect-broker", "node", "wallet", "gui", "strict"} <= set(names), names
    # Each policy gets the variables it names, no more: the probe writes into ${datadir} when
    # it has one, a directory base/python does not grant.
    runs = {name: subprocess.Popen([TOOL, "probe", "--json", "--policy", name,
                                    *(f"--var={var}={values[var]}" for var in _variables_of(shipped_policy(name))
                                      if var in values)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in names}
    found = {}
    attempts: dict[str, dict[str, dict[str, object]]] = {}
    for name, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode in (0, 1), (name, out[-2000:], err[-2000:])
        data = json.loads(out)
        found[name] = (data["escapes"], data["errors"])
        attempts[name] = _attempts(data)
    assert {name: result for name, result in found.items() if result != ([], [])} == {}
    # Every policy of CleanCoin-node keeps it from taking an abstract name of the host's, with
    # a socket of its own or of a pair. Until 12-07 (later) node-ipcconnect-unix let it bind
    # one (allowed, and judged so: no escape) and node.toml a pair's; since then node.toml and
    # node-ipcconnect-unix have a network namespace of their own, and both refuse bind(2)
    # (node-ipcconnect-tcp.toml, the host's network, is gone since 12-07: a -ipcconnect=tcp
    # node keeps node.toml, its wallet's port reached by its connect broker).
    assert "node-ipcconnect-tcp" not in names
    for name in ("node", "node-ipcconnect-unix"):
        for attempt in ("net-abstract-bind", "net-abstract-bind-pair"):
            claim = attempts[name][attempt]
            assert claim["expected"] == claim["outcome"] == "denied", (name, claim)


def test_probe_catches_a_directory_that_is_not_hidden(base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """Judged by node.toml, enforced without its hide: reading the wallets is an escape."""
    netdir = tmp_path / "regtest"
    (netdir / "wallets").mkdir(parents=True)
    unhidden = tmp_path / "unhidden.toml"
    unhidden.write_text(Path(shipped_policy("node")).read_text()
                        .replace('extends = ["base/python.toml"]',
                                 f'extends = ["{shipped_policy("base/python")}"]')
                        .replace('hide = ["${datadir}/wallets"]', ""))
    variables = {"datadir": str(netdir), "port": str(_free_port()), "rpcport": str(_free_port()),
                 "ipcport": str(_free_port()),
                 "tmpdir": str(tmp_path)}
    result = probe.probe_against(load_policy(shipped_policy("node")), load_policy(str(unhidden)),
                                 variables)
    assert [a.name for a in result.escapes] == ["fs-read-hidden"], result.to_text()


def test_probe_catches_a_wallet_that_may_loosen_its_modes(base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """Judged by wallet.toml, enforced without its chmod and fchmod rules: group and other
    bits given to a file of wallets/ are an escape (h39's attack, as CI would catch it)."""
    walletdir = tmp_path / "regtest" / "wallets"
    walletdir.mkdir(parents=True)
    text = Path(shipped_policy("wallet")).read_text().replace(
        'extends = ["base/python.toml"]', f'extends = ["{shipped_policy("base/python")}"]')
    loose = tmp_path / "loose.toml"
    loose.write_text(text.replace('op = "masked_ne", mask = 0o077, value = 0', 'op = "masked_eq", mask = 0o7000, value = 0o7000'))
    assert loose.read_text() != text
    variables = {"walletdir": str(walletdir), "tmpdir": str(tmp_path)}
    result = probe.probe_against(load_policy(shipped_policy("wallet")), load_policy(str(loose)), variables)
    assert [a.name for a in result.escapes] == ["fs-loosen-mode"], result.to_text()


def test_check_accepts_the_component_policies() -> None:
    result = subprocess.run([TOOL, "check", "node", "wallet"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "node" in result.stdout and "wallet" in result.stdout


@pytest.mark.parametrize("left_writable", ["CleanCoin.conf", "sandbox.log"])
def test_probe_catches_a_protected_file_left_writable(base_sandbox, tmp_path: Path,  # noqa: ANN001
                                                      left_writable: str) -> None:
    """Judged by node.toml, enforced without one of its read-only grants inside the datadir:
    the confined node could rewrite the conf file its next, unconfined start reads
    (sandbox=0), or erase the record of its refusals. An escape, whichever it is (the attempt
    once tried only the first such file)."""
    netdir = tmp_path / "regtest"
    (netdir / "wallets").mkdir(parents=True)
    conf = netdir / "CleanCoin.conf"
    conf.write_text("server=1\n")
    (netdir / "sandbox.log").write_text("a refusal\n")
    writable = tmp_path / "writable-conf.toml"
    grant = f'{{ path = "${{datadir}}/{left_writable}", optional = true }},'
    text = Path(shipped_policy("node")).read_text()
    assert grant in text
    writable.write_text(text.replace('extends = ["base/python.toml"]',
                                     f'extends = ["{shipped_policy("base/python")}"]')
                        .replace(grant, ""))
    variables = {"datadir": str(netdir), "port": str(_free_port()), "rpcport": str(_free_port()),
                 "ipcport": str(_free_port()), "tmpdir": str(tmp_path)}
    result = probe.probe_against(load_policy(shipped_policy("node")), load_policy(str(writable)),
                                 variables)
    assert [a.name for a in result.escapes] == ["fs-modify-protected"], result.to_text()
    assert left_writable in result.escapes[0].detail
    assert conf.read_text() == "server=1\n"       # the attempt changes nothing it reaches
    assert (netdir / "sandbox.log").read_text() == "a refusal\n"
