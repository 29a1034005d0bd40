"""Every Python interpreter the package starts keeps the working directory off sys.path.

`python -m MODULE` and `python -c CODE` put the working directory first on sys.path: a
`cleancoin` package another user left there (in /tmp, a download directory) is imported
instead of the installed one. Until 12-08 the zygote and the GUI's CleanCoin-node were started
so, and a planted package ran as the node's user before any sandbox
(test_zygote.py::test_a_cleancoin_package_another_user_leaves_in_the_working_directory_never_runs).
`-P` (Python 3.11) or `-I` (which implies it) keeps it off. This reads every argument list the
package's source writes that starts with `sys.executable` and runs a module or code."""

from __future__ import annotations

import ast
from pathlib import Path

import cleancoin.sandbox

ROOT = Path(cleancoin.sandbox.__file__).parent.parent       # the installed package (a namespace)


def _launches() -> list[tuple[str, int, list[str]]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "sys.executable" not in text:
            continue
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if not isinstance(node, ast.List) or not node.elts:
                continue
            first = node.elts[0]
            if not (isinstance(first, ast.Attribute) and first.attr == "executable"
                    and isinstance(first.value, ast.Name) and first.value.id == "sys"):
                continue
            flags = []
            for elt in node.elts[1:]:
                if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str) and elt.value.startswith("-")):
                    break
                flags.append(elt.value)
            if "-m" in flags or "-c" in flags:
                found.append((str(path.relative_to(ROOT)), node.lineno, flags))
    return found


def test_every_interpreter_started_with_m_or_c_keeps_the_working_directory_off_sys_path() -> None:
    launches = _launches()
    names = {where for where, _, _ in launches}
    assert {"sandbox/zygote.py", "components/init/cleancoin_gui.py", "cli/demo.py"} <= names, names
    unsafe = [(where, line, flags) for where, line, flags in launches
              if not {"-P", "-I"} & set(flags[:flags.index("-m" if "-m" in flags else "-c")])]
    assert unsafe == []
