"""Test harness (never installed): runs attacker code inside CleanCoin-node's confined processes.

A functional test copies this file into a directory of its own, writes `attack.json` beside
it and starts CleanCoin-node with PYTHONPATH pointing there. Python imports `sitecustomize`
at start-up in every interpreter that has that PYTHONPATH: the node, and the processes it
starts with its environment. This module then wraps two functions of the product, so that the
attacker code runs exactly where a compromised component's code would:

- `node`: after `restrict_self` returned, inside the confined CleanCoin-node;
- `wallet`: at the start of the wallet process's entry point, inside its sandbox (every
  sandbox step has been applied by then);
- `standalone`: in a CleanCoin-wallet started on its own, once it has confined itself.

The attack's source is read here, at start-up, because the confined side cannot read the
test directory. It is a function body run with `ctx` (the JSON config plus `role`) and
`report(name, escaped, detail)`; the results go to `result_<role>.json` in a directory the
confined side may write (the config names it), rewritten after every report, so that a
process the sandbox kills in the middle of an attempt leaves `attempt(name)`'s mark ("killed
during the attempt") behind, and an attack that ran to its end says so with an `_end` entry
(a test must not judge a file that later attempts will still add to). With `"<role>_delay": seconds` the attack runs in a thread that
long after the component started serving. Nothing here weakens the sandbox: it only decides
what code runs inside it.
"""

import json
import os
import sys
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_PATH = os.path.join(_HERE, "attack.json")


def _runner(role, config):
    source = config.get(role)
    if not source:
        return None
    code = compile(source, f"<attack {role}>", "exec")

    out = config["results"][role]
    delay = config.get(f"{role}_delay", 0)

    def attack():
        results = {}

        def save():
            try:
                with open(out + ".tmp", "w") as handle:
                    json.dump(results, handle)
                os.replace(out + ".tmp", out)
            except OSError as exc:
                print(f"attack harness: cannot write {out}: {exc}", file=sys.stderr)

        def attempt(name):
            results[name] = {"escaped": None, "detail": "killed during the attempt"}
            save()

        def report(name, escaped, detail=""):
            results[name] = {"escaped": bool(escaped), "detail": str(detail)[:500]}
            save()

        ctx = dict(config.get("vars", {}), role=role, pid=os.getpid())
        try:
            exec(code, {"ctx": ctx, "report": report, "attempt": attempt, "__name__": "attack"})
            results["_end"] = {"escaped": False, "detail": "every attempt made"}
            save()
        except SystemExit:
            raise
        except BaseException:   # noqa: BLE001 - the test must see what went wrong
            results["_error"] = {"escaped": False, "detail": traceback.format_exc()[-2000:]}
            save()

    def run():
        if not delay:
            attack()
            return
        import threading
        import time

        def later():
            time.sleep(delay)
            attack()
        threading.Thread(target=later, daemon=True).start()
    return run


def _install(config):
    node_attack = _runner("node", config)
    wallet_attack = _runner("wallet", config)
    standalone_attack = _runner("standalone", config)
    if standalone_attack is not None:
        from cleancoin.components.init import cleancoin_wallet as standalone
        original_confine = standalone._confine

        def confine(*args, **kwargs):
            original_confine(*args, **kwargs)
            standalone_attack()
        standalone._confine = confine
    if node_attack is not None:
        from cleancoin.sandbox import self_restrict
        original_restrict = self_restrict.restrict_self

        def restrict_self(*args, **kwargs):
            report = original_restrict(*args, **kwargs)
            node_attack()
            return report
        self_restrict.restrict_self = restrict_self
    if wallet_attack is not None:
        from cleancoin.components.init import wallet_process
        original_entry = wallet_process.serve_node

        def serve_node(*args, **kwargs):
            wallet_attack()
            return original_entry(*args, **kwargs)
        wallet_process.serve_node = serve_node


if os.path.exists(_CONFIG_PATH):
    with open(_CONFIG_PATH) as _handle:
        _install(json.load(_handle))
