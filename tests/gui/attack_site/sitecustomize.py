"""Test harness (never installed): runs attacker code inside a CleanCoin-gui process.

tests/gui/test_gui_attacks.py copies this file into a directory of its own, writes
`attack.json` beside it and starts CleanCoin-gui with PYTHONPATH pointing there. Python imports
`sitecustomize` at start-up; in the CleanCoin-gui process (and nowhere else: the node it starts
inherits PYTHONPATH, the check below leaves it alone) this module wraps `GuiApp.show`, so the
attacker code runs exactly where a compromised window's code would: after the process confined
itself with gui.toml (or, with -sandbox=0, where it would have), with its IPC connection to
the node open, its window shown and its event loop running.

The attack's source is read here, at start-up, because the confined side cannot read the test
directory. It is a function body run with `ctx` (the JSON "vars", plus `node_pid`, read from
the window's connection) and `report(name, escaped, detail)`; results go to the file the
config names (in the GUI's settings directory, which it may write), rewritten after every
report. Nothing here weakens the sandbox: it only decides what code runs inside it.
"""

import json
import os
import re
import sys
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_PATH = os.path.join(_HERE, "attack.json")


def _attack(app, config):
    results = {}
    out = config["results"]

    def save():
        try:
            with open(out + ".tmp", "w") as handle:
                json.dump(results, handle)
            os.replace(out + ".tmp", out)
        except OSError as exc:
            print(f"attack harness: cannot write {out}: {exc}", file=sys.stderr)

    def report(name, escaped, detail=""):
        # escaped None: "the attempt is under way" (it stays so if the process is killed in it).
        results[name] = {"escaped": None if escaped is None else bool(escaped), "detail": str(detail)[:500]}
        save()

    match = re.search(r"pid (\d+)", app.client.transport)
    ctx = dict(config["vars"], pid=os.getpid(), node_pid=int(match.group(1)) if match else 0)
    try:
        exec(compile(config["source"], "<attack gui>", "exec"), {"ctx": ctx, "report": report, "__name__": "attack"})
    except BaseException:   # noqa: BLE001 - the test must see what went wrong
        results["_error"] = {"escaped": False, "detail": traceback.format_exc()[-2000:]}
    results["_done"] = {"escaped": False, "detail": ""}
    save()


def _install(config):
    from cleancoin.components.gui import app as gui_app
    original_show = gui_app.GuiApp.show

    def show(self):
        original_show(self)
        _attack(self, config)
    gui_app.GuiApp.show = show


if os.path.exists(_CONFIG_PATH) and os.path.basename(sys.argv[0]) == "CleanCoin-gui":
    with open(_CONFIG_PATH) as _handle:
        _install(json.load(_handle))
