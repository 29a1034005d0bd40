"""CleanCoin-node's start-up stays short (issue #16): what its zygote path imports, and when.

CleanCoin-node launches its zygote (a fresh interpreter that preloads the wallet's code) as
soon as its options are read, and asks it for the wallet process as soon as its log is open,
so that the zygote's imports and the wallet's sandbox are built on the other core while the
node imports its own code (docs/multiprocess.md, start-up order). These tests run the
installed code in fresh interpreters and fail when a change brings heavy imports back onto
that path or asks for the wallet only after the node's imports again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

#: What launching the zygote must not import: the policy model, the launcher and every
#: enforcement step come later (`wallet_spec`, `restrict_self`).
NOT_AT_LAUNCH = ("cleancoin.sandbox.launcher", "cleancoin.sandbox.steps", "cleancoin.sandbox.model",
                 "cleancoin.sandbox.policy_loader", "cleancoin.sandbox.policy_spec",
                 "cleancoin.sandbox.plan", "cleancoin.sandbox.report", "cleancoin.sandbox.seccomp",
                 "cleancoin.sandbox.denial_log", "tomllib", "capnp", "asyncio",
                 "cleancoin.components.init.cleancoin_node", "cleancoin.components.rpc")
#: Never on the zygote's or the node's IPC path: importlib.resources drags in pathlib,
#: tempfile, shutil and zipfile (about 6 ms per process; the schemas are found beside the code).
NEVER = ("importlib.resources", "zipfile", "tempfile")


def _run(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=120, cwd=tempfile.gettempdir())
    line = next((l for l in result.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, result.stdout + result.stderr
    return json.loads(line[len("RESULT "):])


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


def test_launching_the_zygote_imports_no_enforcement_code() -> None:
    """What CleanCoin-node has imported when it launches its zygote (mp_node_main.main)."""
    modules = _run("import json, sys\n"
                   "import cleancoin.cli.mp_node_main\n"
                   "from cleancoin.components.node.wallet_component import launch_zygote, uses_running_wallet\n"
                   "print('RESULT ' + json.dumps(sorted(sys.modules)))\n")
    assert "cleancoin.sandbox.zygote" in modules
    assert _loaded(modules, NOT_AT_LAUNCH) == []
    assert _loaded(modules, NEVER) == []


#: What the zygote must not import: every wallet process of a node is a fork of it, so a
#: module here costs memory in the zygote's image and start-up CPU in every node (issue #16).
#: The standalone executable's option table and RPC server (cleancoin_wallet.py), and
#: `cryptography` (ChaCha20-Poly1305, imported at a wallet's first encryption or unlock: some
#: 6 MiB mapped and 1.3 MiB of objects for the few wallets that are encrypted), and `shutil`
#: (with bz2, lzma and zlib: 2.4 ms, for restorewallet only).
NOT_IN_ZYGOTE = ("cleancoin.components.init.cleancoin_wallet", "cleancoin.components.common.options",
                 "cleancoin.components.common.conf", "cleancoin.components.rpc.server", "aiohttp",
                 "argparse", "cryptography", "cleancoin.components.node", "cleancoin.sandbox.policy_loader",
                 "tomllib", "cleancoin.sandbox.learn", "shutil",
                 # TLS: a wallet process talks over a unix socket pair only (since 12-07)
                 "ssl", "_ssl")

ZYGOTE = """
import importlib, json, sys
import cleancoin.sandbox.zygote
from cleancoin.sandbox import launcher, report_registry
from cleancoin.sandbox.plan import Plan
from cleancoin.components.node.wallet_component import WALLET_PRELOAD, WALLET_TARGET
before = set(sys.modules)   # the node's side module above is not the zygote's
for spec in (WALLET_PRELOAD, WALLET_TARGET):
    module, _, function = spec.partition(":")
    getattr(importlib.import_module(module), function)
module, _, function = WALLET_PRELOAD.partition(":")
getattr(importlib.import_module(module), function)()
# A name mapped to None is a module kept out (the preload's `ssl`), not one loaded.
print("RESULT " + json.dumps(sorted(m for m in sys.modules if sys.modules[m] is not None and (
    m in (set(sys.modules) - before) or not m.startswith("cleancoin.components.node")))))
"""


def test_the_zygote_and_the_wallet_preload_import_only_what_a_wallet_process_uses() -> None:
    """The zygote process's own imports, the wallet's preload and target (what every wallet
    process starts from), schemas loaded: no importlib.resources, nothing of the standalone
    CleanCoin-wallet, no `cryptography` (on the previous code the preload imported both), no
    `ssl` (asyncio imported it, 0.85 MiB, before 12-07)."""
    modules = _run(ZYGOTE)
    assert "capnp" in modules and "cleancoin.components.wallet.service" in modules
    assert "cleancoin.components.init.wallet_process" in modules
    assert _loaded(modules, NEVER) == []
    assert _loaded(modules, NOT_IN_ZYGOTE) == []


#: Runs CleanCoin-node's main() until it fits the wallet's policy for its zygote, and notes
#: whether the node's start-up code (cleancoin_node, the wallet process's handle)
#: was imported by then; the configure call then fails on purpose, and the node stops with
#: its usual error. (The option checks, as in CleanCoind, import the RPC server and the P2P
#: code before: a bad -rpcbind or -connect stops a node before its datadir is touched.)
ORDER = """
import json, sys
from cleancoin.sandbox import zygote
seen = {}
def configure(self, components, **kwargs):
    seen["node code imported"] = sorted(m for m in sys.modules if m in (
        "cleancoin.components.init.cleancoin_node", "cleancoin.components.node.remote_wallet"))
    self.stop()
    raise OSError("stopped here by the test")
zygote.Zygote.configure = configure
from cleancoin.cli.mp_node_main import main
rc = main(sys.argv[1:])
print("RESULT " + json.dumps({"rc": rc, **seen}))
"""


def test_the_wallet_is_asked_for_before_the_node_imports_its_own_code(tmp_path: Path) -> None:
    """The zygote gets the wallet's plan and the spawn request before the node imports the
    rest of its start-up code: the wallet's sandbox is built meanwhile, not after (on the
    previous code `configure` ran inside cleancoin_node.run, after its imports)."""
    result = _run(ORDER, "-regtest", f"-datadir={tmp_path}", "-printtoconsole=0", "-port=1", "-rpcport=2")
    assert result["rc"] == 1
    assert result["node code imported"] == []
    log = (tmp_path / "regtest" / "debug.log").read_text()
    assert "cannot prepare the wallet's sandbox: stopped here by the test" in log


DOCSTRINGS = """
import dataclasses, json, sys
import cleancoin.cli.mp_node_main
from cleancoin.components.init import cleancoin_node
cleancoin_node._import_node_modules()
from cleancoin.sandbox import launcher, self_restrict, policy_loader, plan_compiler, zygote
from cleancoin.components.init.wallet_process import import_everything
import_everything()
missing = []
for name, module in list(sys.modules.items()):
    if not name.startswith("cleancoin."):
        continue
    for value in list(vars(module).values()):
        if (isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == name
                and "__doc__" in vars(value) and (value.__doc__ or "").startswith(value.__name__ + "(")):
            missing.append(name + "." + value.__qualname__)
print("RESULT " + json.dumps(sorted(missing)))
"""


def test_every_dataclass_on_the_start_path_has_a_docstring() -> None:
    """Without a docstring, creating a dataclass also computes one with inspect.signature
    (docs/audit.md, "Start-up time"): every dataclass CleanCoin-node and its zygote import
    has its own."""
    assert _run(DOCSTRINGS) == []
