"""Every command line in the docs names options, subcommands and RPC methods that exist.

The README and docs/ are how an operator learns the tools, so a renamed option or a removed
RPC must fail here, not in their terminal. Each shell block of README.md and docs/*.md is read;
for each line that runs one of our executables, every `-option` must be one that executable
knows (its option table, or CleanCoin-sandbox's argparse parser), CleanCoin-sandbox's
subcommand must exist, and CleanCoin-cli's method must be a node or wallet RPC. The IPC
examples themselves run in test_ipc_docs.py.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from cleancoin.cli import cli_main, mp_node_main, node_main, sandbox_main, wallet_main
from cleancoin.components.init import cleancoin_wallet
from cleancoin.components.node.rpc_methods import RESULTS as NODE_RPCS
from cleancoin.components.wallet.rpc import RESULTS as WALLET_RPCS

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(?:sh|console|bash|shell|text)?\n(.*?)^```", re.S | re.M)
# Methods that exist only in CleanCoin-node (the process table) or as the CLI's own commands.
_EXTRA_RPCS = {"getprocessinfo", "stop", "help"}


@dataclass(frozen=True)
class CommandLine:
    doc: str
    line: int
    words: list[str]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {' '.join(self.words)}"


def _options(table: list) -> set[str]:   # type: ignore[type-arg]
    return {o.name for o in table}


NODE_OPTIONS = _options(node_main.OPTIONS)
KNOWN_OPTIONS: dict[str, set[str]] = {
    "CleanCoind": NODE_OPTIONS,
    "CleanCoin-node": _options(mp_node_main.OPTIONS),
    "CleanCoin-wallet": _options(wallet_main.OPTIONS) | _options(cleancoin_wallet.OPTIONS),
    "CleanCoin-cli": set(cli_main.OPTIONS),
}


def command_lines() -> list[CommandLine]:
    """Every line of a shell block that runs one of our executables, continuations joined."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in _BLOCK.finditer(text):
            first_line = text.count("\n", 0, block.start(1)) + 1
            joined = block.group(1).replace("\\\n", " ")
            for offset, raw in enumerate(joined.splitlines()):
                line = raw.strip().removeprefix("$ ").strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    continue
                # Environment assignments and wrappers before the program (VAR=x sudo ...).
                while words and ("=" in words[0] and not words[0].startswith("-") or words[0] in ("sudo", "exec")):
                    words = words[1:]
                if words and Path(words[0]).name in (*KNOWN_OPTIONS, "CleanCoin-sandbox"):
                    found.append(CommandLine(doc.name, first_line + offset, [Path(words[0]).name, *words[1:]]))
    return found


def _option_name(word: str) -> str:
    return word.lstrip("-").split("=", 1)[0]


def _check_daemon_style(cmd: CommandLine) -> list[str]:
    known = KNOWN_OPTIONS[cmd.words[0]]
    problems = []
    rest = cmd.words[1:]
    for i, word in enumerate(rest):
        if word in ("|", "&&", ";", ">", "2>&1", "&"):
            break
        if not word.startswith("-") or word == "-":
            if cmd.words[0] == "CleanCoin-cli":
                method = word
                if method not in NODE_RPCS and method not in WALLET_RPCS and method not in _EXTRA_RPCS:
                    problems.append(f"{cmd}: no RPC method {method!r}")
                break            # the method's own arguments follow
            if cmd.words[0] == "CleanCoin-wallet":
                break            # the offline tool's command (create, info, ...) and its arguments
            continue
        name = _option_name(word)
        if name in known or (name.startswith("no") and name[2:] in known) or name in ("?", "h", "help", "version"):
            continue
        if cmd.words[0] == "CleanCoin-cli" and name in ("getinfo", "netinfo", "generate", "named", "stdin"):
            continue
        problems.append(f"{cmd}: {cmd.words[0]} has no option -{name}")
    return problems


def _synopsis_words(words: list[str]) -> list[str]:
    """A usage line as a runnable one: `[--json]` is written, `a|b` is its first choice, a
    `...` after an option is a value, `POLICY...` is one POLICY, PID is a pid."""
    out: list[str] = []
    for word in words:
        word = word.strip("[]").removesuffix("]...")
        if "|" in word and not word.startswith("|"):
            word = word.split("|", 1)[0]
        if "..." in word:
            word = word.replace("...", "")
            if not word and out and out[-1].startswith("--"):
                word = "x"
            if not word or (out and out[-1].replace("...", "") == word):
                continue                  # `PID [PID...]`: one is enough
        out.append("1" if word == "PID" else word)
    return out


