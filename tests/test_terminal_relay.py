"""What a confined program writes reaches the operator's terminal through its launcher's relay
(sandbox/stdio.py `Relay`), with what a terminal would run made visible: C0 controls (kept:
newline and tab), and, since 12-06, C1 controls in either form (U+009B as UTF-8 is CSI, U+009D
OSC, U+009C ST: OSC 52 writes the clipboard, with no ESC or BEL at all; the raw byte 0x9b is
CSI to a terminal in an 8-bit locale) and Unicode's format characters (U+202E turns the rest
of the line around). The same definition as the policy tools' and the logs'
(sandbox/printable.py). Real `CleanCoin-sandbox run` of a real program, its output on a pty.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")

#: What the confined program writes: honest text (non-ASCII included), then the attacks.
HONEST = "ok é ✓ ě\n".encode()
ATTACKS = (b"\xc2\x9b2J\xc2\x9d52;c;cGF5IHRvIGV2aWw=\xc2\x9c\n"      # C1 CSI, OSC 52, ST as UTF-8
           b"raw\x9b2J\n"                                           # 8-bit CSI, not UTF-8
           b"\xe2\x80\xaelive\n"                                      # U+202E
           b"\x1b[2J\x07\n")                                        # C0 (escaped before too)


def _through_a_terminal(tmp_path: Path, data: bytes) -> bytes:
    """What reaches a terminal when a confined program writes `data` to its stdout."""
    program = f"import os; os.write(1, {data!r})"
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([TOOL, "run", "--policy", "examples/program", "--datadir", str(tmp_path), "--",
                             "/usr/bin/python3", "-c", program], stdin=subprocess.DEVNULL, stdout=terminal,
                            stderr=terminal, close_fds=True)
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:          # EIO: every writer is gone
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(controller)
    assert proc.returncode == 0, seen
    return seen.replace(b"\r\n", b"\n")


def test_a_confined_programs_output_reaches_the_terminal_without_c1_or_format_characters(tmp_path: Path) -> None:
    seen = _through_a_terminal(tmp_path, HONEST + ATTACKS)
    # Allowed: honest text arrives as it was written (a 0x9b inside a character, too: ě).
    assert seen.startswith(HONEST), seen
    # Refused: no C1 control in any form, no format character, no C0 control but newlines.
    text = seen.decode("utf-8", "surrogateescape")
    bad = [c for c in text if c in "\x1b\x07\u202e" or "\x80" <= c <= "\x9f" or "\udc80" <= c <= "\udc9f"]
    assert bad == [], seen
    # Nothing lost: each is shown.
    assert b"\\x9b2J\\x9d52;c;cGF5IHRvIGV2aWw=\\x9c\n" in seen, seen
    assert b"raw\\x9b2J\n" in seen and b"\\u202elive\n" in seen and b"\\x1b[2J\\x07\n" in seen, seen


def test_a_character_cut_by_a_read_is_not_mangled(tmp_path: Path) -> None:
    """The relay reads 64 KiB at a time: a character that straddles two reads arrives whole."""
    data = b"a" * 65535 + "é✓".encode() * 3 + b"\n"
    seen = _through_a_terminal(tmp_path, data)
    assert seen == data, seen[65530:]


def test_invisible_format_characters_do_not_hide_text_on_the_terminal(tmp_path: Path) -> None:
    """Unicode's format characters (category Cf) beyond the few printable.py named: the tag
    characters U+E0020-U+E007F are an invisible copy of ASCII (a terminal shows nothing for
    them: 'ASCII smuggling'), U+1D173-U+1D17A and U+1BCA0-U+1BCA3 are invisible too, U+0600-U+0605
    and U+08E2 are signs drawn over the digits that follow, and the variation selectors
    U+E0100-U+E01EF (after any character) and the Hangul fillers carry text the reader does
    not see. Before this test the confined program's hidden 'pay evil' in tags, the
    musical and shorthand controls, U+0600 before an amount and the selectors reached the
    terminal raw. Now each is shown as \\uXXXX or \\UXXXXXXXX; honest text passes unchanged."""
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "pay evil")
    attack = (f"amount 100{hidden}\n"
              f"beam\U0001D173\U0001D17A \U0001BCA0x\n"
              f"sign \u0600100 \u08e2\n"
              f"sel A\U000E0100\U000E01EF \u3164\uffa0\n").encode()
    honest = "ok é ✓ ě 👍🏽 ✔️ 日本\n".encode()
    seen = _through_a_terminal(tmp_path, honest + attack)
    assert seen.startswith(honest), seen
    text = seen.decode("utf-8", "surrogateescape")
    invisible = [c for c in text if unicodedata.category(c) == "Cf" or 0xE0100 <= ord(c) <= 0xE01EF
                 or c in "\u3164\uffa0"]
    assert invisible == [], [hex(ord(c)) for c in invisible]
    assert "amount 100\\U000e0070\\U000e0061\\U000e0079" in text, text
    assert "sign \\u0600100 \\u08e2" in text and "\\U0001d173" in text and "\\U000e0100" in text, text
