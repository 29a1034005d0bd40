"""Text that others chose, as CleanCoin-sandbox shows and writes it: a third-party policy's
strings and a learned program's file names never reach the auditor's terminal as escape
sequences, never inject lines into an exported unit, and never make a learned file unloadable.
The real executable, on real files (sandbox/printable.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cleancoin.sandbox import toml_writer
from cleancoin.sandbox.printable import printable, visible

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=timeout,
                          errors="surrogateescape")


def raw_controls(text: str) -> list[str]:
    """Control and format characters in a tool's output (newlines and tabs are its own)."""
    return [c for c in text if c not in "\n\t" and not printable(c)]


# A policy from a third party: its name retitles the terminal, its description erases the
# line it is on and writes over it, a grant hides the next text, a path holds a newline and a
# systemd directive, a name holds a bidi override.
THIRD_PARTY = (
    '[policy]\nname = "tidy\\u001b]0;owned\\u0007"\ndescription = "ok\\u001b[2K\\rALL GOOD"\n'
    '[filesystem]\nread = ["/usr\\u001b[8m", {path = "/etc\\nExecStartPre=/bin/sh -c id", reason = "r"}]\n'
)


@pytest.mark.parametrize("text", [
    THIRD_PARTY,
    '[policy]\nname = "x"\n[filesystem]\nread = ["/etc\\nExecStartPre=/bin/sh -c id"]\n',
    '[policy]\nname = "admin\\u202e"\n',
    '[policy]\nname = "x"\n[filesystem]\n"re\\u001b[2Jad" = ["/usr"]\n',
    '[policy]\nname = "x"\ndescription = "zero\\u200bwidth"\n',
])
def test_a_policy_with_control_or_format_characters_is_refused_by_every_tool(tmp_path: Path, text: str) -> None:
    """Attack: before 12-06 `check` said ok, and check, explain, score, diff and the
    kubernetes export printed the escape sequences raw; `export --format systemd` wrote
    `ExecStartPre=/bin/sh -c id` as a line of its own in the unit."""
    policy = tmp_path / "third-party.toml"
    policy.write_text(text)
    for args in (("check", str(policy)), ("explain", str(policy)), ("score", str(policy)),
                 ("diff", "strict", str(policy)), ("export", "--format", "systemd", str(policy)),
                 ("export", "--format", "kubernetes", str(policy))):
        result = run(*args)
        assert result.returncode in (1, 125), (args, result.stdout[-500:])
        assert "control or format character" in result.stderr, (args, result.stderr)
        assert raw_controls(result.stdout + result.stderr) == [], (args, result.stderr)
        assert not any(line.startswith("ExecStartPre") for line in result.stdout.splitlines())


def test_the_tool_shows_other_text_it_prints_as_text(tmp_path: Path) -> None:
    """Defence in depth: whatever else the tool prints (here a file name the auditor was
    handed) goes out with its control characters shown as \\uXXXX."""
    name = tmp_path / "policy\x1b[2J.toml"
    result = run("check", str(name))
    assert result.returncode == 125
    assert "\\u001b[2J" in result.stderr and raw_controls(result.stderr) == []


NAMES = r'''
import os, sys
d = sys.argv[1].encode()
for name in (b"a\x7fb", b"c\x1b]0;owned\x07", b'q"]\n[seccomp]\nallow = ["ptrace"]#', b"\xe2\x80\xaex",
             b"\xff\xfe"):
    try:
        open(os.path.join(d, name), "wb").close()
    except OSError as exc:
        print(exc)
open(os.path.join(d, b"plain"), "wb").close()
'''


def test_file_names_a_learned_program_chooses_are_left_out_and_shown_as_text(tmp_path: Path) -> None:
    """Attack: a learned program made files whose names hold an escape sequence, a newline
    and TOML, DEL, a bidi override and bytes that are not UTF-8. Before 12-06 `learn` printed the
    escape sequence raw to the terminal and died with a UnicodeEncodeError traceback, leaving an
    empty learned file (with DEL alone: a learned file that did not load)."""
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "learned.toml"
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out", str(out),
                 "--quiet", "--", "/usr/bin/python3", "-c", NAMES, str(data))
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert raw_controls(result.stdout + result.stderr) == []
    assert result.stdout.count("a path no policy can hold was used and is not granted") == 5
    assert "\\u001b]0;owned\\u0007" in result.stdout
    assert run("check", str(out)).returncode == 0
    learned = tomllib.loads(out.read_text())
    assert "ptrace" not in learned["seccomp"]["allow"]
    as_json = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out", str(out),
                  "--json", "--quiet", "--", "/usr/bin/python3", "-c", NAMES, str(data))
    assert len([e for e in json.loads(as_json.stdout)["observation"]["errors"] if "no policy can hold" in e]) == 5


def test_the_toml_writer_escapes_what_toml_and_terminals_refuse() -> None:
    for value in ("a\x7fb", "c\x1b]0\x07", "\u202eq", "x\ny", '"q\\', "\x85"):
        line = toml_writer.literal(value)
        assert printable(line) and tomllib.loads(f"k = {line}")["k"] == value
    text = toml_writer.document([], [toml_writer.Section("s", comments=["a\x1b[2Jb\nc\x7f"])])
    assert printable(text.replace("\n", "")) and tomllib.loads(text) == {}
    with pytest.raises(ValueError, match="not UTF-8"):
        toml_writer.literal("\udcff")
    assert visible("a\x1bb\u2028") == "a\\u001bb\\u2028"


def test_status_and_the_cli_show_what_the_policy_tools_show() -> None:
    """`status` (a process's name) and CleanCoin-cli (an RPC answer) show others' text through
    stdio.visible, which knew only control characters: a bidi override or a zero-width
    character in a name went to the terminal as it was (what the auditor reads would not be
    what is there). It now escapes what printable.py names, as the policy tools do."""
    from cleancoin.sandbox import stdio
    assert stdio.visible("a\x1bb\u202ec\u200bd\x9b\n") == "a\\x1bb\\u202ec\\u200bd\\x9b\\x0a"
    assert stdio.visible("one\ttwo\nthree\u2066", lines=True) == "one\ttwo\nthree\\u2066"


def test_a_grant_that_steps_up_with_dotdot_is_refused(tmp_path: Path) -> None:
    """Attack: a policy change adds `write = ["${datadir}/.."]`. Before 12-06 `check` said ok,
    `diff` against the base said "B grants nothing that A does not" (exit 0: a CI gate on
    `diff` let it through, as "already granted by A's write ${datadir}"), and `run` wrote into
    the datadir's parent."""
    data = tmp_path / "data"
    data.mkdir()
    policy = tmp_path / "dots.toml"
    policy.write_text('extends = ["examples/program"]\n[policy]\nname = "dots"\n'
                      '[filesystem]\nwrite = ["${datadir}/.."]\n')
    checked = run("check", str(policy))
    assert checked.returncode == 1 and "has a '..' component" in checked.stderr, checked.stdout + checked.stderr
    diffed = run("diff", "examples/program", str(policy))
    assert diffed.returncode != 0 and "B grants nothing" not in diffed.stdout
    ran = run("run", "--policy", str(policy), "--datadir", str(data), "--", "/bin/sh", "-c",
              f"echo x > {tmp_path}/outside")
    assert ran.returncode != 0 and not (tmp_path / "outside").exists()