def _check_sandbox(cmd: CommandLine, parser: argparse.ArgumentParser) -> list[str]:
    words = cmd.words[1:]
    for stop in ("|", "&&", ";", ">", "2>&1", "&"):
        if stop in words:
            words = words[:words.index(stop)]
    if "--" in words:
        words = words[:words.index("--")] + ["--", "true"]
    try:
        parser.parse_args(_synopsis_words(words))
    except SystemExit as exc:
        return [f"{cmd}: CleanCoin-sandbox rejects it ({exc})"]
    return []


class _Strict(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # type: ignore[override]
        raise SystemExit(message)


def test_the_docs_run_our_executables_often_enough_to_matter() -> None:
    by_program = {c.words[0] for c in command_lines()}
    assert {"CleanCoind", "CleanCoin-node", "CleanCoin-cli", "CleanCoin-wallet", "CleanCoin-sandbox"} <= by_program


@pytest.mark.parametrize("doc", [d.name for d in DOCS])
def test_every_command_line_in_the_docs_names_what_exists(doc: str) -> None:
    parser = sandbox_main.build_parser()
    for action in parser._actions:   # noqa: SLF001 - make every subparser raise instead of exiting
        if isinstance(action, argparse._SubParsersAction):   # noqa: SLF001
            for sub in action.choices.values():
                sub.error = _Strict.error.__get__(sub)   # type: ignore[method-assign]
    parser.error = _Strict.error.__get__(parser)         # type: ignore[method-assign]
    problems = []
    for cmd in command_lines():
        if cmd.doc != doc:
            continue
        if cmd.words[0] == "CleanCoin-sandbox":
            problems += _check_sandbox(cmd, parser)
        else:
            problems += _check_daemon_style(cmd)
    assert problems == []


def test_the_check_finds_a_wrong_option_and_a_wrong_method() -> None:
    """The check must be able to fail: an unknown option, RPC or subcommand is reported."""
    parser = sandbox_main.build_parser()
    parser.error = _Strict.error.__get__(parser)         # type: ignore[method-assign]
    assert _check_sandbox(CommandLine("x", 1, ["CleanCoin-sandbox", "explian", "wallet"]), parser)
    assert not _check_sandbox(CommandLine("x", 1, ["CleanCoin-sandbox", "explain", "wallet", "[--json]"]), parser)
    assert _check_daemon_style(CommandLine("x", 1, ["CleanCoin-node", "-regtest", "-nosuchoption=1"]))
    assert _check_daemon_style(CommandLine("x", 1, ["CleanCoin-cli", "-regtest", "getnothing"]))
    assert not _check_daemon_style(CommandLine("x", 1, ["CleanCoin-cli", "-regtest", "getblockcount"]))


# File names the docs use for a reader's own files in examples, not ours.
_EXAMPLE_FILES = {"policies/X.toml", "test_my_policy.py", "client_tcp.py"}


def test_every_source_file_the_docs_name_exists() -> None:
    """A doc that points at `components/node/remote_wallet.py` or `wallet_session.py` must
    point at a file that is there: modules move, and the docs must move with them."""
    ours = {p.name for folder in ("components", "sandbox", "cli", "tests", "tools") for p in (ROOT / folder).rglob("*.py")}
    ours |= {p.name for p in ROOT.glob("*.py")}          # setup.py (builds the compiled waiter)
    problems = []
    for doc in [*DOCS, ROOT / "components" / "interfaces" / "README.md"]:
        text = doc.read_text()
        for match in re.finditer(r"\b((?:components|sandbox|cli|policies|tests)/[\w/.\-]*\w)", text):
            path = match.group(1)
            if path not in _EXAMPLE_FILES and not (ROOT / path).exists() \
                    and not (ROOT / path.rsplit(".", 1)[0]).with_suffix(".py").exists():
                problems.append(f"{doc.name}: {path}")
        for match in re.finditer(r"\b([a-z_0-9]+\.py)\b", text):
            if match.group(1) not in ours and match.group(1) not in _EXAMPLE_FILES:
                problems.append(f"{doc.name}: {match.group(1)}")
    assert problems == []
