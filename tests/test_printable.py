"""sandbox/printable.py's list of what may not be shown as it is, against the running Python's
Unicode database: a Python whose Unicode has a format character (Cf) the list does not name
fails here, and the list is to be extended (the regex is written out, not built from
unicodedata at import: the policy tools import it and start in milliseconds)."""

from __future__ import annotations

import unicodedata

from cleancoin.sandbox.log_format import LogFormatter
from cleancoin.sandbox.printable import UNPRINTABLE, escaped, printable


def test_every_control_format_and_surrogate_code_point_is_named() -> None:
    missing = [f"U+{c:04X}" for c in range(0x110000)
               if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp") and not UNPRINTABLE.match(chr(c))]
    assert missing == [], f"Unicode {unicodedata.unidata_version}: {missing}"


def test_honest_text_is_unchanged_and_hidden_text_is_shown() -> None:
    honest = "ok é ✓ ě 👍🏽 ✔️ 日本 한국어 العربية 100"
    assert printable(honest) and escaped(honest) == honest
    hidden = "amount 100" + "".join(chr(0xE0000 + ord(c)) for c in "pay")
    assert escaped(hidden) == "amount 100\\U000e0070\\U000e0061\\U000e0079"
    assert not printable("wallets\u3164") and not printable("x\U000e0100")


def test_a_log_record_shows_tag_characters() -> None:
    import logging
    record = logging.LogRecord("cleancoin.gui", logging.INFO, __file__, 1, "wallet %s loaded", ("main\U000e0021",), None)
    assert LogFormatter("%(message)s").format(record) == "wallet main\\U000e0021 loaded"
