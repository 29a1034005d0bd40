"""Every screen of a real CleanCoin-gui renders (offscreen): the executable, confined by
gui.toml, attached to a CleanCoin-node the test filled with two wallets and their payments;
the harness (screenshot_site/sitecustomize.py) fills in the send and receive screens, runs
console commands and saves a PNG of the window per screen. Checked here: every screen was
saved, is window-sized, shows more than a blank page, and differs from the others (not pixel
equality with a reference: fonts differ between machines).

`make screenshots` runs this test with CLEANCOIN_SCREENSHOTS=docs/images, which copies the
images there for docs/gui.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .nodes import BIN, cleancoin_node, wait_until

HARNESS = Path(__file__).parent / "screenshot_site" / "sitecustomize.py"
SCREENS = ("overview", "send", "receive", "transactions", "peers", "console", "sandbox")


def _colours(path: Path) -> int:
    from PySide6.QtGui import QImage
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB32)
    assert not image.isNull(), path
    assert image.width() >= 900 and image.height() >= 600, (path, image.size())
    return len(set(memoryview(bytes(image.constBits())).cast("I")))



def _written(path: Path) -> bool:
    """Whether `path` holds a whole JSON document."""
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False

def test_every_screen_of_the_confined_window_renders(datadir: Path) -> None:
    with cleancoin_node(datadir / "node") as node:
        rpc = node.rpc
        for name in ("alice", "bob"):
            rpc.call("createwallet", name)
        alice = rpc.call("getnewaddress", "mining", wallet="alice")
        bob = rpc.call("getnewaddress", "from alice", wallet="bob")
        rpc.call("generatetoaddress", 101, alice)
        rpc.call("sendtoaddress", bob, 12.5, wallet="alice")
        rpc.call("sendtoaddress", bob, 3, wallet="alice")
        rpc.call("generatetoaddress", 1, alice)
        rpc.call("sendtoaddress", alice, 1.25, wallet="bob")          # pending for alice

        site = datadir / "site"
        site.mkdir()
        shutil.copy(HARNESS, site / "sitecustomize.py")
        config_home = datadir / "config"
        out = config_home / "CleanCoin" / "window" / "screens"     # the confined window writes only there
        out.mkdir(parents=True)
        (site / "screenshots.json").write_text(json.dumps({"out": str(out), "wallet": "alice", "pay_to": bob}))
        env = {**os.environ, "PYTHONPATH": str(site), "QT_QPA_PLATFORM": "offscreen",
               "XDG_CONFIG_HOME": str(config_home)}
        # CLEANCOIN_SANDBOX_LEARN=DIR in the test runner's environment makes this a learning run
        # of the window (docs/gui.md, "How gui.toml was measured"), as for the functional suite.
        learn = os.environ.get("CLEANCOIN_SANDBOX_LEARN")
        gui = subprocess.Popen([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={node.datadir}",
                                "-ipcconnect=unix", *([f"-sandboxlearn={learn}"] if learn else [])],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            # The window writes done.json in place: it may exist before it holds its JSON.
            wait_until(lambda: _written(out / "done.json") or gui.poll() is not None, 90, "the screenshots")
            assert _written(out / "done.json"), gui.communicate()[0].decode()[-3000:]
            done = json.loads((out / "done.json").read_text())
            assert "error" not in done, done["error"]
            assert gui.wait(30) == 0
        finally:
            if gui.poll() is None:
                gui.send_signal(signal.SIGTERM)
                gui.wait(30)
            if gui.stdout is not None:
                gui.stdout.close()
        log = (config_home / "CleanCoin" / "CleanCoin-gui-regtest.log").read_text()
        assert "confined" in log, "the screenshots are of a confined window"

    assert set(done["saved"]) == set(SCREENS)
    digests = set()
    for screen in SCREENS:
        path = out / f"gui-{screen}.png"
        assert _colours(path) > 40, f"{screen}: next to nothing rendered"
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == len(SCREENS), "two screens rendered the same image"
    target = os.environ.get("CLEANCOIN_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for screen in SCREENS:
            shutil.copy(out / f"gui-{screen}.png", Path(target) / f"gui-{screen}.png")
