"""A policy spelt with Unicode lookalikes (a Cyrillic letter, a no-break space, a combining
mark) prints like another in `check`, `explain` and `diff`: the loader refuses every character
outside ASCII in a policy's keys, paths, names and values (prose aside), naming file, line,
key and the character. Until 12-07 a `hide` of `${datadir}/k\\u0435ys` was reviewed as a hide
of `${datadir}/keys`, and the program read the real `keys/` (attack below)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cleancoin.sandbox.errors import PolicyErrors
from cleancoin.sandbox.policy_loader import load_policy

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def _hide_policy(tmp_path: Path, spelt: str) -> Path:
    policy = tmp_path / "review.toml"
    policy.write_text('extends = ["examples/program"]\n[filesystem]\n'
                      f'hide = [{{ path = "${{datadir}}/{spelt}", optional = true }}]\n', encoding="utf-8")
    return policy


def test_a_lookalike_hide_is_refused_and_the_ascii_one_hides(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "secret").write_text("s3cret\n")
    (data / "open").write_text("visible\n")
    read = ["--datadir", str(data), "--", "/bin/sh", "-c", f"cat {data}/open; cat {data}/keys/secret"]

    # Old code: check said ok, explain printed "${datadir}/keys" and the program printed s3cret.
    attack = _hide_policy(tmp_path, "k\u0435ys")
    checked = subprocess.run([TOOL, "check", str(attack)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert (f"{attack}:3: filesystem.hide[0].path: non-ASCII character U+0435 CYRILLIC SMALL "
            "LETTER IE in '${datadir}/k\\u0435ys'") in checked.stderr
    launched = subprocess.run([TOOL, "run", "--policy", str(attack), *read], capture_output=True, text=True,
                              timeout=60)
    assert launched.returncode == 125 and "s3cret" not in launched.stdout
    assert "U+0435" in launched.stderr

    honest = subprocess.run([TOOL, "run", "--policy", str(_hide_policy(tmp_path, "keys")), *read],
                            capture_output=True, text=True, timeout=60)
    assert honest.stdout == "visible\n"                                   # allowed
    assert "s3cret" not in honest.stdout and honest.returncode != 0       # hidden


@pytest.mark.parametrize(("body", "line", "key", "char"), [
    ('[filesystem]\nread = ["/etc/hostname\u00a0"]\n', 2, "filesystem.read[0]", "U+00A0 NO-BREAK SPACE"),
    ('[filesystem]\nread = ["/etc/hostname\u0338"]\n', 2, "filesystem.read[0]",
     "U+0338 COMBINING LONG SOLIDUS OVERLAY"),
    ('[process]\nenvironment = ["LANG", "TZ"]\nset_environment = { "P\u0410TH" = "/usr/bin" }\n', 3,
     "process.set_environment", "U+0410 CYRILLIC CAPITAL LETTER A"),
    ('[process]\nset_environment = { reason = "/\u0440ath" }\n', 2, "process.set_environment.reason",
     "U+0440 CYRILLIC SMALL LETTER ER"),
    ('[seccomp]\nallow = ["re\u0430d"]\n', 2, "seccomp.allow[0]", "U+0430 CYRILLIC SMALL LETTER A"),
    ('[policy]\nname = "w\u0430llet"\n', 2, "policy.name", "U+0430 CYRILLIC SMALL LETTER A"),
])
def test_each_lookalike_is_named_with_file_line_and_key(tmp_path: Path, body: str, line: int, key: str,
                                                         char: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(PolicyErrors) as caught:
        load_policy(str(path))
    [error] = caught.value.errors
    assert (error.where.line, error.where.key) == (line, key)
    assert char in str(error) and str(error).isascii()


def test_reasons_and_the_description_are_prose_in_any_language(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[policy]\ndescription = "Portefeuille \u00e0 part"\n[seccomp]\n'
                    'allow = [{ syscall = "execve", reason = "ex\u00e9cute le programme" }]\n', encoding="utf-8")
    policy = load_policy(str(path))
    assert [g.reason for g in policy.seccomp.allow] == ["ex\u00e9cute le programme"]
