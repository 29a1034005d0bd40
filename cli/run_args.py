"""The arguments of `CleanCoin-sandbox run`, read without argparse when they are plain.

argparse with what it imports (gettext, locale, warnings) and the parser it builds are
about 8 ms of every `run` (docs/audit.md, "Start-up time"), a command CI jobs call many
times. `parse` reads the common, well-formed spellings of `run`'s options and gives the
same namespace argparse would (tests/test_cli_sandbox.py compares the two over many
command lines); anything else (help, an abbreviated or unknown option, a missing value, a
value that looks like an option, a choice that is not one, no --policy) is not read here
but left to argparse, so that every usage error and its message stay argparse's.
"""

from __future__ import annotations

from types import SimpleNamespace

#: Options that take a value, and the values a choice allows (None: any).
_VALUED = {"--policy": None, "--datadir": None, "--var": None, "--denials": ("log", "verbose")}
#: Options that take none.
_FLAGS = ("--report", "--json")


def parse(argv: list[str]) -> SimpleNamespace | None:
    """`argv` (the tool's arguments, help spellings already normalised) as argparse reads
    `run`'s, or None when they are not `run` or not plain enough to be read here."""
    if not argv or argv[0] != "run":
        return None
    values: dict[str, object] = {"policy": None, "datadir": None, "var": [], "report": False,
                                 "denials": None, "json": False}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            break                        # the program: the rest is its (argparse.REMAINDER)
        name, sep, value = arg.partition("=")
        if name in _FLAGS and not sep:
            values[name[2:]] = True
            i += 1
            continue
        if name not in _VALUED:
            return None                  # unknown, abbreviated or -h: argparse's to answer
        if not sep:
            if i + 1 >= len(argv):
                return None              # "expected one argument"
            value = argv[i + 1]
            if value.startswith("-"):
                return None              # argparse would take it for an option
            i += 1
        choices = _VALUED[name]
        if choices is not None and value not in choices:
            return None                  # "invalid choice"
        if name == "--var":
            values["var"].append(value)  # type: ignore[union-attr]
        else:
            values[name[2:]] = value
        i += 1
    if values["policy"] is None:
        return None                      # "the following arguments are required"
    return SimpleNamespace(command_name="run", command=argv[i:], **values)
