"""Functional: SIGKILL at random moments of `encryptwallet` on a running node (issue #11 item 9).

Each round creates a wallet, reads its plaintext seed from the file, starts `encryptwallet` and
SIGKILLs, after a random part of the time one uninterrupted call takes here: CleanCoind; or,
with CleanCoin-node, its wallet process, the node itself or the node's whole process group
(node and zygote; the wallet process dies with them). Then, before anything reopens the wallet:
if the files say the wallet is encrypted, no file of its directory may hold the seed, the
master key or a derived key. After the node (or the wallet process) is back, the wallet is in
exactly the state its files said, works in that state, and holds no plaintext once encrypted.
tests/test_wallet_encrypt_crash.py kills before every single step instead; this test shows the
same on the real executables, the sandboxed wallet process included.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from pathlib import Path

from framework import TestNode, is_multiprocess, wait_gone, wait_until
from wallet_secrets import committed_state, files_holding, read_seed, secrets_of
from cleancoin.components.rpc.client import RpcTransportError
from cleancoin.components.rpc.errors import RpcError

ROUNDS = 4
PASSPHRASE = "a passphrase for the kill test"


def wallet_pid(node: TestNode) -> int:
    procs = [p for p in node.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"]
    assert len(procs) == 1 and procs[0]["pid"], procs
    return int(procs[0]["pid"])


def restarts(node: TestNode) -> int:
    return int(node.rpc.getprocessinfo()["processes"][1]["restarts"])


def encrypt_in_background(node: TestNode, name: str) -> threading.Thread:
    def call() -> None:
        try:
            node.client.call("encryptwallet", PASSPHRASE, wallet=name)
        except (RpcError, RpcTransportError, OSError):
            pass                          # the kill cut it short
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_kill_9_during_encryptwallet_leaves_no_plaintext(tmp_path: Path) -> None:
    node = TestNode(0, tmp_path, new_session=True)
    node.start()
    seed = int(os.environ.get("CLEANCOIN_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    targets = ["wallet", "node", "group"] if is_multiprocess() else ["node"]
    outcome: collections.Counter[str] = collections.Counter()
    try:
        node.rpc.createwallet("measure")
        t0 = time.monotonic()
        node.client.call("encryptwallet", PASSPHRASE, wallet="measure")
        duration = time.monotonic() - t0
        node.rpc.unloadwallet("measure")
        for i in range(ROUNDS):
            name = f"w{i}"
            node.rpc.createwallet(name)
            wallet_dir = node.netdatadir / "wallets" / name
            needles = secrets_of(read_seed(wallet_dir))
            target = targets[i % len(targets)]
            pid = wallet_pid(node) if is_multiprocess() else node.process.pid  # type: ignore[union-attr]
            before = restarts(node) if is_multiprocess() else 0
            # Mostly the second half of the call, where the commit happens, and past its end.
            delay = duration * rng.uniform(0.3, 1.1)
            thread = encrypt_in_background(node, name)
            time.sleep(delay)
            if target == "wallet":
                os.kill(pid, signal.SIGKILL)
            elif target == "node":
                node.kill()
            else:
                node.kill_group()
            wait_gone(pid)                     # nothing of the old wallet still writes
            thread.join(30)
            encrypted, _ = committed_state(wallet_dir, tmp_path / "scratch")
            outcome[f"{target}:{'encrypted' if encrypted else 'not encrypted'}"] += 1
            where = f"round {i} (seed {seed}), {target} killed after {delay * 1000:.0f} ms"
            if encrypted:
                assert files_holding(wallet_dir, needles) == [], where
            # Back up: the node restarts its wallet process, or we restart the node.
            if target == "wallet":
                wait_until(lambda: restarts(node) > before and name in node.rpc.listwallets(),
                           what="wallet process restart")
            else:
                node.start()
                node.rpc.loadwallet(name)
            info = node.client.call("getwalletinfo", wallet=name)
            assert ("unlocked_until" in info) == encrypted, (where, info)
            if encrypted:
                node.client.call("walletpassphrase", PASSPHRASE, 5, wallet=name)
                node.client.call("walletlock", wallet=name)
            else:
                node.client.call("encryptwallet", PASSPHRASE, wallet=name)
            assert files_holding(wallet_dir, needles) == [], where
            node.rpc.unloadwallet(name)
            assert files_holding(wallet_dir, needles) == [], where
        print(f"seed {seed}, encryptwallet takes {duration * 1000:.0f} ms; outcomes:",
              dict(outcome))
    finally:
        node.cleanup()


def test_kill_9_during_createwallet_with_a_passphrase_never_leaves_it_unencrypted(tmp_path: Path) -> None:
    """createwallet with a passphrase used to create the wallet in plain and encrypt it
    afterwards: a kill in between left an unencrypted wallet (with its seed on disk) that the
    caller had asked to be encrypted. Now the seed is encrypted before the first write: after
    any kill the wallet is either absent or encrypted."""
    node = TestNode(0, tmp_path, new_session=True)
    node.start()
    seed = int(os.environ.get("CLEANCOIN_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    outcome: collections.Counter[str] = collections.Counter()
    try:
        t0 = time.monotonic()
        node.rpc.createwallet("measure", False, False, PASSPHRASE)
        duration = time.monotonic() - t0
        node.rpc.unloadwallet("measure")
        for i in range(ROUNDS - 1):
            name = f"p{i}"
            pid = wallet_pid(node) if is_multiprocess() else node.process.pid  # type: ignore[union-attr]
            before = restarts(node) if is_multiprocess() else 0

            def call(n: str = name) -> None:
                try:
                    node.rpc.createwallet(n, False, False, PASSPHRASE)
                except (RpcError, RpcTransportError, OSError):
                    pass
            thread = threading.Thread(target=call, daemon=True)
            thread.start()
            delay = duration * rng.uniform(0.2, 1.0)
            time.sleep(delay)
            if is_multiprocess():
                os.kill(pid, signal.SIGKILL)
            else:
                node.kill()
            wait_gone(pid)
            thread.join(30)
            wallet_dir = node.netdatadir / "wallets" / name
            where = f"round {i} (seed {seed}), killed after {delay * 1000:.0f} ms"
            exists = (wallet_dir / "wallet.sqlite").exists()
            if exists:
                assert committed_state(wallet_dir, tmp_path / "scratch")[0], where
            outcome["created" if exists else "absent"] += 1
            if is_multiprocess():
                wait_until(lambda: restarts(node) > before, what="wallet process restart")
            else:
                node.start()
            if exists:
                if name not in node.rpc.listwallets():
                    node.rpc.loadwallet(name)
                info = node.client.call("getwalletinfo", wallet=name)
                assert "unlocked_until" in info, (where, info)
                node.client.call("walletpassphrase", PASSPHRASE, 5, wallet=name)
                node.rpc.unloadwallet(name)
        print(f"seed {seed}, createwallet takes {duration * 1000:.0f} ms; outcomes:", dict(outcome))
    finally:
        node.cleanup()
